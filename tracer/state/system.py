"""Facts about the host: its namespaces, name, kernel and clocks.

(What it must offer before the BPF programs can load is checked in kernel/host.py.)
"""

from __future__ import annotations

import os
import time

from ..model.contract import NS_NAMES
from ..model.events import Namespaces


def read_ns(pid: int | str) -> Namespaces:
    """Namespace inodes of a live process from /proc (0 where unreadable).

    Each link reads "mnt:[4026531832]", the inode that stat() would give (and
    lsns shows), for less (bench/README.md): the link is not followed into
    nsfs."""
    values: dict[str, int] = dict.fromkeys(NS_NAMES, 0)
    try:
        fd = os.open(f"/proc/{pid}/ns", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return Namespaces(**values)
    try:
        for name in NS_NAMES:
            try:
                values[name] = int(os.readlink(name, dir_fd=fd).rpartition("[")[2][:-1])
            except (OSError, ValueError):
                pass
    finally:
        os.close(fd)
    return Namespaces(**values)


def host_namespaces() -> tuple[Namespaces, int]:
    """The host's namespaces and the pid they were read from.

    PID 1's, as lsns shows them.  Where PID 1 is not readable (it can hold
    capabilities that we lack, which ptrace's access check requires), kthreadd
    (PID 2) lives in the same initial namespaces and is used instead.
    """
    for pid in (1, 2):
        ns = read_ns(pid)
        if all(getattr(ns, n) for n in ("mnt", "pid", "net", "user")):
            return ns, pid
    return read_ns("self"), os.getpid()


def wall_offset_ns() -> int:
    """Wall clock minus CLOCK_MONOTONIC (what bpf_ktime_get_ns reads): the boot time."""
    best = None
    for _ in range(3):  # take the tightest of a few samples
        before = time.monotonic_ns()
        wall = time.time_ns()
        after = time.monotonic_ns()
        if best is None or after - before < best[0]:
            best = (after - before, wall - (before + after) // 2)
    assert best is not None
    return best[1]


def hostname() -> str:
    return os.uname().nodename


def kernel_release() -> str:
    return os.uname().release
