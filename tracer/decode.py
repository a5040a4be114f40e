"""Ring-buffer records (bytes laid out by bpf/ctrtrace.h) -> typed events."""

from __future__ import annotations

import ctypes
from typing import Callable, Dict

from . import layout as L
from .errors import CtrtraceError, ExitStatus
from .events import (
    ExecEvent, ExitEvent, ForkEvent, Namespaces, ProcessEvent, SetnsEvent, UnshareEvent,
)

_HDR_SIZE = ctypes.sizeof(L.CtHeader)


def _ns(n: L.CtNs) -> Namespaces:
    return Namespaces(n.mnt, n.uts, n.ipc, n.pid, n.pid_for_children,
                      n.net, n.cgroup, n.user, n.time, n.time_for_children)


class Decoder:
    """Decodes records; wall_offset_ns turns CLOCK_MONOTONIC into wall clock."""

    def __init__(self, wall_offset_ns: int) -> None:
        self.wall_offset_ns = wall_offset_ns
        self._cgroups: Dict[tuple, str] = {}
        self._by_type: Dict[int, Callable[[bytes, L.CtHeader], ProcessEvent]] = {
            L.CT_EVENT_EXEC: self._exec,
            L.CT_EVENT_EXEC_FAILED: self._exec,
            L.CT_EVENT_FORK: self._fork,
            L.CT_EVENT_EXIT: self._exit,
            L.CT_EVENT_SETNS: self._setns,
            L.CT_EVENT_UNSHARE: self._unshare,
        }

    def decode(self, rec: bytes) -> ProcessEvent:
        if len(rec) < _HDR_SIZE:
            raise CtrtraceError(f"short record from the kernel: {len(rec)} bytes", ExitStatus.BPF)
        hdr = L.CtHeader.from_buffer_copy(rec)
        fn = self._by_type.get(hdr.type)
        if fn is None:
            raise CtrtraceError(f"unknown event type {hdr.type} from the kernel", ExitStatus.BPF)
        return fn(rec, hdr)

    def _common(self, hdr: L.CtHeader, t: L.CtTask) -> dict:
        return dict(
            ktime_ns=hdr.ktime_ns,
            wall_ns=hdr.ktime_ns + self.wall_offset_ns,
            cpu=hdr.cpu,
            pid=t.pid,
            tid=t.tid,
            ppid=t.ppid,
            vpid=t.vpid,
            comm=t.comm.decode(errors="replace"),
            uid=t.uid,
            gid=t.gid,
            start_ns=t.start_ns,
            parent_start_ns=t.parent_start_ns,
            ns=_ns(t.ns),
            no_nsproxy=bool(hdr.flags & L.CT_F_NO_NSPROXY),
            cgroup_id=t.cgroup_id,
            cgroup=self._cgroup(t.cgroup_parent, t.cgroup_leaf),
            cgroup_v1=bool(hdr.flags & L.CT_F_CGROUP_V1),
            ns_change=bool(hdr.flags & L.CT_F_NS_CHANGE),
        )

    def _cgroup(self, parent: bytes, leaf: bytes) -> str:
        # a handful of cgroups cover a whole trace: decode each pair once
        key = (parent, leaf)
        name = self._cgroups.get(key)
        if name is None:
            p = parent.decode(errors="replace")
            lf = leaf.decode(errors="replace")
            name = self._cgroups[key] = f"{p}/{lf}" if p and p != "/" else "/" + lf.lstrip("/")
        return name

    @staticmethod
    def _struct(cls, rec: bytes):
        size = ctypes.sizeof(cls)
        if len(rec) < size:
            rec = rec + bytes(size - len(rec))
        return cls.from_buffer_copy(rec)

    def _exec(self, rec: bytes, hdr: L.CtHeader) -> ExecEvent:
        e = L.CtExecHead.from_buffer_copy(rec, 0)
        data = rec[L.EXEC_DATA_OFFSET:]
        fname = data[:e.filename_len].split(b"\0", 1)[0]
        raw = data[e.filename_len:e.filename_len + e.args_len]
        # argv is NUL-separated; a truncated copy may end mid-string
        args = raw.split(b"\0")
        if args and args[-1] == b"":
            args.pop()
        return ExecEvent(
            **self._common(hdr, e.task),
            filename=fname.decode(errors="replace"),
            argv=[a.decode(errors="replace") for a in args],
            argv_truncated=bool(hdr.flags & L.CT_F_ARGS_TRUNCATED),
            filename_truncated=bool(hdr.flags & L.CT_F_FILENAME_TRUNCATED),
            old_pid=e.old_pid,
            ret=e.ret,
        )

    def _fork(self, rec: bytes, hdr: L.CtHeader) -> ForkEvent:
        e = self._struct(L.CtForkEvent, rec)
        known = bool(hdr.flags & L.CT_F_CLONE_FLAGS_KNOWN)
        return ForkEvent(
            **self._common(hdr, e.task),
            parent_pid=e.parent_pid,
            parent_tid=e.parent_tid,
            clone_flags=e.clone_flags if known else None,
            thread=bool(hdr.flags & L.CT_F_THREAD),
        )

    def _exit(self, rec: bytes, hdr: L.CtHeader) -> ExitEvent:
        e = self._struct(L.CtExitEvent, rec)
        reaper = e.reaper if hdr.flags & L.CT_F_HAD_CHILDREN else None
        return ExitEvent(**self._common(hdr, e.task), status=e.exit_code, reaper=reaper)

    def _setns(self, rec: bytes, hdr: L.CtHeader) -> SetnsEvent:
        e = self._struct(L.CtSetnsEvent, rec)
        return SetnsEvent(**self._common(hdr, e.task), fd=e.fd, nstype=e.nstype,
                          ret=e.ret, ns_before=_ns(e.ns_before))

    def _unshare(self, rec: bytes, hdr: L.CtHeader) -> UnshareEvent:
        e = self._struct(L.CtUnshareEvent, rec)
        return UnshareEvent(**self._common(hdr, e.task), flags=e.flags, ret=e.ret,
                            ns_before=_ns(e.ns_before))
