"""--html: the trace as one self-contained page, a timeline to look at.

The page (timeline.html, beside this file) is a template with no outside
reference at all -- no network, no CDN, no library: its style and script
are inline, and the trace is embedded as one JSON document that the script
draws on a canvas.  This module makes that document from the events:

- a lane per process (those the trace saw, and those alive at the start
  that are the parents of one), grouped by container and the host, ordered
  as a tree by the parent each was born to;
- per lane: pid, VPID, name, last command line, birth and end, the parent
  at the end and at birth, the container, the namespace set;
- the events, as rows of numbers into shared tables (command lines, names,
  namespace sets, cgroups), so that 100,000 events stay a few megabytes;
- each adoption (an exit that handed a lane's process to a reaper).

Everything a traced process controls passes the one escape rule
(model/escape.py) here, as in every text view; the page puts text into the
document only as text (textContent, canvas text), and the JSON cannot close
its script element (<, > and & are \\u escapes).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable

from ..model.escape import escape
from ..model.events import (
    ExecEvent,
    ExitEvent,
    ForkEvent,
    Header,
    Namespaces,
    ProcessEvent,
    SetnsEvent,
    UnshareEvent,
)
from .recording import write_file
from .text import detail, nesting

TEMPLATE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "timeline.html")
DATA_MARK = "/*CTRTRACE_DATA*/null"
NS_FIELDS = ("mnt", "uts", "ipc", "pid", "pid_for_children", "net", "cgroup", "user", "time",
             "time_for_children")
FORK, EXEC, EXEC_FAILED, EXIT, SETNS, UNSHARE = range(6)
ARGV_MAX = 4096  # characters of a command line kept for the page


class _Tables:
    """Values the events share, each stored once and named by its index."""

    def __init__(self) -> None:
        self.strings: list[str] = []
        self._string: dict[str, int] = {}
        self.ns_sets: list[list[int]] = []
        self._ns: dict[Namespaces, int] = {}

    def text(self, s: str) -> int:
        i = self._string.get(s)
        if i is None:
            i = self._string[s] = len(self.strings)
            self.strings.append(escape(s))
        return i

    def ns(self, ns: Namespaces) -> int:
        i = self._ns.get(ns)
        if i is None:
            i = self._ns[ns] = len(self.ns_sets)
            self.ns_sets.append([getattr(ns, f) for f in NS_FIELDS])
        return i


def _argv(argv: tuple[str, ...]) -> str:
    text = " ".join(argv)
    return text if len(text) <= ARGV_MAX else text[:ARGV_MAX - 4] + " ..."


def model(header: Header, events: Iterable[ProcessEvent], note: str = "") -> dict:
    """The page's document: lanes, events and the tables they index."""
    t = _Tables()
    t0 = header.start_ktime_ns
    lanes: list[dict] = []
    lane_of: dict[tuple[int, int], int] = {}   # (pid, start_ns) -> lane
    alive: dict[int, int] = {}                 # pid -> its lane now
    known = {d["pid"]: d for d in header.processes}
    containers: list[list] = []
    container_of: dict[str, int] = {}
    rows: list[list[int]] = []
    adoptions: list[list[int]] = []
    last_t = 0

    def us(ns: int) -> int:
        return (ns - t0) // 1000

    def container(ev: ProcessEvent) -> int:
        c = ev.container
        if c is None:
            return -1
        i = container_of.get(c.id)
        if i is None:
            i = container_of[c.id] = len(containers)
            containers.append([t.text(c.id), t.text(c.name or ""), t.text(c.image or "")])
        return i

    kids: dict[int, list[int]] = {}            # lane -> the lanes whose parent it is now

    def lane_for(pid: int, start_ns: int, comm: str, ns: Namespaces | None) -> int:
        """The lane of the process an event names: by pid and start, else the
        lane its pid has now if that process was alive at the start (its
        start known from /proc only to the tick) or the start is unknown;
        else a new lane (a process whose birth the trace missed)."""
        i = lane_of.get((pid, start_ns))
        if i is not None:
            return i
        i = alive.get(pid)
        if i is not None and (start_ns == 0 or lanes[i]["start"] is None):
            return i
        d = known.get(pid) if i is None else None
        first = child = new_lane(pid, start_ns, comm, ns, d)
        # the processes above it that were alive at the start, each linked to
        # the next: a loop, for a chain of them may be thousands long
        while d is not None and d.get("ppid", 0) in known:
            ppid = d["ppid"]
            parent = lane_of.get((ppid, 0))
            if parent is None:
                parent = alive.get(ppid)
            if parent is not None:
                link(child, parent)
                break
            d = known[ppid]
            parent = new_lane(ppid, 0, "", None, d)
            link(child, parent)
            child = parent
        return first

    def new_lane(pid: int, start_ns: int, comm: str, ns: Namespaces | None,
                 d: dict | None) -> int:
        i = len(lanes)
        lanes.append({"pid": pid, "vpid": d.get("vpid", pid) if d else pid,
                      "comm": t.text(d["comm"] if d else comm),
                      "argv": t.text(_argv(tuple(d.get("argv", ()))) if d else ""),
                      "start": None, "end": None, "status": -1, "parent": -1, "birth": -1,
                      "container": -1,
                      "ns": t.ns(Namespaces.from_dict(d["ns"])) if d else (
                          t.ns(ns) if ns is not None else -1),
                      "uid": d.get("uid", 0) if d else 0,
                      "cgroup": t.text(d.get("cgroup", "") if d else ""),
                      "ppid": d.get("ppid", 0) if d else 0, "more": t.text("")})
        lane_of[(pid, start_ns)] = i
        alive[pid] = i
        return i

    def link(child: int, parent: int) -> None:
        lanes[child]["parent"] = parent
        if lanes[child]["birth"] < 0:
            lanes[child]["birth"] = parent
        kids.setdefault(parent, []).append(child)

    for ev in events:
        if isinstance(ev, ForkEvent) and ev.thread:
            continue
        last_t = ev.ktime_ns
        ns_i = t.ns(ev.ns)
        if isinstance(ev, ForkEvent):
            parent = lane_for(ev.ppid, ev.parent_start_ns, ev.comm, None)
            caller = lane_for(ev.parent_pid, 0, ev.comm, None) if ev.parent_pid != ev.ppid \
                else parent
            i = len(lanes)
            lanes.append({"pid": ev.pid, "vpid": ev.vpid, "comm": t.text(ev.comm),
                          "argv": lanes[caller]["argv"], "start": us(ev.ktime_ns), "end": None,
                          "status": -1, "parent": -1, "birth": -1,
                          "container": container(ev), "ns": ns_i, "uid": ev.uid,
                          "cgroup": t.text(ev.cgroup), "ppid": ev.ppid,
                          "more": t.text(nesting(ev).strip())})
            lane_of[(ev.pid, ev.start_ns)] = i
            alive[ev.pid] = i
            link(i, parent)
            rows.append([us(ev.ktime_ns), FORK, i, caller, t.text(detail(ev) + nesting(ev)),
                         ns_i, ev.ppid, ev.vpid])
            continue
        i = lane_for(ev.pid, ev.start_ns, ev.comm, ev.ns)
        lane = lanes[i]
        lane["comm"] = t.text(ev.comm)
        lane["ns"], lane["vpid"], lane["cgroup"] = ns_i, ev.vpid, t.text(ev.cgroup)
        lane["more"] = t.text(nesting(ev).strip())  # pid levels, ids inside: as the text view
        if ev.container is not None:
            lane["container"] = container(ev)
        ref, kind = -1, EXEC
        if isinstance(ev, ExecEvent):
            if ev.ret:
                kind = EXEC_FAILED
            else:
                lane["argv"] = t.text(_argv(ev.argv))
        elif isinstance(ev, ExitEvent):
            kind = EXIT
            lane["end"], lane["status"] = us(ev.ktime_ns), ev.status
            if ev.reaper is not None:
                if ev.reaper:
                    ref = lane_for(ev.reaper, 0, "", None)
                    for j in kids.pop(i, ()):
                        if lanes[j]["end"] is None and lanes[j]["parent"] == i:
                            link(j, ref)
                            adoptions.append([us(ev.ktime_ns), j, i, ref])
        elif isinstance(ev, SetnsEvent):
            kind = SETNS
        elif isinstance(ev, UnshareEvent):
            kind = UNSHARE
        # the text view's words for it: one wording for every view
        rows.append([us(ev.ktime_ns), kind, i, ref, t.text(detail(ev) + nesting(ev)), ns_i,
                     ev.ppid, ev.vpid])
    return {
        "meta": {"host": escape(header.hostname), "kernel": escape(header.kernel),
                 "backend": header.backend, "events": len(rows),
                 "end": max(us(last_t), 0), "note": escape(note)},
        "hostNs": [getattr(header.host_ns, f) for f in NS_FIELDS],
        "nsFields": list(NS_FIELDS),
        "strings": t.strings,
        "nsSets": t.ns_sets,
        "containers": containers,
        "lanes": [[d["pid"], d["vpid"], d["comm"], d["argv"], d["start"], d["end"], d["status"],
                   d["parent"], d["birth"], d["container"], d["ns"], d["uid"], d["cgroup"],
                   d["more"]]
                  for d in lanes],
        "events": rows,
        "adoptions": adoptions,
    }


def page(doc: dict) -> str:
    """The page with the document in it."""
    with open(TEMPLATE, encoding="utf-8") as f:
        template = f.read()
    data = json.dumps(doc, separators=(",", ":"), ensure_ascii=True)
    # nothing in the data can end the script element or start markup
    data = data.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    return template.replace(DATA_MARK, data, 1)


def write_html(path: str, header: Header, events: Iterable[ProcessEvent], note: str = "") -> None:
    write_file(path, page(model(header, events, note)).encode())
