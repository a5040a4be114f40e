"""Events as JSON Lines, both ways: the one writer and the one reader.

Both are made from the contract (contract.EVENTS): for each event type, a
function generated from its fields -- the writer's one %-format of the
line, with each field's encoding and the condition of the optional ones;
the reader's checks of each field's type and range, fused with building
the typed event (events.py), the defaults of absent fields and the exact
bytes of NAME_base64 siblings.  Nothing here is written by hand per field:
a field added to the contract (and to its event class, which the import
checks) is written and read.

The writer caches what repeats from event to event -- a command name, a
cgroup, a command line, a namespace set, a container, the second of a
timestamp -- as the JSON bytes it is written as; the reader, what a line's
namespace sets, containers and seconds were read into.  Both caches are
bounded (CACHE_MAX entries each, emptied when full).
"""

from __future__ import annotations

import base64
import binascii
import builtins
import functools
import types
from collections.abc import Callable
from typing import Any

from .contract import (
    CONTAINER,
    EVENTS,
    NS,
    NS_NAMES,
    RAW_SUFFIX,
    Bool,
    Field,
    Int,
    Invalid,
    ListOf,
    Str,
    Timestamp,
    check_record,
    iso_second,
    json_bytes,
    list_json,
    parse_iso_ts,
    text_json,
)
from .events import EVENT_CLASSES, Container, Namespaces, ProcessEvent, record_of

CACHE_MAX = 4096  # entries per cache: a trace repeats a few hundred at most
# command lines are up to a few KB each: fewer of them (a storm repeats a few;
# a build that runs thousands of different ones misses either way)
COMMAND_LINES_MAX = 512
_NANO = 1_000_000_000


def keep(cache: dict[Any, Any], key: Any, value: Any, limit: int = CACHE_MAX) -> Any:
    """cache[key] = value, emptying the cache first when it holds limit entries."""
    if len(cache) >= limit:
        cache.clear()
    cache[key] = value
    return value


def _fields(kind: str) -> tuple[Field, ...]:
    """The fields of an event type that are written or read on their own: all
    but the type (the line's first) and the NAME_base64 siblings (with NAME)."""
    names = {f.name for f in EVENTS[kind].fields}
    return tuple(f for f in EVENTS[kind].fields if f.name != "type"
                 and not (f.name.endswith(RAW_SUFFIX) and f.name[:-len(RAW_SUFFIX)] in names))


def _has_raw(kind: str, f: Field) -> bool:
    return any(g.name == f.name + RAW_SUFFIX for g in EVENTS[kind].fields)


def _check_classes() -> None:
    """Each event class holds its contract's fields, in order."""
    for kind, cls in EVENT_CLASSES.items():
        held = tuple(f.held_as for f in EVENTS[kind].fields if f.held_as is not None)
        if held != cls.FIELDS:
            raise ImportError(f"{cls.__name__} holds {cls.FIELDS}, the contract {held}")


_check_classes()


# -- the writer ----------------------------------------------------------------

def _piece(kind: str, f: Field) -> tuple[str, str]:
    """(format, argument expression) of one field's ',"name":value'."""
    x = f.value or f.held_as
    assert x
    key = f',"{f.name}":'
    k = f.kind
    if f.when:
        if isinstance(k, Bool):
            return "%s", f"(b'{key}true' if {f.when} else b'')"
        if isinstance(k, Int) and not k.nullable:
            return "%s", f"(b'{key}%d' % ({x}) if {f.when} else b'')"
        if isinstance(k, ListOf) and isinstance(k.item, Int):
            items = f"b','.join([b'%d' % i for i in {x}])"
            return "%s", f"(b'{key}[%s]' % {items} if {f.when} else b'')"
        raise TypeError(f"{kind}.{f.name}: no optional form for {type(k).__name__}")
    if isinstance(k, Timestamp):  # its second and nanoseconds: _sec, _ns_in_sec
        return key + '"%s%09dZ"', "_seconds.get(_sec) or _second(_sec), _ns_in_sec"
    if isinstance(k, Int):
        if k.nullable:
            return key + "%s", f"(b'null' if {x} is None else b'%d' % {x})"
        return key + "%d", x
    if isinstance(k, Bool):
        return key + "%s", f"_BOOL[{x}]"
    if isinstance(k, (Str, ListOf)) and _has_raw(kind, f):
        return key + "%s", f"(_text_{f.name}.get({x}) or _fill_{f.name}({x}))"
    if k is NS:
        return key + "%s", f"(_ns.get({x}) or _fill_ns({x}))"
    if k is CONTAINER:
        return key + "%s", (f"(b'null' if {x} is None else "
                            f"_containers.get({x}) or _fill_container({x}))")
    raise TypeError(f"{kind}.{f.name}: no JSON form for {type(k).__name__}")


@functools.cache
def _writer_code(kind: str) -> types.CodeType:
    cls = EVENT_CLASSES[kind]
    fmt, args = [f'{{"type":"{kind}"'], []
    for f in _fields(kind):
        piece, arg = _piece(kind, f)
        fmt.append(piece)
        args.append(arg)
    template = ("".join(fmt) + "}\n").encode()
    stamp = next(f.held_as for f in _fields(kind) if isinstance(f.kind, Timestamp))
    source = (f"def line_{kind}(ev):\n"
              f"    {', '.join(cls.FIELDS)}, = ev\n"
              f"    _sec, _ns_in_sec = divmod({stamp}, {_NANO})\n"
              f"    return {template!r} % ({', '.join(args)},)\n")
    module = compile(source, f"<{kind} writer>", "exec")
    return next(c for c in module.co_consts if isinstance(c, types.CodeType))


_BOOL = (b"false", b"true")


class EventLines:
    """The one JSON writer: an event -> its line (bytes, with its newline).

    One writer can serve two sinks (a recording and a JSON view): it keeps
    the lines of the last batch, and both sinks are given the same batch."""

    def __init__(self) -> None:
        self._last_batch: tuple[list[ProcessEvent] | None, list[bytes]] = (None, [])
        env: dict[str, Any] = {"__builtins__": builtins, "_BOOL": _BOOL}
        self._seconds: dict[int, bytes] = {}
        env["_seconds"], env["_second"] = self._seconds, self._second
        for name, fill, encode in (("_ns", "_fill_ns", self._ns_json),
                                   ("_containers", "_fill_container", self._container_json)):
            env[name] = {}
            env[fill] = functools.partial(self._fill, env[name], CACHE_MAX, encode)
        for kind in EVENT_CLASSES:
            for f in _fields(kind):
                if ("_text_" + f.name) in env or not _has_raw(kind, f):
                    continue
                cache: dict[Any, bytes] = {}
                if isinstance(f.kind, ListOf):
                    limit, encode = COMMAND_LINES_MAX, functools.partial(list_json, f.name)
                else:
                    limit, encode = CACHE_MAX, functools.partial(text_json, f.name)
                env["_text_" + f.name] = cache
                env["_fill_" + f.name] = functools.partial(self._fill, cache, limit, encode)
        # every cache the writers read, by name (cached())
        self._caches: dict[str, dict] = {name[1:]: value for name, value in env.items()
                                         if isinstance(value, dict) and name != "__builtins__"}
        self._by_class: dict[type, Callable[[Any], bytes]] = {
            cls: types.FunctionType(_writer_code(kind), env)
            for kind, cls in EVENT_CLASSES.items()}

    @staticmethod
    def _fill(cache: dict[Any, bytes], limit: int, encode: Callable[[Any], bytes],
              value: Any) -> bytes:
        return keep(cache, value, encode(value), limit)

    @staticmethod
    def _ns_json(ns: Namespaces) -> bytes:
        return json_bytes(ns.to_dict())

    @staticmethod
    def _container_json(c: Container) -> bytes:
        return json_bytes(c.to_json())

    def _second(self, sec: int) -> bytes:
        return keep(self._seconds, sec, iso_second(sec).encode())

    def cached(self) -> dict[str, int]:
        """How many entries each cache holds (each is bounded)."""
        return {name: len(cache) for name, cache in self._caches.items()}

    def line(self, ev: ProcessEvent) -> bytes:
        return self._by_class[type(ev)](ev)

    def lines(self, events: list[ProcessEvent]) -> list[bytes]:
        """The lines of a batch (the same list again: the same lines)."""
        last = self._last_batch
        if last[0] is events:
            return last[1]
        by_class = self._by_class
        lines = [by_class[type(ev)](ev) for ev in events]
        self._last_batch = (events, lines)
        return lines


# -- the reader ----------------------------------------------------------------

_MISSING = object()


def _read_text(raw: Any) -> str | None:
    """The exact text of a NAME_base64 sibling; None if it is not base64."""
    if type(raw) is not str:
        return None
    try:
        return base64.b64decode(raw, validate=True).decode("utf-8", "surrogateescape")
    except (binascii.Error, ValueError):
        return None


def _read_texts(raw: Any, n: int) -> tuple[str, ...] | None:
    if type(raw) is not list or len(raw) != n:
        return None
    texts = tuple(_read_text(r) for r in raw)
    return None if None in texts else texts  # type: ignore[return-value]


class _Reading:
    """The reader's caches: what repeated values were read into."""

    def __init__(self) -> None:
        self.ns: dict[tuple, Namespaces] = {}
        self.containers: dict[tuple, Container] = {}
        self.seconds: dict[str, int] = {}
        self.texts: dict[Any, Any] = {}  # names and command lines, each kept once

    def share(self, text: Any) -> Any:
        """The one object kept for this text (or command line)."""
        return keep(self.texts, text, text, COMMAND_LINES_MAX * 8)

    def namespaces(self, x: Any) -> Namespaces | None:
        if type(x) is not dict:
            return None
        try:
            key = tuple(x.items())
            hit = self.ns.get(key)
        except TypeError:  # a value that is not hashable: not an inode
            return None
        if hit is not None:
            return hit
        if NS.check(x) is not None:
            return None
        return keep(self.ns, key, Namespaces(*[x[name] for name in NS_NAMES]))

    def container(self, x: Any) -> Any:
        """The Container (None for null); _MISSING when x is not one."""
        if x is None:
            return None
        if type(x) is not dict:
            return _MISSING
        try:
            key = tuple(x.items())
            hit = self.containers.get(key)
        except TypeError:
            return _MISSING
        if hit is not None:
            return hit
        if CONTAINER.check(x) is not None:
            return _MISSING
        return keep(self.containers, key, Container.from_json(x))

    def wall_ns(self, x: Any) -> int | None:
        """A timestamp's nanoseconds; None when x is not one."""
        if type(x) is str and len(x) == 30:
            sec = self.seconds.get(x[:20])
            frac = x[20:29]
            if sec is not None and x[29] == "Z" and frac.isascii() and frac.isdigit():
                return sec + int(frac)
        if Timestamp().check(x) is not None:
            return None
        wall = parse_iso_ts(x)
        if len(x) == 30:
            keep(self.seconds, x[:20], wall - wall % _NANO)
        return wall


def _reader_source(kind: str) -> tuple[str, dict[str, Any]]:
    """The source of the reader of one event type, and the names it uses:
    every field read (an absent one: its default, or None for the line), then
    one test of them all, then the exact text of NAME_base64 siblings."""
    cls = EVENT_CLASSES[kind]
    env: dict[str, Any] = {}
    reads, tests, after = [], [], []
    local = {}
    for f in _fields(kind):
        x = f.name
        local[f.held_as] = x
        if f.default:
            got = f"get({f.name!r}, {f.default})"
        elif f.required:
            got = f"d[{f.name!r}]"
        elif f.held_as is None:  # shown only when set (core_dumped): its kind's false
            got = f"get({f.name!r}, False)"
        else:
            raise TypeError(f"{kind}.{f.name}: held, may be absent, and no default")
        # The values that repeat are looked up first by what they hold (a
        # value that is no key raises, and the line is checked field by
        # field); the _Reading methods check and keep a new one.
        if isinstance(f.kind, Timestamp):
            reads += [f"{x} = {got}",
                      f"sec, frac = _seconds.get({x}[:20]), {x}[20:29]",
                      f"{x} = (sec + int(frac) if sec is not None and len({x}) == 30"
                      f" and {x}[29] == 'Z' and frac.isascii() and frac.isdigit()"
                      f" else _reading.wall_ns({x}))"]
            tests.append(f"{x} is not None")
        elif f.kind is NS:
            reads += [f"{x} = {got}",
                      f"{x} = _ns.get(tuple({x}.items())) or _reading.namespaces({x})"]
            tests.append(f"{x} is not None")
        elif f.kind is CONTAINER:
            reads += [f"{x} = {got}",
                      f"{x} = None if {x} is None else"
                      f" _containers.get(tuple({x}.items())) or _reading.container({x})"]
            tests.append(f"{x} is not _MISSING")
        elif isinstance(f.kind, ListOf) and not _has_raw(kind, f) and f.default:
            # held as a tuple, as the decoder makes it: a list read is checked
            # and made one; an absent one (most lines) is its default, which
            # keeps the contract by construction and is made only then
            reads.append(f"{x} = get({f.name!r}, _MISSING)")
            agrees = f" and ({f.agrees})" if f.agrees else ""
            tests.append(f"({x} is _MISSING or ({f.kind.inline(x, env)}{agrees}))")
            after.append(f"{x} = ({f.default}) if {x} is _MISSING else tuple({x})")
            continue
        else:
            reads.append(f"{x} = {got}")
            tests.append(f.kind.inline(x, env))
        if f.agrees:
            tests.append(f"({f.agrees})")
        if _has_raw(kind, f):
            # the exact text, then one object per distinct text: a recording
            # repeats a few hundred names and command lines, which the
            # process table keeps for every process
            many = isinstance(f.kind, ListOf)
            after += [f"raw = get({f.name + RAW_SUFFIX!r})",
                      "if raw is not None:",
                      f"    {x} = _read_texts(raw, len({x}))" if many else
                      f"    {x} = _read_text(raw)",
                      f"    if {x} is None:",
                      "        return None"]
            if many:
                after += ["else:", f"    {x} = tuple({x})"]
            after.append(f"{x} = _texts.get({x}) or _share({x})")
    values = ", ".join(local[name] for name in cls.FIELDS)
    body = [f"def read_{kind}(d):", "    get = d.get", "    try:"]
    body += [f"        {line}" for line in reads]
    body += ["    except (KeyError, TypeError, AttributeError, ValueError):",
             "        return None",
             "    if not (" + "\n            and ".join(tests) + "):", "        return None"]
    body += [f"    {line}" for line in after]
    body.append(f"    return _new(_cls, ({values},))")
    return "\n".join(body) + "\n", env


class EventReader:
    """The one reader: a checked line's dict -> its typed event.

    read(d) raises contract.Invalid, saying what is wrong, for a dict that
    is not an event of the contract (a summary is not an event either)."""

    def __init__(self) -> None:
        self._reading = _Reading()
        # type -> the reader of that type: the event, or None for a line
        # that does not keep the contract (read() says why)
        self.readers: dict[str, Callable[[dict], ProcessEvent | None]] = {}
        for kind, cls in EVENT_CLASSES.items():
            source, env = _reader_source(kind)
            reading = self._reading
            env.update({"_MISSING": _MISSING, "_reading": reading, "_new": record_of,
                        "_cls": cls, "_read_text": _read_text, "_read_texts": _read_texts,
                        "_seconds": reading.seconds, "_ns": reading.ns,
                        "_containers": reading.containers, "_texts": reading.texts,
                        "_share": reading.share})
            exec(source, env)  # noqa: S102 - the source is made here, from the contract
            self.readers[kind] = env[f"read_{kind}"]

    def read(self, d: Any) -> ProcessEvent:
        kind = d.get("type") if type(d) is dict else None
        read = self.readers.get(kind) if type(kind) is str else None
        ev = read(d) if read is not None else None
        if ev is None:
            check_record(d)  # raises, saying why
            raise Invalid(f"damaged {d['type']} event" if type(d) is dict and
                          d.get("type") in EVENTS else "not an event")
        return ev


def event_of(d: dict[str, Any]) -> ProcessEvent:
    """One event from a checked line's dict (tests; replay keeps an EventReader)."""
    return EventReader().read(d)


__all__ = ["CACHE_MAX", "COMMAND_LINES_MAX", "EventLines", "EventReader",
           "event_of", "keep"]
