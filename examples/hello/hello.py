"""The smallest kiln example: prints a greeting."""
print("hello from kiln")
