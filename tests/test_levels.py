"""Every pid level and the ids a user namespace maps, against /proc.

A process has a pid in each pid namespace from the host's down to its own
(/proc/PID/status NSpid:); ctrtrace reads them all in the kernel at the
event (vpids, the host's first).  A process in a user namespace sees its
uid and gid through that namespace's maps (/proc/PID/uid_map, gid_map);
ctrtrace reads the maps in the kernel too (ns_uid, ns_gid), up to the
kernel's 340 extents.
"""

from __future__ import annotations

import json
import subprocess

import pytest
from conftest import docker, nspid

from tracer.model.codec import EventLines, EventReader
from tracer.model.contract import ID_UNMAPPED, PID_LEVELS_MAX
from tracer.output.explain import explain
from tracer.output.text import TextRenderer

pytestmark = pytest.mark.bpf

# the pid levels the kernel's record keeps in full (bpf/ctrtrace.h)
KEPT = 1 + 7 + 1


def status_ids(pid: int) -> tuple[int, int]:
    """The real uid and gid, as the host sees them."""
    ids = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("Uid", "Gid"):
                ids[key] = int(value.split()[0])
    return ids["Uid"], ids["Gid"]


def _renderer(cap) -> TextRenderer:
    h = cap.session.header
    return TextRenderer(h.host_ns, h.start_ktime_ns)


def _nested(levels: int, *command: str) -> list[str]:
    """unshare --fork --pid, levels times: each child is PID 1 one level down
    (and is killed when its unshare is: killing the first ends them all)."""
    return ["unshare", "--fork", "--pid", "--kill-child"] * levels + list(command)


def _innermost_sleep(cap, levels: int):
    """sleep run levels pid namespaces down: its exec event and /proc's NSpid of it."""
    p = subprocess.Popen(_nested(levels, "sleep", "30"))
    try:
        sleep = cap.wait_for(lambda e: e.type == "exec" and e.ret == 0
                             and e.argv[:1] == ("sleep",) and e.vpid == 1, timeout=15)
        truth = nspid(sleep.pid)
    finally:
        _kill(p)
    cap.finish()
    return sleep, truth


def _kill(p: subprocess.Popen) -> None:
    p.kill()
    p.wait()


@pytest.mark.parametrize("levels", [1, 2, 3])
def test_every_pid_level_of_nested_pid_namespaces(capture, levels):
    cap = capture()
    sleep, truth = _innermost_sleep(cap, levels)
    assert len(truth) == levels + 1
    assert sleep.vpids == truth and sleep.vpid == truth[-1] == 1 and sleep.pid == truth[0]
    # each unshare in between: one level less deep; its fork already at the child's level
    forks = [e for e in cap.events if e.type == "fork" and e.vpid == 1]
    assert len(forks) >= levels
    for ev in cap.events:
        if ev.pid == sleep.pid:
            assert ev.vpids == truth, ev
        assert ev.vpids[0] == ev.pid and ev.vpids[-1] == ev.vpid
    text = _renderer(cap).line(sleep)
    shown = "/".join(map(str, truth))
    assert (f"pids {shown}" in text) == (levels >= 2), text
    # the story of the start says each level of the fork of its PID 1
    story = "\n".join(explain(cap.session.header, cap.events))
    fork = next(e for e in cap.events if e.type == "fork" and e.pid == sleep.pid)
    assert fork.vpids == truth
    assert (f"(PID 1 in its pid namespace, {shown} from the host's down)" in story) == (
        levels >= 2), story
    _recorded_as_read(cap.events)


def test_deeper_than_the_record_keeps(capture):
    """Nested past the levels the record keeps in full: every level is
    there, those it does not keep are 0, and the host's and the task's own
    pid are always right."""
    levels = KEPT + 1  # ten nested: eleven levels, of which two are not kept
    cap = capture()
    sleep, truth = _innermost_sleep(cap, levels)
    assert len(truth) == levels + 1 <= PID_LEVELS_MAX
    assert len(sleep.vpids) == len(truth)
    kept = KEPT - 1  # levels 0..7 and the task's own
    assert sleep.vpids[:kept] == truth[:kept]
    assert sleep.vpids[-1] == truth[-1] and sleep.vpids[0] == truth[0]
    assert all(v == 0 for v in sleep.vpids[kept:-1]) and sleep.vpids[kept:-1]
    text = _renderer(cap).line(sleep)
    assert "/?/1" in text, text
    _recorded_as_read(cap.events)


def test_a_pid_namespace_inside_a_docker_container(docker_engine, capture):
    cap = capture()
    cid = docker("run", "-d", "--rm", "--cap-add", "SYS_ADMIN", "alpine",
                 "unshare", "-f", "-p", "sleep", "30").strip()
    try:
        init_pid = int(docker("inspect", "-f", "{{.State.Pid}}", cid).strip())
        sleep = cap.wait_for(lambda e: e.type == "exec" and e.ret == 0
                             and e.argv[:1] == ("sleep",) and len(e.vpids) == 3, timeout=20)
        truth, init_truth = nspid(sleep.pid), nspid(init_pid)
    finally:
        docker("rm", "-f", cid, check=False)
    cap.finish()
    assert sleep.vpids == truth and len(truth) == 3 and truth[-1] == 1
    assert sleep.container is not None and sleep.container.id == cid
    # the container's init: PID 1 one level down, and the sleep's parent there
    inits = [e for e in cap.events if e.pid == init_pid]
    assert inits and all(e.vpids == init_truth == (init_pid, 1) for e in inits)
    assert sleep.ppid == init_pid


def _map_lines(extents) -> str:
    return "".join(f"{first} {lower} {count}\n" for first, lower, count in extents)


def _in_new_user_ns(*command: str) -> subprocess.Popen:
    """command in a new user namespace with no maps yet: it waits for a line
    on its standard input (the maps written meanwhile), then runs."""
    script = 'read go; exec "$@"'
    return subprocess.Popen(["unshare", "--user", "sh", "-c", script, "sh", *command],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)


# Root inside is root on the host in these maps (0 0 1): the program exec'd
# once the maps are written is then root in the namespace, with the
# capabilities that setpriv needs to take the ids under test.
@pytest.mark.parametrize("extents", [
    [(0, 0, 1), (1005, 700005, 1)],
    # more than the five a map holds itself: the kernel keeps them sorted
    # in an array of their own, searched by halves (given out of order)
    [(1000, 700000, 10), (10, 100000, 10), (20, 300000, 10), (40, 500000, 10),
     (0, 0, 1), (30, 400000, 10), (2000, 800000, 100)],
], ids=["two-extents", "seven-extents"])
def test_ids_as_the_user_namespace_maps_them(capture, extents):
    gid_extents = [(first + 1000, lower + 100000, count) if first else (0, 0, 1)
                   for first, lower, count in extents]
    cap = capture()
    p = _in_new_user_ns("setpriv", "--reuid=1005", "--regid=2005", "--clear-groups",
                        "sh", "-c", "id -u; id -g; exec sleep 30")
    try:
        waiting = cap.wait_for(lambda e: e.type == "exec" and e.pid == p.pid
                               and e.argv[:1] == ("sh",), timeout=10)
        # nothing maps yet: the kernel's (uid_t)-1, what the process sees as 65534
        assert (waiting.uid, waiting.gid) == (0, 0)
        assert waiting.ns_uid == waiting.ns_gid == ID_UNMAPPED
        assert waiting.ns.user != cap.session.header.host_ns.user
        with open(f"/proc/{p.pid}/uid_map", "w") as f:
            f.write(_map_lines(extents))
        with open(f"/proc/{p.pid}/gid_map", "w") as f:
            f.write(_map_lines(gid_extents))
        assert p.stdin is not None and p.stdout is not None
        p.stdin.write("go\n")
        p.stdin.flush()
        inside = (int(p.stdout.readline()), int(p.stdout.readline()))
        sleep = cap.wait_for(lambda e: e.type == "exec" and e.pid == p.pid and e.ret == 0
                             and e.argv[:1] == ("sleep",), timeout=10)
        host = status_ids(p.pid)
    finally:
        _kill(p)
    cap.finish()
    assert inside == (1005, 2005)          # what the process says of itself
    assert host == (700005, 800005)        # what the host's /proc says
    assert (sleep.uid, sleep.gid) == host
    assert (sleep.ns_uid, sleep.ns_gid) == inside
    text = _renderer(cap).line(sleep)
    assert "[+user]" in text and "id 1005:2005 (host 700005:800005)" in text, text
    waiting_text = _renderer(cap).line(waiting)
    assert "id unmapped:unmapped (host 0:0)" in waiting_text, waiting_text
    # the host's own processes: their ids are the host's
    for ev in cap.events:
        if ev.ns.user == cap.session.header.host_ns.user:
            assert (ev.ns_uid, ev.ns_gid) == (ev.uid, ev.gid), ev
    _recorded_as_read(cap.events)


def _recorded_as_read(events) -> None:
    """What the kernel said survives a recording: each event written and
    read back is the event."""
    lines, reader = EventLines(), EventReader()
    for ev in events:
        assert reader.read(json.loads(lines.line(ev))) == ev
