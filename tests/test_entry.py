"""The entry point loads the BPF programs before parsing, on a guess it then checks."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from tracer import entry

pytestmark = pytest.mark.bpf


@pytest.mark.parametrize("args, guess", [
    ([], True),
    (["--json"], True),
    (["-w", "trace.jsonl.gz", "--tree"], True),
    (["--container", "web", "--containers-only", "--ns"], True),
    (["--json", "--", "ps", "-p", "1", "--threads"], True),  # the traced command's options
    (["-p", "1"], False),
    (["--pid=1"], False),
    (["-cbash"], False),
    (["--comm", "bash"], False),
    (["--ns-changes"], False),
    (["--threads"], False),
    (["--buffer-size", "8"], False),
    (["replay", "trace.jsonl"], False),
    (["--help"], False),
])
def test_what_is_guessed(args, guess):
    assert entry.speculative(args) is guess


def _lines(text):
    return [json.loads(line) for line in text.splitlines()]


def test_the_command_runs_through_the_entry_point(tmp_path):
    probe = tmp_path / "entry-probe"
    shutil.copy("/bin/true", probe)
    r = subprocess.run([sys.executable, "-m", "tracer", "--json", "--no-docker", "--", str(probe)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    lines = _lines(r.stdout)
    assert lines[0]["type"] == "header" and lines[0]["core_btf"] == "subset"
    assert any(l["type"] == "exec" and l.get("filename") == str(probe) for l in lines)
    assert lines[-1]["type"] == "summary" and lines[-1]["lost"] == 0


def test_a_wrong_guess_is_discarded(tmp_path, monkeypatch, capsys):
    """Forced to guess the default load for --comm, the command must load anew:
    the kernel then sends only the named command's events."""
    probe = tmp_path / "only-this"
    shutil.copy("/bin/true", probe)
    monkeypatch.setattr(entry, "speculative", lambda args: True)
    args = ["--json", "--no-docker", "--comm", "only-this", "--", "sh", "-c", f"{probe}; true"]
    with pytest.raises(SystemExit) as done:
        entry.main(args)
    assert done.value.code == 0
    events = [l for l in _lines(capsys.readouterr().out) if l["type"] not in ("header", "summary")]
    assert events and {e["comm"] for e in events} == {"only-this"}
    assert any(e["type"] == "exec" and e["filename"] == str(probe) for e in events)


def test_not_root_makes_no_guess(monkeypatch):
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert entry.speculative([]) is False
