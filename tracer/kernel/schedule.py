"""How the reader shares the CPU with the workload it traces.

Under an exec storm the reader drains the ring buffer in batches (session.py,
BATCH_MS), long stretches of Python (bench/README.md, "Where the code's
choices come from").  The kernel's fair scheduler (EEVDF, Linux 6.6+)
lets a task it has just picked run out its slice before a waking task of
the same slice may take the CPU, so a fork or an exit of the traced
workload that lands on the reader's CPU waits for the batch to end: the
workload runs slower although the reader's CPU time is what it was
(bench/README.md, "The reader gives way").

A long slice for the reader (sched_attr.sched_runtime, Linux 6.12+) turns
that round: a waking task with a shorter slice preempts it at once, and of
the tasks waiting for a CPU the reader, whose deadline is the latest, goes
last.  Its fair share of the CPU is what it was, so under a load that fills
every CPU it still keeps up.  RESET_ON_FORK gives the traced command
(-- CMD), and every thread started later, the default slice again.

The one difference between kernels: before 6.12, sched_setattr ignores the
slice of a SCHED_OTHER task, and nothing changes.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
from collections.abc import Iterator

READER_SLICE_NS = 100_000_000  # the longest the kernel takes
_SLICE_ENV = "CTRTRACE_READER_SLICE_US"  # for benchmarks: another slice, 0 the default

# sched_setattr, sched_getattr: the generic numbers, and x86-64's
_SYSCALLS = {"x86_64": (314, 315), "aarch64": (274, 275), "riscv64": (274, 275)}
_FAIR_POLICIES = (0, 3)  # SCHED_OTHER, SCHED_BATCH (a SCHED_IDLE reader gives way already)
_RESET_ON_FORK = 0x01


class _SchedAttr(ctypes.Structure):
    """struct sched_attr as of Linux 3.14 (SCHED_ATTR_SIZE_VER0); later fields
    stay the kernel's defaults."""

    _fields_ = [("size", ctypes.c_uint32), ("sched_policy", ctypes.c_uint32),
                ("sched_flags", ctypes.c_uint64), ("sched_nice", ctypes.c_int32),
                ("sched_priority", ctypes.c_uint32), ("sched_runtime", ctypes.c_uint64),
                ("sched_deadline", ctypes.c_uint64), ("sched_period", ctypes.c_uint64)]


def reader_slice_ns() -> int:
    """The slice to ask for: READER_SLICE_NS, or $CTRTRACE_READER_SLICE_US."""
    value = os.environ.get(_SLICE_ENV)
    if value is None:
        return READER_SLICE_NS
    try:
        return max(0, int(value)) * 1000
    except ValueError:
        return READER_SLICE_NS


def _libc_syscalls():
    numbers = _SYSCALLS.get(os.uname().machine)
    return (ctypes.CDLL(None, use_errno=True), *numbers) if numbers else None


def _get(sc) -> _SchedAttr | None:
    libc, _, getattr_nr = sc
    attr = _SchedAttr()
    if libc.syscall(getattr_nr, 0, ctypes.byref(attr), ctypes.sizeof(attr), 0) != 0:
        return None
    attr.size = ctypes.sizeof(attr)
    return attr


def _set(sc, attr: _SchedAttr) -> bool:
    libc, setattr_nr, _ = sc
    return libc.syscall(setattr_nr, 0, ctypes.byref(attr), 0) == 0


@contextlib.contextmanager
def giving_way(slice_ns: int) -> Iterator[int | None]:
    """A slice of slice_ns for the calling thread while in the block (0: leave
    it be); the thread's own settings again after it.

    Its nice value and policy stay; a real-time or deadline policy (chrt)
    is left alone.  Gives the slice in force as the kernel reports it (0
    from a kernel before 6.12, which has no slice to report), or None where
    it could not be asked.
    """
    sc = _libc_syscalls() if slice_ns else None
    old = _get(sc) if sc else None
    if old is None or old.sched_policy not in _FAIR_POLICIES:
        yield None
        return
    new = _SchedAttr.from_buffer_copy(old)
    new.sched_runtime = slice_ns
    new.sched_flags = _RESET_ON_FORK  # and no flag that needs a longer sched_attr
    if not _set(sc, new):
        yield None
        return
    try:
        now = _get(sc)
        yield None if now is None else int(now.sched_runtime)
    finally:
        old.sched_flags &= _RESET_ON_FORK
        _set(sc, old)  # the slice it had, as a slice of its own: the same length
