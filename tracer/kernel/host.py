"""What a load needs from the host (privileges, BTF, tracefs) and what
decides it (LoadConfig, and the rodata tunables made from it): the same for
both backends, CO-RE's (loader.py) and bcc's (bcc.py).

Imported before everything else on the way to tracing: keep its imports
light.
"""

from __future__ import annotations

import os
from typing import NamedTuple

from ..model.errors import CtrtraceError, ExitStatus
from . import corebtf, layout

# room for thousands of records while the reader is away (bench/README.md,
# "Where the code's choices come from"); it counts in the RSS once used
DEFAULT_RINGBUF_BYTES = 4 << 20
# When the waiting data grows past this fraction of the ring buffer, the
# kernel wakes the reader if it waits (rb_flags in the BPF program).  A
# safety net: the reader comes back within session.BATCH_MS of each drain
# anyway, and the rest of the buffer holds what comes meanwhile.
WAKEUP_FRACTION = 16

BTF_PATH = corebtf.KERNEL_BTF
TRACEFS_PATHS = ("/sys/kernel/tracing", "/sys/kernel/debug/tracing")

CAP_SYS_ADMIN = 21
CAP_PERFMON = 38
CAP_BPF = 39


class KernelFilters(NamedTuple):
    """What the programs drop before writing a record (the same rules as the
    view's filters, commands/filters.py, which hold these and more)."""

    pid: int | None = None          # that process and its descendants
    comm: str | None = None         # tasks whose comm is exactly this
    ns_changes: bool = False        # only namespace creation, entry, or difference


BACKENDS = ("auto", "core", "bcc")


class LoadConfig(NamedTuple):
    """What decides the loaded programs: rodata tunables, the ring buffer size, the object."""

    filters: KernelFilters = KernelFilters()
    threads: bool = False           # also emit CLONE_THREAD children
    ringbuf_bytes: int = DEFAULT_RINGBUF_BYTES
    bpf_object: str | None = None   # default: the one installed with the package
    backend: str = "auto"           # "core", "bcc", or "auto": CO-RE where it can load


def ringbuf_size(n: int) -> int:
    """Ring buffers must be a power-of-two number of pages."""
    page = os.sysconf("SC_PAGE_SIZE")
    size = page
    while size < n:
        size *= 2
    return size


# -- what the host must offer ---------------------------------------------------

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


def _tracefs_state(path: str) -> str:
    """"ok" (its events directory is there and we may look in it), "denied"
    (something on the way is closed to us), or "absent"."""
    try:
        st = os.stat(os.path.join(path, "events"))
    except PermissionError:
        return "denied"
    except OSError:
        return "absent"
    return "ok" if st.st_mode & 0o170000 == 0o040000 else "absent"


def _closed_dir(path: str) -> tuple[str, int, int]:
    """The first directory on the way to path's events that we cannot search:
    (its path, mode, owner's uid)."""
    events = os.path.join(path, "events")
    parts = events.strip("/").split("/")
    for i in range(len(parts)):
        d = "/" + "/".join(parts[:i + 1])
        try:
            st = os.stat(d)
        except OSError:
            break
        if not os.access(d, os.X_OK, effective_ids=os.access in os.supports_effective_ids):
            return d, st.st_mode & 0o7777, st.st_uid
    st = os.stat(path)  # the usual case: tracefs's root is 0700 root
    return path, st.st_mode & 0o7777, st.st_uid


def tracefs_denied(path: str) -> CtrtraceError:
    """tracefs is mounted but closed to us: libbpf could not read the syscall
    tracepoints' ids in it (EACCES).  Root, CAP_DAC_READ_SEARCH (or
    CAP_DAC_OVERRIDE), or a tracefs mounted with a mode or gid that lets us
    in, can."""
    try:
        where, mode, uid = _closed_dir(path)
        what = f"{where} is mode {mode:04o}, owner uid {uid}"
    except OSError:
        what = f"{path} is closed to uid {os.geteuid()}"
    return CtrtraceError(
        f"cannot read the syscall tracepoints' ids in tracefs ({what}): run as root, "
        "add CAP_DAC_READ_SEARCH to CAP_BPF and CAP_PERFMON, or mount tracefs with "
        f"a mode or gid that lets uid {os.geteuid()} in",
        ExitStatus.PERMISSION,
    )


def ensure_tracefs() -> str:
    """The syscall tracepoints are attached through tracefs; mount it if absent."""
    denied = None
    for path in TRACEFS_PATHS:
        state = _tracefs_state(path)
        if state == "ok":
            return path
        if state == "denied" and denied is None:
            denied = path
    if denied is not None:
        # mounted, or behind a directory closed to us: mounting would not help
        raise tracefs_denied(denied)
    import subprocess  # rarely needed: not worth its import time on every start

    target = TRACEFS_PATHS[0]
    err = ""
    try:
        r = subprocess.run(["mount", "-t", "tracefs", "tracefs", target],
                           capture_output=True, text=True, timeout=10)
        err = r.stderr.strip()
    except (OSError, subprocess.SubprocessError) as e:
        err = str(e)
    if _tracefs_state(target) == "ok":
        return target
    err = " ".join(err.split())  # mount's message spans lines: the error is one
    raise CtrtraceError(
        f"tracefs is not mounted and mounting it failed ({err or 'unknown error'}): "
        f"run 'mount -t tracefs tracefs {target}'",
        ExitStatus.ENVIRONMENT,
    )


# -- what decides a load ------------------------------------------------------------

def config_for(options: LoadConfig, rb_size: int) -> layout.CtConfig:
    """The rodata tunables: fixed at load, so the verifier prunes what is off."""
    cfg = layout.CtConfig()
    cfg.wakeup_bytes = rb_size // WAKEUP_FRACTION
    cfg.ignore_tgid = os.getpid()
    cfg.filter_pid = options.filters.pid is not None
    cfg.ns_changes_only = options.filters.ns_changes
    cfg.emit_threads = options.threads
    if options.filters.comm:
        comm = options.filters.comm.encode()
        if len(comm) >= layout.CT_COMM_LEN:
            # the kernel keeps 15 bytes of a command name
            comm = comm[:layout.CT_COMM_LEN - 1]
        cfg.filter_comm = 1
        cfg.comm = comm
    return cfg


def check_host(options: LoadConfig) -> None:
    """What every backend needs: privileges, and the process --pid names."""
    check_privileges()
    pid = options.filters.pid
    if pid is not None and not os.path.exists(f"/proc/{pid}"):
        raise CtrtraceError(f"no process with pid {pid}", ExitStatus.USAGE)
