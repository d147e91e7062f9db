"""Smoke test: the program runs and greets."""
import subprocess
import sys

out = subprocess.run([sys.executable, "/app/hello.py"], capture_output=True, text=True, check=True).stdout
assert out.strip() == "hello from kiln", out
print("smoke test passed")
