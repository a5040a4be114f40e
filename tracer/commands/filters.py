"""Which events a view shows: one implementation for the live view and replay.

Filters work on typed events: the live trace's and those replay reads from a
recording are the same records (events.py).  The kernel can run the pid, comm and ns-changes filters
itself (bpf/ctrtrace.bpf.c, same rules) when nothing is being recorded.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from ..kernel.host import KernelFilters
from ..model.contract import COMM_MAX, parse_iso_ts
from ..model.errors import CtrtraceError, ExitStatus
from ..model.events import ExitEvent, ForkEvent, Header, ProcessEvent
from ..state.proctable import ProcKey, same_start


@dataclass
class FilterSpec:
    """The filters a view asks for, as given on the command line: those the
    kernel can run too (--pid, --comm, --ns-changes), and those only
    userspace knows enough for.  FilterSpec.of(pid=1, container="web")."""

    kernel: KernelFilters = KernelFilters()
    container: str | None = None    # id prefix or name
    containers_only: bool = False
    since: str | None = None        # seconds from the trace's start, or an ISO time
    until: str | None = None

    @classmethod
    def of(cls, **names: Any) -> FilterSpec:
        kernel = {k: names.pop(k) for k in KernelFilters._fields if k in names}
        return cls(kernel=KernelFilters(**kernel), **names)

    @property
    def active(self) -> bool:
        return self.kernel != KernelFilters() or any(
            v not in (None, False) for k, v in vars(self).items() if k != "kernel")

    @property
    def kernel_only(self) -> bool:
        """Nothing here needs userspace knowledge."""
        return not (self.container or self.containers_only or self.since or self.until)


_REL = re.compile(r"^\+?(\d+(\.\d*)?|\.\d+)s?$")


def _time_bound(text: str, header: Header) -> int:
    """A --since/--until value as a CLOCK_MONOTONIC ktime."""
    m = _REL.match(text.strip())
    if m:
        return header.start_ktime_ns + int(float(m.group(1)) * 1e9)
    try:
        wall = parse_iso_ts(text if text.endswith("Z") else text + "Z")
    except ValueError:
        import datetime as _dt

        try:
            t = _dt.datetime.fromisoformat(text)
        except ValueError:
            raise CtrtraceError(
                f"cannot read the time {text!r}: give seconds from the trace's start "
                "(e.g. 1.5) or an ISO time (2026-11-27T21:40:01Z)", ExitStatus.USAGE) from None
        if t.tzinfo is None:
            t = t.replace(tzinfo=_dt.timezone.utc)
        wall = int(t.timestamp() * 1e9)
    return wall - header.boot_time_ns


class EventFilter:
    """A predicate over events, with the state --pid needs (the tracked family).

    The family is of processes, not pids: a pid reused during the trace by a
    process outside the family is not followed.  Members are known as the
    process table keys them (proctable.ProcKey: pid and start time, /proc's
    for those alive at start-up), and an event's process is matched against
    them with the table's rule (proctable.same_start)."""

    def __init__(self, spec: FilterSpec, header: Header, views: bool = False) -> None:
        """views: whether views will ask about processes (wants_process), for
        which every member of the family is kept, alive or not; without
        them only the live ones are, whatever the length of the trace."""
        self.spec = spec
        self.dropped = 0
        comm, pid = spec.kernel.comm, spec.kernel.pid
        self._comm = comm[:COMM_MAX] if comm else None
        self._since = _time_bound(spec.since, header) if spec.since else None
        self._until = _time_bound(spec.until, header) if spec.until else None
        # the live members of the family: pid -> (start_ns, from /proc)
        self._tracked: dict[int, tuple[int, bool]] | None = None
        self._family: set[ProcKey] | None = set() if views else None  # every member
        if pid is not None:
            self._tracked = _family(pid, header.processes)
            if self._family is not None:
                self._family = {(pid, start) for pid, (start, _) in self._tracked.items()}

    def remembered(self) -> int:
        """The processes --pid holds: its family's live members, and with
        views every member (what a long trace must not grow without)."""
        return len(self._tracked or ()) + len(self._family or ())

    def wants(self, ev: ProcessEvent) -> bool:
        ok = self._check(ev)
        if not ok:
            self.dropped += 1
        return ok

    def wants_process(self, proc) -> bool:
        """For the views: a process (seen at start-up or born during the trace)
        that the filters would keep, whether or not it had shown events."""
        s = self.spec
        if self._tracked is not None and proc.key not in (self._family or ()):
            return False
        if self._comm is not None and proc.comm != self._comm:
            return False
        c = proc.container
        if s.containers_only and c is None:
            return False
        if s.container is not None:
            want = s.container.lstrip("/")
            if c is None or not (c.id.startswith(want) or c.name == want):
                return False
        if s.kernel.ns_changes or s.since or s.until:
            return False  # these select events, not processes
        return True

    def _follows(self, pid: int, start: int) -> bool:
        """Is the process (pid, start) a live member of the family?  (start 0:
        unknown, the live member with that pid.)"""
        assert self._tracked is not None
        member = self._tracked.get(pid)
        if member is None or not same_start(member[0], member[1], start):
            return False
        if not member[0] and start:  # known from now on
            self._tracked[pid] = (start, False)
            if self._family is not None:
                self._family.add((pid, start))
        return True

    def _follow(self, pid: int, start: int) -> None:
        """A child of the family is born (or, if the family already has it
        from the start-up, seen being born: it was born just before then)."""
        assert self._tracked is not None
        member = self._tracked.get(pid)
        if member is not None and member[0] and same_start(member[0], member[1], start):
            return
        self._tracked[pid] = (start, False)
        if self._family is not None:
            self._family.add((pid, start))

    def _check(self, ev: ProcessEvent) -> bool:
        s = self.spec
        # the family first: a child forked outside the time bounds is still
        # followed (the bounds select events, not processes)
        if self._tracked is not None:
            pid, start = ev.pid, ev.start_ns
            if isinstance(ev, ForkEvent) and not ev.thread:
                # as the kernel does: a child of a followed process is followed
                # (the caller, parent_pid, is alive: its pid is enough)
                if self._follows(ev.parent_pid, 0) or \
                        self._follows(ev.ppid, ev.parent_start_ns):
                    self._follow(pid, start)
            if not self._follows(pid, start):
                return False
            if isinstance(ev, ExitEvent):
                del self._tracked[pid]
        t = ev.ktime_ns
        if self._since is not None and t < self._since:
            return False
        if self._until is not None and t > self._until:
            return False
        if self._comm is not None and ev.comm != self._comm:
            return False
        if s.kernel.ns_changes and not ev.ns_change:
            return False
        c = ev.container
        if s.containers_only and c is None:
            return False
        if s.container is not None:
            if c is None:
                return False
            want = s.container.lstrip("/")
            if not (c.id.startswith(want) or c.name == want):
                return False
        return True


def _family(pid: int, processes: Iterable[dict[str, Any]]) -> dict[int, tuple[int, bool]]:
    """pid and its descendants among the processes alive at the start (alive
    together: a pid names one of them), with their start times as the header
    has them (/proc's); pid itself with an unknown start (0) if it was not
    alive then (the first process to get it is followed, as in the kernel)."""
    children: dict[int, list] = {}
    starts: dict[int, int] = {}
    for d in processes:
        children.setdefault(int(d["ppid"]), []).append(int(d["pid"]))
        starts[int(d["pid"])] = int(d.get("start_ns", 0))
    out: dict[int, tuple[int, bool]] = {}
    todo = [pid]
    while todo:
        p = todo.pop()
        if p not in out:
            out[p] = (starts.get(p, 0), True)
            todo.extend(children.get(p, []))
    return out
