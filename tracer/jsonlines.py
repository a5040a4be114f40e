"""Events as JSON Lines, fast: the bytes orjson gives for ev.to_json(), plus "\\n".

The live stream and recordings write one line per event, thousands a
second under an exec storm, on the CPUs the traced workload needs.
Building the to_json() dict and serialising it cost ~6 us an event; here a
line is one %-format of numbers around pieces that repeat and are
serialised once each -- the namespace set, command name, cgroup, container,
the second of the timestamp -- about a third of that.  to_json() stays the
definition of the contract: tests/test_jsonlines.py checks that both give
the same bytes for every event of the recorded traces and of a live one.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Dict, Optional

from .events import (
    Container, ExecEvent, ExitEvent, ForkEvent, Namespaces, ProcessEvent, SetnsEvent,
    UnshareEvent, iso_second,
)

try:
    import orjson as _orjson

    def json_bytes(obj: Any) -> bytes:
        """Compact JSON (orjson: the bytes json.dumps gives with these separators)."""
        return _orjson.dumps(obj)
except ImportError:  # pragma: no cover - orjson is a dependency; this is the fallback
    import json as _json

    def json_bytes(obj: Any) -> bytes:
        return _json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()

_BOOL = {False: b"false", True: b"true"}

_COMMON = (b'{"type":"%s","ts":"%s%09dZ","ktime_ns":%d,"cpu":%d,"pid":%d,"tid":%d,"ppid":%d,'
           b'"vpid":%d,"comm":%s,"uid":%d,"gid":%d,"start_ns":%d,"parent_start_ns":%d,"ns":%s,'
           b'"cgroup_id":%d,"cgroup":%s,"ns_change":%s,"container":%s')


@functools.lru_cache(maxsize=64)
def _second(sec: int) -> bytes:
    return iso_second(sec).encode()


class EventLines:
    """Renders events; the repeating pieces are cached per renderer."""

    def __init__(self) -> None:
        self._ns: Dict[Namespaces, bytes] = {}
        self._names: Dict[str, bytes] = {}  # command and cgroup names: a few hundred at most
        self._containers: Dict[Container, bytes] = {}
        self._extra: Dict[type, Callable[[Any], bytes]] = {
            ExecEvent: self._exec, ForkEvent: self._fork, ExitEvent: self._exit,
            SetnsEvent: self._setns, UnshareEvent: self._unshare,
        }

    def _nsj(self, ns: Namespaces) -> bytes:
        b = self._ns.get(ns)
        if b is None:
            if len(self._ns) > 4096:
                self._ns.clear()
            b = self._ns[ns] = json_bytes(ns.to_dict())
        return b

    def _name(self, s: str) -> bytes:
        b = self._names.get(s)
        if b is None:
            if len(self._names) > 4096:
                self._names.clear()
            b = self._names[s] = json_bytes(s)
        return b

    def _container(self, c: Optional[Container]) -> bytes:
        if c is None:
            return b"null"
        b = self._containers.get(c)
        if b is None:
            if len(self._containers) > 1024:
                self._containers.clear()
            b = self._containers[c] = json_bytes(c.to_json())
        return b

    def line(self, ev: ProcessEvent) -> bytes:
        sec, frac = divmod(ev.wall_ns, 1_000_000_000)
        head = _COMMON % (
            ev.type.encode(), _second(sec), frac, ev.ktime_ns, ev.cpu, ev.pid, ev.tid, ev.ppid,
            ev.vpid, self._name(ev.comm), ev.uid, ev.gid, ev.start_ns, ev.parent_start_ns,
            self._nsj(ev.ns), ev.cgroup_id, self._name(ev.cgroup), _BOOL[ev.ns_change],
            self._container(ev.container))
        if ev.cgroup_v1:
            head += b',"cgroup_v1":true'
        if ev.no_nsproxy:
            head += b',"no_nsproxy":true'
        return head + self._extra[type(ev)](ev) + b"}\n"

    @staticmethod
    def _exec(ev: ExecEvent) -> bytes:
        out = b',"filename":%s,"argv":%s,"argv_truncated":%s,"ret":%d' % (
            json_bytes(ev.filename), json_bytes(ev.argv), _BOOL[ev.argv_truncated], ev.ret)
        if ev.filename_truncated:
            out += b',"filename_truncated":true'
        if ev.old_pid != ev.tid:
            out += b',"old_pid":%d' % ev.old_pid
        return out

    @staticmethod
    def _fork(ev: ForkEvent) -> bytes:
        flags = b"null" if ev.clone_flags is None else b"%d" % ev.clone_flags
        out = b',"parent_pid":%d,"parent_tid":%d,"clone_flags":%s' % (
            ev.parent_pid, ev.parent_tid, flags)
        return out + b',"thread":true' if ev.thread else out

    @staticmethod
    def _exit(ev: ExitEvent) -> bytes:
        reaper = b"null" if ev.reaper is None else b"%d" % ev.reaper
        out = b',"exit_code":%d,"signal":%d,"status":%d,"reaper":%s' % (
            ev.exit_code, ev.signal, ev.status, reaper)
        return out + b',"core_dumped":true' if ev.core_dumped else out

    def _setns(self, ev: SetnsEvent) -> bytes:
        return b',"fd":%d,"nstype":%d,"ret":%d,"ns_before":%s' % (
            ev.fd, ev.nstype, ev.ret, self._nsj(ev.ns_before))

    def _unshare(self, ev: UnshareEvent) -> bytes:
        return b',"flags":%d,"ret":%d,"ns_before":%s' % (
            ev.flags, ev.ret, self._nsj(ev.ns_before))
