"""--explain: the story of each isolated process start in a trace, told
from its events by general rules.

A start is a process born into a pid namespace that its creator is not in:
PID 1 of a new namespace (a container's init: `docker run`, `unshare --fork
--pid`), or a process that joined an existing one (`docker exec`, `nsenter
--pid`).  Its story is the line of processes that made it, each the caller
of the clone that made the next (fork events name the caller even where
CLONE_PARENT gives the child another parent), from the first that was
already running when the trace began: every step they took, in time order --
forks, execs (a program re-executing itself through /proc/self/exe or an
in-memory copy is said to), the namespaces each unshare or clone created and
each setns entered, and each exit that handed children on to a reaper.  Then
where the process ended up (its parent at the end: the kernel's reparenting,
not the birth), how long the start took, and its namespaces as lsns shows
them, each with the event that made or entered it.  What a story expects
and the trace does not hold (the trace began too late, the program never
exec'd) is said plainly.  Nothing here knows Docker: containerd, the shim
and runc are named by their own events.
"""

from __future__ import annotations

import bisect
import functools
import shlex
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

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
from ..model.flags import NS_FLAGS, unshare_flag_names
from .text import ids_text, levels_text, status_words

ProcKey = tuple[int, int]  # (pid, start_ns)
NS_ORDER = ("mnt", "uts", "ipc", "pid", "net", "cgroup", "user", "time")
CHAIN_MAX = 32  # creators followed back at most
ARGV_SHOWN = 120  # characters of a command line in a story
# Processes named that entered a start's namespaces from outside it: any
# process may enter them as often as it likes, so a story (and the work of
# writing it) does not grow with each entry; the rest are counted.
VISITORS_SHOWN = 16
# Steps of one process in a story: a creator of many starts, with many steps
# of its own, would tell them all again in each start's story.
STEPS_SHOWN = 64


@dataclass
class _Proc:
    key: ProcKey
    comm: str = ""
    fork: ForkEvent | None = None
    events: list[ProcessEvent] = field(default_factory=list)  # its own: exec, setns, unshare, exit

    @property
    def pid(self) -> int:
        return self.key[0]


def _at(ev: ProcessEvent) -> int:
    return ev.ktime_ns


def _command(argv: tuple[str, ...]) -> str:
    text = shlex.join(argv)
    return text if len(text) <= ARGV_SHOWN else text[:ARGV_SHOWN - 4] + " ..."


class Story:
    """The events of one trace, read for the stories they tell."""

    def __init__(self, header: Header, events: Iterable[ProcessEvent]) -> None:
        self.header = header
        self.host = header.host_ns
        self.procs: dict[ProcKey, _Proc] = {}
        self.by_pid: dict[int, list[_Proc]] = {}  # every process that had a pid, in order seen
        self.order: list[ProcessEvent] = []
        self.known: dict[int, dict] = {p["pid"]: p for p in header.processes}
        # what each story looks up, indexed once: exits that hand children
        # on, by pid; successful setns calls; namespaces by their PID 1
        self.handovers: dict[int, list[ExitEvent]] = {}
        self.entered: dict[tuple[str, int], list[SetnsEvent]] = {}  # (kind, inode) -> setns
        self._inits: dict[tuple[str, int], _Proc] | None = None
        self._at_start: dict[tuple[str, int], dict] | None = None  # header processes by namespace
        self._said: dict[int, str] = {}  # _who's answers: the events are all read by then
        for ev in events:
            self.order.append(ev)
            if isinstance(ev, ExitEvent) and ev.reaper is not None:
                self.handovers.setdefault(ev.pid, []).append(ev)
            elif isinstance(ev, SetnsEvent) and ev.ret == 0:
                for k in ev.ns_before.changed(ev.ns):
                    self.entered.setdefault((k, getattr(ev.ns, k)), []).append(ev)
            if isinstance(ev, ForkEvent):
                if ev.thread:
                    continue
                proc = self._proc(ev.pid, ev.start_ns, ev.comm)
                proc.fork = ev
            else:
                self._proc(ev.pid, ev.start_ns, ev.comm).events.append(ev)

    def _proc(self, pid: int, start_ns: int, comm: str) -> _Proc:
        proc = self.procs.get((pid, start_ns))
        if proc is None:
            proc = self.procs[(pid, start_ns)] = _Proc((pid, start_ns), comm)
            self.by_pid.setdefault(pid, []).append(proc)
        proc.comm = comm  # its name as of its latest event (an exec renames it)
        return proc

    def _t(self, ev: ProcessEvent) -> str:
        return self._t_ns(ev.ktime_ns)

    def _t_ns(self, ktime_ns: int) -> str:
        return f"{(ktime_ns - self.header.start_ktime_ns) / 1e9:10.6f}"

    # -- the starts ------------------------------------------------------------

    def starts(self) -> list[_Proc]:
        """Processes born into a pid namespace their creator was not in, in order."""
        out = []
        for proc in self.procs.values():
            f = proc.fork
            if f is None or not f.ns.pid or f.ns.pid == self.host.pid:
                continue
            caller = self._caller(proc)
            caller_pid_ns = self._pid_ns_of(caller) if caller else None
            if caller_pid_ns is not None and caller_pid_ns == f.ns.pid:
                continue
            out.append(proc)
        return sorted(out, key=lambda p: p.fork.ktime_ns if p.fork else 0)

    def _caller(self, proc: _Proc) -> _Proc | None:
        """The process that called the clone that made proc."""
        f = proc.fork
        if f is None:
            return None
        if f.parent_pid == f.ppid:
            return self.procs.get((f.ppid, f.parent_start_ns)) or self._latest(f.parent_pid, f)
        return self._latest(f.parent_pid, f)

    def _latest(self, pid: int, before: ProcessEvent) -> _Proc | None:
        """The process with this pid born last before an event (a caller by pid alone)."""
        best = None
        for proc in self.by_pid.get(pid, ()):
            if proc.fork is None or proc.fork.ktime_ns <= before.ktime_ns:
                if best is None or proc.key[1] > best.key[1]:
                    best = proc
        return best

    def _pid_ns_of(self, proc: _Proc) -> int | None:
        first = proc.fork or (proc.events[0] if proc.events else None)
        if first is not None:
            return first.ns.pid
        known = self.known.get(proc.pid)
        return known["ns"]["pid"] if known else None

    def _chain(self, start: _Proc) -> tuple[list[_Proc], int | None]:
        """The creators of start born in the trace, oldest first, and the pid
        of the one that made the oldest, already running when the trace
        began (None: the trace does not say who made it)."""
        chain: list[_Proc] = []
        proc = start
        while len(chain) < CHAIN_MAX:
            f = proc.fork
            if f is None:  # seen, but not born, in the trace
                return chain[::-1], None
            caller = self._caller(proc)
            if caller is None or caller.fork is None:
                chain.reverse()
                # running at the start: then the header's snapshot lists it
                return chain, (f.parent_pid if f.parent_pid in self.known else None)
            chain.append(caller)
            proc = caller
        chain.reverse()
        return chain, None

    # -- telling ---------------------------------------------------------------

    def _who(self, pid: int) -> str:
        said = self._said.get(pid)
        if said is None:  # once a pid: a reused one may have had thousands of processes
            procs = self.by_pid.get(pid)
            known = self.known.get(pid)
            if procs:
                said = f"{max(procs, key=lambda p: p.key[1]).comm} ({pid})"
            else:
                said = f"{known['comm']} ({pid})" if known else f"{pid}"
            self._said[pid] = said
        return said

    def _reaper(self, pid: int) -> str:
        if pid == 0:
            return "a reaper the kernel did not name"
        if pid == 1 or pid == self.header.host_ns_pid and pid == 1:
            return "PID 1"
        return f"{self._who(pid)}, a child subreaper"

    def _ns_owner(self, kind: str, inode: int) -> str:
        """Whose namespace an inode is: a process known to live in it."""
        if inode == getattr(self.host, kind):
            return "the host's"
        if self._inits is None:
            self._inits = {}
            for proc in self.procs.values():
                first = proc.fork or (proc.events[0] if proc.events else None)
                if first is not None and first.vpid == 1:
                    for k in NS_ORDER:
                        self._inits.setdefault((k, getattr(first.ns, k)), proc)
        init = self._inits.get((kind, inode))
        if init is not None:
            return f"PID 1's ({init.comm}, {init.pid})"
        if self._at_start is None:
            # the processes alive at the start, one for each namespace they
            # were in: its PID 1, which names it best, else the first listed
            self._at_start = {}
            for d in self.header.processes:
                for k, i in d["ns"].items():
                    best = self._at_start.get((k, i))
                    if best is None or (d.get("vpid") == 1 and best.get("vpid") != 1):
                        self._at_start[(k, i)] = d
        listed = self._at_start.get((kind, inode))
        if listed is None:
            return ""
        who = f"{listed['comm']}, {listed['pid']}"
        return f"PID 1's ({who})" if listed.get("vpid") == 1 else f"those of {who}"

    def _program_at(self, proc: _Proc | None, t: int) -> str:
        """The program (exec'd path's last part) a process ran at a time."""
        if proc is None:
            return ""
        program = ""
        for ev in proc.events:
            if isinstance(ev, ExecEvent) and ev.ret == 0 and ev.ktime_ns <= t:
                program = ev.filename.rsplit("/", 1)[-1]
        return program

    def _steps(self, chain: list[_Proc], start: _Proc) -> list[tuple[int, str]]:
        """(time, line) of every step of the chain's processes and of start."""
        steps = []
        for proc in [*chain, start]:
            mine: list[tuple[int, Callable[[], str]]] = []  # told once they are counted
            if proc.fork is not None:
                mine.append((proc.fork.ktime_ns, functools.partial(self._fork_line, proc)))
            failed = 0
            creator = self._program_at(self._caller(proc), proc.fork.ktime_ns
                                       if proc.fork else 0)
            setns: list[SetnsEvent] = []
            for ev in proc.events:
                if not isinstance(ev, SetnsEvent) and setns:
                    mine.append((setns[0].ktime_ns, functools.partial(self._setns_line, setns)))
                    setns = []
                if isinstance(ev, ExecEvent):
                    if ev.ret:
                        failed += 1
                        continue
                    mine.append((ev.ktime_ns,
                                 functools.partial(self._exec_line, ev, failed, creator)))
                    failed, creator = 0, ""
                elif isinstance(ev, UnshareEvent) and ev.ret == 0 and ev.ns_before != ev.ns:
                    mine.append((ev.ktime_ns, functools.partial(self._unshare_line, ev)))
                elif isinstance(ev, SetnsEvent) and ev.ret == 0 and ev.ns_before != ev.ns:
                    setns.append(ev)  # a run of them is one step: entering a set
                elif isinstance(ev, ExitEvent):
                    mine.append((ev.ktime_ns,
                                 functools.partial(self._exit_line, ev, [*chain, start])))
            if setns:
                mine.append((setns[0].ktime_ns, functools.partial(self._setns_line, setns)))
            steps += [(t, tell()) for t, tell in mine[:STEPS_SHOWN]]
            if len(mine) > STEPS_SHOWN:
                steps.append((mine[STEPS_SHOWN][0], f"{self._t_ns(mine[STEPS_SHOWN][0])}  "
                              f"... and {len(mine) - STEPS_SHOWN} more steps of {proc.comm} "
                              f"({proc.pid})"))
        steps.sort(key=lambda s: s[0])
        return steps

    def _fork_line(self, proc: _Proc) -> str:
        f = proc.fork
        assert f is not None
        # a child starts with its creator's name: the fork's comm is the caller's then
        line = f"{self._t(f)}  {f.comm} ({f.parent_pid}) forked {f.pid}"
        if len(f.vpids) > 2:
            line += (f" (PID {f.vpid} in its pid namespace, {levels_text(f.vpids)} from the"
                     " host's down)")
        elif f.vpid != f.pid:
            line += f" (PID {f.vpid} in its pid namespace)"
        if f.parent_pid != f.ppid:
            line += f" with CLONE_PARENT: its parent is {self._who(f.ppid)}"
        new = [NS_FLAGS[b] for b in sorted(NS_FLAGS) if (f.clone_flags or 0) & b]
        if new:
            line += f", in new namespaces ({', '.join(new)})"
        if f.ns_uid != f.uid or f.ns_gid != f.gid:
            line += f", as {ids_text(f.uid, f.gid, f.ns_uid, f.ns_gid)}"
        return line

    def _exec_line(self, ev: ExecEvent, failed: int, creator: str) -> str:
        line = f"{self._t(ev)}  {ev.pid} exec'd {_command(ev.argv)}"
        if ev.filename.startswith("/proc/") and ev.filename.endswith("/exe"):
            line += f": re-executing itself ({ev.filename})"
        elif ev.filename.startswith(("/dev/fd/", "/proc/self/fd/", "memfd:")):
            line += f": re-executing itself from an in-memory copy ({ev.filename})"
        elif creator and ev.filename.rsplit("/", 1)[-1] == creator:
            line += ": the program its creator runs, started again"
        if failed:
            line += f" (after {failed} failed exec{'s' if failed > 1 else ''}: a PATH search)"
        if ev.ns_uid != ev.uid or ev.ns_gid != ev.gid:
            line += f", as {ids_text(ev.uid, ev.gid, ev.ns_uid, ev.ns_gid)}"
        return line

    def _unshare_line(self, ev: UnshareEvent) -> str:
        changed = ev.ns_before.changed(ev.ns)
        made = ", ".join(f"{k}:[{getattr(ev.ns, k)}]" for k in changed)
        flags = "|".join(unshare_flag_names(ev.flags)) or "0"
        line = f"{self._t(ev)}  {ev.comm} ({ev.pid}) called unshare({flags}): new {made}"
        if "pid_for_children" in changed:
            line += " (pid_for_children: its next child is PID 1 there)"
        return line

    def _setns_line(self, calls: list[SetnsEvent]) -> str:
        first = calls[0]
        parts, owners = [], []
        for ev in calls:
            for k in ev.ns_before.changed(ev.ns):
                parts.append(f"{k}:[{getattr(ev.ns, k)}]")
                owner = self._ns_owner("pid" if k == "pid_for_children" else k,
                                       getattr(ev.ns, k))
                if owner and owner not in owners:
                    owners.append(owner)
        n = f"{len(calls)} times" if len(calls) > 1 else "once"
        line = f"{self._t(first)}  {first.comm} ({first.pid}) called setns {n}: entered " \
               f"{', '.join(parts)}"
        if owners:
            line += f" ({' and '.join(owners)})"
        return line

    def _exit_line(self, ev: ExitEvent, members: list[_Proc]) -> str:
        line = f"{self._t(ev)}  {ev.comm} ({ev.pid}) exited ({status_words(ev)})"
        if ev.reaper is not None:
            # the story's own processes among the children handed on
            mine = [p.pid for p in members if p.fork is not None and p.fork.ppid == ev.pid
                    and not any(isinstance(e, ExitEvent) and e.ktime_ns < ev.ktime_ns
                                for e in p.events)]
            which = f" ({', '.join(map(str, mine))})" if mine else ""
            line += f"; the kernel handed its children{which} to {self._reaper(ev.reaper)}"
        return line

    def _visitors(self, start: _Proc, members: set[ProcKey], since: int) -> list[str]:
        """Processes outside the story that entered the start's namespaces
        while it lived (inode numbers are reused once a namespace is gone)."""
        f = start.fork
        assert f is not None
        mine = {(k, getattr(f.ns, k)) for k in NS_ORDER
                if getattr(f.ns, k) and getattr(f.ns, k) != getattr(self.host, k)}
        seen: dict[tuple[str, int], list[str]] = {}
        until = next((e.ktime_ns for e in start.events if isinstance(e, ExitEvent)), None)
        found: dict[int, SetnsEvent] = {}
        looked = entries = 0  # entries looked at, and in all (a call, a namespace)
        window = VISITORS_SHOWN * 8  # the story's own calls are among them
        for key in mine:
            calls_in = self.entered.get(key, [])
            lo = bisect.bisect_left(calls_in, since, key=_at)
            hi = len(calls_in) if until is None else bisect.bisect_right(calls_in, until, key=_at)
            entries += hi - lo
            for ev in calls_in[lo:min(hi, lo + window)]:
                found[id(ev)] = ev
                looked += 1
        calls = sorted(found.values(), key=_at)
        for ev in calls:
            if (ev.pid, ev.start_ns) not in members:
                kinds = [k for k in ev.ns_before.changed(ev.ns) if (k, getattr(ev.ns, k)) in mine]
                if (ev.comm, ev.pid) not in seen and len(seen) == VISITORS_SHOWN:
                    looked = -1  # more visitors than are named
                    break
                who = seen.setdefault((ev.comm, ev.pid), [])
                who += [k for k in kinds if k not in who]
        if not seen:
            return []
        more = (f"; and more: {entries} entries into its namespaces while it lived"
                if looked < entries else "")
        return ["  Also entered its namespaces with setns: "
                + "; ".join(f"{comm} ({pid}): {', '.join(kinds)}"
                            for (comm, pid), kinds in seen.items()) + more]

    def _parent_at_end(self, start: _Proc) -> str:
        """Its parent when the trace ended (or when it exited), by the kernel's
        reparenting: each exit that handed children on while start's parent."""
        f = start.fork
        assert f is not None
        parent, t = f.ppid, f.ktime_ns
        own_exit = next((e.ktime_ns for e in start.events if isinstance(e, ExitEvent)), None)
        moves = []
        for _ in range(CHAIN_MAX):
            handover = next((e for e in self.handovers.get(parent, ())
                             if e.ktime_ns >= t and (own_exit is None or e.ktime_ns < own_exit)),
                            None)
            if handover is None:
                break
            moves.append(f"{self._who(parent)} exited")
            parent, t = handover.reaper or 0, handover.ktime_ns
            if not parent:
                break
        text = self._who(parent)
        if moves:
            text += f" (adopted when {', then '.join(moves)})"
        return text

    def tell(self, start: _Proc) -> list[str]:
        f = start.fork
        assert f is not None
        chain, root = self._chain(start)
        joined = f.vpid != 1
        if f.container is not None:
            c = f.container
            title = f"Container {c.name or c.id[:12]} ({c.id[:12]}"
            title += "" if c.runtime == "docker" else f", {c.runtime}"
            title += f", image {c.image})" if c.image else ")"
        else:
            title = "Not in a container"
        if joined:
            title += f": {f.pid} joined an existing pid namespace as PID {f.vpid}"
        else:
            title += f": {f.pid} is PID 1 of a new pid namespace"
        lines = [title + "."]
        if root is not None:
            lines.append(f"  It was made by a line of processes that starts with "
                         f"{self._who(root)}, already running when the trace began:")
        else:
            first = chain[0] if chain else start
            assert first.fork is not None
            lines.append(f"  The trace began after its first creator was born: the steps before "
                         f"{self._who(first.fork.parent_pid)} forked {first.pid} are not in it.")
        steps = self._steps(chain, start)
        prev = steps[0][0] if steps else 0
        for t, text in steps:
            time_col, _, rest = text.strip().partition("  ")
            lines.append(f"  {time_col:>10} {'+%.1f ms' % ((t - prev) / 1e6):>10}  {rest}")
            prev = t
        execs = [e for e in start.events if isinstance(e, ExecEvent) and e.ret == 0]
        if execs:
            last = execs[-1]
            first_t = steps[0][0] if steps else f.ktime_ns
            lines.append(f"  {start.pid} runs {_command(last.argv)}: "
                         f"{(last.ktime_ns - first_t) / 1e6:.1f} ms after the first step, "
                         f"{(last.ktime_ns - f.ktime_ns) / 1e6:.1f} ms after its own fork.")
        else:
            lines.append(f"  {start.pid} has not exec'd a program of its own in the trace "
                         "(the trace ended before it did).")
        lines += self._visitors(start, {p.key for p in [*chain, start]},
                                steps[0][0] if steps else f.ktime_ns)
        exits = [e for e in start.events if isinstance(e, ExitEvent)]
        end = "when it exited" if exits else "at the end of the trace"
        lines.append(f"  Its parent {end}: {self._parent_at_end(start)}.")
        lines += self._namespaces(start, chain, joined)
        return lines

    def _namespaces(self, start: _Proc, chain: list[_Proc], joined: bool) -> list[str]:
        """lsns for the process, each namespace with how it came to be."""
        f = start.fork
        assert f is not None
        made: dict[tuple[str, int], str] = {}
        for proc in [*chain, start]:
            for ev in [proc.fork, *proc.events]:
                if isinstance(ev, UnshareEvent | SetnsEvent) and ev.ret == 0:
                    how = "unshare" if isinstance(ev, UnshareEvent) else "setns"
                    for k in ev.ns_before.changed(ev.ns):
                        kind = "pid" if k == "pid_for_children" else (
                            "time" if k == "time_for_children" else k)
                        word = "new" if how == "unshare" else "entered"
                        made.setdefault((kind, getattr(ev.ns, k)),
                                        f"{word}: {how} by {ev.comm} ({ev.pid}) at "
                                        f"{self._t(ev).strip()} s")
                elif isinstance(ev, ForkEvent) and ev.clone_flags:
                    for bit, kind in NS_FLAGS.items():
                        if ev.clone_flags & bit:
                            made.setdefault((kind, getattr(ev.ns, kind)),
                                            f"new: clone by {self._who(ev.parent_pid)} at "
                                            f"{self._t(ev).strip()} s")
        lines = [f"  Its namespaces (lsns -p {start.pid}):",
                 f"  {'NS':>12} {'TYPE':<7} FROM"]
        missing = []
        ns: Namespaces = f.ns
        for kind in NS_ORDER:
            inode = getattr(ns, kind)
            if not inode:
                continue
            if inode == getattr(self.host, kind):
                how = "the host's"
            else:
                how = made.get((kind, inode), "")
                if not how:
                    owner = self._ns_owner(kind, inode)
                    how = f"entered before the trace began ({owner})" if joined and owner else ""
                if not how:
                    how = "made before the trace began: no event in it created this one"
                    missing.append(kind)
            lines.append(f"  {inode:>12} {kind:<7} {how}")
        return lines


def explain(header: Header, events: Iterable[ProcessEvent]) -> list[str]:
    """The stories of a trace's events, as lines of text (unescaped)."""
    story = Story(header, events)
    starts = story.starts()
    if not starts:
        return ["No process in the trace was born into a pid namespace of its own or joined one: "
                "no container or sandbox start to explain."]
    out: list[str] = []
    for start in starts:
        if out:
            out.append("")
        out += story.tell(start)
    return out


__all__ = ["explain", "Story"]
