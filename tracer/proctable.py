"""Who is who: processes known from /proc at start-up, kept current by events.

/proc is read once, for the processes that existed before the trace began
(dockerd, containerd, the user's shell); from then on everything comes from
the kernel's events.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, Iterator, List, Optional, Set

from .events import Container, ExecEvent, ExitEvent, ForkEvent, Namespaces, ProcessEvent
from .system import read_ns

_CLK_TCK = os.sysconf("SC_CLK_TCK")


@dataclass(slots=True)
class Process:
    """One process as the table knows it: from /proc at start-up, then from events."""

    pid: int
    ppid: int
    comm: str
    argv: List[str]
    start_ns: int              # since boot; from /proc only to clock-tick precision
    ns: Namespaces
    vpid: int = 0
    uid: int = 0
    cgroup: str = ""
    container: Optional[Container] = None
    from_proc: bool = False    # seen at start-up rather than born during the trace
    exited: bool = False
    exit_status: Optional[int] = None  # the wait(2) status word, once exited
    children: Set[int] = field(default_factory=set)
    parents: List[int] = field(default_factory=list)  # earlier parents, oldest first (reparenting)
    birth_ppid: int = 0        # the parent it was born to (or had at start-up)

    def to_json(self) -> Dict[str, Any]:
        """The snapshot form, in a recording's header."""
        return {"pid": self.pid, "ppid": self.ppid, "vpid": self.vpid, "comm": self.comm,
                "argv": self.argv, "start_ns": self.start_ns, "uid": self.uid,
                "ns": self.ns.to_dict(), "cgroup": self.cgroup,
                "container": self.container.to_json() if self.container else None}

    @classmethod
    def from_json(cls, d: Dict[str, Any]) -> "Process":
        return cls(pid=int(d["pid"]), ppid=int(d["ppid"]), comm=str(d["comm"]),
                   argv=[str(a) for a in d.get("argv", [])], start_ns=int(d.get("start_ns", 0)),
                   ns=Namespaces.from_dict(d["ns"]), vpid=int(d.get("vpid", d["pid"])),
                   uid=int(d.get("uid", 0)), cgroup=str(d.get("cgroup", "")),
                   container=Container.from_json(d.get("container")), from_proc=True)


def _slurp(path: str) -> bytes:
    # os.open/os.read: a third of the cost of open().read() for these small files
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        data = os.read(fd, 65536)
        while len(data) >= 65536 and (more := os.read(fd, 65536)):
            data += more  # a long command line
        return data
    finally:
        os.close(fd)


def _cgroup(text: bytes) -> str:
    """The same "parent/leaf" naming the kernel side reports: the v2 placement
    when there is one below the root, else the v1 memory hierarchy's."""
    lines = [l.split(":", 2) for l in text.decode(errors="replace").splitlines()]
    paths = {l[1]: l[2] for l in lines if len(l) == 3}
    path = paths.get("", "/")
    if path == "/":
        path = next((p for c, p in paths.items() if "memory" in c.split(",")), path)
    parts = [x for x in path.split("/") if x]
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


def read_process(pid: int) -> Optional[Process]:
    """A live process as /proc shows it; None if it is gone (or half gone)."""
    base = f"/proc/{pid}/"
    try:
        stat = _slurp(base + "stat")
        status = _slurp(base + "status")
        cmdline = _slurp(base + "cmdline")
        cgroup = _slurp(base + "cgroup")
    except OSError:
        return None
    try:
        # comm may hold spaces and parentheses: it ends at the last ')'
        close = stat.rindex(b")")
        comm = stat[stat.index(b"(") + 1:close].decode(errors="replace")
        fields = stat[close + 2:].split()
        ppid, start_ticks = int(fields[1]), int(fields[19])
    except (ValueError, IndexError):
        return None
    uid = _status_field(status, b"\nUid:", 0, 0)  # the real uid
    vpid = _status_field(status, b"\nNSpid:", -1, pid)  # in its own pid namespace
    argv = [a.decode(errors="replace") for a in cmdline.split(b"\0")[:-1]] if cmdline else []
    return Process(pid=pid, ppid=ppid, comm=comm, argv=argv,
                   start_ns=start_ticks * 1_000_000_000 // _CLK_TCK, ns=read_ns(pid),
                   vpid=vpid, uid=uid, cgroup=_cgroup(cgroup), from_proc=True)


class ProcessTable:
    """keep_exited: remember processes after they exit (the tree and namespace
    views need them); otherwise an exit forgets the process, so that a long
    live trace holds only the processes alive now."""

    def __init__(self, keep_exited: bool = True) -> None:
        self.keep_exited = keep_exited
        self._procs: Dict[int, Process] = {}

    def __len__(self) -> int:
        return len(self._procs)

    def __contains__(self, pid: int) -> bool:
        return pid in self._procs

    def get(self, pid: int) -> Optional[Process]:
        return self._procs.get(pid)

    def __iter__(self) -> Iterator[Process]:
        return iter(self._procs.values())

    def seed_from_proc(self) -> None:
        """Every process alive now, as /proc shows it."""
        for name in os.listdir("/proc"):
            if name.isdigit():
                proc = read_process(int(name))
                if proc is not None:
                    self._add(proc)

    def seed_from_snapshot(self, processes: Iterable[Dict[str, Any]]) -> None:
        """The processes a recording's header lists."""
        for d in processes:
            self._add(Process.from_json(d))

    def _add(self, proc: Process) -> None:
        if not proc.birth_ppid:
            proc.birth_ppid = proc.ppid
        old = self._procs.get(proc.pid)
        if old is not None:
            self._unlink(old)
        self._procs[proc.pid] = proc
        parent = self._procs.get(proc.ppid)
        if parent is not None:
            parent.children.add(proc.pid)

    def _unlink(self, proc: Process) -> None:
        parent = self._procs.get(proc.ppid)
        if parent is not None:
            parent.children.discard(proc.pid)

    def apply(self, ev: ProcessEvent) -> None:
        """Bring the table up to date with one event."""
        if isinstance(ev, ForkEvent):
            if ev.thread:
                return
            # the command line is the caller's (not the parent's under CLONE_PARENT)
            parent = self._procs.get(ev.parent_pid) or self._procs.get(ev.ppid)
            self._add(Process(
                pid=ev.pid, ppid=ev.ppid, comm=ev.comm,
                argv=list(parent.argv) if parent else [],
                start_ns=ev.start_ns, ns=ev.ns, vpid=ev.vpid, uid=ev.uid,
                cgroup=ev.cgroup, container=ev.container,
            ))
            return
        proc = self._procs.get(ev.pid)
        if proc is None:
            # born before the trace and missed by the snapshot (a race at start)
            proc = Process(pid=ev.pid, ppid=ev.ppid, comm=ev.comm, argv=[],
                           start_ns=ev.start_ns, ns=ev.ns, vpid=ev.vpid, uid=ev.uid)
            self._add(proc)
        if proc.ppid != ev.ppid:
            old = self._procs.get(ev.ppid)
            # An event read just before the kernel reparented the process (its
            # parent's exit is already applied) must not move it back; any
            # other difference is a reparenting whose exit event we did not see.
            if not (old is not None and old.exited and ev.ppid in proc.parents):
                self._reparent(proc, ev.ppid)
        proc.comm = ev.comm
        proc.ns = ev.ns
        proc.vpid = ev.vpid
        proc.uid = ev.uid
        proc.cgroup = ev.cgroup
        if ev.container is not None:
            proc.container = ev.container
        if isinstance(ev, ExecEvent) and ev.ret == 0:
            proc.argv = list(ev.argv)
        elif isinstance(ev, ExitEvent):
            proc.exited = True
            proc.exit_status = ev.status
            if ev.reaper:
                # the kernel hands its children to the reaper right after this event
                for child in [self._procs[c] for c in proc.children if c in self._procs]:
                    if not child.exited:
                        self._reparent(child, ev.reaper)
            if not self.keep_exited:
                self._unlink(proc)
                del self._procs[proc.pid]

    def _reparent(self, proc: Process, new_ppid: int) -> None:
        self._unlink(proc)
        proc.parents.append(proc.ppid)
        proc.ppid = new_ppid
        parent = self._procs.get(new_ppid)
        if parent is not None:
            parent.children.add(proc.pid)

    def descendants(self, pid: int) -> List[int]:
        """pid and every live descendant known to the table."""
        out, todo = [], [pid]
        while todo:
            p = todo.pop()
            out.append(p)
            proc = self._procs.get(p)
            if proc is not None:
                todo.extend(c for c in proc.children if not self._procs[c].exited)
        return out
