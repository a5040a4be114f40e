"""Events as JSON Lines, fast: the bytes json_bytes() gives for ev.to_json(), plus "\\n".

The live stream and recordings write one line per event, thousands a
second under an exec storm, on the CPUs the traced workload needs.
Building the to_json() dict and serialising it for each event costs more
than one %-format of numbers around pieces that repeat and are serialised
once each -- the namespace set, command name, cgroup, container, argv, the
second of the timestamp -- which is what a line is here (bench/README.md,
"Where the code's choices come from").  to_json() stays
the definition of the contract: tests/test_jsonlines.py checks that both give
the same bytes for every event of the recorded traces and of a live one.
recordlines.py fills the same formats (FORK_LINE, ...) straight from records.

The standard library's C encoder serialises: with the caches it is as fast
here as orjson, whose import (uuid and platform with it) would lengthen the
start of every trace (bench/README.md).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..model.contract import is_utf8, iso_second, json_bytes, list_json, text_json
from ..model.events import (
    Container,
    ExecEvent,
    ExitEvent,
    ForkEvent,
    Namespaces,
    ProcessEvent,
    SetnsEvent,
    UnshareEvent,
)

NULL_JSON = b"null"
# pieces indexed by a bool
BOOL_JSON = (b"false", b"true")
THREAD_JSON = (b"", b',"thread":true')
CORE_JSON = (b"", b',"core_dumped":true')
FILENAME_TRUNCATED_JSON = (b"", b',"filename_truncated":true')
OPTIONAL_JSON = ((b"", b',"no_nsproxy":true'),  # [cgroup_v1][no_nsproxy]
                 (b',"cgroup_v1":true', b',"cgroup_v1":true,"no_nsproxy":true'))

# Each line is one %-format: the fields every event has, ending with the
# optional ones (OPTIONAL_JSON), then its class's.
_COMMON = (b'","ts":"%s%09dZ","ktime_ns":%d,"cpu":%d,"pid":%d,"tid":%d,"ppid":%d,'
           b'"vpid":%d,"comm":%s,"uid":%d,"gid":%d,"start_ns":%d,"parent_start_ns":%d,"ns":%s,'
           b'"cgroup_id":%d,"cgroup":%s,"ns_change":%s,"container":%s%s')
EXEC_LINE = (b'{"type":"exec' + _COMMON +
             b',"filename":%s,"argv":%s,"argv_truncated":%s,"ret":%d%s%s}\n')
FORK_LINE = b'{"type":"fork' + _COMMON + b',"parent_pid":%d,"parent_tid":%d,"clone_flags":%s%s}\n'
EXIT_LINE = (b'{"type":"exit' + _COMMON +
             b',"exit_code":%d,"signal":%d,"status":%d,"reaper":%s%s}\n')
_SETNS = b'{"type":"setns' + _COMMON + b',"fd":%d,"nstype":%d,"ret":%d,"ns_before":%s}\n'
_UNSHARE = b'{"type":"unshare' + _COMMON + b',"flags":%d,"ret":%d,"ns_before":%s}\n'
_CACHE_MAX = 4096  # entries per cache: a trace repeats a few hundred at most
# command lines are up to a few KB each: fewer of them (a storm repeats a few;
# a build that runs thousands of different ones misses either way)
COMMAND_LINES_MAX = 512


def keep(cache: dict[Any, Any], key: Any, value: Any, limit: int = _CACHE_MAX) -> Any:
    """cache[key] = value, emptying the cache first when it holds limit entries."""
    if len(cache) >= limit:
        cache.clear()
    cache[key] = value
    return value


class EventLines:
    """Renders events; the repeating pieces are cached per renderer.

    One renderer can serve two sinks (a recording and a JSON view): it keeps
    the last event's line, and the sinks are given each event in turn."""

    def __init__(self) -> None:
        self._last: tuple[ProcessEvent | None, bytes] = (None, b"")
        # Namespace sets and containers are frozen dataclasses whose hash is
        # Python code, slow for a lookup (bench/README.md); the decoder shares
        # one object per distinct value, so these caches are keyed by id()
        # instead, each entry holding its object (alive, so its id is not reused).
        self._ns: dict[int, tuple[Namespaces, bytes]] = {}
        self._containers: dict[int, tuple[Container, bytes]] = {}
        # command, cgroup and file names; a text that is not UTF-8 is keyed by
        # (field, text): its JSON names the field (text_json)
        self._names: dict[Any, bytes] = {}
        self._argvs: dict[tuple[str, ...], bytes] = {}
        self.seconds: dict[int, bytes] = {}  # second()'s cache, read inline by the hot loops
        self._by_class: dict[type, Callable[[Any], bytes]] = {
            ExecEvent: self._exec, ForkEvent: self._fork, ExitEvent: self._exit,
            SetnsEvent: self._setns, UnshareEvent: self._unshare}

    def namespaces(self, ns: Namespaces) -> bytes:
        hit = self._ns.get(id(ns))
        if hit is not None and hit[0] is ns:
            return hit[1]
        return keep(self._ns, id(ns), (ns, json_bytes(ns.to_dict())))[1]

    def container(self, c: Container | None) -> bytes:
        if c is None:
            return b"null"
        hit = self._containers.get(id(c))
        if hit is not None and hit[0] is c:
            return hit[1]
        return keep(self._containers, id(c), (c, json_bytes(c.to_json())))[1]

    def text(self, field: str, s: str) -> bytes:
        """The JSON of text field `field` (see contract.text_json)."""
        hit = self._names.get(s)
        if hit is not None:
            return hit
        if is_utf8(s):
            return keep(self._names, s, text_json(field, s))
        key = (field, s)
        return self._names.get(key) or keep(self._names, key, text_json(field, s))

    def argv(self, argv: list[str]) -> bytes:
        key = tuple(argv)
        hit = self._argvs.get(key)
        if hit is None:
            hit = keep(self._argvs, key, list_json("argv", argv), limit=COMMAND_LINES_MAX)
        return hit

    def second(self, sec: int) -> bytes:
        return self.seconds.get(sec) or keep(self.seconds, sec, iso_second(sec).encode())

    def line(self, ev: ProcessEvent) -> bytes:
        last = self._last
        if last[0] is ev:
            return last[1]
        line = self._render(ev)
        self._last = (ev, line)
        return line

    def _render(self, ev: ProcessEvent) -> bytes:
        return self._by_class[type(ev)](ev)

    def _common(self, ev: ProcessEvent) -> tuple:
        """The values of _COMMON.  This runs for every event, live: the caches
        are read inline, their methods called only to fill them."""
        sec, frac = divmod(ev.wall_ns, 1_000_000_000)
        names = self._names
        ns = self._ns.get(id(ev.ns))
        c = ev.container
        return (self.seconds.get(sec) or self.second(sec), frac, ev.ktime_ns, ev.cpu, ev.pid,
                ev.tid, ev.ppid, ev.vpid, names.get(ev.comm) or self.text("comm", ev.comm),
                ev.uid, ev.gid, ev.start_ns, ev.parent_start_ns,
                ns[1] if ns is not None and ns[0] is ev.ns else self.namespaces(ev.ns),
                ev.cgroup_id, names.get(ev.cgroup) or self.text("cgroup", ev.cgroup),
                BOOL_JSON[ev.ns_change], NULL_JSON if c is None else self.container(c),
                OPTIONAL_JSON[ev.cgroup_v1][ev.no_nsproxy])

    def _exec(self, ev: ExecEvent) -> bytes:
        old_pid = b"" if ev.old_pid == ev.tid else b',"old_pid":%d' % ev.old_pid
        return EXEC_LINE % (self._common(ev) + (
            self.text("filename", ev.filename), self.argv(ev.argv), BOOL_JSON[ev.argv_truncated],
            ev.ret,
            FILENAME_TRUNCATED_JSON[ev.filename_truncated], old_pid))

    def _fork(self, ev: ForkEvent) -> bytes:
        flags = ev.clone_flags
        return FORK_LINE % (self._common(ev) + (
            ev.parent_pid, ev.parent_tid, NULL_JSON if flags is None else b"%d" % flags,
            THREAD_JSON[ev.thread]))

    def _exit(self, ev: ExitEvent) -> bytes:
        reaper = ev.reaper
        return EXIT_LINE % (self._common(ev) + (
            ev.exit_code, ev.signal, ev.status, NULL_JSON if reaper is None else b"%d" % reaper,
            CORE_JSON[ev.core_dumped]))

    def _setns(self, ev: SetnsEvent) -> bytes:
        return _SETNS % (self._common(ev) + (
            ev.fd, ev.nstype, ev.ret, self.namespaces(ev.ns_before)))

    def _unshare(self, ev: UnshareEvent) -> bytes:
        return _UNSHARE % (self._common(ev) + (
            ev.flags, ev.ret, self.namespaces(ev.ns_before)))
