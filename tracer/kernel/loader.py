"""Getting the BPF programs into the kernel: CO-RE's loader (libbpf on a
thread of its own), and start(), which chooses the backend.

Loading is libbpf and the verifier, in C with the GIL released, so it runs
while the rest of ctrtrace is imported and the session is set up: the
command starts a ProgramLoader as soon as its options are parsed and the
Session takes the loaded object from it.  The thread also attaches the
programs as soon as they are loaded, so that events are captured (and wait
in the ring buffer) from then on, not from when the session is ready to
read them.  The checks that need no loading (host.py's privileges, BTF
and tracefs, and the object file) run first, on the caller's thread, so
that their one-line errors come at once.

This module is imported before everything else on the way to tracing:
keep its imports light.
"""

from __future__ import annotations

import ctypes
import os
import threading
import time
from typing import Protocol

from ..model.errors import CtrtraceError, ExitStatus
from . import corebtf, host
from .host import BACKENDS, LoadConfig, check_host, config_for, ringbuf_size
from .libbpf import BpfObject


def default_object_path() -> str:
    env = os.environ.get("CTRTRACE_BPF_OBJECT")
    if env:
        return env
    # installed with the package, in tracer/bpf/
    package = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    return os.path.join(package, "bpf", "ctrtrace.bpf.o")


# -- loading --------------------------------------------------------------------

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


class ProgramLoader:
    """Checks the host and opens the object now; loads and attaches it on a
    thread; result() waits."""

    backend = "core"

    def __init__(self, options: LoadConfig) -> None:
        self.options = options
        check_host(options)
        host.check_btf()
        self.path = options.bpf_object or default_object_path()
        if not os.path.exists(self.path):
            raise CtrtraceError(
                f"the BPF object is missing ({self.path}): reinstall ctrtrace, or build it "
                "with 'make -C bpf'", ExitStatus.ENVIRONMENT)
        host.ensure_tracefs()
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
        btf = host.BTF_PATH
        missing = [what for what, there in ((f"no BTF at {btf}", os.path.exists(btf)),
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
