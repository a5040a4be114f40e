"""Ring-buffer records (bytes laid out by bpf/ctrtrace.h) -> typed events.

This runs once per event, thousands of times a second under an exec storm,
on the CPUs the traced workload needs, so it does as little as it can:

- each record type unpacks with one precompiled struct.Struct, built from
  the ctypes mirror in layout.py (whose layout the tests check against the
  BTF of the object);
- a task's command name, namespace set and cgroup names are contiguous in
  the record and repeat from event to event: the raw bytes of that span
  are the key to a cache of their decoded form;
- an exec's filename and argv repeat too: the bytes of their lengths and
  text are the key to their decoded form;
- each event is made in one step (a tuple, events.py) by a function
  generated from its class's fields: each field is the record's field of the
  same name (the task's, or the type's own), or one of the few worked out
  below (_WORKED_OUT).  tests/test_decode.py checks every field of every event.
"""

from __future__ import annotations

import re
import struct
import sys
from collections.abc import Callable
from typing import Any

from ..model.codec import COMMAND_LINES_MAX, keep
from ..model.contract import PID_LEVELS_MAX
from ..model.errors import CtrtraceError, ExitStatus
from ..model.events import (
    EVENT_CLASSES,
    ExecEvent,
    ExitEvent,
    ForkEvent,
    Namespaces,
    ProcessEvent,
    SetnsEvent,
    UnshareEvent,
    record_of,
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

# hdr.flags' bits for every event -> (no_nsproxy, cgroup_v1, ns_change), by lookup
_TASK_MASK = layout.CT_F_NO_NSPROXY | layout.CT_F_CGROUP_V1 | layout.CT_F_NS_CHANGE
_TASK_FLAGS = tuple((bool(flags & layout.CT_F_NO_NSPROXY), bool(flags & layout.CT_F_CGROUP_V1),
                     bool(flags & layout.CT_F_NS_CHANGE)) for flags in range(_TASK_MASK + 1))
# hdr.type without a struct call: its two bytes, in the kernel's (native) order
TYPE_LO, TYPE_HI = (0, 1) if sys.byteorder == "little" else (1, 0)


def pid_levels(pid: int, vpid: int, level: int, between: tuple[int, ...]) -> tuple[int, ...]:
    """The pid at every level, the host's first, from a record's: 0 for the
    levels deeper than it keeps between the host's and the task's own."""
    level = min(level, PID_LEVELS_MAX - 1)
    kept = between[:level - 1]
    return (pid, *kept, *(0,) * (level - 1 - len(kept)), vpid)


def _cstr(raw: bytes) -> str:
    return raw.split(b"\0", 1)[0].decode(errors="surrogateescape")


def exec_strings(data: bytes, filename_len: int, args_len: int) -> tuple[str, tuple[str, ...]]:
    """An exec record's filename and argv, from the bytes after its fixed part."""
    # argv is NUL-separated; a truncated copy may end mid-string
    args = data[filename_len:filename_len + args_len].split(b"\0")
    if args and args[-1] == b"":
        args.pop()
    return _cstr(data[:filename_len]), tuple([arg.decode(errors="surrogateescape")
                                              for arg in args])


# record type -> (its Struct, the event class it makes)
_RECORDS = {
    layout.CT_EVENT_EXEC: (EXEC, "exec", layout.CtExecHead),
    layout.CT_EVENT_EXEC_FAILED: (EXEC, "exec", layout.CtExecHead),
    layout.CT_EVENT_FORK: (FORK, "fork", layout.CtForkEvent),
    layout.CT_EVENT_EXIT: (EXIT, "exit", layout.CtExitEvent),
    layout.CT_EVENT_SETNS: (_SETNS, "setns", layout.CtSetnsEvent),
    layout.CT_EVENT_UNSHARE: (_UNSHARE, "unshare", layout.CtUnshareEvent),
}
# The event fields that are not a record field of the same name: from the
# header's flags, the identity span, an exec's text, or the clock.
_WORKED_OUT = {
    "ktime_ns": "v[{hdr.ktime_ns}]",
    "wall_ns": "v[{hdr.ktime_ns}] + _offset",
    "cpu": "v[{hdr.cpu}]",
    "comm": "comm", "ns": "ns", "cgroup": "cgroup",
    "no_nsproxy": "no_nsproxy", "cgroup_v1": "cgroup_v1", "ns_change": "ns_change",
    "vpids": ("(v[{task.pid}],) if not v[{task.pid_level}] else"
              " (v[{task.pid}], v[{task.vpid}]) if v[{task.pid_level}] == 1 else"
              " _pid_levels(v[{task.pid}], v[{task.vpid}], v[{task.pid_level}],"
              " v[{task.vpids_between.0}:{task.vpids_between.0} + _BETWEEN])"),
    "container": "None",   # decided by the session (containers.py)
    "filename": "filename", "argv": "argv",
    "argv_truncated": "flags & _ARGS_TRUNCATED != 0",
    "filename_truncated": "flags & _FILENAME_TRUNCATED != 0",
    "clone_flags": "v[{clone_flags}] if flags & _CLONE_FLAGS_KNOWN else None",
    "thread": "flags & _THREAD != 0",
    "reaper": "v[{reaper}] if flags & _HAD_CHILDREN else None",
    "ns_before": "_ns_of(v[{ns_before.mnt}:{ns_before.mnt} + _NS])",
}


def _decoder_source(rtype: int) -> str:
    """The function that makes the event of one record type."""
    s, kind, mirror = _RECORDS[rtype]
    names = layout.struct_fields(mirror, skip=_IDENT)

    def at(match: re.Match) -> str:
        return str(names.index(match.group(1)))

    values = []
    for name in EVENT_CLASSES[kind].FIELDS:
        if name in _WORKED_OUT:
            expr = _WORKED_OUT[name]
        elif f"task.{name}" in names:
            expr = f"v[{{task.{name}}}]"
        elif name in names:
            expr = f"v[{{{name}}}]"
        else:
            raise ImportError(f"decode.py: no record field for {kind}.{name}")
        values.append(re.sub(r"\{([a-z0-9_.]+)\}", at, expr))
    lines = [f"def decode_{rtype}(rec):",
             f"    v = _S{rtype}.unpack_from(rec) if len(rec) >= {s.size}"
             f" else _padded(_S{rtype}, rec)",
             "    raw = rec[_IDENT]",
             "    comm, ns, cgroup = _idents.get(raw) or _ident(raw)",
             f"    flags = v[{names.index('hdr.flags')}]",
             "    no_nsproxy, cgroup_v1, ns_change = _TASK_FLAGS[flags & _TASK_MASK]"]
    if kind == "exec":
        lens = names.index("filename_len")
        lines += [f"    key = rec[{_EXEC_STRINGS_AT}:{s.size} + v[{lens}] + v[{lens + 1}]]",
                  f"    filename, argv = (_execs.get(key)"
                  f" or _exec_strings(key, v[{lens}], v[{lens + 1}]))"]
    lines.append(f"    return _new(_cls{rtype}, ({', '.join(values)},))")
    return "\n".join(lines) + "\n"


# an exec's lengths and strings: the key to their decoded form
_EXEC_STRINGS_AT = layout.CtExecHead.filename_len.offset


class Decoder:
    """Decodes records; wall_offset_ns turns CLOCK_MONOTONIC into wall clock."""

    def __init__(self, wall_offset_ns: int) -> None:
        self.wall_offset_ns = wall_offset_ns
        self._idents: dict[bytes, tuple[str, Namespaces, str]] = {}
        self._nss: dict[tuple, Namespaces] = {}
        self._execs: dict[bytes, tuple[str, tuple[str, ...]]] = {}
        env: dict[str, Any] = {
            "_offset": wall_offset_ns, "_IDENT": IDENT, "_idents": self._idents,
            "_ident": self.ident, "_execs": self._execs, "_exec_strings": self._exec_strings,
            "_padded": self._padded, "_ns_of": self._ns, "_NS": _NS, "_new": record_of,
            "_pid_levels": pid_levels, "_BETWEEN": layout.CT_PID_LEVELS_BETWEEN,
            "_TASK_FLAGS": _TASK_FLAGS, "_TASK_MASK": _TASK_MASK,
            "_ARGS_TRUNCATED": layout.CT_F_ARGS_TRUNCATED,
            "_FILENAME_TRUNCATED": layout.CT_F_FILENAME_TRUNCATED,
            "_CLONE_FLAGS_KNOWN": layout.CT_F_CLONE_FLAGS_KNOWN, "_THREAD": layout.CT_F_THREAD,
            "_HAD_CHILDREN": layout.CT_F_HAD_CHILDREN}
        for rtype, (s, kind, _) in _RECORDS.items():
            env[f"_S{rtype}"], env[f"_cls{rtype}"] = s, EVENT_CLASSES[kind]
        self._by_type: dict[int, Callable[[bytes], ProcessEvent]] = {}
        for rtype in _RECORDS:
            exec(_SOURCES[rtype], env)  # noqa: S102 - made above, from the event classes
            self._by_type[rtype] = env[f"decode_{rtype}"]

    def decode(self, rec: bytes) -> ProcessEvent:
        if len(rec) < _HDR.size:
            raise CtrtraceError(f"short record from the kernel: {len(rec)} bytes", ExitStatus.BPF)
        decode_type = self._by_type.get(rec[TYPE_LO] | rec[TYPE_HI] << 8)  # hdr.type
        if decode_type is None:
            rtype = _HDR.unpack_from(rec)[0]
            raise CtrtraceError(f"unknown event type {rtype} from the kernel", ExitStatus.BPF)
        return decode_type(rec)

    def events(self, records: list[bytes]) -> list[ProcessEvent]:
        """decode() of each record, in order."""
        by_type = self._by_type
        try:
            return [by_type[rec[TYPE_LO] | rec[TYPE_HI] << 8](rec) for rec in records]
        except (KeyError, IndexError):  # one that is not a record: decode() says which
            return [self.decode(rec) for rec in records]

    def cached(self) -> dict[str, int]:
        """How many entries each cache holds (each is bounded)."""
        return {"idents": len(self._idents), "namespaces": len(self._nss),
                "command_lines": len(self._execs)}

    @staticmethod
    def _padded(s: struct.Struct, rec: bytes) -> tuple:
        """A record shorter than its type (an older object): zeros for the rest."""
        if len(rec) < _HDR.size:
            raise CtrtraceError(f"short record from the kernel: {len(rec)} bytes", ExitStatus.BPF)
        return s.unpack_from(rec + bytes(s.size - len(rec)))

    def _ns(self, values: tuple) -> Namespaces:
        ns = self._nss.get(values)
        if ns is None:
            ns = keep(self._nss, values, Namespaces(*values), _IDENT_CACHE_MAX)
        return ns

    def ident(self, raw: bytes) -> tuple[str, Namespaces, str]:
        """comm, namespaces and cgroup from their span of the record."""
        found = self._idents.get(raw)
        if found is None:
            parent, leaf = _cstr(raw[_CGP_AT:_CGL_AT]), _cstr(raw[_CGL_AT:])
            cgroup = f"{parent}/{leaf}" if parent and parent != "/" else "/" + leaf.lstrip("/")
            found = keep(self._idents, raw, (
                _cstr(raw[:_COMM_LEN]), self._ns(_NS_FMT.unpack_from(raw, _NS_AT)), cgroup),
                _IDENT_CACHE_MAX)
        return found

    def _exec_strings(self, key: bytes, filename_len: int,
                      args_len: int) -> tuple[str, tuple[str, ...]]:
        found = exec_strings(key[EXEC.size - _EXEC_STRINGS_AT:], filename_len, args_len)
        return keep(self._execs, key, found, COMMAND_LINES_MAX)


_SOURCES = {rtype: _decoder_source(rtype) for rtype in _RECORDS}


def encode(ev: ProcessEvent, wall_offset_ns: int) -> bytes:
    """The record the kernel would send for ev: decode's inverse, through the
    ctypes mirror (tests and benchmarks make records of recorded events)."""
    import ctypes

    kind = ev.type
    mirror = {"exec": layout.CtExecEvent, "fork": layout.CtForkEvent,
              "exit": layout.CtExitEvent, "setns": layout.CtSetnsEvent,
              "unshare": layout.CtUnshareEvent}[kind]
    rtype = next(t for t, (_, k, _) in _RECORDS.items() if k == kind)
    e: Any = mirror()
    flags = ((layout.CT_F_NS_CHANGE if ev.ns_change else 0)
             | (layout.CT_F_CGROUP_V1 if ev.cgroup_v1 else 0)
             | (layout.CT_F_NO_NSPROXY if ev.no_nsproxy else 0))
    t = e.task
    for name, *_ in layout.CtTask._fields_:
        if name not in ("comm", "ns", "cgroup_parent", "cgroup_leaf", "pid_level",
                        "vpids_between"):
            setattr(t, name, getattr(ev, name))
    t.pid_level = len(ev.vpids) - 1
    between = ev.vpids[1:-1][:layout.CT_PID_LEVELS_BETWEEN]
    t.vpids_between[:len(between)] = between
    t.comm = ev.comm.encode(errors="surrogateescape")[:layout.CT_COMM_LEN - 1]
    t.ns = layout.CtNs(*ev.ns)
    parent, _, leaf = ev.cgroup.rpartition("/")
    t.cgroup_parent = parent.encode(errors="surrogateescape")
    t.cgroup_leaf = leaf.encode(errors="surrogateescape")
    size = ctypes.sizeof(e)
    if isinstance(ev, ExecEvent):
        path = ev.filename.encode(errors="surrogateescape") + b"\0"
        args = b"".join(a.encode(errors="surrogateescape") + b"\0" for a in ev.argv)
        e.old_pid, e.ret, e.filename_len, e.args_len = ev.old_pid, ev.ret, len(path), len(args)
        ctypes.memmove(ctypes.addressof(e) + layout.EXEC_DATA_OFFSET, path + args,
                       len(path + args))
        size = layout.EXEC_DATA_OFFSET + len(path + args)
        flags |= ((layout.CT_F_ARGS_TRUNCATED if ev.argv_truncated else 0)
                  | (layout.CT_F_FILENAME_TRUNCATED if ev.filename_truncated else 0))
        if ev.ret:
            rtype = layout.CT_EVENT_EXEC_FAILED
    elif isinstance(ev, ForkEvent):
        e.parent_pid, e.parent_tid = ev.parent_pid, ev.parent_tid
        e.clone_flags = ev.clone_flags or 0
        flags |= ((layout.CT_F_CLONE_FLAGS_KNOWN if ev.clone_flags is not None else 0)
                  | (layout.CT_F_THREAD if ev.thread else 0))
    elif isinstance(ev, ExitEvent):
        e.status, e.reaper = ev.status, ev.reaper or 0
        flags |= layout.CT_F_HAD_CHILDREN if ev.reaper is not None else 0
    elif isinstance(ev, SetnsEvent):
        e.ns_before = layout.CtNs(*ev.ns_before)
        e.fd, e.nstype, e.ret = ev.fd, ev.nstype, ev.ret
    elif isinstance(ev, UnshareEvent):
        e.ns_before = layout.CtNs(*ev.ns_before)
        e.flags, e.ret = ev.flags, ev.ret
    h = e.hdr
    h.type, h.size, h.flags, h.cpu, h.ktime_ns = rtype, size, flags, ev.cpu, ev.ktime_ns
    if ev.wall_ns - ev.ktime_ns != wall_offset_ns:
        raise ValueError("the event's wall clock is not ktime_ns + wall_offset_ns")
    return bytes(e)[:size]
