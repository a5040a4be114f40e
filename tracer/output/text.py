"""How events look: aligned text lines for people, JSON Lines for programs.

Replay uses these same renderers, so a recording prints exactly what the live
view printed.
"""

from __future__ import annotations

import functools
import shlex
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import IO, Any

from ..model.codec import EventLines, keep
from ..model.contract import ID_UNMAPPED, NS_NAMES, json_bytes
from ..model.escape import escape
from ..model.events import (
    ExecEvent,
    ExitEvent,
    ForkEvent,
    Header,
    Namespaces,
    ProcessEvent,
    SetnsEvent,
    Summary,
    UnshareEvent,
)
from ..model.flags import (
    clone_flag_names,
    errno_name,
    nstype_name,
    signal_name,
    unshare_flag_names,
)

# Short names in the marks column; the *_for_children ones get a trailing '>'
# ("for the children"), shown only where they differ from the task's own.
SHORT = {
    "mnt": "mnt", "uts": "uts", "ipc": "ipc", "pid": "pid", "pid_for_children": "pid>",
    "net": "net", "cgroup": "cgroup", "user": "user", "time": "time",
    "time_for_children": "time>",
}
_OWN = {"pid_for_children": "pid", "time_for_children": "time"}

COLUMNS = (f"{'TIME(s)':>10} {'EVENT':<7} {'PID':>7} {'PPID':>7} {'VPID':>5}  "
           "COMMAND / DETAIL  [namespaces not the host's]  @container")
# seconds since the start, event, pid, ppid, vpid; then detail, marks,
# levels and ids (when they say more than the columns), container
_HEAD = "%10.6f %-7s %7d %7d %5d  "
_LINE = _HEAD + "%s%s%s%s"


def ns_marks(ns: Namespaces, host: Namespaces) -> list[str]:
    """'+name' for each namespace that is not the host's (PID 1's)."""
    marks = []
    for name in NS_NAMES:
        inode = getattr(ns, name)
        host_inode = getattr(host, name)
        if not inode or not host_inode or inode == host_inode:
            continue
        own = _OWN.get(name)
        if own and getattr(ns, own) == inode:
            continue  # same as the task's own, already marked
        marks.append("+" + SHORT[name])
    return marks


def levels_text(vpids: tuple[int, ...]) -> str:
    """A pid at every level, the host's first: "7834/12/1" ("?": a level
    deeper than the kernel's record keeps)."""
    return "/".join([str(pid) if pid else "?" for pid in vpids])


def id_text(value: int) -> str:
    """A uid or gid of a user namespace ("unmapped": none maps to it)."""
    return "unmapped" if value == ID_UNMAPPED else str(value)


def ids_text(uid: int, gid: int, ns_uid: int, ns_gid: int) -> str:
    """The uid:gid a process sees of itself in its user namespace, and the host's."""
    return f"id {id_text(ns_uid)}:{id_text(ns_gid)} (host {uid}:{gid})"


def nesting(ev: ProcessEvent) -> str:
    """"  pids 7834/12/1" when a process is nested deeper than one pid
    namespace, "  id 0:0 (host 100000:100000)" when its user namespace maps
    its ids to others: what the columns do not say."""
    out = ""
    if len(ev.vpids) > 2:
        out = "  pids " + levels_text(ev.vpids)
    if ev.ns_uid != ev.uid or ev.ns_gid != ev.gid:
        out += "  " + ids_text(ev.uid, ev.gid, ev.ns_uid, ev.ns_gid)
    return out


def ns_transitions(before: Namespaces, after: Namespaces) -> str:
    return " ".join(f"{SHORT[n]}:{getattr(before, n)}->{getattr(after, n)}"
                    for n in before.changed(after))


# A trace runs the same command lines again and again: each text is made once
# (a build that runs thousands of different ones misses either way).
@functools.lru_cache(maxsize=512)
def _exec_text(argv: tuple[str, ...], filename: str, truncated: bool, ret: int) -> str:
    text = shlex.join(argv) if argv else ""
    if truncated:
        text += " ..."
    # The path is shown when it says more than argv[0]: a failed PATH lookup,
    # or runc re-executing itself as /proc/self/exe and then as /dev/fd/N.
    if not argv or (argv[0] != filename
                    and (ret or _base(argv[0]) != _base(filename))):
        text = f"[{filename}] {text}".rstrip()
    if ret:
        text += f"  FAILED {errno_name(ret)}"
    return text


@functools.lru_cache(maxsize=256)
def _clone_text(flags: int) -> str:
    """A fork's flags as text; a trace repeats a few values thousands of times."""
    return "|".join(clone_flag_names(flags)) or "0"


def _base(path: str) -> str:
    return path.rsplit("/", 1)[-1]


def _ret_text(ret: int) -> str:
    return "0" if ret == 0 else f"-{errno_name(ret)}" if ret < 0 else str(ret)


def _who(ev: ProcessEvent) -> str:
    """setns and unshare act on the calling thread only: name it when it is not the leader."""
    return ev.comm if ev.tid == ev.pid else f"{ev.comm} (thread {ev.tid})"


def _exec_detail(ev: ExecEvent) -> str:
    return _exec_text(ev.argv, ev.filename, ev.argv_truncated, ev.ret)


def _fork_detail(ev: ForkEvent) -> str:
    flags = "(no syscall: kernel)" if ev.clone_flags is None else _clone_text(ev.clone_flags)
    parent = f" by {ev.parent_pid}" if ev.parent_pid != ev.ppid else ""
    kind = "thread " if ev.thread else ""
    return f"{ev.comm} {kind}{flags}{parent}"


def status_words(ev: ExitEvent) -> str:
    """How a process ended, in the views' words: "exit 3", "killed by SIGKILL"."""
    if ev.signal:
        return f"killed by {signal_name(ev.signal) or ev.signal}"
    return f"exit {ev.exit_code}"


def _exit_detail(ev: ExitEvent) -> str:
    what = status_words(ev)
    if ev.core_dumped:
        what += " (core dumped)"
    if ev.reaper is not None:
        # its children are reparented right after: say to whom
        what += f", children to {ev.reaper or '?'}"
    return f"{ev.comm} {what}"


def _setns_detail(ev: SetnsEvent) -> str:
    return _who(ev) + _setns_text(ev.fd, ev.nstype, ev.ret, ev.ns_before, ev.ns)


def _unshare_detail(ev: UnshareEvent) -> str:
    return _who(ev) + _unshare_text(ev.flags, ev.ret, ev.ns_before, ev.ns)


# A container start repeats a few setns and unshare calls: each text once.
@functools.lru_cache(maxsize=512)
def _setns_text(fd: int, nstype: int, ret: int, before: Namespaces, after: Namespaces) -> str:
    moved = ns_transitions(before, after)
    text = f" setns(fd {fd}, {nstype_name(nstype)}) = {_ret_text(ret)}"
    return f"{text}  {moved}" if moved else text


@functools.lru_cache(maxsize=512)
def _unshare_text(flags: int, ret: int, before: Namespaces, after: Namespaces) -> str:
    moved = ns_transitions(before, after)
    text = f" unshare({'|'.join(unshare_flag_names(flags)) or '0'}) = {_ret_text(ret)}"
    return f"{text}  {moved}" if moved else text


_DETAIL: dict[type, Callable[[Any], str]] = {
    ExecEvent: _exec_detail, ForkEvent: _fork_detail, ExitEvent: _exit_detail,
    SetnsEvent: _setns_detail, UnshareEvent: _unshare_detail}


def detail(ev: ProcessEvent) -> str:
    """What an event says beyond its columns: the command line, the clone
    flags, the exit status, the namespaces moved between."""
    return _DETAIL[type(ev)](ev)


# Colour in the text view: ctrtrace's own SGR sequences, put around its own
# words only once the line's outside text is escaped (escape.py), so that
# nothing a traced process chose can open, close or move them.
SGR_NEW_NS = "\x1b[36m"       # [+mnt ...]: namespaces that are not the host's
SGR_FAILED = "\x1b[31m"       # FAILED ENOENT: an exec that failed
SGR_KILLED = "\x1b[35m"       # killed by SIGKILL: a death by signal
SGR_LOST = "\x1b[1;31m"       # lost N, when N > 0, in the summary
SGR_RESET = "\x1b[0m"

def _sgr(code: str, text: str) -> str:
    return f"{code}{text}{SGR_RESET}"


def _alert(ev: ProcessEvent, text: str) -> tuple[int, int, str] | None:
    """Where in detail(ev) ctrtrace's own words for a failure are: a failed
    exec's "FAILED ENOENT" (at the end), a death's "killed by SIGKILL" (after
    the command name); None when the text is not laid out so."""
    if isinstance(ev, ExecEvent) and ev.ret:
        words = f"FAILED {errno_name(ev.ret)}"
        if text.endswith("  " + words):
            return len(text) - len(words), len(text), SGR_FAILED
    elif isinstance(ev, ExitEvent) and ev.signal:
        words = status_words(ev)
        start = len(ev.comm) + 1
        if text.startswith(ev.comm + " ") and text.startswith(words, start):
            return start, start + len(words), SGR_KILLED
    return None


class _Marks(dict):
    """"  [+mnt ...]" by namespace set, made on first use (a trace has a few
    hundred sets; emptied past CACHE_MAX)."""

    def __init__(self, host_ns: Namespaces) -> None:
        super().__init__()
        self.host_ns = host_ns

    def __missing__(self, ns: Namespaces) -> str:
        marks = ns_marks(ns, self.host_ns)
        return keep(self, ns, "  [" + " ".join(marks) + "]" if marks else "")


@dataclass
class TextRenderer:
    """One aligned line per event; times are seconds since the trace began.

    With color, the namespace marks, failed execs and deaths by signal are
    coloured (SGR); without, the lines carry no escape sequence at all."""

    host_ns: Namespaces
    start_ktime_ns: int
    color: bool = False
    _marks: _Marks = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self._marks = _Marks(self.host_ns)

    def columns(self) -> str:
        return COLUMNS

    def line(self, ev: ProcessEvent) -> str:
        if self.color:
            return self._colored_line(ev)
        container = ev.container
        text = _LINE % ((ev.ktime_ns - self.start_ktime_ns) / 1e9, ev.type, ev.pid, ev.ppid,
                        ev.vpid, _DETAIL[type(ev)](ev), self._marks[ev.ns],
                        "" if len(ev.vpids) < 3 and ev.ns_uid == ev.uid and ev.ns_gid == ev.gid
                        else nesting(ev),
                        "" if container is None else "  @" + container.label)
        return text if text.isprintable() else escape(text)

    def _colored_line(self, ev: ProcessEvent) -> str:
        """line(ev) with colour: each part escaped, then ctrtrace's own words
        wrapped (escaping is character by character, so the parts escaped one
        by one make the same text as the line escaped whole)."""
        t = (ev.ktime_ns - self.start_ktime_ns) / 1e9
        text = detail(ev)
        at = _alert(ev, text)
        if at is None:
            body = escape(text)
        else:
            start, end, code = at
            body = (escape(text[:start]) + _sgr(code, escape(text[start:end]))
                    + escape(text[end:]))
        marks = self._marks[ev.ns]
        if marks:
            body += "  " + _sgr(SGR_NEW_NS, marks[2:])
        body += nesting(ev)
        if ev.container is not None:
            body += escape(f"  @{ev.container.label}")
        head = _HEAD % (t, ev.type, ev.pid, ev.ppid, ev.vpid)
        return escape(head) + body

    @staticmethod
    def summary(s: Summary, color: bool = False) -> str:
        """The summary line; with color, lost events (if any) are coloured."""
        counts = ", ".join(f"{k} {v}" for k, v in s.counts.items())
        lost = f"lost {s.lost}"
        if color and s.lost:
            lost = _sgr(SGR_LOST, lost)
        text = f"{s.total} events ({counts}) in {s.duration_s:.1f} s; {lost}"
        extra = []
        if s.threads:
            extra.append(f"{s.threads} threads created (not shown)")
        if s.filtered_in_kernel:
            extra.append(f"{s.filtered_in_kernel} filtered in the kernel")
        if s.filtered_in_userspace:
            extra.append(f"{s.filtered_in_userspace} not shown (filters)")
        if extra:
            text += "; " + "; ".join(extra)
        return text


class TextSink:
    """Writes text lines; the summary goes to the message stream (coloured
    with summary_color, which is decided for that stream)."""

    def __init__(self, renderer: TextRenderer, out: IO[str], err: IO[str],
                 summary_color: bool = False) -> None:
        self.r, self.out, self.err = renderer, out, err
        self.summary_color = summary_color
        self._batch: list[str] = []  # lines, written at each flush (one write a poll)

    def header(self, h: Header) -> None:
        self._batch.append(self.r.columns())

    def events(self, batch: list[ProcessEvent]) -> None:
        line = self.r.line
        self._batch.extend([line(ev) for ev in batch])

    def flush(self) -> None:
        if self._batch:
            self._batch.append("")
            self.out.write("\n".join(self._batch))
            self._batch.clear()
        self.out.flush()

    def summary(self, s: Summary) -> None:
        self.flush()
        self.err.write("ctrtrace: " + self.r.summary(s, color=self.summary_color) + "\n")


class JsonSink:
    """JSON Lines on the output: header, events, summary.

    Lines are bytes (codec.py), collected per batch and written to the
    stream's binary buffer at each flush: no str round trip per event."""

    def __init__(self, out: IO[str], lines: EventLines | None = None) -> None:
        """lines: a renderer shared with a Recorder (each event rendered once)."""
        self.out = out
        self._bin: IO[bytes] | None = getattr(out, "buffer", None)
        self.renderer = lines or EventLines()
        self._batch: list[bytes] = []

    def header(self, h: Header) -> None:
        self._batch.append(json_bytes(h.to_json()) + b"\n")

    def events(self, batch: list[ProcessEvent]) -> None:
        self._batch.extend(self.renderer.lines(batch))

    def flush(self) -> None:
        if self._batch:
            data = b"".join(self._batch)
            self._batch.clear()
            self.out.flush()  # whatever the text layer holds goes first
            if self._bin is not None:
                self._bin.write(data)
                self._bin.flush()
            else:  # a text-only stream
                self.out.write(data.decode())
        self.out.flush()

    def summary(self, s: Summary) -> None:
        self._batch.append(json_bytes(s.to_json()) + b"\n")
        self.flush()
