"""The kernel's filtered counter counts every event a kernel-side filter drops,
failed execs and setns/unshare calls included.

The counter is the whole machine's: other processes' events that the filter
drops count too.  Each check therefore makes many more of its own events than
the machine makes in the same moment, and tries a few times before it calls
background noise a miscount.
"""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import textwrap

import pytest

from tracer.model.events import ExecEvent, UnshareEvent

pytestmark = pytest.mark.bpf

N = 2000  # failing execs per child: far more than the machine's other events meanwhile
COMM = "ct-hard-filt"

# A child that names itself, then calls execve (or unshare) N times, each failing.
CHILD = textwrap.dedent("""
    import ctypes, os, sys
    comm, what, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    with open("/proc/self/comm", "w") as f:
        f.write(comm)
    libc = ctypes.CDLL(None, use_errno=True)
    for _ in range(n):
        if what == "exec":
            try:
                os.execv("/nonexistent/ctrtrace-hardening", ["ctrtrace-hardening", "x"])
            except OSError:
                pass
        else:
            libc.unshare(-1)  # EINVAL: every flag set
    sys.stdout.write("done\\n")
""")


def _filtered(cap) -> int:
    return cap.session.summary().filtered_in_kernel


def _run_child(comm: str, what: str, n: int) -> None:
    r = subprocess.run([sys.executable, "-c", CHILD, comm, what, str(n)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout == "done\n", r.stderr


def _delta_of(cap, comm: str, what: str, n: int) -> int:
    """How much the filtered counter grows while a child makes n failing calls."""
    cap.poll(0.05)
    before = _filtered(cap)
    _run_child(comm, what, n)
    cap.poll(0.05)
    return _filtered(cap) - before


def _assert_counts(cap, comm: str, what: str) -> None:
    # n, and the child's own fork, exec and exit (on a quiet machine exactly
    # that); other processes' events may add some, not as much again
    deltas = []
    for _ in range(3):
        d = _delta_of(cap, comm, what, N)
        deltas.append(d)
        if N + 3 <= d < N + N // 4:
            return
    raise AssertionError(f"filtered counter grew by {deltas} for {N} filtered {what} calls each")


def test_failed_execs_dropped_by_the_comm_filter_are_counted(capture):
    cap = capture(comm=COMM)
    _assert_counts(cap, "other-comm", "exec")


def test_failed_execs_of_the_wanted_comm_are_events_not_filtered(capture):
    cap = capture(comm=COMM)
    _run_child(COMM, "exec", 50)
    cap.finish()
    failed = [e for e in cap.events if isinstance(e, ExecEvent) and e.ret == -errno.ENOENT
              and e.filename == "/nonexistent/ctrtrace-hardening"]
    assert len(failed) == 50
    assert all(e.comm == COMM for e in failed)


def test_failed_execs_dropped_by_ns_changes_are_counted(capture):
    cap = capture(ns_changes=True)
    _assert_counts(cap, "other-comm", "exec")


def test_unshare_calls_dropped_by_the_comm_filter_are_counted(capture):
    cap = capture(comm=COMM)
    _assert_counts(cap, "other-comm", "unshare")


def test_unshare_calls_of_the_wanted_comm_are_events(capture):
    cap = capture(comm=COMM)
    _run_child(COMM, "unshare", 20)
    cap.finish()
    calls = [e for e in cap.events if isinstance(e, UnshareEvent) and e.ret == -errno.EINVAL
             and e.comm == COMM]
    assert len(calls) == 20


def test_the_tracer_itself_is_not_an_event(capture):
    cap = capture()
    try:
        os.execv("/nonexistent/ctrtrace-self", ["x"])
    except OSError:
        pass
    cap.finish()
    assert not [e for e in cap.events if e.pid == os.getpid()
                and isinstance(e, ExecEvent) and e.ret != 0]
