"""Smoke test: the app converts a domain and runs as a program."""

import subprocess
import sys
from pathlib import Path

app_dir = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(app_dir))

import app  # noqa: E402

assert app.to_ascii("bücher.example") == "xn--bcher-kva.example"

out = subprocess.run(
    [sys.executable, str(app_dir / "app.py")], capture_output=True, text=True, check=True
).stdout
assert out.strip() == "bücher.example -> xn--bcher-kva.example", out
print("smoke test passed")
