"""Ring-buffer records (bytes laid out by bpf/ctrtrace.h) -> typed events.

This runs once per event, thousands of times a second under an exec storm,
on the CPUs the traced workload needs, so it does as little as it can:

- each record type unpacks with one precompiled struct.Struct, built from
  the ctypes mirror in layout.py (whose layout the tests check against the
  BTF of the object);
- a task's command name, namespace set and cgroup names are contiguous in
  the record and repeat from event to event: the raw bytes of that span
  are the key to a cache of their decoded form;
- events are filled in place (object.__new__ plus slot assignments), which
  costs less than the dataclass __init__ with keyword arguments
  (bench/README.md, "Where the code's choices come from").
  tests/test_decode.py checks that every field of every event is set.
"""

from __future__ import annotations

import struct
import sys
from collections.abc import Callable

from ..model.errors import CtrtraceError, ExitStatus
from ..model.events import (
    ExecEvent,
    ExitEvent,
    ForkEvent,
    Namespaces,
    ProcessEvent,
    SetnsEvent,
    UnshareEvent,
)
from . import layout

# comm, ns and the cgroup names: one contiguous span of the task, decoded
# through a cache keyed by its raw bytes, so the Structs leave it out
_IDENT = ("task.comm", "task.ns", "task.cgroup_parent", "task.cgroup_leaf")
_TASK_AT = layout.CtExecHead.task.offset
_IDENT_START = _TASK_AT + layout.CtTask.comm.offset
_IDENT_END = _TASK_AT + layout.CtTask.cgroup_leaf.offset + layout.CT_CGROUP_NAME_LEN
_COMM_LEN = layout.CT_COMM_LEN
_NS_AT = layout.CtTask.ns.offset - layout.CtTask.comm.offset
_NS_FMT = struct.Struct(layout.struct_format(layout.CtNs))
_CGP_AT = layout.CtTask.cgroup_parent.offset - layout.CtTask.comm.offset
_CGL_AT = layout.CtTask.cgroup_leaf.offset - layout.CtTask.comm.offset
IDENT = slice(_IDENT_START, _IDENT_END)
_IDENT_CACHE_MAX = 4096  # distinct (comm, ns, cgroup) sets: a few hundred in practice


def _struct(cls) -> struct.Struct:
    return struct.Struct(layout.struct_format(cls, skip=_IDENT))


def field_index(cls, name: str) -> int:
    """Index of a field in the tuple its Struct unpacks (names from the mirror)."""
    return layout.struct_fields(cls, skip=_IDENT).index(name)


_HDR = struct.Struct(layout.struct_format(layout.CtHeader))
# header + task, then what each type adds
EXEC = _struct(layout.CtExecHead)
FORK = _struct(layout.CtForkEvent)
EXIT = _struct(layout.CtExitEvent)
_SETNS = _struct(layout.CtSetnsEvent)
_UNSHARE = _struct(layout.CtUnshareEvent)
_NS = len(layout.NS_NAMES)

# Every record starts with the header and the task, whose numbers come
# first; _task() assigns them by position, in this order.
_NUMBERS = ("hdr.type", "hdr.size", "hdr.flags", "hdr.cpu", "hdr.ktime_ns",
            "task.pid", "task.tid", "task.ppid", "task.vpid", "task.uid", "task.gid",
            "task.start_ns", "task.parent_start_ns", "task.cgroup_id")
for _mirror in (layout.CtExecHead, layout.CtForkEvent, layout.CtExitEvent,
                layout.CtSetnsEvent, layout.CtUnshareEvent):
    if tuple(layout.struct_fields(_mirror, skip=_IDENT)[:len(_NUMBERS)]) != _NUMBERS:
        raise ImportError(f"decode.py expects {_NUMBERS} first in {_mirror.__name__}")

_EXEC_AT = field_index(layout.CtExecHead, "old_pid")
_FORK_AT = field_index(layout.CtForkEvent, "parent_pid")
_EXIT_AT = field_index(layout.CtExitEvent, "status")
_SETNS_BEFORE = field_index(layout.CtSetnsEvent, "ns_before.mnt")
_SETNS_AT = field_index(layout.CtSetnsEvent, "fd")
_UNSHARE_BEFORE = field_index(layout.CtUnshareEvent, "ns_before.mnt")
_UNSHARE_AT = field_index(layout.CtUnshareEvent, "flags")

_new = object.__new__
# hdr.flags' bits for every event -> (no_nsproxy, cgroup_v1, ns_change), by lookup
_TASK_MASK = layout.CT_F_NO_NSPROXY | layout.CT_F_CGROUP_V1 | layout.CT_F_NS_CHANGE
_TASK_FLAGS = tuple((bool(flags & layout.CT_F_NO_NSPROXY), bool(flags & layout.CT_F_CGROUP_V1),
                     bool(flags & layout.CT_F_NS_CHANGE)) for flags in range(_TASK_MASK + 1))
# hdr.type without a struct call: its two bytes, in the kernel's (native) order
TYPE_LO, TYPE_HI = (0, 1) if sys.byteorder == "little" else (1, 0)


def _cstr(raw: bytes) -> str:
    return raw.split(b"\0", 1)[0].decode(errors="surrogateescape")


def exec_strings(data: bytes, filename_len: int, args_len: int) -> tuple[str, list[str]]:
    """An exec record's filename and argv, from the bytes after its fixed part."""
    # argv is NUL-separated; a truncated copy may end mid-string
    args = data[filename_len:filename_len + args_len].split(b"\0")
    if args and args[-1] == b"":
        args.pop()
    return _cstr(data[:filename_len]), [arg.decode(errors="surrogateescape") for arg in args]


class Decoder:
    """Decodes records; wall_offset_ns turns CLOCK_MONOTONIC into wall clock."""

    def __init__(self, wall_offset_ns: int) -> None:
        self.wall_offset_ns = wall_offset_ns
        self._idents: dict[bytes, tuple[str, Namespaces, str]] = {}
        self._nss: dict[tuple, Namespaces] = {}
        self._by_type: dict[int, Callable[[bytes], ProcessEvent]] = {
            layout.CT_EVENT_EXEC: self._exec,
            layout.CT_EVENT_EXEC_FAILED: self._exec,
            layout.CT_EVENT_FORK: self._fork,
            layout.CT_EVENT_EXIT: self._exit,
            layout.CT_EVENT_SETNS: self._setns,
            layout.CT_EVENT_UNSHARE: self._unshare,
        }

    def decode(self, rec: bytes) -> ProcessEvent:
        if len(rec) < _HDR.size:
            raise CtrtraceError(f"short record from the kernel: {len(rec)} bytes", ExitStatus.BPF)
        decode_type = self._by_type.get(rec[TYPE_LO] | rec[TYPE_HI] << 8)  # hdr.type
        if decode_type is None:
            rtype = _HDR.unpack_from(rec)[0]
            raise CtrtraceError(f"unknown event type {rtype} from the kernel", ExitStatus.BPF)
        return decode_type(rec)

    @staticmethod
    def _fields(s: struct.Struct, rec: bytes) -> tuple:
        if len(rec) < s.size:
            rec = rec + bytes(s.size - len(rec))
        return s.unpack_from(rec)

    def _ns(self, values: tuple) -> Namespaces:
        ns = self._nss.get(values)
        if ns is None:
            if len(self._nss) >= _IDENT_CACHE_MAX:
                self._nss.clear()
            ns = self._nss[values] = Namespaces(*values)
        return ns

    def ident(self, raw: bytes) -> tuple[str, Namespaces, str]:
        """comm, namespaces and cgroup from their span of the record."""
        found = self._idents.get(raw)
        if found is None:
            if len(self._idents) >= _IDENT_CACHE_MAX:
                self._idents.clear()
            parent, leaf = _cstr(raw[_CGP_AT:_CGL_AT]), _cstr(raw[_CGL_AT:])
            cgroup = f"{parent}/{leaf}" if parent and parent != "/" else "/" + leaf.lstrip("/")
            found = self._idents[raw] = (
                _cstr(raw[:_COMM_LEN]), self._ns(_NS_FMT.unpack_from(raw, _NS_AT)), cgroup)
        return found

    def _task(self, ev: ProcessEvent, values: tuple, rec: bytes) -> int:
        """Fills what every event has; returns the header's flags."""
        (_, _, flags, ev.cpu, ktime, ev.pid, ev.tid, ev.ppid, ev.vpid, ev.uid, ev.gid,
         ev.start_ns, ev.parent_start_ns, ev.cgroup_id) = values[:14]
        ev.ktime_ns = ktime
        ev.wall_ns = ktime + self.wall_offset_ns
        ev.comm, ev.ns, ev.cgroup = self.ident(rec[IDENT])
        ev.no_nsproxy, ev.cgroup_v1, ev.ns_change = _TASK_FLAGS[flags & _TASK_MASK]
        ev.container = None
        return flags

    def _exec(self, rec: bytes) -> ExecEvent:
        values = EXEC.unpack_from(rec)
        ev = _new(ExecEvent)
        flags = self._task(ev, values, rec)
        ev.old_pid, ev.ret, filename_len, args_len = values[_EXEC_AT:_EXEC_AT + 4]
        ev.filename, ev.argv = exec_strings(rec[EXEC.size:], filename_len, args_len)
        ev.argv_truncated = bool(flags & layout.CT_F_ARGS_TRUNCATED)
        ev.filename_truncated = bool(flags & layout.CT_F_FILENAME_TRUNCATED)
        return ev

    def _fork(self, rec: bytes) -> ForkEvent:
        values = FORK.unpack_from(rec) if len(rec) >= FORK.size else self._fields(FORK, rec)
        ev = _new(ForkEvent)
        flags = self._task(ev, values, rec)
        ev.parent_pid, ev.parent_tid, clone_flags = values[_FORK_AT:_FORK_AT + 3]
        ev.clone_flags = clone_flags if flags & layout.CT_F_CLONE_FLAGS_KNOWN else None
        ev.thread = bool(flags & layout.CT_F_THREAD)
        return ev

    def _exit(self, rec: bytes) -> ExitEvent:
        values = EXIT.unpack_from(rec) if len(rec) >= EXIT.size else self._fields(EXIT, rec)
        ev = _new(ExitEvent)
        flags = self._task(ev, values, rec)
        ev.status, reaper = values[_EXIT_AT:_EXIT_AT + 2]
        ev.reaper = reaper if flags & layout.CT_F_HAD_CHILDREN else None
        return ev

    def _setns(self, rec: bytes) -> SetnsEvent:
        values = _SETNS.unpack_from(rec) if len(rec) >= _SETNS.size else self._fields(_SETNS, rec)
        ev = _new(SetnsEvent)
        self._task(ev, values, rec)
        ev.ns_before = self._ns(values[_SETNS_BEFORE:_SETNS_BEFORE + _NS])
        ev.fd, ev.nstype, ev.ret = values[_SETNS_AT:_SETNS_AT + 3]
        return ev

    def _unshare(self, rec: bytes) -> UnshareEvent:
        values = (_UNSHARE.unpack_from(rec) if len(rec) >= _UNSHARE.size
                  else self._fields(_UNSHARE, rec))
        ev = _new(UnshareEvent)
        self._task(ev, values, rec)
        ev.ns_before = self._ns(values[_UNSHARE_BEFORE:_UNSHARE_BEFORE + _NS])
        ev.flags, ev.ret = values[_UNSHARE_AT:_UNSHARE_AT + 2]
        return ev
