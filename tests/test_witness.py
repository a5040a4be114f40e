"""psutil, an independent reader of /proc, as a witness: what ctrtrace reads
of the processes alive at start-up, and what the kernel reports at events,
agree with it."""

from __future__ import annotations

import os
import subprocess
import time

import psutil
import pytest

from tracer.model.events import ExecEvent, ForkEvent
from tracer.state.proctable import TICK_NS, read_process

pytestmark = pytest.mark.root  # every process's /proc files, as ctrtrace reads them

# psutil's boot time is /proc/stat's btime, in whole seconds: a start time
# from it is known to a second; ours to the clock tick
_SECOND = 1_000_000_000


def _start_ns(p: psutil.Process) -> int:
    return int((p.create_time() - psutil.boot_time()) * _SECOND)


def test_the_start_up_snapshot_agrees_with_psutil():
    """Every process /proc lists, read as the recording's header reads it:
    parent, command line, real uid and start time as psutil has them."""
    checked = 0
    for p in psutil.process_iter():
        ours = read_process(p.pid)
        try:
            with p.oneshot():
                theirs = (p.ppid(), p.cmdline(), p.uids().real, _start_ns(p))
        except (psutil.NoSuchProcess, psutil.ZombieProcess):
            continue
        if ours is None:
            continue  # gone between the two reads
        ppid, cmdline, uid, start = theirs
        assert ours.ppid == ppid, p
        if not ours.argv_truncated:
            assert list(ours.argv) == cmdline, p
        assert ours.uid == uid, p
        assert abs(ours.start_ns - start) < _SECOND + TICK_NS, p
        checked += 1
    assert checked > 20


@pytest.mark.bpf
def test_events_agree_with_psutil(capture):
    """A command's fork and exec, from the kernel, against psutil's view of
    the same processes while they run."""
    cap = capture()
    shell = subprocess.Popen(["sh", "-c", "sleep 5 & wait"])
    sleeper: psutil.Process | None = None
    try:
        deadline = time.monotonic() + 5
        while not psutil.Process(shell.pid).children() and time.monotonic() < deadline:
            time.sleep(0.01)
        sleeper = psutil.Process(shell.pid).children()[0]
        ex = cap.wait_for(lambda e: isinstance(e, ExecEvent) and e.pid == sleeper.pid
                          and e.argv[:1] == ("sleep",))
        fork = next(e for e in cap.events if isinstance(e, ForkEvent) and e.pid == sleeper.pid)
        with sleeper.oneshot():
            assert (ex.ppid, list(ex.argv), ex.uid, ex.gid) == (
                sleeper.ppid(), sleeper.cmdline(), sleeper.uids().real, sleeper.gids().real)
            assert ex.comm == sleeper.name() and ex.vpid == sleeper.pid
            assert abs(ex.start_ns - _start_ns(sleeper)) < _SECOND + TICK_NS
        assert fork.parent_pid == shell.pid == fork.ppid
        assert fork.start_ns == ex.start_ns  # one process, one start
        assert os.readlink(f"/proc/{sleeper.pid}/ns/pid") == f"pid:[{ex.ns.pid}]"
    finally:
        if sleeper is not None:
            sleeper.kill()  # the shell reaps it and ends
        else:
            shell.kill()
        shell.wait(timeout=5)
