"""Getting the BPF programs into the kernel: the host's prerequisites, then
libbpf on a thread of its own.

Loading is libbpf and the verifier, in C with the GIL released, so it runs
while the rest of ctrtrace is imported and the session is set up: the
command starts a ProgramLoader as soon as its options are parsed and the
Session takes the loaded object from it.  The thread also attaches the
programs as soon as they are loaded, so that events are captured (and wait
in the ring buffer) from then on, not from when the session is ready to
read them.  The checks that need no loading (privileges, BTF, tracefs, the
object file) run first, on the caller's thread, so that their one-line
errors come at once.

This module is imported before everything else on the way to tracing:
keep its imports light.
"""

from __future__ import annotations

import ctypes
import os
import threading
import time
from typing import NamedTuple, Protocol

from ..model.errors import CtrtraceError, ExitStatus
from . import corebtf, layout
from .libbpf import BpfObject

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


def default_object_path() -> str:
    env = os.environ.get("CTRTRACE_BPF_OBJECT")
    if env:
        return env
    # installed with the package, in tracer/bpf/
    package = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    return os.path.join(package, "bpf", "ctrtrace.bpf.o")


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


# -- loading --------------------------------------------------------------------

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


def _open(path: str, options: LoadConfig, btf: corebtf.CoreBtf) -> BpfObject:
    """The object opened and configured, ready to load."""
    obj = BpfObject(path, btf.path)
    try:
        rb_size = ringbuf_size(options.ringbuf_bytes)
        cfg = config_for(options, rb_size)
        rodata = obj.rodata()
        if len(rodata) < ctypes.sizeof(cfg):
            raise CtrtraceError("the BPF object's .rodata is smaller than its config",
                                ExitStatus.BPF)
        ctypes.memmove(rodata, ctypes.byref(cfg), ctypes.sizeof(cfg))
        obj.set_max_entries("events", rb_size)
    except BaseException:
        obj.close()
        raise
    return obj


def check_host(options: LoadConfig) -> None:
    """What every backend needs: privileges, and the process --pid names."""
    check_privileges()
    pid = options.filters.pid
    if pid is not None and not os.path.exists(f"/proc/{pid}"):
        raise CtrtraceError(f"no process with pid {pid}", ExitStatus.USAGE)


class ProgramLoader:
    """Checks the host and opens the object now; loads and attaches it on a
    thread; result() waits."""

    backend = "core"

    def __init__(self, options: LoadConfig) -> None:
        self.options = options
        check_host(options)
        check_btf()
        self.path = options.bpf_object or default_object_path()
        if not os.path.exists(self.path):
            raise CtrtraceError(
                f"the BPF object is missing ({self.path}): reinstall ctrtrace, or build it "
                "with 'make -C bpf'", ExitStatus.ENVIRONMENT)
        ensure_tracefs()
        # Everything but the load itself happens here: the thread then makes a
        # single long C call and needs the GIL (which the importing main thread
        # holds, handing it over once a switch interval at best,
        # sys.getswitchinterval()) only once, at its end.
        self.core_btf = corebtf.for_object(self.path)
        self._obj: BpfObject | None = _open(self.path, options, self.core_btf)
        self._loaded = False
        self._taken = False
        self.start_ktime_ns = 0  # CLOCK_MONOTONIC just before the first program was attached
        self._error: Exception | None = None  # what stopped the thread, for result()
        self._thread = threading.Thread(target=self._run, name="ctrtrace-load", daemon=True)
        self._thread.start()

    @property
    def layout(self) -> str:
        """What CO-RE relocated against: the cached subset or the kernel's BTF."""
        return self.core_btf.source

    def _run(self) -> None:
        assert self._obj is not None
        # quiet: libbpf's hundreds of debug messages would each need the GIL
        self._loaded = self._obj.load(quiet=True)
        if self._loaded:
            try:
                self._attach()
            except Exception as e:  # raised again by result(), on the caller's thread
                self._error = e

    def _attach(self) -> None:
        assert self._obj is not None
        pid = self.options.filters.pid
        if pid is not None:
            # before attaching: the process's own events must pass the filter
            self._obj.update("tracked", ctypes.c_uint32(pid), ctypes.c_uint8(1))
        self.start_ktime_ns = time.monotonic_ns()  # what bpf_ktime_get_ns reads
        self._obj.attach_all()

    def _load_again(self) -> None:
        """The load failed: retry without the subset, then with libbpf's messages,
        which explain a refusal (the verifier's log)."""
        assert self._obj is not None
        self._obj.close()
        self._obj = None
        if self.core_btf.path is not None:
            # never worse than without the subset: the kernel's own BTF decides;
            # the next start makes the subset again
            corebtf.discard(self.core_btf.path)
            self.core_btf = corebtf.CoreBtf(None, "kernel (the subset was refused)")
        self._obj = _open(self.path, self.options, self.core_btf)
        self._obj.load()

    def result(self) -> BpfObject:
        """The loaded, attached object (the caller owns it from now on), or the
        error that stopped it."""
        self._thread.join()
        if self._error is not None:
            raise self._error
        if not self._loaded:
            self._load_again()
            self._loaded = True
            self._attach()
        assert self._obj is not None
        self._taken = True
        return self._obj

    def close(self) -> None:
        """Unload what nobody took (an error or Ctrl-C came first)."""
        self._thread.join()
        if self._obj is not None and not self._taken:
            self._obj.close()
            self._obj = None


# -- either backend ---------------------------------------------------------------

class Programs(Protocol):
    """Loaded, attached programs and their maps, as a Session uses them."""

    def map_fd(self, name: str) -> int: ...
    def max_entries(self, name: str) -> int: ...
    def update(self, name: str, key: ctypes._SimpleCData, value: ctypes._SimpleCData) -> None: ...
    def percpu_sum(self, name: str, index: int) -> int: ...
    def close(self) -> None: ...


class Loader(Protocol):
    """A load under way: ProgramLoader (CO-RE) or bcc.BccLoader."""

    backend: str
    options: LoadConfig
    start_ktime_ns: int

    @property
    def layout(self) -> str: ...
    def result(self) -> Programs: ...
    def close(self) -> None: ...


def start(options: LoadConfig) -> Loader:
    """The loader of the backend options name; for "auto", CO-RE where the
    kernel has BTF and the object is installed, else bcc."""
    if options.backend not in BACKENDS:
        raise CtrtraceError(f"no backend {options.backend!r} (one of {', '.join(BACKENDS)})",
                            ExitStatus.USAGE)
    if options.backend == "core":
        return ProgramLoader(options)
    if options.backend == "auto":
        check_host(options)
        path = options.bpf_object or default_object_path()
        missing = [what for what, there in ((f"no BTF at {BTF_PATH}", os.path.exists(BTF_PATH)),
                                            (f"no object at {path}", os.path.exists(path)))
                   if not there]
        if not missing:
            return ProgramLoader(options)
    from .bcc import BccLoader

    try:
        return BccLoader(options)
    except CtrtraceError as e:
        if options.backend == "bcc":
            raise
        raise CtrtraceError(
            f"neither backend can run here: CO-RE: {', '.join(missing)}; bcc: {e}",
            e.status) from None
