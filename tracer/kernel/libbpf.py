"""A small ctypes binding of the parts of libbpf that ctrtrace uses.

libbpf (Debian's ``libbpf1``) opens the CO-RE object, relocates it against
the running kernel's BTF, loads and attaches it; nothing is compiled at run
time.  Every function here follows libbpf >= 1.0 conventions: NULL or a
negative number on error, with errno set.
"""

from __future__ import annotations

import collections
import ctypes
import errno
import os
import threading
from collections.abc import Iterator

from ..model.errors import CtrtraceError, ExitStatus

_SONAMES = ("libbpf.so.1", "libbpf.so")

_PRINT_FN = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_void_p)
SAMPLE_FN = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t)

LIBBPF_WARN, LIBBPF_INFO, LIBBPF_DEBUG = 0, 1, 2


class _OpenOpts(ctypes.Structure):
    """struct bpf_object_open_opts up to btf_custom_path (libbpf >= 0.5); libbpf
    reads no further than sz, so later fields keep their defaults."""

    _fields_ = [
        ("sz", ctypes.c_size_t),
        ("object_name", ctypes.c_char_p),
        ("relaxed_maps", ctypes.c_bool),
        ("pin_root_path", ctypes.c_char_p),
        ("_attach_prog_fd", ctypes.c_uint32),  # removed from libbpf, kept as padding
        ("kconfig", ctypes.c_char_p),
        ("btf_custom_path", ctypes.c_char_p),
    ]


class _Lib:
    """The loaded library and its prototypes, created once per process."""

    def __init__(self) -> None:
        self.dll, name = self._open()
        # The same library, called with the GIL held: for calls that return at
        # once, so that a thread making several of them takes the GIL once
        # rather than once per call (at up to the interpreter's switch interval,
        # sys.getswitchinterval(), each while another thread runs Python).
        self.held = ctypes.PyDLL(name, use_errno=True)
        self.libc = ctypes.CDLL(None, use_errno=True)
        self.log: collections.deque[str] = collections.deque(maxlen=400)
        self._print_buf: ctypes.Array | None = None
        self._declare()
        # libbpf's messages (verifier log included) are kept to explain a failure.
        self._print_cb = _PRINT_FN(self._on_print)
        self.dll.libbpf_set_print(self._print_cb)

    @staticmethod
    def _open() -> tuple[ctypes.CDLL, str]:
        """The library, and the name it was found by."""
        for name in _SONAMES:
            try:
                return ctypes.CDLL(name, use_errno=True), name
            except OSError:
                continue
        # find_library runs ldconfig (or a compiler): only when the usual names fail
        from ctypes.util import find_library

        found = find_library("bpf")
        if found:
            try:
                return ctypes.CDLL(found, use_errno=True), found
            except OSError:
                pass
        raise CtrtraceError(
            "libbpf is not installed (libbpf.so.1 not found): install it, "
            "e.g. 'apt-get install libbpf1'",
            ExitStatus.ENVIRONMENT,
        )

    def _declare(self) -> None:
        d = self.dll
        vp, cp, ci = ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int
        protos = {
            "libbpf_set_print": (vp, [_PRINT_FN]),
            "bpf_object__open_file": (vp, [cp, vp]),
            "bpf_object__load": (ci, [vp]),
            "bpf_object__close": (None, [vp]),
            "bpf_object__find_map_by_name": (vp, [vp, cp]),
            "bpf_object__next_map": (vp, [vp, vp]),
            "bpf_object__next_program": (vp, [vp, vp]),
            "bpf_map__name": (cp, [vp]),
            "bpf_map__fd": (ci, [vp]),
            "bpf_map__set_max_entries": (ci, [vp, ctypes.c_uint32]),
            "bpf_map__max_entries": (ctypes.c_uint32, [vp]),
            "bpf_map__initial_value": (vp, [vp, ctypes.POINTER(ctypes.c_size_t)]),
            "bpf_program__name": (cp, [vp]),
            "bpf_program__section_name": (cp, [vp]),
            "bpf_map__type": (ci, [vp]),
            "bpf_map__key_size": (ctypes.c_uint32, [vp]),
            "bpf_map__value_size": (ctypes.c_uint32, [vp]),
            "bpf_map__map_flags": (ctypes.c_uint32, [vp]),
            "bpf_program__insns": (vp, [vp]),
            "bpf_program__insn_cnt": (ctypes.c_size_t, [vp]),
            "bpf_program__attach": (vp, [vp]),
            "bpf_link__destroy": (ci, [vp]),
            "ring_buffer__new": (vp, [ci, SAMPLE_FN, vp, vp]),
            "ring_buffer__poll": (ci, [vp, ci]),
            "ring_buffer__consume": (ci, [vp]),
            "ring_buffer__free": (None, [vp]),
            "bpf_map_lookup_elem": (ci, [ci, vp, vp]),
            "bpf_map_update_elem": (ci, [ci, vp, vp, ctypes.c_uint64]),
            "libbpf_num_possible_cpus": (ci, []),
        }
        for name, (restype, argtypes) in protos.items():
            fn = getattr(d, name)
            fn.restype = restype
            fn.argtypes = argtypes
        for name in ("bpf_object__next_program", "bpf_program__attach", "bpf_program__name"):
            fn = getattr(self.held, name)
            fn.restype, fn.argtypes = protos[name]
        self.libc.vsnprintf.restype = ci
        self.libc.vsnprintf.argtypes = [cp, ctypes.c_size_t, cp, vp]

    def _on_print(self, level: int, fmt: bytes, va_list: int) -> int:
        # Debug messages come by the hundred (one per relocation): skip them.
        # The buffer is made once: the verifier's log comes as one message.
        if level >= LIBBPF_DEBUG:
            return 0
        if self._print_buf is None:
            self._print_buf = ctypes.create_string_buffer(1 << 20)
        buf = self._print_buf
        self.libc.vsnprintf(buf, len(buf), fmt, va_list)
        for line in buf.value.decode(errors="replace").splitlines():
            self.log.append(line)
        return 0


_lib: _Lib | None = None


def lib() -> _Lib:
    global _lib
    if _lib is None:
        _lib = _Lib()
    return _lib


def errno_text(err: int) -> str:
    """A failed call's errno, as ctrtrace's messages give it."""
    return f"{os.strerror(err)} (errno {err})"


class BpfObject:
    """An opened CO-RE object: configure it, load it, attach its programs."""

    def __init__(self, path: str, btf_custom_path: str | None = None) -> None:
        """btf_custom_path: the BTF to relocate against instead of the kernel's."""
        self._lib = lib()
        self.path = path
        self._links: list[int] = []
        opts = _OpenOpts(sz=ctypes.sizeof(_OpenOpts))
        if btf_custom_path:
            opts.btf_custom_path = btf_custom_path.encode()
        self._obj = self._lib.dll.bpf_object__open_file(path.encode(), ctypes.byref(opts))
        if not self._obj:
            err = ctypes.get_errno()
            raise CtrtraceError(
                f"cannot open BPF object {path}: {errno_text(err)}", ExitStatus.BPF
            )

    # -- before load ---------------------------------------------------------

    def maps(self) -> Iterator[int]:
        m = self._lib.dll.bpf_object__next_map(self._obj, None)
        while m:
            yield m
            m = self._lib.dll.bpf_object__next_map(self._obj, m)

    def map(self, name: str) -> int:
        m = self._lib.dll.bpf_object__find_map_by_name(self._obj, name.encode())
        if not m:
            raise CtrtraceError(f"BPF object {self.path} has no map {name!r}", ExitStatus.BPF)
        return m

    def programs(self) -> list[tuple[str, str]]:
        """(name, section) of each program, in the object's order."""
        dll, out = self._lib.dll, []
        p = dll.bpf_object__next_program(self._obj, None)
        while p:
            out.append((dll.bpf_program__name(p).decode(),
                        dll.bpf_program__section_name(p).decode()))
            p = dll.bpf_object__next_program(self._obj, p)
        return out

    def map_specs(self) -> dict[str, tuple[int, int, int, int, int]]:
        """Each map's (type, key size, value size, max entries, flags), by name."""
        dll = self._lib.dll
        return {dll.bpf_map__name(m).decode(): (dll.bpf_map__type(m), dll.bpf_map__key_size(m),
                                                dll.bpf_map__value_size(m),
                                                dll.bpf_map__max_entries(m),
                                                dll.bpf_map__map_flags(m))
                for m in self.maps()}

    def rodata(self) -> ctypes.Array:
        """The .rodata section as a writable buffer (valid until load)."""
        for m in self.maps():
            if self._lib.dll.bpf_map__name(m).decode().endswith(".rodata"):
                size = ctypes.c_size_t()
                ptr = self._lib.dll.bpf_map__initial_value(m, ctypes.byref(size))
                if ptr:
                    return (ctypes.c_char * size.value).from_address(ptr)
        raise CtrtraceError(f"BPF object {self.path} has no .rodata", ExitStatus.BPF)

    def set_max_entries(self, name: str, n: int) -> None:
        err = self._lib.dll.bpf_map__set_max_entries(self.map(name), n)
        if err:
            raise CtrtraceError(f"cannot size map {name}: {errno_text(-err)}", ExitStatus.BPF)

    # -- load and attach -----------------------------------------------------

    def load(self, quiet: bool = False) -> bool:
        """Load into the kernel; raises with libbpf's last messages on failure.

        quiet: no messages at all (no Python callback runs during the load),
        and False instead of an error: the caller loads again to learn why."""
        self._lib.log.clear()
        if quiet:
            self._lib.dll.libbpf_set_print(_PRINT_FN())
            try:
                return self._lib.dll.bpf_object__load(self._obj) == 0
            finally:
                self._lib.dll.libbpf_set_print(self._lib._print_cb)
        err = self._lib.dll.bpf_object__load(self._obj)
        if err:
            tail = [line for line in self._lib.log if line.strip()][-12:]
            detail = ("\n" + "\n".join("  " + line for line in tail)) if tail else ""
            raise CtrtraceError(
                f"the kernel refused the BPF programs: {errno_text(-err)}{detail}",
                ExitStatus.BPF,
            )
        return True

    def attach_all(self) -> None:
        """Attach every program (a few ms, all with the GIL held)."""
        held = self._lib.held
        log = self._lib.log
        log.clear()
        p = held.bpf_object__next_program(self._obj, None)
        while p:
            link = held.bpf_program__attach(p)
            if not link:
                err = ctypes.get_errno()
                name = held.bpf_program__name(p).decode()
                # libbpf's first word on it says what was refused (a tracefs
                # file, perf_event_open, ...)
                why = next((line.strip() for line in log if line.strip()), "")
                why = why[len("libbpf: "):] if why.startswith("libbpf: ") else why
                refused = err in (errno.EACCES, errno.EPERM)
                raise CtrtraceError(
                    f"cannot attach BPF program {name}: {why or os.strerror(err)} (errno {err})"
                    + ("; tracing needs root, or CAP_BPF and CAP_PERFMON with read access "
                       "to tracefs" if refused else ""),
                    ExitStatus.PERMISSION if refused else ExitStatus.BPF,
                )
            self._links.append(link)
            p = held.bpf_object__next_program(self._obj, p)

    # -- after load ----------------------------------------------------------

    def program_insns(self) -> dict[str, bytes]:
        """Each program's instructions as libbpf relocated them (8 bytes each)."""
        out = {}
        p = self._lib.dll.bpf_object__next_program(self._obj, None)
        while p:
            n = self._lib.dll.bpf_program__insn_cnt(p)
            insns = self._lib.dll.bpf_program__insns(p)
            out[self._lib.dll.bpf_program__name(p).decode()] = ctypes.string_at(insns, n * 8)
            p = self._lib.dll.bpf_object__next_program(self._obj, p)
        return out

    def map_fd(self, name: str) -> int:
        return self._lib.dll.bpf_map__fd(self.map(name))

    def max_entries(self, name: str) -> int:
        """A map's size: for a ring buffer, the bytes of its data area."""
        return self._lib.dll.bpf_map__max_entries(self.map(name))

    def update(self, name: str, key: ctypes._SimpleCData, value: ctypes._SimpleCData) -> None:
        err = self._lib.dll.bpf_map_update_elem(
            self.map_fd(name), ctypes.byref(key), ctypes.byref(value), 0
        )
        if err:
            raise CtrtraceError(
                f"cannot update map {name}: {errno_text(ctypes.get_errno())}", ExitStatus.BPF
            )

    def percpu_sum(self, name: str, index: int) -> int:
        """Sum of a u64 per-CPU array slot over all possible CPUs."""
        ncpu = self._lib.dll.libbpf_num_possible_cpus()
        values = (ctypes.c_uint64 * ncpu)()
        key = ctypes.c_uint32(index)
        if self._lib.dll.bpf_map_lookup_elem(self.map_fd(name), ctypes.byref(key), values):
            raise CtrtraceError(
                f"cannot read map {name}: {errno_text(ctypes.get_errno())}", ExitStatus.BPF
            )
        return sum(values)

    def close(self) -> None:
        self._destroy_links()
        if self._obj:
            self._lib.dll.bpf_object__close(self._obj)
            self._obj = None

    def _destroy_links(self) -> None:
        """Detach every program, all at once: each detach from a tracepoint
        waits for an RCU grace period, and one after another they add up
        (bench/README.md); waits that overlap share grace periods."""
        links, self._links = self._links, []
        if len(links) < 2:
            for link in links:
                self._lib.dll.bpf_link__destroy(link)
            return
        destroy = self._lib.dll.bpf_link__destroy  # releases the GIL while it waits
        started = []
        for link in links:
            t = threading.Thread(target=destroy, args=(link,), name="ctrtrace-detach")
            try:
                t.start()
            except RuntimeError:  # no threads (the interpreter is shutting down)
                destroy(link)
            else:
                started.append(t)
        for t in started:
            t.join()


__all__ = ["BpfObject", "SAMPLE_FN", "errno_text", "lib", "LIBBPF_WARN"]
