"""Which events a view shows: one implementation for the live view and replay.

Filters work on the JSON form of an event (a dict), so that replay can filter
a recording without building typed events; live events are checked through
the same fields.  The kernel can run the pid, comm and ns-changes filters
itself (bpf/ctrtrace.bpf.c, same rules) when nothing is being recorded.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Dict, Iterable, Optional, Set

from .errors import CtrtraceError, ExitStatus
from .events import Header, ProcessEvent, parse_iso_ts
from .layout import CT_COMM_LEN


@dataclass
class FilterSpec:
    """The filters a view asks for, as given on the command line."""

    pid: Optional[int] = None          # that process and its descendants
    comm: Optional[str] = None
    ns_changes: bool = False
    container: Optional[str] = None    # id prefix or name
    containers_only: bool = False
    since: Optional[str] = None        # seconds from the trace's start, or an ISO time
    until: Optional[str] = None

    @property
    def active(self) -> bool:
        return any(v not in (None, False) for v in vars(self).values())

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
                "(e.g. 1.5) or an ISO time (2026-11-27T21:40:01Z)", ExitStatus.USAGE)
        if t.tzinfo is None:
            t = t.replace(tzinfo=_dt.timezone.utc)
        wall = int(t.timestamp() * 1e9)
    return wall - header.boot_time_ns


class EventFilter:
    """A predicate over events, with the state --pid needs (the tracked family)."""

    def __init__(self, spec: FilterSpec, header: Header) -> None:
        self.spec = spec
        self.dropped = 0
        self._comm = spec.comm[:CT_COMM_LEN - 1] if spec.comm else None
        self._since = _time_bound(spec.since, header) if spec.since else None
        self._until = _time_bound(spec.until, header) if spec.until else None
        self._tracked: Optional[Set[int]] = None
        if spec.pid is not None:
            self._tracked = _family(spec.pid, header.processes)

    def wants(self, d: Dict[str, Any]) -> bool:
        ok = self._check(d)
        if not ok:
            self.dropped += 1
        return ok

    def wants_event(self, ev: ProcessEvent) -> bool:
        c = ev.container
        return self.wants({
            "type": ev.type, "pid": ev.pid, "ppid": ev.ppid, "comm": ev.comm,
            "ktime_ns": ev.ktime_ns, "ns_change": ev.ns_change,
            "parent_pid": getattr(ev, "parent_pid", None), "thread": getattr(ev, "thread", False),
            "container": {"id": c.id, "name": c.name} if c else None,
        })

    def wants_process(self, proc) -> bool:
        """For the views: a process (seen at start-up or born during the trace)
        that the filters would keep, whether or not it had shown events."""
        s = self.spec
        if self._tracked is not None and proc.pid not in self._tracked:
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
        if s.ns_changes or s.since or s.until:
            return False  # these select events, not processes
        return True

    def _check(self, d: Dict[str, Any]) -> bool:
        s = self.spec
        t = d["ktime_ns"]
        if self._since is not None and t < self._since:
            return False
        if self._until is not None and t > self._until:
            return False
        if self._tracked is not None:
            pid = d["pid"]
            if d["type"] == "fork" and not d.get("thread"):
                # as the kernel does: a child of a followed process is followed
                if d.get("parent_pid") in self._tracked or d["ppid"] in self._tracked:
                    self._tracked.add(pid)
            if pid not in self._tracked:
                return False
            if d["type"] == "exit":
                self._tracked.discard(pid)
        if self._comm is not None and d["comm"] != self._comm:
            return False
        if s.ns_changes and not d.get("ns_change"):
            return False
        c = d.get("container")
        if s.containers_only and not c:
            return False
        if s.container is not None:
            if not c:
                return False
            want = s.container.lstrip("/")
            if not (c["id"].startswith(want) or c.get("name") == want):
                return False
        return True


def _family(pid: int, processes: Iterable[Dict[str, Any]]) -> Set[int]:
    """pid and its descendants among the processes alive at the start."""
    children: Dict[int, list] = {}
    for p in processes:
        children.setdefault(int(p["ppid"]), []).append(int(p["pid"]))
    out, todo = set(), [pid]
    while todo:
        p = todo.pop()
        if p not in out:
            out.add(p)
            todo.extend(children.get(p, []))
    return out
