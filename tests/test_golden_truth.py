"""The golden traces against the ground truth taken while they were recorded.

scripts/record-test-data records each trace of tests/data/ and, beside it,
NAME.truth.json (scripts/ground-truth): what `docker inspect` and /proc
showed of the traced processes while they ran, read without ctrtrace's code.
The replay tests compare ctrtrace with its own output; these compare the
recordings themselves with the kernel's and Docker's word: pids, parents,
the pid inside a pid namespace, all ten namespace inodes, command lines,
the container's id and name.  No root needed.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tracer.model.codec import event_of
from tracer.model.events import (
    ExecEvent,
    ExitEvent,
    ForkEvent,
    Header,
    Namespaces,
    SetnsEvent,
    UnshareEvent,
)
from tracer.state.proctable import ProcessTable, same_start

DATA = Path(__file__).parent / "data"
TRACES = ["session", "docker-run", "docker-exec"]
DOCKER = ["docker-run", "docker-exec"]
# /proc changes a little before or after the event that reports the change
# (a child is in /proc just before its fork event, a new command line just
# before the exec event, which comes once the program is loaded; a reaper
# takes the orphans just after the parent's exit event): a reading this close
# to an event of the process or of its parent is not compared
SLACK_NS = 500_000


def _trace(name: str):
    lines = (DATA / f"{name}.jsonl").read_text().splitlines()
    header = Header.from_json(json.loads(lines[0]))
    return header, [event_of(json.loads(line)) for line in lines[1:-1]]


def _truth(name: str) -> dict:
    return json.loads((DATA / f"{name}.truth.json").read_text())


def _role(truth: dict, role: str) -> dict:
    (proc,) = [p for p in truth["processes"] if p.get("role") == role]
    return proc


def _start_ns(truth: dict, proc: dict) -> int:
    """/proc's start time, in ns (to the clock tick, as the header has it)."""
    return proc["start_ticks"] * 1_000_000_000 // truth["clk_tck"]


def _is(truth: dict, proc: dict, pid: int, start_ns: int) -> bool:
    """Is (pid, start_ns), from the trace, the process /proc showed?"""
    return pid == proc["pid"] and same_start(_start_ns(truth, proc), True, start_ns)


def _table(header: Header, events) -> ProcessTable:
    t = ProcessTable()
    t.seed_from_snapshot(header.processes)
    for ev in events:
        t.apply(ev)
    return t


def _the(events, cls, pred):
    found = [e for e in events if isinstance(e, cls) and pred(e)]
    assert len(found) == 1, found
    return found[0]


def test_every_trace_has_its_truth():
    traces = {p.name.removesuffix(".jsonl") for p in DATA.glob("*.jsonl")}
    truths = {p.name.removesuffix(".truth.json") for p in DATA.glob("*.truth.json")}
    assert traces == truths == set(TRACES)


@pytest.mark.parametrize("name", TRACES)
def test_the_host_namespaces_are_the_hosts(name):
    header, events = _trace(name)
    host = Namespaces.from_dict(_truth(name)["host"]["ns"])
    assert header.host_ns == host
    # what was read in the host's namespaces is marked the host's: no mark on
    # the processes that never left them
    assert any(ev.ns == host for ev in events)


# -- docker run and docker exec: docker inspect, the init and the shim ------------

@pytest.mark.parametrize("name", DOCKER)
def test_the_container_is_the_one_docker_inspect_shows(name):
    header, events = _trace(name)
    truth = _truth(name)
    container = truth["container"]
    assert header.argv[-len(truth["command"]):] == truth["command"]  # what was traced
    attributed = [ev for ev in events if ev.container is not None]
    assert attributed
    for ev in attributed:
        assert ev.container.id == container["Id"], ev
        assert ev.container.name == container["Name"].lstrip("/"), ev
    assert _role(truth, "init")["pid"] == container["State.Pid"]


@pytest.mark.parametrize("name", DOCKER)
def test_the_init_and_the_shim_are_as_proc_showed_them(name):
    """At the end of the trace, the process table built from the recording
    holds the container's init and its shim as /proc showed them just after."""
    header, events = _trace(name)
    truth = _truth(name)
    assert _role(truth, "init")["seen"][0][0] > events[-1].ktime_ns  # read after the trace
    table = _table(header, events)
    for role in ("init", "shim"):
        proc = _role(truth, role)
        p = table.get(proc["pid"])
        assert p is not None and not p.exited, role
        assert same_start(_start_ns(truth, proc), True, p.start_ns), role
        assert (p.ppid, p.vpid, list(p.argv)) == (proc["ppid"], proc["nspid"][-1], proc["argv"]), role
        assert p.ns == Namespaces.from_dict(proc["ns"]), role
    assert _role(truth, "init")["ppid"] == _role(truth, "shim")["pid"]


def test_docker_run_starts_the_init_docker_inspect_names():
    header, events = _trace("docker-run")
    truth = _truth("docker-run")
    init, shim = _role(truth, "init"), _role(truth, "shim")
    init_ns = Namespaces.from_dict(init["ns"])

    # the workload's exec is the init's: pid, start, parent, pid inside, namespaces
    ex = _the(events, ExecEvent, lambda e: e.ret == 0 and e.pid == init["pid"])
    assert _is(truth, init, ex.pid, ex.start_ns)
    assert list(ex.argv) == init["argv"] and ex.vpid == init["nspid"][-1] == 1
    assert ex.ppid == init["ppid"] == shim["pid"]
    assert ex.ns == init_ns
    # born in those namespaces, pid 1 inside
    fork = _the(events, ForkEvent, lambda e: e.pid == init["pid"])
    assert fork.vpid == 1 and fork.ns == init_ns
    # made by one unshare, from the host's namespaces into the init's
    un = _the(events, UnshareEvent, lambda e: e.ret == 0 and e.ns.mnt == init_ns.mnt)
    assert un.ns_before.mnt == header.host_ns.mnt
    for name in ("mnt", "uts", "ipc", "net"):
        assert getattr(un.ns, name) == getattr(init_ns, name) != getattr(header.host_ns, name)
    assert un.ns.pid_for_children == init_ns.pid != header.host_ns.pid

    # the shim: its own exec, its birth from the shim that exited, whose
    # children went to the reaper /proc shows as the shim's parent
    sx = _the(events, ExecEvent, lambda e: e.ret == 0 and e.pid == shim["pid"])
    assert list(sx.argv) == shim["argv"] and _is(truth, shim, sx.pid, sx.start_ns)
    born = _the(events, ForkEvent, lambda e: e.pid == shim["pid"])
    first = _the(events, ExitEvent, lambda e: e.pid == born.parent_pid)
    assert first.reaper == shim["ppid"]


def test_docker_exec_enters_the_inits_namespaces():
    header, events = _trace("docker-exec")
    truth = _truth("docker-exec")
    init, shim = _role(truth, "init"), _role(truth, "shim")
    init_ns = Namespaces.from_dict(init["ns"])
    entered = set()
    for ev in events:
        if isinstance(ev, SetnsEvent) and ev.container is not None:
            assert ev.ret == 0
            for name in ev.ns.changed(ev.ns_before):
                theirs = "pid" if name == "pid_for_children" else name
                assert getattr(ev.ns, name) == getattr(init_ns, theirs), (ev, name)
                entered.add(name)
    assert entered == {"mnt", "uts", "ipc", "pid_for_children", "net"}

    # the command, in the init's namespaces, a process of the container's pid namespace
    command = truth["command"][truth["command"].index(truth["container"]["Name"][1:]) + 1:]
    ex = _the(events, ExecEvent, lambda e: e.ret == 0 and list(e.argv) == command)
    assert ex.ns == init_ns and ex.vpid not in (ex.pid, 1)
    # runc exec forked it (CLONE_PARENT: runc is its parent) and the shim ran
    # runc; when runc exits first, the shim (a subreaper) takes it
    fork = _the(events, ForkEvent, lambda e: e.pid == ex.pid)
    runc = _the(events, ExecEvent, lambda e: e.ret == 0 and e.pid == fork.ppid)
    assert runc.argv[0] == "runc" and "exec" in runc.argv
    assert _the(events, ForkEvent, lambda e: e.pid == runc.pid).ppid == shim["pid"]
    assert _the(events, ExitEvent, lambda e: e.pid == runc.pid).reaper in (shim["pid"], None)
    assert _the(events, ExitEvent, lambda e: e.pid == ex.pid).ppid in (runc.pid, shim["pid"])


# -- the session: every process, at every moment it was read ----------------------

def _readings(truth: dict):
    """(t0, t1, state) of every reading kept: the first and the last in each state."""
    out = []
    for proc in truth["processes"]:
        for t0, t1 in proc["seen"]:
            out.append((t0, t1, proc))
    return sorted(out, key=lambda r: r[0])


def test_the_session_is_what_proc_showed_at_each_moment():
    """The process table built from the recording, event by event, holds each
    process as /proc showed it when it was read: parent, pid inside its pid
    namespace, namespaces, command line."""
    header, events = _trace("session")
    truth = _truth("session")
    table = ProcessTable()
    table.seed_from_snapshot(header.processes)
    applied = 0
    compared = []
    for t0, t1, proc in _readings(truth):
        if t1 < header.start_ktime_ns or t0 > events[-1].ktime_ns:
            continue  # before the trace began, or after its last event
        while applied < len(events) and events[applied].ktime_ns < t0:
            table.apply(events[applied])
            applied += 1
        p = table.get(proc["pid"])
        assert p is not None, proc
        assert same_start(_start_ns(truth, proc), True, p.start_ns), proc
        near = {ev.pid for ev in events if t0 - SLACK_NS <= ev.ktime_ns <= t1 + SLACK_NS}
        if near & {proc["pid"], proc["ppid"], p.ppid, p.birth_ppid}:
            continue
        got = (p.ppid, p.vpid, p.ns, list(p.argv))
        want = (proc["ppid"], proc["nspid"][-1], Namespaces.from_dict(proc["ns"]), proc["argv"])
        assert got == want, (proc, p)
        compared.append(proc)

    assert len(compared) >= 10
    host = header.host_ns
    # among them: the shell unshare made, pid 1 of a pid namespace of its own ...
    inner = [p for p in compared if p["nspid"][-1] == 1 and len(p["nspid"]) == 2]
    assert inner and all(p["ns"]["pid"] != host.pid for p in inner)
    # ... the unshare after its call, its own pid namespace still the host's ...
    assert any(p["argv"][0] == "unshare" and p["ns"]["mnt"] != host.mnt
               and p["ns"]["pid"] == host.pid != p["ns"]["pid_for_children"] for p in compared)
    # ... and the orphan, once adopted
    leader = _role(truth, "leader")
    assert any(p["argv"] == ["sleep", "0.3"] and p["ppid"] not in (leader["pid"], 0)
               for p in compared)


def test_the_session_events_name_the_processes_proc_showed():
    """Each process the ground truth saw during the trace has its events:
    the same pid and start, born to the parent /proc first showed."""
    header, events = _trace("session")
    truth = _truth("session")
    forks = [e for e in events if isinstance(e, ForkEvent)]
    seen = {}
    for proc in truth["processes"]:
        seen.setdefault((proc["pid"], proc["start_ticks"]), proc)  # its first state
    matched = 0
    for proc in seen.values():
        born = [f for f in forks if _is(truth, proc, f.pid, f.start_ns)]
        if any(_is(truth, proc, p["pid"], p["start_ns"]) for p in header.processes):
            assert not born  # alive when the trace began (the header's snapshot)
            continue
        assert len(born) == 1, proc
        if proc["ppid"] != 1:  # (an orphan first read once adopted)
            assert born[0].ppid == proc["ppid"], proc
        assert born[0].vpid == proc["nspid"][-1] or proc["argv"][0] != born[0].comm
        matched += 1
    assert matched >= 8
