"""The command as a shell sees it: --version, and click's shell completion."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

import tracer

# the installed command, and the module run as one (both go through tracer.entry)
COMMANDS = [[sys.executable, "-m", "tracer"]]
_SCRIPT = shutil.which("ctrtrace", path=os.path.dirname(sys.executable))
if _SCRIPT:
    COMMANDS.append([_SCRIPT])


def _run(cmd, *args, env=None):
    full = {k: v for k, v in os.environ.items() if not k.startswith(("_CTRTRACE", "COMP_"))}
    full.update(env or {})
    return subprocess.run([*cmd, *args], capture_output=True, text=True, timeout=60, env=full)


@pytest.mark.parametrize("cmd", COMMANDS, ids=lambda c: os.path.basename(c[-1]))
def test_version(cmd):
    r = _run(cmd, "--version")
    assert r.returncode == 0, r.stderr
    assert r.stdout == f"ctrtrace {tracer.__version__}\n"
    assert r.stderr == ""


def test_version_whatever_else_is_asked():
    r = _run(COMMANDS[0], "--json", "--version", "-d", "5")
    assert (r.returncode, r.stdout) == (0, f"ctrtrace {tracer.__version__}\n")


@pytest.mark.parametrize("cmd", COMMANDS, ids=lambda c: os.path.basename(c[-1]))
def test_bash_completion_script(cmd):
    r = _run(cmd, env={"_CTRTRACE_COMPLETE": "bash_source"})
    assert r.returncode == 0, r.stderr
    assert "_CTRTRACE_COMPLETE=bash_complete" in r.stdout
    # bash takes it and registers the completion of ctrtrace
    b = subprocess.run(["bash", "-c", 'eval "$1"; complete -p ctrtrace', "bash", r.stdout],
                       capture_output=True, text=True, timeout=30)
    assert b.returncode == 0, b.stderr
    assert "_ctrtrace_completion" in b.stdout and b.stdout.rstrip().endswith(" ctrtrace")


def _complete(words: str, cword: int):
    r = _run(COMMANDS[-1], env={"_CTRTRACE_COMPLETE": "bash_complete", "COMP_WORDS": words,
                                "COMP_CWORD": str(cword)})
    assert r.returncode == 0, r.stderr
    return r.stdout.splitlines()


def test_bash_completes_options_values_and_replay():
    assert _complete("ctrtrace --js", 1) == ["plain,--json"]
    assert _complete("ctrtrace --color ", 2) == ["plain,auto", "plain,always", "plain,never"]
    assert _complete("ctrtrace re", 1) == ["plain,replay"]
    assert "plain,--skip-bad" in _complete("ctrtrace replay --", 2)
    assert "plain,--color" in _complete("ctrtrace replay --", 2)


@pytest.mark.parametrize("shell", ["zsh", "fish"])
def test_other_shells_get_a_script_too(shell):
    r = _run(COMMANDS[0], env={"_CTRTRACE_COMPLETE": f"{shell}_source"})
    assert r.returncode == 0 and "_CTRTRACE_COMPLETE" in r.stdout, r.stderr
