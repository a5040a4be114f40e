"""Who is who: processes known from /proc at start-up, kept current by events.

/proc is read once, for the processes that existed before the trace began
(dockerd, containerd, the user's shell); from then on everything comes from
the kernel's events.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from ..model.contract import (
    ARGV_MAX,
    HEADER_LINE_MAX,
    ID_UNMAPPED,
    text_of,
    texts_of,
    with_raw_text,
)
from ..model.events import Container, ExecEvent, ExitEvent, ForkEvent, Namespaces, ProcessEvent
from .system import read_ns

_CLK_TCK = os.sysconf("SC_CLK_TCK")
TICK_NS = 1_000_000_000 // _CLK_TCK  # /proc's precision for a start time
PARENTS_KEPT = 8  # earlier parents a process keeps: the latest
_NO_CHILDREN: frozenset[tuple[int, int]] = frozenset()

# A process is a pid and a start time: pids are reused (pid_max is 32768 by
# default), so within one trace a pid can name several processes.
ProcKey = tuple[int, int]  # (pid, start_ns)


def same_start(known: int, from_proc: bool, start: int) -> bool:
    """Can the process the table knows with start time `known` be the one an
    event reports with `start` (the kernel's task->group_leader->start_time)?

    0 is unknown on either side (recordings made before start times were
    recorded) and matches.  A process read from /proc at start-up (from_proc)
    is known only to the clock tick, and on CLOCK_BOOTTIME, where the kernel's
    start_time is CLOCK_MONOTONIC: /proc's value is
    floor(start_boottime / tick) * tick, and start_boottime = start_time +
    the time the machine had been suspended before the process started (0 on
    a machine never suspended, days on a laptop).  So the kernel's value lies
    in [known - suspended, known + tick): without knowing how long the
    machine was suspended, there is no lower bound, and the only start that
    provably is another process is one at or past known + tick (it started
    after this one).  That is enough: the table asks this of a process it
    holds as alive (no other process can have its pid until its exit event),
    and a later start means its exit was lost and the pid reused.
    """
    if known == start or not known or not start:
        return True
    return from_proc and start < known + TICK_NS


@dataclass(slots=True)
class Process:
    """One process as the table knows it: from /proc at start-up, then from events."""

    pid: int
    ppid: int
    comm: str
    argv: tuple[str, ...]      # shared with the event it came from
    start_ns: int              # since boot; from /proc only to the clock tick (see same_start)
    ns: Namespaces
    vpid: int = 0
    # the pid at every level, the host's first, when there are more than two
    # (pid and vpid say the rest: most processes keep the one empty tuple)
    vpids: tuple[int, ...] = ()
    uid: int = 0
    ns_uid: int | None = None    # uid as its user namespace maps it (None: as uid)
    cgroup: str = ""
    container: Container | None = None
    from_proc: bool = False    # seen at start-up rather than born during the trace
    exited: bool = False
    exit_status: int | None = None  # the wait(2) status word, once exited (None: not seen)
    # its children now (keys); most processes have none: one shared empty set
    children: set[ProcKey] | frozenset[ProcKey] = _NO_CHILDREN
    # earlier parents, oldest first, the latest PARENTS_KEPT (reparenting;
    # most processes have none)
    parents: tuple[ProcKey, ...] = ()
    birth_ppid: int = 0        # the parent it was born to (or had at start-up)
    parent_key: ProcKey = (0, 0)  # its parent now: ppid and that process's start (0: unknown)
    birth_key: ProcKey = (0, 0)   # the parent it was born to (or had at start-up)
    argv_truncated: bool = False  # /proc's command line was longer than an exec event's

    @property
    def key(self) -> ProcKey:
        """Its identity: (pid, start_ns).  For a process read from /proc the
        start is /proc's (to the clock tick), as the recording's header has it."""
        return (self.pid, self.start_ns)

    def to_json(self) -> dict[str, Any]:
        """The snapshot form, in a recording's header."""
        d = {"pid": self.pid, "ppid": self.ppid, "vpid": self.vpid, "comm": self.comm,
             "argv": list(self.argv), "start_ns": self.start_ns, "uid": self.uid,
             "ns": self.ns.to_dict(), "cgroup": self.cgroup,
             "container": self.container.to_json() if self.container else None}
        if len(self.vpids) > 2:
            d["vpids"] = list(self.vpids)
        if self.ns_uid is not None and self.ns_uid != self.uid:
            d["ns_uid"] = self.ns_uid
        if self.argv_truncated:
            d["argv_truncated"] = True
        return with_raw_text(d, ("comm", "argv", "cgroup"))

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Process:
        return cls(pid=int(d["pid"]), ppid=int(d["ppid"]), comm=text_of(d, "comm"),
                   argv=tuple(texts_of(d, "argv")), argv_truncated=bool(d.get("argv_truncated")),
                   start_ns=int(d.get("start_ns", 0)),
                   ns=Namespaces.from_dict(d["ns"]), vpid=int(d.get("vpid", d["pid"])),
                   vpids=_deep(tuple(d.get("vpids", ()))), uid=int(d.get("uid", 0)),
                   ns_uid=d.get("ns_uid"), cgroup=text_of(d, "cgroup"),
                   container=Container.from_json(d.get("container")), from_proc=True)


def _deep(vpids: tuple[int, ...]) -> tuple[int, ...]:
    """The pid levels a process keeps: those of more than two levels."""
    return vpids if len(vpids) > 2 else ()


def _slurp(path: str, limit: int = 65536) -> bytes:
    """Up to limit bytes of a /proc file."""
    # os.open/os.read: cheaper than open().read() for these small files (bench/README.md)
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        data = os.read(fd, limit)
        while len(data) < limit and (more := os.read(fd, limit - len(data))):
            data += more
        return data
    finally:
        os.close(fd)


def _cgroup(text: bytes) -> str:
    """The same "parent/leaf" naming the kernel side reports: the v2 placement
    when there is one below the root, else the v1 memory hierarchy's."""
    lines = [line.split(":", 2) for line in text.decode(errors="surrogateescape").splitlines()]
    paths = {line[1]: line[2] for line in lines if len(line) == 3}
    path = paths.get("", "/")
    if path == "/":
        path = next((memory_path for controllers, memory_path in paths.items()
                     if "memory" in controllers.split(",")), path)
    parts = [part for part in path.split("/") if part]
    return "/".join(parts[-2:]) if len(parts) > 1 else "/" + "".join(parts)


def _status_field(status: bytes, key: bytes, index: int, default: int) -> int:
    """One number of a /proc/PID/status line ("\\nUid:" -> its index-th value)."""
    at = status.find(key)
    if at < 0:
        return default
    end = status.find(b"\n", at + 1)
    try:
        return int(status[at + len(key):end if end >= 0 else None].split()[index])
    except (ValueError, IndexError):
        return default


def _status_numbers(status: bytes, key: bytes) -> tuple[int, ...]:
    """All the numbers of a /proc/PID/status line (() if it has none)."""
    at = status.find(key)
    if at < 0:
        return ()
    end = status.find(b"\n", at + 1)
    try:
        return tuple(int(n) for n in status[at + len(key):end if end >= 0 else None].split())
    except ValueError:
        return ()


@functools.cache
def _own_user_ns() -> int:
    """The user namespace ctrtrace reads /proc from (the host's, as root)."""
    return os.stat("/proc/self/ns/user").st_ino


def map_id_up(id_map: str, kid: int) -> int:
    """An id as a /proc/PID/uid_map (or gid_map) read from the host's user
    namespace maps it: each line is "first lower count", lower in the
    host's ids; contract.ID_UNMAPPED if no line maps it (as the kernel's
    map_id_up)."""
    for line in id_map.splitlines():
        first, lower, count = (int(n) for n in line.split())
        if 0 <= kid - lower < count:
            return first + (kid - lower)
    return ID_UNMAPPED


def read_process(pid: int) -> Process | None:
    """A live process as /proc shows it; None if it is gone (or half gone)."""
    base = f"/proc/{pid}/"
    try:
        stat = _slurp(base + "stat")
        status = _slurp(base + "status")
        # as much of the command line as an exec event carries
        cmdline = _slurp(base + "cmdline", ARGV_MAX + 1)
        cgroup = _slurp(base + "cgroup")
    except OSError:
        return None
    try:
        # comm may hold spaces and parentheses: it ends at the last ')'
        close = stat.rindex(b")")
        comm = stat[stat.index(b"(") + 1:close].decode(errors="surrogateescape")
        fields = stat[close + 2:].split()
        ppid, start_ticks = int(fields[1]), int(fields[19])
    except (ValueError, IndexError):
        return None
    uid = _status_field(status, b"\nUid:", 0, 0)  # the real uid
    vpids = _status_numbers(status, b"\nNSpid:") or (pid,)  # at every level, the host's first
    ns = read_ns(pid)
    ns_uid = None
    if ns.user and ns.user != _own_user_ns():
        try:
            ns_uid = map_id_up(_slurp(base + "uid_map").decode(), uid)
        except (OSError, ValueError):
            pass
    truncated = len(cmdline) > ARGV_MAX
    args = cmdline[:ARGV_MAX].split(b"\0")
    if args[-1] == b"":
        args.pop()
    argv = tuple([arg.decode(errors="surrogateescape") for arg in args])
    return Process(pid=pid, ppid=ppid, comm=comm, argv=argv, argv_truncated=truncated,
                   start_ns=start_ticks * 1_000_000_000 // _CLK_TCK, ns=ns,
                   vpid=vpids[-1], vpids=_deep(vpids), uid=uid, ns_uid=ns_uid,
                   cgroup=_cgroup(cgroup), from_proc=True)


# The header lists every process alive at start; replay reads a header line
# of at most contract.HEADER_LINE_MAX bytes, and the list of processes gets
# all of it but this much (the header's other fields are a few KiB).
HEADER_PROCESSES_MAX = HEADER_LINE_MAX - (1 << 20)
# Text grows at most six times in JSON (a \u escape a character) and the
# base64 of bytes that are not UTF-8 adds a third: below this many bytes of
# text, no process list can exceed the limit, and none is measured.
_SURELY_FITS = HEADER_PROCESSES_MAX // 8
_ENTRY_MAX = 1 << 10  # bytes of an entry's fields other than its text


def snapshot(procs: Iterable[Process]) -> tuple[list[dict[str, Any]], int]:
    """The processes as a recording's header lists them, and how many it had
    to leave out: the list always fits the line replay reads.  When it would
    not, the longest command lines are cut to their first word (marked
    argv_truncated), then, with more processes than the line can hold at
    all, the last ones are left out (the header counts them)."""
    from ..model.contract import json_bytes

    procs = list(procs)
    text = sum(len(p.comm) + len(p.cgroup) + sum(len(arg) + 1 for arg in p.argv) for p in procs)
    entries = [p.to_json() for p in procs]
    if text + _ENTRY_MAX // 8 * len(procs) <= _SURELY_FITS:
        return entries, 0
    sizes = [len(json_bytes(e)) + 1 for e in entries]
    total = sum(sizes)
    for i in sorted(range(len(procs)), key=sizes.__getitem__, reverse=True):
        if total <= HEADER_PROCESSES_MAX:
            break
        p = procs[i]
        if len(p.argv) > 1 or (p.argv and len(p.argv[0]) > 64):
            entries[i] = dataclasses.replace(p, argv=(p.argv[0][:64],),
                                             argv_truncated=True).to_json()
            size = len(json_bytes(entries[i])) + 1
            total += size - sizes[i]
            sizes[i] = size
    omitted = 0
    while total > HEADER_PROCESSES_MAX:
        total -= sizes.pop()
        entries.pop()
        omitted += 1
    return entries, omitted


class ProcessTable:
    """keep_exited: remember processes after they exit (the tree and namespace
    views need them); otherwise an exit forgets the process, so that a long
    live trace holds only the processes alive now.

    Processes are keyed by (pid, start_ns) (ProcKey): a pid reused within the
    trace is a new process, with its own children.  Events name a process and
    its parent by pid and start time; a process the table holds as alive
    stays the one its pid names until its exit event, or until an event gives
    that pid a start time that is not its (the exit was lost: the old one is
    then ended, with no status, and a new one made).
    """

    def __init__(self, keep_exited: bool = True) -> None:
        self.keep_exited = keep_exited
        self._procs: dict[ProcKey, Process] = {}
        # every process with that pid, oldest first: only the last can be alive
        self._by_pid: dict[int, list[Process]] = {}

    def __len__(self) -> int:
        return len(self._procs)

    def __contains__(self, item: object) -> bool:
        """A pid (any process that had it) or a key."""
        if isinstance(item, tuple):
            return item in self._procs
        return item in self._by_pid

    def __iter__(self) -> Iterator[Process]:
        return iter(self._procs.values())

    # -- lookups --------------------------------------------------------------

    def get(self, pid: int) -> Process | None:
        """The process with this pid now, or the last one to have had it."""
        procs = self._by_pid.get(pid)
        return procs[-1] if procs else None

    def alive(self, pid: int) -> Process | None:
        """The live process with this pid, if the table knows it."""
        procs = self._by_pid.get(pid)
        if procs and not procs[-1].exited:
            return procs[-1]
        return None

    def with_pid(self, pid: int) -> list[Process]:
        """Every process that had this pid during the trace, oldest first."""
        return list(self._by_pid.get(pid, ()))

    def by_key(self, key: ProcKey) -> Process | None:
        """The process the table keys so (keys from Process.key, children, parents)."""
        return self._procs.get(key)

    def find(self, pid: int, start_ns: int) -> Process | None:
        """The process an event names by pid and start time (its own, or its
        parent's): exact for processes born during the trace, within the
        clock tick for those read from /proc (same_start); start 0 (unknown)
        names the last process with that pid."""
        p = self._procs.get((pid, start_ns))
        if p is not None:
            return p
        procs = self._by_pid.get(pid)
        if not procs:
            return None
        if not start_ns:
            return procs[-1]
        for p in reversed(procs):
            if (p.from_proc or not p.start_ns) and same_start(p.start_ns, True, start_ns):
                return p
        return None

    def _holder(self, pid: int, start_ns: int) -> Process | None:
        """The process an event of (pid, start_ns) is about, if the table has it."""
        if start_ns:
            p = self._procs.get((pid, start_ns))
            if p is not None:
                return p
        cur = self.alive(pid)
        if cur is not None and same_start(cur.start_ns, cur.from_proc, start_ns):
            return cur
        return None

    def _key_of(self, pid: int, start_ns: int) -> ProcKey:
        """The key of the process an event names (its parent, say), as the
        table knows it; the event's own numbers if the table does not."""
        p = self.find(pid, start_ns)
        return p.key if p is not None else (pid, start_ns)

    # -- start-up -------------------------------------------------------------

    def seed_from_proc(self) -> None:
        """Every process alive now, as /proc shows it."""
        seeded = []
        for name in os.listdir("/proc"):
            if name.isdigit():
                proc = read_process(int(name))
                if proc is not None:
                    seeded.append(proc)
        self._seed(seeded)

    def seed_from_snapshot(self, processes: Iterable[dict[str, Any]]) -> None:
        """The processes a recording's header lists."""
        self._seed([Process.from_json(d) for d in processes])

    def _seed(self, procs: list[Process]) -> None:
        """Processes alive together (a pid names one of them): linked to their
        parents once all are in, whatever order /proc listed them in."""
        for proc in procs:
            old = self.alive(proc.pid)
            if old is not None:  # read twice: the later read wins
                self._forget(old)
            self._insert(proc)
        for proc in procs:
            if self._procs.get(proc.key) is not proc:
                continue
            parent = self.alive(proc.ppid)
            proc.parent_key = parent.key if parent is not None else (proc.ppid, 0)
            if not proc.birth_ppid:
                proc.birth_ppid, proc.birth_key = proc.ppid, proc.parent_key
            if parent is not None:
                self._adopt(parent, proc.key)

    # -- the table's own bookkeeping ------------------------------------------

    def _insert(self, proc: Process) -> None:
        old = self._procs.get(proc.key)
        if old is not None:  # only where start times are unknown (0): the pid decides
            self._forget(old)
        self._procs[proc.key] = proc
        procs = self._by_pid.setdefault(proc.pid, [])
        i = len(procs)
        while i and procs[i - 1].start_ns > proc.start_ns and not procs[i - 1].from_proc:
            i -= 1  # an earlier holder of the pid, learnt of late
        procs.insert(i, proc)
        if i < len(procs) - 1:
            proc.exited = True  # a later process has its pid: it is gone

    def _forget(self, proc: Process) -> None:
        self._unlink(proc)
        if self._procs.get(proc.key) is proc:
            del self._procs[proc.key]
        procs = self._by_pid.get(proc.pid)
        if procs is not None:
            try:
                procs.remove(proc)
            except ValueError:
                pass
            if not procs:
                del self._by_pid[proc.pid]

    @staticmethod
    def _adopt(parent: Process, key: ProcKey) -> None:
        if isinstance(parent.children, set):
            parent.children.add(key)
        else:  # the shared empty one
            parent.children = {key}

    def _link(self, proc: Process) -> None:
        parent = self._procs.get(proc.parent_key)
        if parent is not None:
            self._adopt(parent, proc.key)

    def _unlink(self, proc: Process) -> None:
        parent = self._procs.get(proc.parent_key)
        if parent is not None and isinstance(parent.children, set):
            parent.children.discard(proc.key)

    def _end(self, proc: Process) -> None:
        """proc's pid now names another process: it ended without an exit event
        (a lost event).  Its status stays unknown."""
        proc.exited = True
        if not self.keep_exited:
            self._forget(proc)

    def _new(self, ev: ProcessEvent, argv: tuple[str, ...], parent_key: ProcKey) -> Process:
        cur = self.alive(ev.pid)
        if cur is not None and (cur.from_proc or not ev.start_ns or ev.start_ns > cur.start_ns):
            self._end(cur)
        proc = Process(pid=ev.pid, ppid=ev.ppid, comm=ev.comm, argv=argv,
                       start_ns=ev.start_ns, ns=ev.ns, vpid=ev.vpid, vpids=_deep(ev.vpids),
                       uid=ev.uid, ns_uid=ev.ns_uid,
                       cgroup=ev.cgroup, container=ev.container,
                       birth_ppid=ev.ppid, parent_key=parent_key, birth_key=parent_key)
        self._insert(proc)
        self._link(proc)
        return proc

    # -- events ---------------------------------------------------------------

    def apply(self, ev: ProcessEvent) -> None:
        """Bring the table up to date with one event."""
        if isinstance(ev, ForkEvent):
            if not ev.thread:
                self._fork(ev)
            return
        proc = self._holder(ev.pid, ev.start_ns)
        if proc is None:
            # born before the trace and missed by the snapshot (a race at
            # start), or its fork event was lost
            proc = self._new(ev, (), self._key_of(ev.ppid, ev.parent_start_ns))
        elif not self._same_parent(proc, ev.ppid, ev.parent_start_ns):
            old = self.find(ev.ppid, ev.parent_start_ns)
            # An event read just before the kernel reparented the process (its
            # parent's exit is already applied) must not move it back; any
            # other difference is a reparenting whose exit event we did not see.
            if not (old is not None and old.exited and old.key in proc.parents):
                self._reparent(proc, old.key if old is not None else (ev.ppid, ev.parent_start_ns))
        proc.comm = ev.comm
        proc.ns = ev.ns
        proc.vpid = ev.vpid
        proc.vpids = _deep(ev.vpids)
        proc.uid = ev.uid
        proc.ns_uid = ev.ns_uid
        proc.cgroup = ev.cgroup
        if ev.container is not None:
            proc.container = ev.container
        if isinstance(ev, ExecEvent) and ev.ret == 0:
            proc.argv = ev.argv
            proc.argv_truncated = ev.argv_truncated
        elif isinstance(ev, ExitEvent):
            proc.exited = True
            proc.exit_status = ev.status
            if ev.reaper:
                # the kernel hands its children to the reaper right after this event
                reaper = self.alive(ev.reaper)
                rkey = reaper.key if reaper is not None else (ev.reaper, 0)
                for child in [self._procs[c] for c in proc.children if c in self._procs]:
                    if not child.exited:
                        self._reparent(child, rkey)
        if proc.exited and not self.keep_exited:
            self._forget(proc)

    def _fork(self, ev: ForkEvent) -> None:
        parent = self.find(ev.ppid, ev.parent_start_ns)
        pkey = parent.key if parent is not None else (ev.ppid, ev.parent_start_ns)
        # the command line is the caller's (not the parent's under CLONE_PARENT)
        caller = (self.alive(ev.parent_pid) if ev.parent_pid != ev.ppid else None) or parent
        proc = self._holder(ev.pid, ev.start_ns)
        if proc is None:
            self._new(ev, caller.argv if caller else (), pkey)
            return
        if proc.exited:
            return  # a fork of a process already ended: nothing to learn
        # Already known: read from /proc at start-up, having been born between
        # the programs' attaching and that read.  Its birth is the fork's.
        self._unlink(proc)
        proc.ppid = proc.birth_ppid = ev.ppid
        proc.parent_key = proc.birth_key = pkey
        proc.parents = ()
        if not proc.argv and caller is not None:
            proc.argv = caller.argv
            proc.argv_truncated = caller.argv_truncated
        self._link(proc)

    def _same_parent(self, proc: Process, ppid: int, parent_start_ns: int) -> bool:
        """Is (ppid, parent_start_ns), from an event, proc's parent as the table has it?"""
        pid, start = proc.parent_key
        if pid != ppid:
            return False
        if start == parent_start_ns:
            return True
        if not start:  # unknown until now (a reaper the table did not know)
            if parent_start_ns:
                self._unlink(proc)
                proc.parent_key = self._key_of(ppid, parent_start_ns)
                self._link(proc)
            return True
        if not parent_start_ns:
            return True
        parent = self._procs.get(proc.parent_key)
        return parent is not None and parent.from_proc and \
            same_start(parent.start_ns, True, parent_start_ns)

    def _reparent(self, proc: Process, new_parent: ProcKey) -> None:
        self._unlink(proc)
        # the latest few: handed on and on, a process must not cost a copy of
        # its whole history at each move (a recording can hand thousands)
        proc.parents = (*proc.parents[1 - PARENTS_KEPT:], proc.parent_key)
        proc.parent_key = new_parent
        proc.ppid = new_parent[0]
        self._link(proc)

    def descendants(self, pid: int) -> list[int]:
        """pid and the pids of its live descendants known to the table (what
        the kernel's map of followed processes is seeded with for --pid)."""
        out = [pid]
        root = self.alive(pid)
        todo = [root] if root is not None else []
        seen = {root.key} if root is not None else set()
        while todo:
            proc = todo.pop()
            for key in proc.children:
                child = self._procs.get(key)
                if child is not None and not child.exited and key not in seen:
                    seen.add(key)
                    out.append(child.pid)
                    todo.append(child)
        return out
