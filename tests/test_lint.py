"""The code keeps its lint (ruff) and its types (mypy), as configured in
pyproject.toml: both run wherever the tests run."""

from __future__ import annotations

import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.dirname(sys.executable)


def _run(tool: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([os.path.join(BIN, tool), *args], cwd=REPO, capture_output=True,
                          text=True, timeout=300)


def test_ruff():
    r = _run("ruff", "check", "--no-cache", "tracer", "tests", "bench", "scripts/contract-doc")
    assert r.returncode == 0, r.stdout + r.stderr


def test_mypy():
    r = _run("mypy", "--cache-dir", os.devnull)
    assert r.returncode == 0, r.stdout + r.stderr
