"""A process is a pid and a start time: a pid reused within one trace names
two processes, each with its own children, namespaces and end.

The events are built by hand (the kernel gives pid 500 first to one process,
then, after it exits, to an unrelated one); the live test that makes the
kernel do it is in test_trace_process.py.
"""

from __future__ import annotations

import json

from click.testing import CliRunner

from tracer.cli import main
from tracer.commands.filters import EventFilter, FilterSpec
from tracer.model.codec import EventLines
from tracer.model.events import (
    ExecEvent,
    ExitEvent,
    ForkEvent,
    Header,
    Namespaces,
    ProcessEvent,
    Summary,
    UnshareEvent,
)
from tracer.output import views
from tracer.state.proctable import PARENTS_KEPT, ProcessTable

HOST = Namespaces(mnt=1, uts=2, ipc=3, pid=4, pid_for_children=4, net=6, cgroup=7, user=8,
                  time=9, time_for_children=9)
UTS_A = 20   # the first 500's own uts namespace (it exits: no process is left in it)
NET_B = 30   # the second 500's own network namespace (it and its child stay in it)

BOOT = 1_795_000_000_000_000_000
T0 = 5_000_000_000  # CLOCK_MONOTONIC at the trace's start

# (pid, start_ns): the processes of the trace
SHELL = (100, 1_230_000_000)          # from /proc at start-up: start to the clock tick
A, A_CHILD = (500, 5_100_000_123), (501, 5_200_000_456)
OTHER = (600, 5_400_000_789)
B, B_CHILD = (500, 5_500_000_321), (502, 5_600_000_654)
SHELL_EXACT = SHELL[1] + 4_321_987    # what the kernel says of the shell: within the tick


def _common(key, parent, parent_start, comm, ns, t):
    return dict(ktime_ns=T0 + t, wall_ns=BOOT + T0 + t, cpu=0, pid=key[0], tid=key[0],
                ppid=parent, vpid=key[0], vpids=(key[0],), comm=comm, uid=0, gid=0,
                ns_uid=0, ns_gid=0, start_ns=key[1],
                parent_start_ns=parent_start, ns=ns, no_nsproxy=False)


def fork(child, parent, comm, t, ns=HOST, flags=0x11):
    return ForkEvent(**_common(child, parent[0], parent[1], comm, ns, t), parent_pid=parent[0],
                     parent_tid=parent[0], clone_flags=flags, thread=False)


def exec_(key, parent, argv, t, ns=HOST):
    return ExecEvent(**_common(key, parent[0], parent[1], argv[0], ns, t), filename="/bin/" + argv[0],
                     argv=tuple(argv), argv_truncated=False, filename_truncated=False,
                     old_pid=key[0], ret=0)


def exit_(key, parent, comm, t, code=0, ns=HOST, reaper=None):
    return ExitEvent(**_common(key, parent[0], parent[1], comm, ns, t), status=code << 8,
                     reaper=reaper)


def unshare(key, parent, comm, t, before, after, flags):
    return UnshareEvent(**_common(key, parent[0], parent[1], comm, after, t), flags=flags, ret=0,
                        ns_before=before)


NS_A = Namespaces(**{**HOST.to_dict(), "uts": UTS_A})
NS_B = Namespaces(**{**HOST.to_dict(), "net": NET_B})
SHELL_EV = (SHELL[0], SHELL_EXACT)  # the shell as events name it (as a parent)


def events() -> list[ProcessEvent]:
    """The shell runs worker-a (pid 500), which has a child and exits; then
    runs other (600), whose child gets pid 500 again: worker-b, with a child."""
    return [
        fork(A, SHELL_EV, "sh", 1_000),
        exec_(A, SHELL_EV, ["worker-a", "--first"], 2_000),
        unshare(A, SHELL_EV, "worker-a", 3_000, HOST, NS_A, 0x04000000),
        fork(A_CHILD, A, "worker-a", 4_000, ns=NS_A),
        exec_(A_CHILD, A, ["a-child"], 5_000, ns=NS_A),
        exit_(A_CHILD, A, "a-child", 6_000, ns=NS_A),
        exit_(A, SHELL_EV, "worker-a", 7_000, code=3, ns=NS_A),
        fork(OTHER, SHELL_EV, "sh", 8_000),
        exec_(OTHER, SHELL_EV, ["other"], 9_000),
        fork(B, OTHER, "other", 10_000, ns=NS_B, flags=0x40000011),
        exec_(B, OTHER, ["worker-b", "--second"], 11_000, ns=NS_B),
        fork(B_CHILD, B, "worker-b", 12_000, ns=NS_B),
        exec_(B_CHILD, B, ["b-child"], 13_000, ns=NS_B),
    ]


SNAPSHOT = [
    {"pid": 1, "ppid": 0, "comm": "init", "argv": ["init"], "start_ns": 10_000_000,
     "ns": HOST.to_dict()},
    {"pid": SHELL[0], "ppid": 1, "comm": "sh", "argv": ["sh"], "start_ns": SHELL[1],
     "ns": HOST.to_dict()},
]


def _table(keep_exited: bool = True) -> ProcessTable:
    t = ProcessTable(keep_exited=keep_exited)
    t.seed_from_snapshot(SNAPSHOT)
    for ev in events():
        t.apply(ev)
    return t


def _header() -> Header:
    return Header(hostname="h", kernel="k", boot_time_ns=BOOT, start_wall_ns=BOOT + T0,
                  start_ktime_ns=T0, host_ns=HOST, tracer_pid=1, processes=SNAPSHOT)


def _row(lines: list[str], text: str) -> str:
    found = [line for line in lines if text in line]
    assert len(found) == 1, (text, lines)
    return found[0]


def _depth(line: str) -> int:
    """Where the command starts: the tree's indentation."""
    cmd = line.split("\\_ ")
    return len(cmd[0]) if len(cmd) > 1 else -1


def test_table_keeps_both_processes_of_a_reused_pid():
    t = _table()
    both = t.with_pid(500)
    assert [p.key for p in both] == [A, B]
    a, b = both
    assert a.exited and a.exit_status == 3 << 8 and a.argv == ("worker-a", "--first")
    assert not b.exited and b.argv == ("worker-b", "--second")
    assert a.children == {A_CHILD} and b.children == {B_CHILD}
    assert a.birth_key == t.get(SHELL[0]).key and b.birth_key == OTHER
    assert t.by_key(A_CHILD).birth_key == A and t.by_key(B_CHILD).birth_key == B
    assert a.ns == NS_A and b.ns == NS_B
    # the pid names the live one; the key, either
    assert t.get(500) is b and t.alive(500) is b
    assert t.find(*A) is a and t.find(*B) is b
    # the shell was seeded from /proc: the kernel's exact start finds it
    assert t.find(*SHELL_EV) is t.get(SHELL[0])
    assert t.get(SHELL[0]).children == {A, OTHER}
    # what seeds the kernel's --pid map: live descendants, by pid
    assert sorted(t.descendants(OTHER[0])) == [500, 502, 600]
    assert sorted(t.descendants(SHELL[0])) == [100, 500, 502, 600]


def test_live_table_forgets_the_first_and_keeps_the_second():
    t = _table(keep_exited=False)
    assert t.with_pid(500) == [t.get(500)] and t.get(500).key == B
    assert t.get(501) is None and len(t) == 5  # init, sh, other, worker-b, b-child
    assert t.get(SHELL[0]).children == {OTHER}


def test_tree_shows_two_processes_each_with_its_own_children():
    t = _table()
    lines = views.process_tree(t, HOST)
    a = _row(lines, "worker-a --first")
    b = _row(lines, "worker-b --second")
    ac = _row(lines, "a-child")
    bc = _row(lines, "b-child")
    other = _row(lines, " other")
    assert a.split()[0] == b.split()[0] == "500"
    assert "exit 3" in a and "exit" not in b
    # each child right below its own parent, one level deeper
    assert lines.index(ac) == lines.index(a) + 1 and _depth(ac) == _depth(a) + 4
    assert lines.index(bc) == lines.index(b) + 1 and _depth(bc) == _depth(b) + 4
    assert lines.index(b) == lines.index(other) + 1 and _depth(b) == _depth(other) + 4
    assert "+UTS" in a and "+uts" in ac and "net" not in a.lower().split("worker")[0]
    assert "+NET" in b and "+net" in bc and "uts" not in b.lower().split("worker")[0]


def test_ns_table_counts_each_process_once():
    t = _table()
    rows = {(r.split()[0]): r.split() for r in views.namespace_table(t, HOST)[1:]}
    # NS TYPE NPROCS PID USER CONTAINER COMMAND...
    assert rows[str(UTS_A)][1:4] == ["uts", "0", "500"]     # the first 500's, now empty
    assert rows[str(UTS_A)][6:] == ["worker-a", "--first"]
    assert rows[str(NET_B)][1:4] == ["net", "2", "500"]     # the second 500 and its child
    assert rows[str(NET_B)][6:] == ["worker-b", "--second"]
    assert rows[str(HOST.net)][1:3] == ["net", "3"]         # init, sh, other
    assert rows[str(HOST.uts)][1:3] == ["uts", "5"]         # and worker-b, b-child
    assert rows[str(HOST.mnt)][1:3] == ["mnt", "5"]         # every live process


def test_selection_by_key_shows_one_of_the_two():
    t = _table()
    lines = views.process_tree(t, HOST, {B})
    assert any("worker-b" in line for line in lines) and not any("worker-a" in line for line in lines)
    assert any(" other" in line for line in lines)  # an ancestor, for context
    lines = views.process_tree(t, HOST, {A_CHILD})
    assert any("worker-a" in line for line in lines) and not any("worker-b" in line for line in lines)
    # the kernel's exact start of a process seeded from /proc finds it too
    lines = views.process_tree(t, HOST, {SHELL_EV})
    assert len(lines) == 2 and lines[1].split()[0] == "100"
    # a bare pid (older callers) stands for every process that had it
    lines = views.process_tree(t, HOST, {500})
    assert any("worker-a" in line for line in lines) and any("worker-b" in line for line in lines)


def test_pid_filter_follows_the_process_not_the_pid():
    """--pid 600: the second 500 is in its family, the first is not."""
    t = _table()
    flt = EventFilter(FilterSpec.of(pid=OTHER[0]), _header(), views=True)
    kept = [ev for ev in events() if flt.wants(ev)]
    assert {(ev.pid, ev.start_ns) for ev in kept} == {OTHER, B, B_CHILD}
    a, b = t.with_pid(500)
    assert flt.wants_process(b) and not flt.wants_process(a)
    shown = views.selection(t, flt, {(ev.pid, ev.start_ns) for ev in kept})
    lines = views.process_tree(t, HOST, shown)
    assert any("worker-b" in line for line in lines) and not any("worker-a" in line for line in lines)
    assert not any("a-child" in line for line in lines)


def test_pid_filter_of_the_first_stops_at_its_exit():
    """--pid 500 (the first, alive at start-up): the second 500 is not followed."""
    snap = SNAPSHOT + [{"pid": A[0], "ppid": SHELL[0], "comm": "worker-a",
                        "argv": ["worker-a", "--first"], "start_ns": A[1] // 10_000_000 * 10_000_000,
                        "ns": HOST.to_dict()}]
    header = _header()
    header.processes = snap
    flt = EventFilter(FilterSpec.of(pid=A[0]), header, views=True)
    kept = [ev for ev in events()[3:] if flt.wants(ev)]  # from its child's fork on
    assert {(ev.pid, ev.start_ns) for ev in kept} == {A, A_CHILD}
    t = ProcessTable()
    t.seed_from_snapshot(snap)
    for ev in events()[3:]:
        t.apply(ev)
    a, b = t.with_pid(500)
    assert a.from_proc and a.exited and a.argv == ("worker-a", "--first")
    assert b.key == B and not b.exited
    assert flt.wants_process(a) and not flt.wants_process(b)


def test_replay_tree_of_a_recording_with_a_reused_pid(tmp_path):
    f = tmp_path / "pid-reuse.jsonl"
    summary = Summary(counts={"fork": 5, "exec": 5, "exit": 2, "setns": 0, "unshare": 1},
                      lost=0, threads=0, filtered_in_kernel=0, duration_s=1.0,
                      end_wall_ns=BOOT + T0 + 1_000_000_000)
    f.write_text("\n".join(json.dumps(x) for x in (
        [_header().to_json()] + [json.loads(EventLines().line(ev)) for ev in events()] + [summary.to_json()])) + "\n")
    r = CliRunner().invoke(main, ["replay", "--tree", str(f)], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    lines = r.stdout.splitlines()
    a, ac = _row(lines, "worker-a"), _row(lines, "a-child")
    b, bc = _row(lines, "worker-b"), _row(lines, "b-child")
    assert lines.index(ac) == lines.index(a) + 1 and lines.index(bc) == lines.index(b) + 1
    assert _depth(ac) == _depth(a) + 4 and _depth(bc) == _depth(b) + 4
    r = CliRunner().invoke(main, ["replay", "--ns", str(f)], catch_exceptions=False)
    rows = {line.split()[0]: line.split() for line in r.stdout.splitlines()[1:]}
    assert rows[str(UTS_A)][2] == "0" and rows[str(NET_B)][2] == "2"


def test_replay_filtered_tree_shows_the_followed_process_not_its_pid(tmp_path):
    """--pid 600: the second 500 is its descendant; the first 500 is not,
    and a filtered view must not bring it in by its pid."""
    f = tmp_path / "pid-reuse.jsonl"
    summary = Summary(counts={"fork": 5, "exec": 5, "exit": 2, "setns": 0, "unshare": 1},
                      lost=0, threads=0, filtered_in_kernel=0, duration_s=1.0,
                      end_wall_ns=BOOT + T0 + 1_000_000_000)
    f.write_text("\n".join(json.dumps(x) for x in (
        [_header().to_json()] + [json.loads(EventLines().line(ev)) for ev in events()] + [summary.to_json()])) + "\n")
    r = CliRunner().invoke(main, ["replay", "--tree", "--pid", "600", str(f)],
                           catch_exceptions=False)
    assert r.exit_code == 0, r.output
    assert "worker-b" in r.stdout and "b-child" in r.stdout
    assert "worker-a" not in r.stdout


def test_container_label_is_escaped():
    from tracer.model.events import Container

    t = _table()
    label = "evil\nname\x1b[2J"
    t.get(502).container = Container(id="c" * 64, name=label)
    for lines in (views.process_tree(t, HOST), views.namespace_table(t, HOST)):
        assert any("evil\\nname\\x1b[2J" in line for line in lines)
        assert not any(c in line for line in lines for c in "\n\x1b")


# -- processes read from /proc at start-up: their start is /proc's -------------

def _seeded(*procs) -> ProcessTable:
    t = ProcessTable()
    t.seed_from_snapshot(SNAPSHOT + [
        {"pid": pid, "ppid": ppid, "comm": argv[0], "argv": argv, "start_ns": start,
         "ns": HOST.to_dict()} for pid, ppid, start, argv in procs])
    return t


def test_a_lost_exit_ends_the_process_its_pid_named():
    """An event gives a live pid a start after its process's: that one's exit
    was lost and its pid reused.  It ends (no status); the new one is new."""
    daemon, kid = (700, 1_000_000_000), (701, 1_100_000_000)
    t = _seeded((700, SHELL[0], daemon[1], ["daemon"]), (701, 700, kid[1], ["helper"]))
    newcomer = (700, 5_700_000_000)
    t.apply(exec_(newcomer, SHELL_EV, ["newcomer"], 1_000))
    # the helper was handed to init when the daemon died
    t.apply(exec_((701, kid[1] + 7_000_000), (1, 10_000_000), ["helper", "again"], 2_000))
    old, new = t.with_pid(700)
    assert old.key == daemon and old.exited and old.exit_status is None
    assert old.argv == ("daemon",) and not old.children
    assert new.key == newcomer and not new.exited and new.argv == ("newcomer",)
    assert new.children == set() and new.birth_key == t.get(SHELL[0]).key
    helper = t.get(701)
    assert helper.birth_key == daemon and helper.ppid == 1 and helper.parents == (daemon,)
    lines = views.process_tree(t, HOST)
    d, h, n = _row(lines, " daemon"), _row(lines, "helper again"), _row(lines, "newcomer")
    assert lines.index(h) == lines.index(d) + 1 and "(adopted by 1)" in h
    assert lines.index(n) != lines.index(d) + 1 and "exit" not in d


def test_a_process_read_from_proc_is_the_one_the_kernel_names():
    """/proc's start is to the clock tick, and on CLOCK_BOOTTIME: the kernel's
    exact start (CLOCK_MONOTONIC) names the same process, even one forked
    between the programs' attaching and the /proc read, and even if the
    machine was suspended before the process started (its start on
    CLOCK_MONOTONIC is then earlier than /proc's, by that much)."""
    late, early = (800, 5_060_000_000), (900, 4_000_000_000_000)
    t = _seeded((800, SHELL[0], late[1], ["late"]), (900, 1, early[1], ["early"]))
    late_exact = (800, late[1] + 9_999_999)
    early_exact = (900, early[1] - 3_600_000_000_000 + 4_000_000)  # an hour asleep before it
    t.apply(fork(late_exact, SHELL_EV, "sh", 1_000))
    t.apply(exec_(late_exact, SHELL_EV, ["late", "x"], 2_000))
    t.apply(fork((901, 5_200_000_000), (900, early_exact[1]), "early", 3_000))
    t.apply(exit_(late_exact, SHELL_EV, "late", 4_000, code=1))
    t.apply(exec_(early_exact, (1, 10_000_000), ["early", "again"], 5_000))
    [p] = t.with_pid(800)
    assert p.key == late and p.from_proc and p.argv == ("late", "x")
    assert p.exited and p.exit_status == 1 << 8 and p.birth_key == t.get(SHELL[0]).key
    assert t.get(SHELL[0]).children == {late}
    [q] = t.with_pid(900)
    assert q.key == early and not q.exited and q.argv == ("early", "again") and not q.parents
    assert q.children == {(901, 5_200_000_000)}
    assert t.by_key((901, 5_200_000_000)).birth_key == early
    assert len(t) == len(SNAPSHOT) + 3


def test_pid_filter_follows_children_forked_before_since():
    """--pid 600 --since T: a child forked before T is still of the family;
    its events after T are shown (the time bound selects events, not who is
    followed)."""
    flt = EventFilter(FilterSpec.of(pid=OTHER[0], since="0.0000105"), _header())
    kept = [ev for ev in events() if flt.wants(ev)]
    assert [(ev.type, ev.pid) for ev in kept] == [
        ("exec", B[0]), ("fork", B_CHILD[0]), ("exec", B_CHILD[0])]


def test_pid_filter_without_views_keeps_only_the_live_family():
    """--pid without a view: a long trace of children born and gone leaves
    the filter holding the live members alone (with views it keeps every
    member, as the process table does)."""
    header = _header()
    without, with_views = (EventFilter(FilterSpec.of(pid=SHELL[0]), header, views=v)
                           for v in (False, True))
    for i in range(10_000):
        child = (10_000 + i, 6_000_000_000 + i)
        for ev in (fork(child, SHELL_EV, "sh", 20_000 + 2 * i),
                   exit_(child, SHELL_EV, "sh", 20_001 + 2 * i)):
            assert without.wants(ev) and with_views.wants(ev)
    assert without.remembered() == 1  # the shell
    assert with_views.remembered() == 1 + 10_001  # and every member, for the views


def test_a_process_handed_on_and_on_keeps_its_latest_parents():
    """A child handed from reaper to reaper a thousand times: its parent is
    the last, and it keeps the latest PARENTS_KEPT earlier ones, not a copy
    of its whole history at each move."""
    t = ProcessTable()
    t.seed_from_snapshot(SNAPSHOT)
    parent, child = (700, 7_000_000_000), (701, 7_000_000_001)
    reapers = [(1000 + j, 7_100_000_000 + j) for j in range(1000)]
    t.apply(fork(parent, SHELL_EV, "sh", 100))
    t.apply(fork(child, parent, "p", 200))
    for j, r in enumerate(reapers):
        t.apply(fork(r, SHELL_EV, "sh", 300 + j))
    t.apply(exit_(parent, SHELL_EV, "p", 2_000, reaper=reapers[0][0]))
    for j, r in enumerate(reapers[:-1]):
        t.apply(exit_(r, SHELL_EV, "sh", 3_000 + j, reaper=reapers[j + 1][0]))
    (c,) = [p for p in t.with_pid(child[0])]
    assert c.parent_key == reapers[-1] and c.ppid == reapers[-1][0]
    assert c.parents == (*reapers[-1 - PARENTS_KEPT:-1],)
