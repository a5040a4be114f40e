"""Ring-buffer records (bytes laid out by bpf/ctrtrace.h) -> typed events.

Each record type decodes with one precompiled struct.Struct, built from the
ctypes mirror in layout.py (whose layout the tests check against the BTF of
the object); namespace sets, command names and cgroup names repeat across
events and are decoded once each.
"""

from __future__ import annotations

import struct
from typing import Callable, Dict, Tuple

from . import layout as L
from .errors import CtrtraceError, ExitStatus
from .events import (
    ExecEvent, ExitEvent, ForkEvent, Namespaces, ProcessEvent, SetnsEvent, UnshareEvent,
)

_HDR = struct.Struct(L.struct_format(L.CtHeader))
# header + task, then what each type adds
_EXEC = struct.Struct(L.struct_format(L.CtExecHead))
_FORK = struct.Struct(L.struct_format(L.CtForkEvent))
_EXIT = struct.Struct(L.struct_format(L.CtExitEvent))
_SETNS = struct.Struct(L.struct_format(L.CtSetnsEvent))
_UNSHARE = struct.Struct(L.struct_format(L.CtUnshareEvent))
_NS = len(L.NS_NAMES)


def _at(cls, name: str) -> int:
    """Index of a field in the tuple its Struct unpacks (names from the mirror)."""
    return L.struct_fields(cls).index(name)



_EXEC_AT = _at(L.CtExecHead, "old_pid")
_FORK_AT = _at(L.CtForkEvent, "parent_pid")
_EXIT_AT = _at(L.CtExitEvent, "exit_code")
_SETNS_BEFORE = _at(L.CtSetnsEvent, "ns_before.mnt")
_SETNS_AT = _at(L.CtSetnsEvent, "fd")
_UNSHARE_BEFORE = _at(L.CtUnshareEvent, "ns_before.mnt")
_UNSHARE_AT = _at(L.CtUnshareEvent, "flags")
_T = {n: _at(L.CtExecHead, n) for n in (
    "hdr.flags", "hdr.cpu", "hdr.ktime_ns", "task.pid", "task.tid", "task.ppid", "task.vpid",
    "task.uid", "task.gid", "task.start_ns", "task.parent_start_ns", "task.cgroup_id",
    "task.comm", "task.ns.mnt", "task.cgroup_parent", "task.cgroup_leaf")}


class Decoder:
    """Decodes records; wall_offset_ns turns CLOCK_MONOTONIC into wall clock."""

    def __init__(self, wall_offset_ns: int) -> None:
        self.wall_offset_ns = wall_offset_ns
        self._cgroups: Dict[Tuple[bytes, bytes], str] = {}
        self._comms: Dict[bytes, str] = {}
        self._nss: Dict[tuple, Namespaces] = {}
        self._by_type: Dict[int, Callable[[bytes, int], ProcessEvent]] = {
            L.CT_EVENT_EXEC: self._exec,
            L.CT_EVENT_EXEC_FAILED: self._exec,
            L.CT_EVENT_FORK: self._fork,
            L.CT_EVENT_EXIT: self._exit,
            L.CT_EVENT_SETNS: self._setns,
            L.CT_EVENT_UNSHARE: self._unshare,
        }

    def decode(self, rec: bytes) -> ProcessEvent:
        if len(rec) < _HDR.size:
            raise CtrtraceError(f"short record from the kernel: {len(rec)} bytes", ExitStatus.BPF)
        rtype = _HDR.unpack_from(rec)[0]
        fn = self._by_type.get(rtype)
        if fn is None:
            raise CtrtraceError(f"unknown event type {rtype} from the kernel", ExitStatus.BPF)
        return fn(rec, rtype)

    @staticmethod
    def _fields(s: struct.Struct, rec: bytes) -> tuple:
        if len(rec) < s.size:
            rec = rec + bytes(s.size - len(rec))
        return s.unpack_from(rec)

    def _ns(self, values: tuple) -> Namespaces:
        ns = self._nss.get(values)
        if ns is None:
            ns = self._nss[values] = Namespaces(*values)
        return ns

    def _common(self, f: tuple, t=_T) -> dict:
        flags, ktime, raw_comm = f[t["hdr.flags"]], f[t["hdr.ktime_ns"]], f[t["task.comm"]]
        comm = self._comms.get(raw_comm)
        if comm is None:
            comm = self._comms[raw_comm] = raw_comm.split(b"\0", 1)[0].decode(errors="replace")
        ns_at = t["task.ns.mnt"]
        return dict(
            ktime_ns=ktime,
            wall_ns=ktime + self.wall_offset_ns,
            cpu=f[t["hdr.cpu"]],
            pid=f[t["task.pid"]], tid=f[t["task.tid"]], ppid=f[t["task.ppid"]],
            vpid=f[t["task.vpid"]], uid=f[t["task.uid"]], gid=f[t["task.gid"]],
            start_ns=f[t["task.start_ns"]], parent_start_ns=f[t["task.parent_start_ns"]],
            comm=comm,
            ns=self._ns(f[ns_at:ns_at + _NS]),
            no_nsproxy=bool(flags & L.CT_F_NO_NSPROXY),
            cgroup_id=f[t["task.cgroup_id"]],
            cgroup=self._cgroup(f[t["task.cgroup_parent"]], f[t["task.cgroup_leaf"]]),
            cgroup_v1=bool(flags & L.CT_F_CGROUP_V1),
            ns_change=bool(flags & L.CT_F_NS_CHANGE),
        )

    def _cgroup(self, parent: bytes, leaf: bytes) -> str:
        # a handful of cgroups cover a whole trace: decode each pair once
        key = (parent, leaf)
        name = self._cgroups.get(key)
        if name is None:
            p = parent.split(b"\0", 1)[0].decode(errors="replace")
            lf = leaf.split(b"\0", 1)[0].decode(errors="replace")
            name = self._cgroups[key] = f"{p}/{lf}" if p and p != "/" else "/" + lf.lstrip("/")
        return name

    def _exec(self, rec: bytes, rtype: int) -> ExecEvent:
        f = _EXEC.unpack_from(rec)
        old_pid, ret, filename_len, args_len = f[_EXEC_AT:_EXEC_AT + 4]
        data = rec[_EXEC.size:]
        fname = data[:filename_len].split(b"\0", 1)[0]
        # argv is NUL-separated; a truncated copy may end mid-string
        args = data[filename_len:filename_len + args_len].split(b"\0")
        if args and args[-1] == b"":
            args.pop()
        flags = f[_T["hdr.flags"]]
        return ExecEvent(
            **self._common(f),
            filename=fname.decode(errors="replace"),
            argv=[a.decode(errors="replace") for a in args],
            argv_truncated=bool(flags & L.CT_F_ARGS_TRUNCATED),
            filename_truncated=bool(flags & L.CT_F_FILENAME_TRUNCATED),
            old_pid=old_pid,
            ret=ret,
        )

    def _fork(self, rec: bytes, rtype: int) -> ForkEvent:
        f = self._fields(_FORK, rec)
        parent_pid, parent_tid, clone_flags = f[_FORK_AT:_FORK_AT + 3]
        flags = f[_T["hdr.flags"]]
        return ForkEvent(
            **self._common(f),
            parent_pid=parent_pid,
            parent_tid=parent_tid,
            clone_flags=clone_flags if flags & L.CT_F_CLONE_FLAGS_KNOWN else None,
            thread=bool(flags & L.CT_F_THREAD),
        )

    def _exit(self, rec: bytes, rtype: int) -> ExitEvent:
        f = self._fields(_EXIT, rec)
        status, reaper = f[_EXIT_AT:_EXIT_AT + 2]
        had_children = f[_T["hdr.flags"]] & L.CT_F_HAD_CHILDREN
        return ExitEvent(**self._common(f), status=status,
                         reaper=reaper if had_children else None)

    def _setns(self, rec: bytes, rtype: int) -> SetnsEvent:
        f = self._fields(_SETNS, rec)
        before = f[_SETNS_BEFORE:_SETNS_BEFORE + _NS]
        fd, nstype, ret = f[_SETNS_AT:_SETNS_AT + 3]
        return SetnsEvent(**self._common(f), fd=fd, nstype=nstype, ret=ret,
                          ns_before=self._ns(before))

    def _unshare(self, rec: bytes, rtype: int) -> UnshareEvent:
        f = self._fields(_UNSHARE, rec)
        before = f[_UNSHARE_BEFORE:_UNSHARE_BEFORE + _NS]
        uflags, ret = f[_UNSHARE_AT:_UNSHARE_AT + 2]
        return UnshareEvent(**self._common(f), flags=uflags, ret=ret,
                            ns_before=self._ns(before))
