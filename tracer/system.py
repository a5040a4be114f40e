"""What the host must offer before the BPF programs can load, and facts about it.

Each check raises CtrtraceError with one line saying what is wrong and what
to do, so the command never ends in a traceback.
"""

from __future__ import annotations

import os
import platform
import socket
import subprocess
import time
from typing import Dict

from .errors import CtrtraceError, ExitStatus
from .events import Namespaces
from .layout import NS_NAMES

BTF_PATH = "/sys/kernel/btf/vmlinux"
TRACEFS_PATHS = ("/sys/kernel/tracing", "/sys/kernel/debug/tracing")

CAP_SYS_ADMIN = 21
CAP_PERFMON = 38
CAP_BPF = 39


def effective_caps(status_path: str = "/proc/self/status") -> int:
    with open(status_path) as f:
        for line in f:
            if line.startswith("CapEff:"):
                return int(line.split()[1], 16)
    return 0


def check_privileges(caps: int | None = None) -> None:
    caps = effective_caps() if caps is None else caps

    def has(bit: int) -> bool:
        return bool(caps & (1 << bit))

    if has(CAP_SYS_ADMIN) or (has(CAP_BPF) and has(CAP_PERFMON)):
        return
    raise CtrtraceError(
        "tracing needs root (or CAP_BPF and CAP_PERFMON): run it with sudo; "
        "'ctrtrace replay FILE' needs no privileges",
        ExitStatus.PERMISSION,
    )


def check_btf(path: str | None = None) -> None:
    path = path or BTF_PATH
    if not os.path.exists(path):
        raise CtrtraceError(
            f"this kernel has no BTF ({path} is missing): ctrtrace needs a kernel "
            "built with CONFIG_DEBUG_INFO_BTF=y (standard on current distributions)",
            ExitStatus.ENVIRONMENT,
        )


def _tracefs_mounted(path: str) -> bool:
    return os.path.isdir(os.path.join(path, "events"))


def ensure_tracefs() -> str:
    """The syscall tracepoints are attached through tracefs; mount it if absent."""
    for path in TRACEFS_PATHS:
        if _tracefs_mounted(path):
            return path
    target = TRACEFS_PATHS[0]
    err = ""
    try:
        r = subprocess.run(["mount", "-t", "tracefs", "tracefs", target],
                           capture_output=True, text=True, timeout=10)
        err = r.stderr.strip()
    except (OSError, subprocess.SubprocessError) as e:
        err = str(e)
    if _tracefs_mounted(target):
        return target
    raise CtrtraceError(
        f"tracefs is not mounted and mounting it failed ({err or 'unknown error'}): "
        f"run 'mount -t tracefs tracefs {target}'",
        ExitStatus.ENVIRONMENT,
    )


def read_ns(pid: int | str) -> Namespaces:
    """Namespace inodes of a live process from /proc (0 where unreadable)."""
    values: Dict[str, int] = {}
    for name in NS_NAMES:
        try:
            values[name] = os.stat(f"/proc/{pid}/ns/{name}").st_ino
        except OSError:
            values[name] = 0
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
        a = time.monotonic_ns()
        w = time.time_ns()
        b = time.monotonic_ns()
        if best is None or b - a < best[0]:
            best = (b - a, w - (a + b) // 2)
    assert best is not None
    return best[1]


def hostname() -> str:
    return socket.gethostname()


def kernel_release() -> str:
    return platform.release()
