"""Hostile neighbours and failing outputs.

ctrtrace runs as root: a recording goes where it was told and nowhere else
(not through a symbolic link or a hard link another user planted, not into
a file another user owns), created readable by root only.  A full disk,
/dev/full or a closed pipe ends the trace with one line and a documented
status, a recording that replays up to its last whole line, and no command
left running."""

from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time

import pytest
from click.testing import CliRunner
from conftest import NOBODY

from tracer.cli import main

pytestmark = pytest.mark.bpf

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")


def run(*args):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def ctrtrace(*args: str, **kw) -> subprocess.CompletedProcess:
    kw.setdefault("stdout", subprocess.DEVNULL)
    kw.setdefault("timeout", 60)
    return subprocess.run([sys.executable, "-m", "tracer", *args], stderr=subprocess.PIPE,
                          text=True, **kw)


def running(*argv: str) -> list:
    """Pids of live processes whose command line is argv."""
    want = "\0".join(argv).encode() + b"\0"
    found = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/cmdline", "rb") as f:
                    if f.read() == want:
                        found.append(int(name))
            except OSError:
                pass
    return found


@pytest.fixture
def shared(tmp_path):
    """A directory like /tmp: everyone creates, only owners remove."""
    d = tmp_path / "shared"
    d.mkdir()
    os.chmod(d, 0o1777)
    return d


@pytest.fixture
def victim(tmp_path):
    v = tmp_path / "victim"
    v.write_text("precious\n")
    os.chmod(v, 0o644)
    return v


def untouched(victim) -> None:
    assert victim.read_text() == "precious\n"
    assert stat.S_IMODE(victim.stat().st_mode) == 0o644


def one_error(stderr: str, message: str) -> None:
    assert "Traceback" not in stderr, stderr
    lines = stderr.splitlines()
    assert lines[-1] == f"ctrtrace: error: {message}", stderr
    assert sum("error" in line for line in lines) == 1, stderr


# -- where recordings go -------------------------------------------------------


@pytest.mark.parametrize("owner", [0, NOBODY])
def test_a_symlink_at_the_name_is_not_followed(shared, victim, owner):
    link = shared / "t.jsonl"
    os.symlink(victim, link)
    os.lchown(link, owner, owner)
    r = run("-w", str(link), "-d", "0.1")
    assert r.exit_code == 1
    why = (f"it exists and belongs to uid {owner}" if owner
           else "it is a symbolic link (give its target's name)")
    one_error(r.stderr, f"cannot write {link}: {why}")
    untouched(victim)
    assert os.readlink(link) == str(victim)


def test_a_file_another_user_made_is_not_written_into(shared):
    planted = shared / "t.jsonl"
    planted.write_text("")
    os.chown(planted, NOBODY, NOBODY)
    os.chmod(planted, 0o666)
    r = run("-w", str(planted), "-d", "0.1")
    assert r.exit_code == 1
    one_error(r.stderr, f"cannot write {planted}: it exists and belongs to uid {NOBODY}")
    assert planted.read_text() == "" and planted.stat().st_uid == NOBODY
    assert sorted(os.listdir(shared)) == ["t.jsonl"]  # no temporary file left


def test_a_fifo_another_user_made_is_refused_at_once(shared):
    """Not opened (which would wait for a reader: the one who made it)."""
    fifo = shared / "t.jsonl"
    os.mkfifo(fifo)
    os.chown(fifo, NOBODY, NOBODY)
    r = ctrtrace("-w", str(fifo), "-d", "0.1", timeout=20)
    assert r.returncode == 1
    one_error(r.stderr, f"cannot write {fifo}: it exists and belongs to uid {NOBODY}")


def test_a_hard_link_to_our_file_is_replaced_not_written_through(shared, victim):
    """A hard link to a file of root's (which anyone can make where
    fs.protected_hardlinks is off) is replaced by a new file."""
    os.link(victim, shared / "t.jsonl")
    rec = shared / "t.jsonl"
    r = run("-w", str(rec), "-d", "0.1")
    assert r.exit_code == 0, r.stderr
    untouched(victim)
    st = rec.stat()
    assert st.st_nlink == 1 and st.st_uid == 0 and stat.S_IMODE(st.st_mode) == 0o600
    assert run("replay", str(rec)).exit_code == 0


@pytest.mark.parametrize("suffix", [".jsonl", ".jsonl.gz"])
def test_a_recording_is_ours_private_and_replays(shared, suffix):
    rec = shared / f"t{suffix}"
    old = shared / f"old{suffix}"
    old.write_text("an older recording of ours\n")
    os.chmod(old, 0o644)
    for path in (rec, old):  # new, and replacing our own file
        r = run("-w", str(path), "-d", "0.2")
        assert r.exit_code == 0, r.stderr
        st = path.stat()
        assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (0, 0o600)
        replayed = run("replay", "--json", str(path))
        assert replayed.exit_code == 0, replayed.stderr
        assert json.loads(replayed.stdout.splitlines()[-1])["type"] == "summary"
    assert sorted(os.listdir(shared)) == sorted([rec.name, old.name])


def test_the_recording_has_its_name_while_the_trace_runs(tmp_path):
    rec = tmp_path / "t.jsonl"
    p = subprocess.Popen([sys.executable, "-m", "tracer", "-w", str(rec)],
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        while "tracing on" not in p.stderr.readline():
            assert p.poll() is None, p.stderr.read()
        with open(rec, "rb") as f:
            assert json.loads(f.readline())["type"] == "header"
    finally:
        p.send_signal(signal.SIGTERM)
        p.communicate(timeout=20)
    assert p.returncode == 0


def test_devices(tmp_path):
    """Written as they are: never created, truncated, or given our mode."""
    modes = {dev: os.stat(dev).st_mode for dev in ("/dev/null", "/dev/full")}
    r = run("-w", "/dev/null", "-d", "0.1")
    assert r.exit_code == 0, r.stderr
    r = run("-w", "/dev/full", "-d", "0.1")
    assert r.exit_code == 1
    one_error(r.stderr, "cannot write /dev/full: No space left on device")
    assert {dev: os.stat(dev).st_mode for dev in modes} == modes


# -- outputs that fail ---------------------------------------------------------


@pytest.fixture
def small_fs(tmp_path):
    """mount(size) -> a file system that fills up: a tmpfs of that size."""
    def mount(size: str):
        d = tmp_path / f"small-{size}"
        d.mkdir()
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(d)],
                       check=True)
        mounted.append(d)
        return d

    mounted: list = []
    yield mount
    for d in mounted:
        subprocess.run(["umount", str(d)], check=False)


@pytest.mark.parametrize("suffix", [".jsonl", ".jsonl.gz"])
def test_a_recording_that_fills_the_disk(small_fs, suffix):
    """The trace stops, the command with it; the summary and one error line;
    the file replays up to its last whole batch."""
    # 1 MiB: the header lists every process alive, from tens of KiB to some
    # hundreds where many run with long command lines; the execs fill the rest
    rec = small_fs("1m") / f"t{suffix}"
    marker = f"fill-{os.getpid()}"
    # execs with long, varied command lines: a few thousand fill it, compressed too
    loop = (f"i=0; while :; do i=$((i+1)); /bin/true {marker} $i $((i*7919)) $((i*104729)) "
            f"$(printf %0200d $i); done")
    start = time.monotonic()
    r = ctrtrace("-w", str(rec), "--", "sh", "-c", loop)
    assert time.monotonic() - start < 50
    assert r.returncode == 1
    one_error(r.stderr, f"cannot write {rec}: No space left on device")
    assert r.stderr.splitlines()[-2].startswith("ctrtrace: ") and " events (" in r.stderr
    assert not running("sh", "-c", loop)
    data = rec.read_bytes()
    assert len(data) > 64 << 10
    if suffix == ".jsonl":
        assert data.endswith(b"\n")  # whole lines only
        replayed = run("replay", "--json", str(rec))
        assert replayed.exit_code == 0, replayed.stderr
        assert "no summary line" in replayed.stderr
    else:  # the compressed stream ends at a sync point, without its trailer
        replayed = run("replay", "--json", "--skip-bad", str(rec))
        assert replayed.exit_code == 0, replayed.stderr
        assert "1 bad lines skipped" in replayed.stderr or "bad lines" not in replayed.stderr
    events = [json.loads(line) for line in replayed.stdout.splitlines()]
    assert sum(marker in e.get("argv", []) for e in events) > 10


def test_a_header_that_does_not_fit_leaves_no_file(small_fs):
    d = small_fs("4k")
    rec = d / "t.jsonl"
    r = ctrtrace("-w", str(rec), "-d", "0.1")
    assert r.returncode == 1
    one_error(r.stderr, f"cannot write {rec}: No space left on device")
    assert os.listdir(d) == []


@pytest.mark.parametrize("view", ["text", "json"])
def test_a_full_standard_output(tmp_path, view):
    """--json > /dev/full, or the text view: the summary goes to stderr, one
    error line; the recording still ends with its summary."""
    rec = tmp_path / "t.jsonl"
    args = ["--json"] if view == "json" else []
    with open("/dev/full", "wb") as full:
        r = ctrtrace(*args, "-w", str(rec), "--", "sh", "-c", "/bin/true; sleep 0.2",
                     stdout=full)
    assert r.returncode == 1
    one_error(r.stderr, "cannot write standard output: No space left on device")
    assert " events (" in r.stderr.splitlines()[-2]
    replayed = run("replay", "--json", str(rec))
    assert replayed.exit_code == 0, replayed.stderr
    assert json.loads(replayed.stdout.splitlines()[-1])["type"] == "summary"


# -- a reader that goes away ---------------------------------------------------


def _pipe(*args: str) -> subprocess.Popen:
    p = subprocess.Popen([sys.executable, "-m", "tracer", *args],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert p.stdout.readline(), p.stderr.read()  # the column headings: the trace runs
    return p


def test_head_ends_the_command_too(tmp_path):
    """ctrtrace -- sh -c '...' | head -1: the command is ended (a shell's
    child too), its end waited for, and the status is 141 (128 + SIGPIPE);
    the recording ends cleanly."""
    rec = tmp_path / "t.jsonl"
    # not "exec sleep": the shell forks it, and it is the shell's child that must not remain
    p = _pipe("-w", str(rec), "--", "sh", "-c", "sleep 31.7; :")
    start = time.monotonic()
    p.stdout.close()  # like head -1 going away after its line
    try:
        assert p.wait(timeout=20) == 128 + signal.SIGPIPE
    finally:
        err = p.stderr.read()
    assert time.monotonic() - start < 10
    assert "Traceback" not in err and "error" not in err, err
    assert not running("sleep", "31.7")
    replayed = run("replay", "--json", str(rec))
    assert replayed.exit_code == 0, replayed.stderr
    assert json.loads(replayed.stdout.splitlines()[-1])["type"] == "summary"


def test_head_after_the_command_ended_keeps_its_status():
    p = _pipe("--linger", "10", "--", "sh", "-c", "echo done >&2; exit 3")
    while "done" not in p.stderr.readline():
        assert p.poll() is None
    time.sleep(0.3)  # the command has exited; ctrtrace lingers
    p.stdout.close()
    try:
        assert p.wait(timeout=5) == 3
    finally:
        err = p.stderr.read()
    assert "Traceback" not in err and "error" not in err, err


def test_a_closed_pipe_is_noticed_without_output():
    """Nothing to write does not keep ctrtrace waiting on a pipe nobody reads."""
    p = _pipe()
    p.stdout.close()
    try:
        assert p.wait(timeout=5) == 0
    finally:
        err = p.stderr.read()
    assert "Traceback" not in err and "error" not in err, err


@pytest.mark.parametrize("option", ["--dot", "--html"])
def test_a_user_replaying_replaces_its_own_file_it_cannot_read(ctrtrace_as_nobody, option):
    """An output is written, not read: a user's own write-only file at the
    name is replaced (not refused as unreadable), with the user's own file."""
    d = tempfile.mkdtemp(prefix="ctrtrace-out-")
    try:
        os.chown(d, NOBODY, NOBODY)
        rec = os.path.join(d, "run.jsonl")
        shutil.copy(os.path.join(DATA, "docker-run.jsonl"), rec)
        os.chmod(rec, 0o644)
        out = os.path.join(d, "out")
        with open(out, "w") as f:
            f.write("old\n")
        os.chown(out, NOBODY, NOBODY)
        os.chmod(out, 0o200)
        r = ctrtrace_as_nobody("-all", "replay", rec, option, out)
        assert r.returncode == 0, r.stderr
        st = os.stat(out)
        assert st.st_uid == NOBODY and stat.S_IMODE(st.st_mode) & 0o400
        with open(out) as f:
            text = f.read()
        assert text != "old\n" and "sleep-container" in text
    finally:
        shutil.rmtree(d)
