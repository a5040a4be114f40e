"""Events as JSON Lines, fast: the bytes json_bytes() gives for ev.to_json(), plus "\\n".

The live stream and recordings write one line per event, thousands a
second under an exec storm, on the CPUs the traced workload needs.
Building the to_json() dict and serialising it cost ~6 us an event; here a
line is one %-format of numbers around pieces that repeat and are
serialised once each -- the namespace set, command name, cgroup, container,
argv, the second of the timestamp -- about a third of that.  to_json() stays
the definition of the contract: tests/test_jsonlines.py checks that both give
the same bytes for every event of the recorded traces and of a live one.

The standard library's C encoder serialises: with the caches it is as fast
here as orjson, which would add ~5 ms (it imports uuid and platform) to the
start of every trace.
"""

from __future__ import annotations

from json import JSONEncoder
from json.encoder import encode_basestring as _json_str
from typing import Any, Callable, Dict, List, Optional, Tuple

from .events import (
    Container, ExecEvent, ExitEvent, ForkEvent, Namespaces, ProcessEvent, SetnsEvent,
    UnshareEvent, iso_second,
)

_encode = JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


def json_bytes(obj: Any) -> bytes:
    """Compact JSON in UTF-8: json.dumps(obj, separators=(",", ":"), ensure_ascii=False)."""
    return _encode(obj).encode()


_BOOL = {False: b"false", True: b"true"}

# after '{"type":"<type>","ts":"' (one prefix per event class)
_COMMON = (b'%s%09dZ","ktime_ns":%d,"cpu":%d,"pid":%d,"tid":%d,"ppid":%d,'
           b'"vpid":%d,"comm":%s,"uid":%d,"gid":%d,"start_ns":%d,"parent_start_ns":%d,"ns":%s,'
           b'"cgroup_id":%d,"cgroup":%s,"ns_change":%s,"container":%s')
_CACHE_MAX = 4096  # entries per cache: a trace repeats a few hundred at most


def _keep(cache: Dict[Any, Any], key: Any, value: Any) -> Any:
    """cache[key] = value, emptying the cache first when it is full."""
    if len(cache) >= _CACHE_MAX:
        cache.clear()
    cache[key] = value
    return value


class EventLines:
    """Renders events; the repeating pieces are cached per renderer.

    One renderer can serve two sinks (a recording and a JSON view): it keeps
    the last event's line, and the sinks are given each event in turn."""

    def __init__(self) -> None:
        self._last: Tuple[Optional[ProcessEvent], bytes] = (None, b"")
        # Namespace sets and containers are frozen dataclasses whose hash is
        # Python code, ~0.5 us a lookup; the decoder shares one object per
        # distinct value, so these caches are keyed by id() instead, each
        # entry holding its object (alive, so its id is not reused).
        self._ns: Dict[int, Tuple[Namespaces, bytes]] = {}
        self._containers: Dict[int, Tuple[Container, bytes]] = {}
        self._names: Dict[str, bytes] = {}  # command, cgroup and file names
        self._argvs: Dict[Tuple[str, ...], bytes] = {}
        self._seconds: Dict[int, bytes] = {}
        self._by_class: Dict[type, Tuple[bytes, Callable[[Any], bytes]]] = {
            cls: (b'{"type":"%s","ts":"' % cls.type.encode(), extra) for cls, extra in (
                (ExecEvent, self._exec), (ForkEvent, self._fork), (ExitEvent, self._exit),
                (SetnsEvent, self._setns), (UnshareEvent, self._unshare))
        }

    def _nsj(self, ns: Namespaces) -> bytes:
        hit = self._ns.get(id(ns))
        if hit is not None and hit[0] is ns:
            return hit[1]
        return _keep(self._ns, id(ns), (ns, json_bytes(ns.to_dict())))[1]

    def _container(self, c: Optional[Container]) -> bytes:
        if c is None:
            return b"null"
        hit = self._containers.get(id(c))
        if hit is not None and hit[0] is c:
            return hit[1]
        return _keep(self._containers, id(c), (c, json_bytes(c.to_json())))[1]

    def _name(self, s: str) -> bytes:
        return self._names.get(s) or _keep(self._names, s, json_bytes(s))

    def _argv(self, argv: List[str]) -> bytes:
        key = tuple(argv)
        hit = self._argvs.get(key)
        if hit is None:
            # json_bytes(argv), without the encoder's generic machinery
            hit = _keep(self._argvs, key,
                        b"[%s]" % b",".join([_json_str(a).encode() for a in argv]))
        return hit

    def _second(self, sec: int) -> bytes:
        return self._seconds.get(sec) or _keep(self._seconds, sec, iso_second(sec).encode())

    def line(self, ev: ProcessEvent) -> bytes:
        last = self._last
        if last[0] is ev:
            return last[1]
        line = self._render(ev)
        self._last = (ev, line)
        return line

    def _render(self, ev: ProcessEvent) -> bytes:
        # One %-format over cached pieces: this runs for every event, live.
        prefix, extra = self._by_class[type(ev)]
        sec, frac = divmod(ev.wall_ns, 1_000_000_000)
        head = prefix + _COMMON % (
            self._second(sec), frac, ev.ktime_ns, ev.cpu, ev.pid,
            ev.tid, ev.ppid, ev.vpid, self._name(ev.comm), ev.uid, ev.gid,
            ev.start_ns, ev.parent_start_ns, self._nsj(ev.ns), ev.cgroup_id,
            self._name(ev.cgroup), _BOOL[ev.ns_change],
            self._container(ev.container))
        if ev.cgroup_v1:
            head += b',"cgroup_v1":true'
        if ev.no_nsproxy:
            head += b',"no_nsproxy":true'
        return head + extra(ev) + b"}\n"

    def _exec(self, ev: ExecEvent) -> bytes:
        out = b',"filename":%s,"argv":%s,"argv_truncated":%s,"ret":%d' % (
            self._name(ev.filename), self._argv(ev.argv), _BOOL[ev.argv_truncated], ev.ret)
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
