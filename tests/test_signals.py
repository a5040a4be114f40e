"""The real command as a process: Ctrl-C and SIGTERM end it cleanly, a closed pipe quietly."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import pytest

pytestmark = pytest.mark.bpf


def _start(*args: str) -> subprocess.Popen:
    p = subprocess.Popen([sys.executable, "-m", "tracer", *args],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    # ready once the header is out
    first = p.stdout.readline()
    assert first, p.stderr.read()
    p.first_line = first  # type: ignore[attr-defined]
    return p


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_ends_with_summary(sig):
    p = _start("--json")
    subprocess.run(["/bin/true", "between"])
    time.sleep(0.3)
    p.send_signal(sig)
    out, err = p.communicate(timeout=20)
    assert p.returncode == 0, err
    assert "Traceback" not in err
    lines = [json.loads(line) for line in [p.first_line, *out.splitlines()]]
    assert lines[0]["type"] == "header"
    assert lines[-1]["type"] == "summary" and lines[-1]["lost"] == 0
    assert any(e.get("argv") == ["/bin/true", "between"] for e in lines)


def test_closed_pipe_is_quiet():
    p = _start()
    p.stdout.close()  # like '| head' going away
    for _ in range(20):
        subprocess.run(["/bin/true"])
    try:
        p.wait(timeout=20)
    finally:
        err = p.stderr.read()
    assert p.returncode == 0, err
    assert "Traceback" not in err and "Error" not in err
