"""Smoke test: the app imports, renders its table, and runs as `python -m uv_app`."""

import os
import subprocess
import sys
from pathlib import Path

src = Path(__file__).resolve().parents[1] / "src"
sys.path.insert(0, str(src))

import uv_app  # noqa: E402

table = uv_app.render()
assert table.splitlines()[0].split() == ["|", "tool", "|", "job", "|"], table
assert "| kiln   | builds the image" in table, table

env = dict(os.environ, PYTHONPATH=str(src))
out = subprocess.run(
    [sys.executable, "-m", "uv_app"], env=env, capture_output=True, text=True, check=True
).stdout
assert out.strip() == table, out
print("smoke test passed")
