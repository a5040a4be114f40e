"""A traced process names itself with escape sequences: root's terminal sees
them escaped, in every view, live and replayed; the recording keeps the bytes.

On the real kernel: the process sets its comm with prctl(PR_SET_NAME), forks,
and execs a file whose name and argv carry controls, bidirectional overrides
and bytes that are not UTF-8.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import textwrap

import pytest

CTRTRACE = os.path.join(os.path.dirname(sys.executable), "ctrtrace")

TITLE = b"\x1b]2;PWNED\x07\x1b[2J"            # retitles and clears a terminal
C1_CSI = "\u009b".encode()                      # the 8-bit CSI, as UTF-8
RLO = "\u202e".encode()                         # right-to-left override
NOT_UTF8 = b"\xff\xfe"
ARGV = [b"true", TITLE, C1_CSI + b"31m", RLO + b"gnp.exe", NOT_UTF8, b"line\nbreak"]

CHILD = textwrap.dedent("""
    import ctypes, os, sys
    ctypes.CDLL(None).prctl(15, {title!r}, 0, 0, 0)  # PR_SET_NAME
    pid = os.fork()
    if pid == 0:
        os._exit(7)
    os.waitpid(pid, 0)
    os.execv(os.fsencode(sys.argv[1]), {argv!r})
""").format(title=TITLE, argv=ARGV)


def _assert_printable(data: bytes, what: str) -> str:
    text = data.decode("utf-8")  # escaped output is valid UTF-8
    for line in text.split("\n"):
        assert line.isprintable(), f"{what}: raw control in {line!r}"
    return text


@pytest.fixture
def hostile_run(tmp_path):
    link = os.path.join(os.fsencode(tmp_path), b"\xff" + TITLE + RLO + NOT_UTF8)
    os.symlink(b"/bin/true", link)
    rec = tmp_path / "hostile.jsonl"
    r = subprocess.run([CTRTRACE, "-w", str(rec), "--", sys.executable, "-c", CHILD,
                        os.fsdecode(link)], capture_output=True, timeout=60)
    assert r.returncode == 0, r.stderr.decode(errors="replace")
    return r, rec, link


@pytest.mark.bpf
def test_live_and_replayed_views_show_escapes(hostile_run):
    r, rec, link = hostile_run
    live = _assert_printable(r.stdout, "live text")
    # the comm set with prctl, on the fork and the exit of the child it forked
    assert "\\x1b]2;PWNED\\x07\\x1b[2J exit 7" in live
    assert "'\\x1b]2;PWNED\\x07\\x1b[2J' '\\u009b31m' '\\u202egnp.exe' '\\xff\\xfe' " \
           "'line\\nbreak'" in live
    assert "/\\xff\\x1b]2;PWNED\\x07\\x1b[2J\\u202e\\xff\\xfe] true" in live  # the path it ran

    replayed = subprocess.run([CTRTRACE, "replay", str(rec)], capture_output=True, timeout=60)
    assert replayed.returncode == 0
    # replay prints exactly what the live view printed
    assert _assert_printable(replayed.stdout, "replay") == live
    for view in ("--tree", "--ns"):
        out = subprocess.run([CTRTRACE, "replay", str(rec), view], capture_output=True,
                             timeout=60)
        assert out.returncode == 0
        _assert_printable(out.stdout, view)
    tree = subprocess.run([CTRTRACE, "replay", str(rec), "--tree"], capture_output=True,
                          timeout=60).stdout.decode()
    assert "true \\x1b]2;PWNED\\x07\\x1b[2J \\u009b31m" in tree


@pytest.mark.bpf
def test_recording_keeps_the_exact_bytes(hostile_run):
    _, rec, link = hostile_run
    # JSON escapes what is not printable (C1, bidi, ...) too: a terminal showing
    # the recording, or `replay --json`, sees no control
    _assert_printable(rec.read_bytes(), "recording")
    out = subprocess.run([CTRTRACE, "replay", "--json", str(rec)], capture_output=True,
                         timeout=60)
    assert out.returncode == 0 and out.stdout == rec.read_bytes()
    events = [json.loads(line) for line in rec.read_bytes().splitlines()[1:-1]]
    (ex,) = [e for e in events if e["type"] == "exec" and e["argv"][:1] == ["true"]]
    assert [base64.b64decode(a) for a in ex["argv_base64"]] == ARGV
    assert base64.b64decode(ex["filename_base64"]) == link
    assert ex["argv"][1] == TITLE.decode()  # valid UTF-8 stays text, controls and all
    # comm: the kernel keeps the first 15 bytes of the file's name
    assert base64.b64decode(ex["comm_base64"]) == os.path.basename(link)[:15] == b"\xff" + TITLE
    child_exit = [e for e in events if e["type"] == "exit" and e["exit_code"] == 7]
    assert child_exit and child_exit[0]["comm"] == TITLE.decode()


@pytest.mark.bpf
def test_processes_from_proc_keep_their_bytes_and_a_bounded_command_line():
    """A process alive at start-up: its /proc command line, not UTF-8 and 100 KB
    long, is in the header as an exec event would carry it, exactly."""
    long_arg = b"x" * 100_000
    proc = subprocess.Popen([b"sh", b"-c", b"sleep 30", NOT_UTF8 + TITLE, long_arg])
    try:
        r = subprocess.run([CTRTRACE, "--json", "-d", "0.1", "--no-docker"], capture_output=True,
                           timeout=60)
        assert r.returncode == 0, r.stderr
        header = json.loads(r.stdout.splitlines()[0])
        (p,) = [p for p in header["processes"] if p["pid"] == proc.pid]
        raw = [base64.b64decode(a) for a in p["argv_base64"]]
        assert raw[:4] == [b"sh", b"-c", b"sleep 30", NOT_UTF8 + TITLE]
        assert p["argv_truncated"] is True
        assert len(b"\0".join(raw)) == 2048  # bpf/ctrtrace.h CT_ARGS_MAX
        assert long_arg.startswith(raw[4])
    finally:
        proc.kill()
        proc.wait()


@pytest.mark.bpf
def test_json_view_straight_from_the_records(tmp_path):
    """--json alone: the same escapes and exact bytes as the recording."""
    link = os.path.join(os.fsencode(tmp_path), b"\xff" + TITLE + RLO + NOT_UTF8)
    os.symlink(b"/bin/true", link)
    r = subprocess.run([CTRTRACE, "--json", "--", sys.executable, "-c", CHILD,
                        os.fsdecode(link)], capture_output=True, timeout=60)
    assert r.returncode == 0, r.stderr.decode(errors="replace")
    _assert_printable(r.stdout, "--json")
    events = [json.loads(line) for line in r.stdout.splitlines()[1:-1]]
    (ex,) = [e for e in events if e["type"] == "exec" and e["argv"][:1] == ["true"]]
    assert [base64.b64decode(a) for a in ex["argv_base64"]] == ARGV
    assert base64.b64decode(ex["filename_base64"]) == link
    assert base64.b64decode(ex["comm_base64"]) == b"\xff" + TITLE
    assert [e for e in events if e["type"] == "exit" and e["comm"] == TITLE.decode()]


# Lookalikes of runtimes' helpers with odd arguments, run by an unprivileged
# user: their command lines are what the resolver reads to tie processes to
# containers (a monitor's -c/-n/-b, a shim's -namespace/-id, nspawn's -M/-D).
LOOKALIKES = r"""
t() { bash -c 'exec -a "$0" /bin/true "$@"' "$@"; }
t conmon -c
t conmon -c "" -b ""
t conmon -c x -b /
t conmon -c y -b /y/userdata -n "$(printf '\033]2;X\007')"
t conmon -c ../.. -b /tmp/../../userdata -n ""
t containerd-shim-runc-v2 -namespace
t containerd-shim-runc-v2 -id "" -namespace ../..
t containerd-shim-runc-v2 -namespace moby -id "$(printf '\377\376')"
t systemd-nspawn -M
t systemd-nspawn --machine= -D /
t systemd-nspawn -D ""
t lxc-start -n
t runc init
unshare -Urp --fork bash -c 'exec -a conmon /bin/sh -c "/bin/true" -c z -b /z/z/userdata'
"""


@pytest.mark.bpf
def test_lookalikes_of_runtime_helpers_are_traced_in_every_view(tmp_path):
    """Every view, live and replayed, of an unprivileged user's processes named
    like runtimes' helpers with missing, empty, hostile or odd arguments:
    no error, nothing unescaped; the ids they name are shown as they are,
    tied by lineage only (source "shim"), escaped."""
    rec = tmp_path / "lookalikes.jsonl"
    r = subprocess.run([CTRTRACE, "-w", str(rec), "--html", str(tmp_path / "l.html"),
                        "--dot", str(tmp_path / "l.dot"), "--", "setpriv", "--reuid=65534",
                        "--regid=65534", "--clear-groups", "bash", "-c", LOOKALIKES],
                       capture_output=True, timeout=60)
    assert r.returncode == 0, r.stderr.decode(errors="replace")
    assert b"Traceback" not in r.stderr
    live = _assert_printable(r.stdout, "live text")
    assert "[/bin/true] conmon -c x -b /  @podman:x" in live
    assert "@podman:\\x1b]2;X\\x07" in live and "@\\xff\\xfe" in live
    assert "[+pid +user]" in live  # the user's own namespaces, with a lookalike inside
    events = [json.loads(line) for line in rec.read_bytes().splitlines()[1:-1]]
    tied = {e["container"]["id"]: e["container"]["source"] for e in events
            if e.get("container")}
    assert tied.get("x") == tied.get("z") == "shim", tied
    for view in ("--tree", "--ns", "--explain"):
        out = subprocess.run([CTRTRACE, "replay", str(rec), view], capture_output=True,
                             timeout=60)
        assert out.returncode == 0 and b"Traceback" not in out.stderr, out.stderr
        _assert_printable(out.stdout, view)
