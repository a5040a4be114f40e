"""The JSON Lines contract: every record's fields, their types and ranges.

One description, read by everything that reads a recording: replay checks
each line against it once, in every mode (text, --json, --tree, --ns, any
filter), so that a wrong type or a value out of range is one message naming
the file and the line, and never reaches a view.  Fields may be added to the
contract; the ones here are not renamed.  Unknown fields are allowed (a newer
ctrtrace of the same format version may add some).

Text that a traced process controls (comm, filename, argv, cgroup) is bytes
in the kernel, and need not be UTF-8.  In memory it is a str decoded with
surrogateescape (a byte that is not UTF-8 becomes U+DC80..U+DCFF, as
os.fsdecode does).  In JSON the field holds the text with U+FFFD for each
such byte, so that every JSON reader can use it, and a sibling field
NAME_base64 holds the exact bytes (for argv, a list: one string per
argument); the sibling is there only when the text is not valid UTF-8.
"""

from __future__ import annotations

import functools
import re
import time as _time
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from json import JSONEncoder
from json.encoder import encode_basestring as _json_str
from typing import Any

from .escape import escaping

FORMAT_NAME = "ctrtrace"
FORMAT_VERSION = 1

# Replay reads a line at most this long: far above any real event (an exec's
# argv is at most 2 KiB of bytes, ~13 KiB once escaped, plus its base64).
LINE_MAX = 1 << 20
# The header lists every process alive at the start of the trace.
HEADER_LINE_MAX = 16 << 20

RAW_SUFFIX = "_base64"

# The ten namespaces of every event, in their order in JSON (and in the
# kernel's record: tracer/layout.py mirrors this, tests/test_layout.py checks).
NS_NAMES = (
    "mnt", "uts", "ipc", "pid", "pid_for_children",
    "net", "cgroup", "user", "time", "time_for_children",
)
# What the kernel keeps of a task's text (bpf/ctrtrace.h: CT_COMM_LEN and
# CT_ARGS_MAX, with their NULs; tests/test_layout.py checks them).
COMM_MAX = 15   # bytes of a command name
ARGV_MAX = 2048  # bytes of an exec's argv, NUL-separated

_U32 = (1 << 32) - 1
_U64 = (1 << 64) - 1
_S32 = (-(1 << 31), (1 << 31) - 1)
PID_MAX = 1 << 22  # the kernel's PID_MAX_LIMIT
PID_LEVELS_MAX = 33  # the host's pid namespace and MAX_PID_NS_LEVEL (32) nested in it
ID_UNMAPPED = _U32   # an id the user namespace does not map: the kernel's (uid_t)-1


# -- time ----------------------------------------------------------------------

@functools.lru_cache(maxsize=64)
def iso_second(sec: int) -> str:
    """The whole-second part of a timestamp, up to its '.'."""
    return _time.strftime("%Y-%m-%dT%H:%M:%S.", _time.gmtime(sec))


def iso_ts(wall_ns: int) -> str:
    # events come a few thousand a second: format each second once
    sec, frac = divmod(wall_ns, 1_000_000_000)
    return f"{iso_second(sec)}{frac:09d}Z"


_TS = re.compile(r"(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)(?:\.(\d{1,9}))?Z\Z")


@functools.lru_cache(maxsize=256)
def _epoch_second(fields: tuple[str, ...]) -> int:
    """Seconds since the epoch of (year, month, day, hour, minute, second)."""
    import datetime as _dt  # replay only: not on a live trace's start-up path

    year, month, day, hour, minute, second = map(int, fields)
    t = _dt.datetime(year, month, day, hour, minute, second, tzinfo=_dt.timezone.utc)
    return int(t.timestamp())


def parse_iso_ts(s: str) -> int:
    """Inverse of iso_ts (nanoseconds since the epoch); ValueError if s is not one."""
    m = _TS.match(s)
    if m is None:
        raise ValueError(f"not a UTC time: {s!r}")
    frac = m.group(7) or ""
    return _epoch_second(m.groups()[:6]) * 1_000_000_000 + int(frac.ljust(9, "0"))


# -- writing text fields -------------------------------------------------------

def is_utf8(text: str) -> bool:
    """Whether text encodes to UTF-8 as it is (no byte escaped on decoding)."""
    if text.isascii():
        return True
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def text_bytes(text: str) -> bytes:
    """The exact bytes a decoded text field came from."""
    return text.encode("utf-8", "surrogateescape" if _escaped_only(text) else "replace")


def _escaped_only(text: str) -> bool:
    return not any(0xD800 <= ord(c) <= 0xDFFF and not 0xDC80 <= ord(c) <= 0xDCFF for c in text)


def shown_text(text: str) -> str:
    """text as valid Unicode: U+FFFD for each byte that was not UTF-8."""
    return text_bytes(text).decode("utf-8", "replace")


def _b64(text: str) -> str:
    import base64  # text that is not UTF-8 only

    return base64.b64encode(text_bytes(text)).decode("ascii")


def _json_char(c: str) -> str:
    code = ord(c)
    if 0xD800 <= code <= 0xDFFF:
        return "\ufffd"  # a lone surrogate has no UTF-8: no JSON reader takes it
    if code > 0xFFFF:
        code -= 0x10000
        return f"\\u{0xD800 + (code >> 10):04x}\\u{0xDC00 + (code & 0x3FF):04x}"
    return f"\\u{code:04x}"


# Encoded JSON with every character that is not printable (C1 controls, DEL,
# bidirectional overrides, ...) as a \u escape: the same text to any JSON
# reader, and nothing that acts on a terminal that shows the line.  The
# encoder has escaped C0 controls already; structure is printable.
json_safe = escaping(_json_char)


_encode = JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


def json_bytes(obj: Any) -> bytes:
    """Compact JSON in UTF-8: json.dumps(obj, separators=(",", ":"), ensure_ascii=False),
    the one encoding of every record written.

    Characters that are not printable are \\u escapes (json_safe); text a
    process controls goes through with_raw_text() or text_json() first (exact,
    with its bytes); a lone surrogate anywhere else (from no UTF-8 source) is
    U+FFFD."""
    return json_safe(_encode(obj)).encode()


def _json_text(text: str) -> bytes:
    return json_safe(_json_str(text)).encode()


def text_json(name: str, text: str) -> bytes:
    """The JSON of a text field's value, followed by its sibling NAME_base64
    when the text is not valid UTF-8: what goes after '"NAME":'."""
    if is_utf8(text):
        return _json_text(text)
    return b'%s,"%s%s":"%s"' % (_json_text(shown_text(text)), name.encode(),
                                RAW_SUFFIX.encode(), _b64(text).encode())


def list_json(name: str, texts: Sequence[str]) -> bytes:
    """text_json() for a list of texts (argv)."""
    out = b"[%s]" % b",".join([_json_text(t) if is_utf8(t) else _json_text(shown_text(t))
                               for t in texts])
    if all(is_utf8(t) for t in texts):
        return out
    return b'%s,"%s%s":[%s]' % (out, name.encode(), RAW_SUFFIX.encode(),
                                ",".join(f'"{_b64(t)}"' for t in texts).encode())


def with_raw_text(d: dict[str, Any], names: Sequence[str]) -> dict[str, Any]:
    """d (a record's dict) with its text fields as JSON holds them: each
    NAME_base64 sibling right after its field, where the text is not UTF-8."""
    if all(is_utf8(d[n]) if isinstance(d.get(n), str) else
           all(is_utf8(t) for t in d.get(n) or ()) for n in names):
        return d
    out: dict[str, Any] = {}
    for key, value in d.items():
        if key in names and isinstance(value, str) and not is_utf8(value):
            out[key] = shown_text(value)
            out[key + RAW_SUFFIX] = _b64(value)
        elif key in names and isinstance(value, list) and not all(is_utf8(t) for t in value):
            out[key] = [shown_text(t) for t in value]
            out[key + RAW_SUFFIX] = [_b64(t) for t in value]
        else:
            out[key] = value
    return out


# -- reading text fields -------------------------------------------------------

def _decode_b64(value: str) -> str:
    import base64

    return base64.b64decode(value, validate=True).decode("utf-8", "surrogateescape")


def text_of(d: dict[str, Any], name: str, default: str = "") -> str:
    """A checked record's text field, exact (from NAME_base64 when there is one)."""
    raw = d.get(name + RAW_SUFFIX)
    if raw is not None:
        return _decode_b64(raw)
    return d.get(name, default)


def texts_of(d: dict[str, Any], name: str) -> list[str]:
    raw = d.get(name + RAW_SUFFIX)
    if raw is not None:
        return [_decode_b64(t) for t in raw]
    return list(d.get(name) or ())


# -- the description -------------------------------------------------------------

class Kind:
    """A field's type and range; check() says what is wrong, or None."""

    doc = ""

    def check(self, v: Any) -> str | None:
        raise NotImplementedError

    def inline(self, x: str, env: dict[str, Any]) -> str:
        """A Python expression, true when the value named x keeps this kind:
        what the generated checks of Obj run (env: the names it uses)."""
        name = f"_k{len(env)}"
        env[name] = self.check
        return f"{name}({x}) is None"


def _show(v: Any) -> str:
    """A bad value, short, as JSON, for a message (escaped when it is printed)."""
    import json

    if isinstance(v, (list, dict)):
        return "a list" if isinstance(v, list) else "an object"
    text = json.dumps(v)
    return text if len(text) <= 40 else text[:37] + "..."


class Int(Kind):
    def __init__(self, lo: int, hi: int, nullable: bool = False, doc: str = "") -> None:
        self.lo, self.hi, self.nullable = lo, hi, nullable
        span = {(0, _U64): "u64", (0, _U32): "u32", _S32: "s32"}.get((lo, hi), f"{lo}..{hi}")
        self.doc = f"{doc or 'integer'} ({span})" + (" or null" if nullable else "")

    def check(self, v: Any) -> str | None:
        if type(v) is int:
            if self.lo <= v <= self.hi:
                return None
            return f"{_show(v)} is out of range ({self.lo}..{self.hi})"
        if v is None and self.nullable:
            return None
        return f"{_show(v)} is not an integer"

    def inline(self, x: str, env: dict[str, Any]) -> str:
        ok = f"(type({x}) is int and {self.lo} <= {x} <= {self.hi})"
        return f"({x} is None or {ok})" if self.nullable else ok


class Seconds(Kind):
    doc = "seconds, a number 0..1e10"

    def check(self, v: Any) -> str | None:
        if type(v) in (int, float) and 0 <= v <= 1e10:
            return None
        return f"{_show(v)} is not a number of seconds (0..1e10)"


class Bool(Kind):
    doc = "true or false"

    def check(self, v: Any) -> str | None:
        return None if type(v) is bool else f"{_show(v)} is not true or false"

    def inline(self, x: str, env: dict[str, Any]) -> str:
        return f"type({x}) is bool"


class Str(Kind):
    def __init__(self, nullable: bool = False, one_of: Sequence[str] = (), doc: str = "") -> None:
        self.nullable, self.one_of = nullable, tuple(one_of)
        self.doc = doc or ("string" + (" or null" if nullable else ""))

    def check(self, v: Any) -> str | None:
        if type(v) is str:
            if self.one_of and v not in self.one_of:
                return f"{_show(v)} is not one of {', '.join(self.one_of)}"
            return None
        if v is None and self.nullable:
            return None
        return f"{_show(v)} is not a string"

    def inline(self, x: str, env: dict[str, Any]) -> str:
        ok = f"type({x}) is str"
        if self.one_of:
            name = f"_k{len(env)}"
            env[name] = frozenset(self.one_of)
            ok = f"({ok} and {x} in {name})"
        return f"({x} is None or {ok})" if self.nullable else ok


class Timestamp(Kind):
    doc = "UTC time, 2026-11-27T22:10:49.409898773Z"

    def check(self, v: Any) -> str | None:
        if type(v) is not str:
            return f"{_show(v)} is not a UTC time (YYYY-MM-DDTHH:MM:SS.NNNNNNNNNZ)"
        try:
            parse_iso_ts(v)
        except (ValueError, OverflowError):
            return f"{_show(v)} is not a UTC time (YYYY-MM-DDTHH:MM:SS.NNNNNNNNNZ)"
        return None


class Base64(Kind):
    doc = "base64 of the exact bytes"

    def check(self, v: Any) -> str | None:
        import base64
        import binascii

        if type(v) is not str:
            return f"{_show(v)} is not a base64 string"
        try:
            base64.b64decode(v, validate=True)
        except (binascii.Error, ValueError):
            return f"{_show(v)} is not base64"
        return None


class ListOf(Kind):
    def __init__(self, item: Kind, max_items: int, doc: str = "", min_items: int = 0) -> None:
        self.item, self.max_items, self.min_items = item, max_items, min_items
        self.doc = doc or f"list of {item.doc}"

    def check(self, v: Any) -> str | None:
        if type(v) is not list:
            return f"{_show(v)} is not a list"
        if len(v) > self.max_items:
            return f"more than {self.max_items} items"
        if len(v) < self.min_items:
            return f"fewer than {self.min_items} items"
        check = self.item.check
        for i, item in enumerate(v):
            why = check(item)
            if why is not None:
                return f"[{i}]: {why}"
        return None

    def inline(self, x: str, env: dict[str, Any]) -> str:
        if (isinstance(self.item, Str) and not self.item.one_of and not self.item.nullable
                and not self.min_items):
            # argv: a list of strings, the common case, checked in one pass
            return (f"(type({x}) is list and len({x}) <= {self.max_items} "
                    f"and all([type(_i) is str for _i in {x}]))")
        return super().inline(x, env)


class CountMap(Kind):
    doc = "object of event type -> count"

    def check(self, v: Any) -> str | None:
        if type(v) is not dict:
            return f"{_show(v)} is not an object"
        for k, n in v.items():
            if k not in EVENT_TYPES:
                return f"{_show(k)} is not an event type"
            why = COUNT.check(n)
            if why is not None:
                return f"{k}: {why}"
        return None


@dataclass(frozen=True)
class Field:
    """One field of a record.  For events, also how the typed event holds it
    (events.py), which the one writer and the one reader are made from
    (codec.py): the attribute it is written from and read into (attr, the
    field's own name unless said; None: not held), what is written (value:
    an expression over the attributes, for a field worked out from others),
    when it is written (when: an expression; empty: always), and what a
    reader takes when it is absent (default: an expression over the fields
    read before it, by their JSON names).  agrees: what must hold of it and
    the fields before it (by their JSON names) when it is there."""

    name: str
    kind: Kind
    required: bool = True
    doc: str = ""
    attr: str | None = ""
    value: str = ""
    when: str = ""
    default: str = ""
    agrees: str = ""

    @property
    def held_as(self) -> str | None:
        return self.name if self.attr == "" else self.attr


class Obj(Kind):
    """A JSON object with these fields (others are allowed and ignored)."""

    def __init__(self, fields: Sequence[Field], nullable: bool = False, doc: str = "") -> None:
        self.fields = tuple(fields)
        self.nullable = nullable
        self.doc = doc or ("object" + (" or null" if nullable else ""))
        # argv and argv_base64: one base64 string per argument
        self._lists = tuple(f.name for f in self.fields if isinstance(f.kind, ListOf)
                            and f.name + RAW_SUFFIX in {g.name for g in self.fields})
        self._ok = self._first_ok

    def _first_ok(self, v: Any) -> bool:
        # generated at first use: a live trace checks nothing, and should not
        # pay for it at start-up
        self._ok = self._generate()
        return self._ok(v)

    def _generate(self) -> Any:
        """ok(v): whether v keeps the description, as one generated function of
        the fields' inline tests; check() says why only when it does not."""
        env: dict[str, Any] = {"_missing": object()}
        body = ["def ok(v):",
                "    if type(v) is not dict:",
                f"        return {'v is None' if self.nullable else 'False'}",
                "    get = v.get"]
        local: dict[str, str] = {}
        for i, f in enumerate(self.fields):
            x = local[f.name] = f"x{i}"
            body.append(f"    {x} = get({f.name!r}, _missing)")
            body.append(f"    if {x} is _missing:")
            body.append("        return False" if f.required else "        pass")
            body.append(f"    elif not ({f.kind.inline(x, env)}):")
            body.append("        return False")
            if f.agrees:
                body.append(f"    elif not ({_over(f.agrees, local)}):")
                body.append("        return False")
        for name in self._lists:
            body.append(f"    r = get({name + RAW_SUFFIX!r})")
            body.append(f"    if r is not None and len(r) != len(get({name!r}) or ()):")
            body.append("        return False")
        body.append("    return True")
        exec("\n".join(body), env)  # noqa: S102 - the source is made here, from the fields
        return env["ok"]

    def inline(self, x: str, env: dict[str, Any]) -> str:
        name = f"_k{len(env)}"
        env[name] = self._generate() if self._ok == self._first_ok else self._ok
        self._ok = env[name]
        return f"{name}({x})"

    def check(self, v: Any) -> str | None:
        if self._ok(v):
            return None
        if type(v) is not dict:
            if v is None and self.nullable:
                return None
            return f"{_show(v)} is not an object"
        for f in self.fields:
            if f.name in v:
                why = f.kind.check(v[f.name])
                if why is not None:
                    return f"{f.name}: {why}"
                if f.agrees and not eval(f.agrees, {}, v):  # noqa: S307 - the contract's own
                    return f"{f.name} does not agree with the fields before it ({f.agrees})"
            elif f.required:
                return f"no {f.name}"
        for name in self._lists:
            raw = v.get(name + RAW_SUFFIX)
            if raw is not None and len(raw) != len(v.get(name) or ()):
                return f"{name}{RAW_SUFFIX} does not match {name}"
        return "does not keep the contract"  # ok() and the loop above disagree


def _over(expr: str, names: dict[str, str]) -> str:
    """expr with the fields it names (JSON names) as the local variables that hold them."""
    return re.sub(r"\b[a-z_][a-z0-9_]*\b", lambda m: names.get(m.group(0), m.group(0)), expr)


def _raw(name: str, kind: Kind, required: bool = True, doc: str = "") -> tuple[Field, Field]:
    """A text field a process controls, and its NAME_base64 sibling."""
    sibling: Kind = ListOf(Base64(), kind.max_items) if isinstance(kind, ListOf) else Base64()
    empty = "()" if isinstance(kind, ListOf) else '""'
    return (Field(name, kind, required, doc, default="" if required else empty),
            Field(name + RAW_SUFFIX, sibling, False, f"the exact bytes of {name}, when not UTF-8",
                  attr=None))


COUNT = Int(0, _U64, doc="count")
PID = Int(0, PID_MAX, doc="pid")
PID_LEVELS = ListOf(PID, PID_LEVELS_MAX, min_items=1, doc="list of pids")
INODE = Int(0, _U32, doc="inode")
NS = Obj([Field(n, INODE) for n in NS_NAMES], doc="namespaces")
CONTAINER = Obj([
    Field("id", Str(), doc="the container's full id"),
    Field("name", Str(nullable=True), False, "its name (the Docker engine's), without '/'"),
    Field("image", Str(nullable=True), False, "its image"),
    Field("runtime", Str(), False,
          "docker, containerd, cri-o, podman, lxc or systemd-nspawn"),
    Field("source", Str(one_of=("cgroup", "namespace", "shim")), False,
          "what tied the process to it (README: Containers)"),
    Field("pod", Str(nullable=True), False, "the Kubernetes pod's uid, from its cgroup"),
], nullable=True, doc="container or null")
ARGV = ListOf(Str(), 1 << 16, doc="list of strings")

EVENT_TYPES = ("exec", "fork", "exit", "setns", "unshare")

COMMON = (
    Field("type", Str(one_of=EVENT_TYPES + ("header", "summary")), doc="the event", attr=None),
    Field("ts", Timestamp(), doc="wall clock of the event", attr="wall_ns"),
    Field("ktime_ns", Int(0, _U64), doc="CLOCK_MONOTONIC of the event (ns)"),
    Field("cpu", Int(0, _U32), False, "the CPU it happened on", default="0"),
    Field("pid", PID, doc="the process (thread group)"),
    Field("tid", PID, doc="the thread"),
    Field("ppid", PID, doc="the parent at the event"),
    Field("vpid", PID, doc="the pid in the process's own pid namespace"),
    Field("vpids", PID_LEVELS, False,
          "its pid in every pid namespace from the host's down: [pid, ..., vpid] (0: a level "
          "deeper than the kernel's record keeps); absent: [pid] or [pid, vpid]",
          when="len(vpids) != 1 + (vpid != pid)",
          default="(pid,) if vpid == pid else (pid, vpid)",
          agrees="vpids[0] == pid and vpids[-1] == vpid"),
    *_raw("comm", Str(), doc="the task's command name (15 bytes at most)"),
    Field("uid", Int(0, _U32), doc="real uid"),
    Field("gid", Int(0, _U32), doc="real gid"),
    Field("ns_uid", Int(0, _U32), False, "the real uid as its own user namespace maps it "
          f"(what the process sees of itself; {ID_UNMAPPED}: unmapped); absent: uid",
          when="ns_uid != uid", default="uid"),
    Field("ns_gid", Int(0, _U32), False, "the same for gid; absent: gid",
          when="ns_gid != gid", default="gid"),
    Field("start_ns", Int(0, _U64), False, "start time since boot: with pid, the identity",
          default="0"),
    Field("parent_start_ns", Int(0, _U64), False, "the parent's start time", default="0"),
    Field("ns", NS, doc="the ten namespace inodes, as /proc/PID/ns shows them (0: unknown)"),
    Field("no_nsproxy", Bool(), False, "true: the task had no namespaces left (exiting)",
          when="no_nsproxy", default="False"),
    Field("cgroup_id", Int(0, _U64), False, "the cgroup's id (its inode)", default="0"),
    *_raw("cgroup", Str(), False, "the cgroup's directory and its parent's"),
    Field("cgroup_v1", Bool(), False, "true: from a v1 hierarchy (no v2 placement)",
          when="cgroup_v1", default="False"),
    Field("ns_change", Bool(), False,
          "created or entered a namespace, or differs from the parent's (--ns-changes)",
          default="False"),
    Field("container", CONTAINER, False, "the container it belongs to, or null (the host)",
          default="None"),
)

EVENTS: dict[str, Obj] = {
    "exec": Obj(COMMON + (
        *_raw("filename", Str(), doc="the path given to execve/execveat"),
        *_raw("argv", ARGV, doc="the arguments (2 KiB at most)"),
        Field("argv_truncated", Bool(), doc="true: argv was longer"),
        Field("filename_truncated", Bool(), False, "true: the path was longer",
              when="filename_truncated", default="False"),
        Field("old_pid", PID, False, "the thread that called exec, when not the leader",
              when="old_pid != tid", default="tid"),
        Field("ret", Int(*_S32), False, "0, or -errno for a failed exec", default="0"),
    ), doc="a program replaced the process's image"),
    "fork": Obj(COMMON + (
        Field("parent_pid", PID, doc="the caller (differs from ppid under CLONE_PARENT)"),
        Field("parent_tid", PID, False, "the calling thread", default="parent_pid"),
        Field("clone_flags", Int(0, _U64, nullable=True), False,
              "the clone flags (null: a kernel thread)", default="None"),
        Field("thread", Bool(), False, "true: a thread (with --threads)", when="thread",
              default="False"),
    ), doc="a process (or thread) was created"),
    "exit": Obj(COMMON + (
        Field("exit_code", Int(0, 255), doc="the exit status", attr=None,
              value="status >> 8 & 0xFF"),
        Field("signal", Int(0, 127), doc="the signal that ended it, or 0", attr=None,
              value="status & 0x7F"),
        Field("status", Int(0, 0xFFFF), False, "the wait(2) status",
              default="exit_code << 8 | signal"),
        Field("core_dumped", Bool(), False, "true: it dumped core", attr=None,
              value="status & 0x80 != 0", when="status & 0x80"),
        Field("reaper", Int(0, PID_MAX, nullable=True), False,
              "who adopts its children (null: it had none; 0: unknown)", default="None"),
    ), doc="a process ended"),
    "setns": Obj(COMMON + (
        Field("fd", Int(*_S32), doc="setns(2)'s file descriptor"),
        Field("nstype", Int(*_S32), doc="setns(2)'s nstype"),
        Field("ret", Int(*_S32), doc="its result: 0, or -errno"),
        Field("ns_before", NS, doc="the namespaces before the call"),
    ), doc="a thread entered another namespace"),
    "unshare": Obj(COMMON + (
        Field("flags", Int(0, _U64), doc="unshare(2)'s flags"),
        Field("ret", Int(*_S32), doc="its result: 0, or -errno"),
        Field("ns_before", NS, doc="the namespaces before the call"),
    ), doc="a thread moved into new namespaces"),
}

PROCESS = Obj([
    Field("pid", PID, doc="the process"),
    Field("ppid", PID, doc="its parent"),
    Field("vpid", PID, False, "its pid in its own pid namespace"),
    Field("vpids", PID_LEVELS, False, "its pid at every level (/proc's NSpid), when more than two",
          agrees="vpids[0] == pid"),
    *_raw("comm", Str(), doc="its command name"),
    *_raw("argv", ARGV, False, "as much of /proc's command line as an exec event carries"),
    Field("argv_truncated", Bool(), False, "true: the command line was longer"),
    Field("start_ns", Int(0, _U64), False, "start time since boot, to /proc's clock tick"),
    Field("uid", Int(0, _U32), False, "real uid"),
    Field("ns_uid", Int(0, _U32), False, "the real uid as its user namespace maps it, "
          "when not uid"),
    Field("ns", NS, doc="its namespaces"),
    *_raw("cgroup", Str(), False, "its cgroup's directory and its parent's"),
    Field("container", CONTAINER, False, "its container, or null"),
], doc="a process alive at the start (from /proc)")

HEADER = Obj([
    Field("type", Str(one_of=("header",)), doc="header"),
    Field("format", Str(one_of=(FORMAT_NAME,)), doc="ctrtrace"),
    Field("version", Int(1, FORMAT_VERSION), doc="the format's version"),
    Field("hostname", Str(), doc="the host's name"),
    Field("kernel", Str(), doc="the kernel's release"),
    Field("boot_time", Timestamp(), False, "wall clock of boot"),
    Field("boot_time_ns", Int(0, _U64), doc="the same in ns: ktime_ns + boot_time_ns = wall time"),
    Field("ts", Timestamp(), doc="wall clock of the start"),
    Field("start_ktime_ns", Int(0, _U64), doc="CLOCK_MONOTONIC of the start"),
    Field("host_ns", NS, doc="the host's namespaces (PID 1's)"),
    Field("host_ns_pid", PID, False, "where host_ns was read (not 1 if PID 1 was unreadable)"),
    Field("tracer_pid", PID, False, "ctrtrace's own pid"),
    *_raw("argv", ARGV, False, "ctrtrace's command line"),
    Field("docker_socket", Str(nullable=True), False, "the Docker Engine API socket asked"),
    Field("docker_reachable", Bool(), False, "whether the engine answered at the start"),
    Field("backend", Str(one_of=("core", "bcc")), False,
          "the programs' build: core (libbpf CO-RE) or bcc"),
    Field("core_btf", Str(), False, "core: what CO-RE relocated against: subset or kernel"),
    Field("offsets", Str(), False, "bcc: where the kernel's struct offsets came from"),
    Field("processes", ListOf(PROCESS, PID_MAX, doc="list of processes"), False,
          "the processes alive at the start"),
    Field("processes_omitted", COUNT, False, "processes alive at start the line could not hold"),
], doc="the first line")

SUMMARY = Obj([
    Field("type", Str(one_of=("summary",)), doc="summary"),
    Field("ts", Timestamp(), doc="wall clock of the end"),
    Field("events", COUNT, False, "events written"),
    Field("counts", CountMap(), doc="events by type"),
    Field("lost", COUNT, doc="events the kernel could not write (a full ring buffer)"),
    Field("threads", COUNT, False, "threads created (not shown without --threads)"),
    Field("filtered_in_kernel", COUNT, False, "events the kernel-side filters dropped"),
    Field("filtered_in_userspace", COUNT, False, "events the view's filters did not show"),
    Field("duration_s", Seconds(), False, "how long the trace ran"),
    Field("bad_lines", COUNT, False, "replay --skip-bad: lines skipped"),
], doc="the last line")


def reference() -> str:
    """The contract as Markdown tables: the README's field list (a test keeps
    them equal; scripts/contract-doc writes it)."""
    def table(fields: Sequence[Field], skip: Collection[str] = ()) -> list[str]:
        rows = ["| field | type | present | meaning |", "| --- | --- | --- | --- |"]
        for f in fields:
            if f.name in skip:
                continue
            present = "always" if f.required else "may be absent"
            rows.append(f"| `{f.name}` | {f.kind.doc} | {present} | {f.doc} |")
        return rows

    common = {f.name for f in COMMON}
    out = ["Every event:", "", *table(COMMON)]
    for name, rec in EVENTS.items():
        out += ["", f"`{name}` ({rec.doc}) adds:", "", *table(rec.fields, common)]
    for name, rec in (("header", HEADER), ("summary", SUMMARY)):
        out += ["", f"`{name}` ({rec.doc}):", "", *table(rec.fields)]
    out += ["", "Each of `processes` (a process alive at the start, from /proc):", "",
            *table(PROCESS.fields),
            "", "`ns`, `ns_before` and `host_ns` have the ten fields "
            + ", ".join(f"`{n}`" for n in NS_NAMES) + f" ({INODE.doc}, 0: unknown); "
            "`container` (null for the host):", "", *table(CONTAINER.fields)]
    return "\n".join(out) + "\n"


class Invalid(ValueError):
    """A record that does not keep the contract; str() says what is wrong."""


def check_header(d: Any) -> None:
    """Raises Invalid unless d is a header this ctrtrace reads."""
    if type(d) is not dict or d.get("type") != "header" or d.get("format") != FORMAT_NAME:
        raise Invalid("not a ctrtrace trace (no ctrtrace header on the first line)")
    version = d.get("version")
    if type(version) is int and version > FORMAT_VERSION:
        raise Invalid(f"format version {version} is newer than this ctrtrace reads "
                      f"({FORMAT_VERSION}): upgrade ctrtrace to replay it")
    why = HEADER.check(d)
    if why is not None:
        raise Invalid(f"damaged header: {why}")


def check_record(d: Any) -> str:
    """The type of a checked event or summary line; raises Invalid."""
    if type(d) is not dict:
        raise Invalid("corrupt line (not a JSON object)")
    t = d.get("type")
    if not isinstance(t, str):
        raise Invalid(f"unknown record type {_show(t)}")
    rec = EVENTS.get(t)
    if rec is None:
        if t == "summary":
            why = SUMMARY.check(d)
            if why is not None:
                raise Invalid(f"damaged summary: {why}")
            return t
        raise Invalid(f"unknown record type {_show(t)}")
    why = rec.check(d)
    if why is not None:
        raise Invalid(f"damaged {t} event: {why}")
    return t
