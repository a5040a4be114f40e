"""The entry point loads the BPF programs before parsing, on a guess it then checks."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import click
import pytest
from click.testing import CliRunner

import tracer.cli
from tracer import entry
from tracer.live import LiveArgs


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


@pytest.mark.bpf
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


@pytest.mark.bpf
def test_a_simple_command_line_runs_without_click(tmp_path):
    """click is a fifth of the start-up: `ctrtrace --json -w FILE -- CMD` must not import it."""
    out = tmp_path / "t.jsonl"
    code = ("import atexit, sys\n"
            "atexit.register(lambda: print('click' in sys.modules, file=sys.stderr))\n"
            "from tracer.entry import main\n"
            "main(sys.argv[1:])\n")
    r = subprocess.run([sys.executable, "-c", code, "--json", "--no-docker", "-w", str(out),
                        "--", "true"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stderr.splitlines()[-1] == "False", r.stderr
    assert _lines(r.stdout)[-1]["type"] == "summary"
    assert _lines(out.read_text())[-1]["type"] == "summary"


@pytest.mark.bpf
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


# -- the command lines parsed without click -------------------------------------

def _click_reads(args, monkeypatch):
    """The LiveArgs the click command builds for args (nothing is traced)."""
    got = []
    monkeypatch.setattr(tracer.cli, "run", lambda app, a: got.append(a))
    r = CliRunner().invoke(tracer.cli.main, args, catch_exceptions=False)
    assert r.exit_code == 0, r.output
    return got[0]


@pytest.mark.parametrize("args", [
    [],
    ["--json"],
    ["-w", "trace.jsonl.gz"],
    ["--write=trace.jsonl", "--json"],
    ["--json", "-d", "2.5", "--no-docker"],
    ["--duration=0", "--tree", "--ns"],
    ["--container", "web", "--containers-only"],
    ["--container=3f2a", "-w", "a.jsonl", "-w", "b.jsonl"],  # the last one counts
    ["--json", "--", "docker", "run", "--rm", "alpine", "true"],
    ["--", "sh", "-c", "--json"],  # the traced command's words stay its own
])
def test_simple_command_lines_read_as_click_reads_them(args, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    simple = entry.parse_simple(args)
    assert simple is not None
    assert LiveArgs(**simple) == _click_reads(args, monkeypatch)


@pytest.mark.parametrize("args", [
    ["replay", "trace.jsonl"],   # a subcommand
    ["--help"],
    ["--jsonx"],                 # unknown: click says so
    ["-d", "soon"],              # not a number
    ["-d", "-1"],                # out of range (and looks like an option)
    ["-d", "nan"],
    ["--duration"],              # no value
    ["-w", "--json"],            # a value that looks like an option
    ["-w="],
    ["-wtrace.jsonl"],           # the attached short form
    ["-w", "."],                 # a directory
    ["--linger", "2"],           # options outside the tables
    ["--threads"],
    ["--"],                      # "--" and no command
])
def test_anything_else_goes_to_click(args):
    assert entry.parse_simple(args) is None


def test_the_tables_match_the_click_options():
    by_name = {}
    for p in tracer.cli.main.params:
        if isinstance(p, click.Option):
            for opt in p.opts:
                by_name[opt] = p
    for opt, dest in entry._FLAGS.items():
        p = by_name[opt]
        assert p.is_flag and p.name == dest, opt
    for opt, dest in entry._VALUES.items():
        p = by_name[opt]
        assert not p.is_flag and p.name == dest, opt
    # an option that takes a value is known by all its names, so that none is
    # mistaken for a positional word
    for dest in set(entry._VALUES.values()):
        names = [o for o, p in by_name.items() if p.name == dest]
        assert set(names) <= set(entry._VALUES), dest
