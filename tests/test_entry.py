"""The entry point loads the BPF programs before parsing, on a guess it then checks."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import click
import pytest

import tracer.cli
from tracer import entry
from tracer.commands.live import LiveOptions


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
    (["--version"], False),
    (["--color", "always", "-d", "1"], True),
])
def test_what_is_guessed(args, guess, monkeypatch):
    monkeypatch.setattr(entry.os, "geteuid", lambda: 0)  # the guess is root's: loading needs it
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
    assert any(line["type"] == "exec" and line.get("filename") == str(probe) for line in lines)
    assert lines[-1]["type"] == "summary" and lines[-1]["lost"] == 0


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
    events = [line for line in _lines(capsys.readouterr().out) if line["type"] not in ("header", "summary")]
    assert events and {e["comm"] for e in events} == {"only-this"}
    assert any(e["type"] == "exec" and e["filename"] == str(probe) for e in events)


def test_not_root_makes_no_guess(monkeypatch):
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert entry.speculative([]) is False


# -- the guess never stands for the default load where click would read another ----

def _other_value(p: click.Option) -> str:
    """A value for p other than its default, as it would be typed."""
    if isinstance(p.type, click.Choice):
        return next(c for c in p.type.choices if c != p.default)
    if isinstance(p.type, (click.types.IntParamType, click.types.FloatParamType)):
        base = p.default if isinstance(p.default, (int, float)) else 0  # click: unset
        return str(int(base) + 3)
    return "x"


def _spellings(p: click.Option):
    """Every way of writing p with a value other than its default."""
    for opt in p.opts:
        if p.is_flag:
            yield [opt]
            continue
        value = _other_value(p)
        yield [opt, value]
        yield [f"{opt}={value}"] if opt.startswith("--") else [f"{opt}{value}"]


LIVE_OPTIONS = [p for p in tracer.cli.main.params
                if isinstance(p, click.Option) and not p.is_eager]  # not --help, --version


@pytest.mark.parametrize("p", LIVE_OPTIONS, ids=lambda p: p.name)
def test_options_that_change_the_load_are_never_guessed_default(p, monkeypatch):
    """Each option of the live command, as click reads it: where the load it
    asks for is not the default one, the entry point must not guess the default."""
    monkeypatch.setattr(entry.os, "geteuid", lambda: 0)
    default = LiveOptions().load_config()
    for args in _spellings(p):
        ctx = tracer.cli.main.make_context("ctrtrace", list(args), resilient_parsing=False)
        options = LiveOptions(**ctx.params)
        if options.load_config() != default:
            assert entry.speculative(args) is False, args
            assert entry.speculative(["--json", *args, "--", "true"]) is False, args
        else:
            assert entry.speculative(args) is True, args


def test_the_default_load_is_what_the_preload_loads():
    from tracer.kernel.host import LoadConfig

    assert LiveOptions().load_config() == LoadConfig()


def test_version_and_completion_make_no_guess(monkeypatch):
    monkeypatch.setattr(entry.os, "geteuid", lambda: 0)
    assert entry.speculative(["--version"]) is False
    monkeypatch.setenv("_CTRTRACE_COMPLETE", "bash_complete")
    assert entry.speculative([]) is False
