from uv_app import main

main()
