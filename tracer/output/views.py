"""Whole-trace views: the process tree (like ps --forest) and the namespace
table (like lsns), built from the process table at the end of a trace."""

from __future__ import annotations

import functools
from collections.abc import Iterable
from collections.abc import Set as AbstractSet

from ..model.escape import escape
from ..model.events import Namespaces
from ..model.flags import signal_name
from ..state.proctable import Process, ProcessTable, ProcKey
from .text import id_text, levels_text

# the namespace kinds a process lives in (the *_for_children ones are where
# its children will live, shown by the event lines)
NS_KINDS = ("mnt", "uts", "ipc", "pid", "net", "cgroup", "user", "time")


COMMAND_WIDTH = 160  # like ps, which cuts at the terminal's width
MAX_INDENT = 64      # tree levels drawn indented; deeper rows say their depth


def _command(p: Process) -> str:
    text = escape(" ".join(p.argv)) if p.argv else f"[{escape(p.comm)}]"
    if p.argv and p.argv_truncated:
        text += " ..."
    return text if len(text) <= COMMAND_WIDTH else text[:COMMAND_WIDTH - 4] + " ..."


def _end(p: Process) -> str:
    if not p.exited or p.exit_status is None:
        return ""
    sig = p.exit_status & 0x7F
    if sig:
        return signal_name(sig) or f"signal {sig}"
    return f"exit {(p.exit_status >> 8) & 0xFF}"


def _user(p: Process) -> str:
    """The host's uid ("root"), and the one its user namespace maps it to
    when that differs: "100000 (0 inside)"."""
    host = "root" if p.uid == 0 else str(p.uid)
    if p.ns_uid is None or p.ns_uid == p.uid:
        return host
    return f"{host} ({id_text(p.ns_uid)} inside)"


def vpid_text(p: Process) -> str:
    """Its pid in its own pid namespace; nested deeper, in each below the
    host's ("12/1": 12 one level down, 1 in its own)."""
    return levels_text(p.vpids[1:]) if len(p.vpids) > 2 else str(p.vpid)


def tree_marks(p: Process, parent: Process | None, host: Namespaces) -> str:
    """'+mnt' for a namespace that is not the host's; upper case where it is
    also not the parent's (the process was born into it, or moved there)."""
    return _marks(p.ns, parent.ns if parent is not None else None, host)


@functools.lru_cache(maxsize=4096)  # a trace has a few hundred pairs of namespace sets
def _marks(ns: Namespaces, parent: Namespaces | None, host: Namespaces) -> str:
    marks = []
    for kind in NS_KINDS:
        inode = getattr(ns, kind)
        if not inode or inode == getattr(host, kind):
            continue
        new = parent is not None and getattr(parent, kind) not in (0, inode)
        marks.append("+" + (kind.upper() if new else kind))
    return " ".join(marks)


# As in ps --forest, the children of init and kthreadd are roots of their own.
_TOP = (0, 1, 2)

# What a view shows, as the events named it: (pid, start_ns) keys.  A bare pid
# (older callers) stands for every process that had it during the trace.
Shown = AbstractSet[ProcKey | int]


def _named(table: ProcessTable, item: ProcKey | int) -> Iterable[Process]:
    if isinstance(item, tuple):
        p = table.find(*item)
        return (p,) if p is not None else ()
    return table.with_pid(item)


def displayed(table: ProcessTable, shown: Shown | None) -> dict[ProcKey, Process]:
    if shown is None:
        return {p.key: p for p in table}
    out: dict[ProcKey, Process] = {}
    for item in shown:
        for named in _named(table, item):
            p: Process | None = named
            while p is not None and p.key not in out:
                out[p.key] = p  # the process and its ancestors, for context
                p = table.by_key(p.birth_key) if p.birth_ppid not in _TOP else None
    return out


def process_tree(table: ProcessTable, host: Namespaces,
                 shown: Shown | None = None) -> list[str]:
    """Processes under the parent they were born to; an adoption is noted."""
    procs = displayed(table, shown)
    kids: dict[ProcKey, list[Process]] = {}
    roots: list[Process] = []
    for p in procs.values():
        if p.birth_key in procs and p.birth_ppid not in _TOP:
            kids.setdefault(p.birth_key, []).append(p)
        else:
            roots.append(p)
    order = lambda p: (p.start_ns, p.pid)  # noqa: E731

    rows = []

    # Depth first, as ps --forest draws it: " \_ " before a child, " |  " while
    # its parent has siblings still to come.  A stack, not recursion: a chain
    # of processes (each forks the next) is as deep as a process wants; past
    # MAX_INDENT levels the indentation stops growing and the row says its depth.
    todo = [(r, "", True, 0) for r in sorted(roots, key=order, reverse=True)]
    while todo:
        p, prefix, last, depth = todo.pop()
        note = f"  (adopted by {p.ppid})" if p.parents else ""
        deep = f"[depth {depth}] " if depth > MAX_INDENT else ""
        rows.append((p, (prefix + " \\_ " if depth else "") + deep + _command(p) + note))
        if not depth:
            below = ""
        elif depth <= MAX_INDENT:
            below = prefix + ("    " if last else " |  ")
        else:
            below = prefix
        children = sorted(kids.get(p.key, []), key=order)
        for i in range(len(children) - 1, -1, -1):
            todo.append((children[i], below, i == len(children) - 1, depth + 1))

    cells = []
    for p, text in rows:
        parent = procs.get(p.birth_key)
        cont = escape(p.container.label) if p.container else ""
        cells.append((str(p.pid), vpid_text(p), tree_marks(p, parent, host), cont, _end(p), text))
    heads = ("PID", "VPID", "NAMESPACES", "CONTAINER", "END", "COMMAND")
    w = [max(len(heads[i]), *(len(c[i]) for c in cells)) if cells else len(heads[i])
         for i in range(5)]
    fmt = lambda c: (f"{c[0]:>{w[0]}} {c[1]:>{w[1]}}  {c[2]:<{w[2]}}  {c[3]:<{w[3]}}  "  # noqa: E731
                     f"{c[4]:<{w[4]}}  {c[5]}").rstrip()
    return [fmt(heads)] + [fmt(c) for c in cells]


def namespace_table(table: ProcessTable, host: Namespaces,
                    shown: Shown | None = None) -> list[str]:
    """One row per namespace, like lsns: NPROCS counts the processes in it at
    the end of the trace, PID is the lowest of them (of all seen, if none is
    left), and the owner is the host or a container."""
    procs = list(displayed(table, shown).values()) if shown is not None else list(table)
    by_ns: dict[tuple, list[Process]] = {}
    for p in procs:
        for kind in NS_KINDS:
            inode = getattr(p.ns, kind)
            if inode:
                by_ns.setdefault((inode, kind), []).append(p)
    rows = []
    for (inode, kind), members in sorted(by_ns.items()):
        alive = [p for p in members if not p.exited]
        first = min(alive or members, key=lambda p: (p.pid, p.start_ns))
        if inode == getattr(host, kind):
            owner = "host"
        else:
            owner = next((escape(p.container.label) for p in members if p.container), "-")
        rows.append((str(inode), kind, str(len(alive)), str(first.pid), _user(first),
                     owner, _command(first)))
    heads = ("NS", "TYPE", "NPROCS", "PID", "USER", "CONTAINER", "COMMAND")
    w = [max(len(heads[i]), *(len(r[i]) for r in rows)) if rows else len(heads[i])
         for i in range(6)]
    fmt = lambda r: (f"{r[0]:>{w[0]}} {r[1]:<{w[1]}} {r[2]:>{w[2]}} {r[3]:>{w[3]}} "  # noqa: E731
                     f"{r[4]:<{w[4]}} {r[5]:<{w[5]}} {r[6]}").rstrip()
    return [fmt(heads)] + [fmt(r) for r in rows]


def selection(table: ProcessTable, flt, shown: Shown) -> Shown | None:
    """The processes a filtered view shows: those with shown events, and those
    the filters keep as processes (a container's that had no event).

    shown: the (pid, start_ns) of each shown event's process (ev.pid,
    ev.start_ns); bare pids are taken too, for every process that had them."""
    if flt is None:
        return None
    return set(shown) | {p.key for p in table if flt.wants_process(p)}


def render(tree: bool, ns_table: bool, table: ProcessTable, host: Namespaces,
           shown: Shown | None) -> list[str]:
    out: list[str] = []
    if tree:
        out += process_tree(table, host, shown)
    if tree and ns_table:
        out.append("")
    if ns_table:
        out += namespace_table(table, host, shown)
    return out
