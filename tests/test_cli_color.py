"""--color: ctrtrace's own colours in the text view, on a terminal only.

Replayed from tests/data/session.jsonl (a failing exec, unshare with five new
namespaces, a SIGKILLed sleep: see test_render.py), through the command.
"""

from __future__ import annotations

import json
import os
import pty
import re
import select
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from tracer.cli import main
from tracer.model.events import Summary
from tracer.output.text import TextRenderer

DATA = Path(__file__).parent / "data"
SESSION = DATA / "session.jsonl"
SESSION_TXT = (DATA / "session.txt").read_text()

CYAN, RED, MAGENTA, BOLD_RED, RESET = "\x1b[36m", "\x1b[31m", "\x1b[35m", "\x1b[1;31m", "\x1b[0m"
OURS = re.compile(r"\x1b\[(?:36|31|35|1;31|0)m")


def _plain(pred) -> str:
    """The one line of the plain view (session.txt) that pred accepts."""
    found = [line for line in SESSION_TXT.splitlines() if pred(line)]
    assert len(found) == 1, found
    return found[0]


# the lines to colour, as the plain view prints them
FAILED = _plain(lambda line: line.endswith("  /nonexistent/x  FAILED ENOENT"))
UNSHARE = _plain(lambda line: " unshare(CLONE_NEWNS|" in line)
FAILED_INSIDE = _plain(lambda line: "[/usr/local/sbin/sh] sh -c 'hostname box; sleep 0.2'" in line)
KILLED = _plain(lambda line: line.endswith("  sleep killed by SIGKILL"))
TRUE = _plain(lambda line: line.endswith("  /bin/true a 'b c'"))


def replay(*args, env=None):
    return CliRunner(env=env).invoke(main, ["replay", *args], catch_exceptions=False)


def test_always_colours_the_marks_failures_and_kills_exactly():
    r = replay("--color", "always", str(SESSION))
    assert r.exit_code == 0, r.output
    lines = r.stdout.splitlines()
    marks, inside = "[+mnt +uts +ipc +pid> +net]", "[+mnt +uts +ipc +pid +net]"
    assert UNSHARE.endswith(f"  {marks}") and FAILED_INSIDE.endswith(f"  FAILED ENOENT  {inside}")
    assert FAILED.removesuffix("FAILED ENOENT") + f"{RED}FAILED ENOENT{RESET}" in lines
    assert UNSHARE.removesuffix(marks) + f"{CYAN}{marks}{RESET}" in lines
    assert (FAILED_INSIDE.removesuffix(f"FAILED ENOENT  {inside}")
            + f"{RED}FAILED ENOENT{RESET}  {CYAN}{inside}{RESET}") in lines
    assert KILLED.removesuffix("killed by SIGKILL") + f"{MAGENTA}killed by SIGKILL{RESET}" in lines
    # nothing else changes: without the colours, the lines are the plain view's
    assert OURS.sub("", r.stdout) == SESSION_TXT
    assert "\x1b" not in OURS.sub("", r.stdout)
    assert sum(CYAN in line for line in lines) == sum("  [+" in line for line in SESSION_TXT.splitlines())


@pytest.mark.parametrize("args", [[], ["--color", "auto"], ["--color", "never"]])
def test_no_colour_when_not_a_terminal(args):
    r = replay(*args, str(SESSION))  # CliRunner's output is not a terminal
    assert r.exit_code == 0
    assert r.stdout == SESSION_TXT
    assert "\x1b" not in r.stdout + r.stderr


def test_never_colours_json_nor_the_views():
    for args in (["--json"], ["--tree"], ["--ns"]):
        r = replay("--color", "always", *args, str(SESSION))
        assert r.exit_code == 0
        assert "\x1b" not in r.stdout + r.stderr, args
    r = replay("--color", "always", "--json", str(SESSION))
    assert r.stdout == SESSION.read_text()


def test_a_bad_colour_is_a_usage_error():
    r = replay("--color", "sometimes", str(SESSION))
    assert r.exit_code == 2
    assert "'sometimes' is not one of 'auto', 'always', 'never'" in r.stderr


def test_a_traced_process_cannot_forge_or_break_the_colours(tmp_path):
    """Escape sequences and ctrtrace's own words in a process's names stay
    escaped text: only ctrtrace's words, at their place, are coloured."""
    lines = SESSION.read_text().splitlines()
    for i, line in enumerate(lines):
        d = json.loads(line)
        if d.get("type") == "exit" and d.get("signal"):  # the SIGKILLed sleep
            d["comm"] = "\x1b[0mkilled by"
        elif d.get("type") == "exec" and d.get("argv") == ["/nonexistent/x"]:
            d["argv"] = ["/nonexistent/x", f"{RESET}\x1b[2J  FAILED ENOENT"]
        elif d.get("type") == "exec" and d.get("argv") == ["/bin/true", "a", "b c"]:
            d["argv"] = ["/bin/true", "x  FAILED ENOENT"]  # succeeded: nothing to colour
        else:
            continue
        lines[i] = json.dumps(d)
    f = tmp_path / "hostile.jsonl"
    f.write_text("\n".join(lines) + "\n")
    r = replay("--color", "always", str(f))
    assert r.exit_code == 0, r.output
    out = r.stdout.splitlines()
    assert (FAILED.removesuffix("/nonexistent/x  FAILED ENOENT") + "/nonexistent/x "
            "'\\x1b[0m\\x1b[2J  FAILED ENOENT'  "
            f"{RED}FAILED ENOENT{RESET}") in out
    assert (KILLED.removesuffix("sleep killed by SIGKILL") + "\\x1b[0mkilled by "
            f"{MAGENTA}killed by SIGKILL{RESET}") in out
    assert TRUE.removesuffix("/bin/true a 'b c'") + "/bin/true 'x  FAILED ENOENT'" in out
    assert "\x1b" not in OURS.sub("", r.stdout)  # every escape character is ctrtrace's


def test_the_summary_colours_lost_events_only():
    s = Summary(counts={"exec": 2, "fork": 1}, lost=5, threads=0, filtered_in_kernel=0,
                duration_s=1.0, end_wall_ns=0)
    assert TextRenderer.summary(s, color=True) == (
        f"3 events (exec 2, fork 1) in 1.0 s; {BOLD_RED}lost 5{RESET}")
    assert TextRenderer.summary(s) == "3 events (exec 2, fork 1) in 1.0 s; lost 5"
    none_lost = Summary(counts={"exec": 2}, lost=0, threads=0, filtered_in_kernel=0,
                        duration_s=1.0, end_wall_ns=0)
    assert "\x1b" not in TextRenderer.summary(none_lost, color=True)


# -- auto, on a terminal -------------------------------------------------------

def _under_a_pty(args, env_extra):
    """ctrtrace ARGS with its standard output on a pseudo-terminal: what it wrote there."""
    env = {k: v for k, v in os.environ.items() if k != "NO_COLOR"}
    env.update(env_extra)
    master, slave = pty.openpty()
    try:
        p = subprocess.Popen([sys.executable, "-m", "tracer", *args], stdout=slave,
                             stderr=subprocess.PIPE, env=env)
        os.close(slave)
        chunks = []
        while True:
            ready, _, _ = select.select([master], [], [], 30)
            assert ready, "no output from ctrtrace within 30 s"
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the other side is closed
                break
            if not data:
                break
            chunks.append(data)
        assert p.wait(timeout=30) == 0, p.stderr.read()
        p.stderr.close()
    finally:
        os.close(master)
    return b"".join(chunks).decode()


@pytest.mark.parametrize("env, colour", [
    ({}, True),
    ({"NO_COLOR": "1"}, False),
    ({"NO_COLOR": ""}, True),  # set but empty: no-color.org says it does not count
])
def test_auto_colours_a_terminal_unless_no_color(env, colour):
    text = _under_a_pty(["replay", str(SESSION)], env)
    assert FAILED.split("/nonexistent/x")[0] in text  # the failing exec's time, pids
    assert (f"{RED}FAILED ENOENT{RESET}" in text) is colour
    assert (f"{CYAN}[+mnt +uts +ipc +pid> +net]{RESET}" in text) is colour
    if not colour:
        assert "\x1b" not in text


def test_always_and_never_win_over_the_terminal_and_no_color():
    assert f"{RED}FAILED ENOENT" in _under_a_pty(
        ["replay", "--color", "always", str(SESSION)], {"NO_COLOR": "1"})
    assert "\x1b" not in _under_a_pty(["replay", "--color", "never", str(SESSION)], {})


# -- the live view -------------------------------------------------------------

LIVE = ["--no-docker", "--", "sh", "-c",
        "unshare --uts true; /nonexistent/x; sh -c 'kill -9 $$'; true"]


@pytest.mark.bpf
def test_live_text_is_coloured_on_request_and_recordings_never(tmp_path):
    rec = tmp_path / "t.jsonl"
    r = CliRunner().invoke(main, ["--color", "always", "-w", str(rec), *LIVE],
                           catch_exceptions=False)
    assert r.exit_code == 0, r.output
    out = r.stdout.splitlines()
    assert any(line.endswith(f"/nonexistent/x  {RED}FAILED ENOENT{RESET}") for line in out), r.stdout
    assert any(line.endswith(f" sh {MAGENTA}killed by SIGKILL{RESET}") for line in out), r.stdout
    assert any("unshare(CLONE_NEWUTS) = 0  uts:" in line and line.endswith(f"  {CYAN}[+uts]{RESET}")
               for line in out), r.stdout
    assert "\x1b" not in OURS.sub("", r.stdout)
    assert b"\x1b" not in rec.read_bytes()


@pytest.mark.bpf
def test_live_json_and_a_pipe_are_never_coloured():
    r = CliRunner().invoke(main, ["--color", "always", "--json", *LIVE], catch_exceptions=False)
    assert r.exit_code == 0
    assert "\x1b" not in r.stdout and "\\u001b" not in r.stdout
    p = subprocess.run([sys.executable, "-m", "tracer", *LIVE], capture_output=True, text=True,
                       timeout=60, env={k: v for k, v in os.environ.items() if k != "NO_COLOR"})
    assert p.returncode == 0, p.stderr
    assert "FAILED ENOENT" in p.stdout and "\x1b" not in p.stdout + p.stderr


@pytest.mark.bpf
def test_live_auto_colours_a_terminal_unless_no_color():
    text = _under_a_pty(LIVE, {})
    assert f"{RED}FAILED ENOENT{RESET}" in text and f"{CYAN}[+uts]{RESET}" in text
    text = _under_a_pty(LIVE, {"NO_COLOR": "1"})
    assert "FAILED ENOENT" in text and "\x1b" not in text
