"""The process table, fed with recorded events; its start-up reads of /proc."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tracer.model.codec import event_of
from tracer.state.proctable import ProcessTable

DATA = Path(__file__).parent / "data"


def _table(name: str) -> ProcessTable:
    t = ProcessTable()
    for line in (DATA / name).read_text().splitlines()[1:-1]:
        t.apply(event_of(json.loads(line)))
    return t


def _events(name: str):
    return [json.loads(line) for line in (DATA / name).read_text().splitlines()[1:-1]]


@pytest.mark.parametrize("name,reparented", [
    ("session.jsonl", True),      # an orphaned sleep
    ("docker-run.jsonl", True),   # the shim's double fork, runc init's child
    ("docker-exec.jsonl", False),  # depends on whether runc or its child exits first
])
def test_reparenting_follows_the_kernels_reaper(name, reparented):
    events = _events(name)
    exits = {e["pid"]: e for e in events if e["type"] == "exit"}
    exit_index = {e["pid"]: i for i, e in enumerate(events) if e["type"] == "exit"}
    t = _table(name)
    moved = 0
    for proc in t:
        if proc.parents:
            moved += 1
            last = proc.parents[-1]  # (pid, start_ns): the process it was taken from
            assert exits[last[0]]["reaper"] == proc.ppid
            assert t.find(last[0], exits[last[0]]["start_ns"]).key == last
        elif proc.pid in exit_index and proc.ppid in exit_index:
            # it exited before its parent: never reparented
            assert exit_index[proc.pid] < exit_index[proc.ppid]
    if reparented:
        assert moved >= 1


def test_shim_double_fork_reparents_to_the_reaper():
    events = _events("docker-run.jsonl")
    first = next(e for e in events if e["type"] == "exit" and e["comm"] == "containerd-shim")
    t = _table("docker-run.jsonl")
    shim = [p for p in t if p.parents == ((first["pid"], first["start_ns"]),)]
    assert len(shim) == 1 and shim[0].ppid == first["reaper"]
    assert shim[0].argv[0].endswith("containerd-shim-runc-v2")


# -- start-up: the processes that already exist, from /proc ----------------------

def _read_process_seeing(pid: int, status: str, tmp_path) -> tuple[int, int]:
    """(uid, vpid) that read_process(pid) gives when /proc/PID/status reads
    `status`: bound over it in a mount namespace of its own."""
    import subprocess
    import sys

    fake = tmp_path / "status"
    fake.write_text(status)
    code = ("from tracer.state.proctable import read_process; "
            f"p = read_process({pid}); print(p.uid, p.vpid)")
    r = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c",
                        f'mount --bind "$1" /proc/{pid}/status && exec "$0" -c "$2"',
                        sys.executable, str(fake), code],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    uid, vpid = r.stdout.split()
    return int(uid), int(vpid)


@pytest.mark.root
def test_status_fields(tmp_path):
    """read_process takes the real uid (Uid's first value) and the innermost
    pid (NSpid's last), and falls back (uid 0, the pid) when a line is absent
    or empty."""
    import subprocess
    import time

    child = subprocess.Popen(["sleep", "30"])
    try:
        time.sleep(0.05)
        pid = child.pid
        assert _read_process_seeing(
            pid, "Name:\tbash\nUid:\t1000\t1001\t1002\t1003\nNSpid:\t4242\t7\n",
            tmp_path) == (1000, 7)
        assert _read_process_seeing(pid, "Name:\tx\nUid:\n", tmp_path) == (0, pid)
        assert _read_process_seeing(pid, "Name:\tx\nGid:\t5\n", tmp_path) == (0, pid)
    finally:
        child.kill()
        child.wait()


@pytest.mark.root
def test_a_process_in_a_pid_namespace_under_another_uid():
    """The real values: uid 1234, pid 1 inside (the kernel's own status)."""
    import os
    import subprocess
    import time

    from tracer.state.proctable import read_process

    outer = subprocess.Popen(["unshare", "--pid", "--fork", "setpriv",
                              "--reuid=1234", "--regid=1234", "--clear-groups", "sleep", "30"])
    inner = None
    try:
        for _ in range(200):
            for p in (int(p) for p in os.listdir("/proc") if p.isdigit()):
                try:
                    with open(f"/proc/{p}/stat") as f:
                        stat = f.read()
                except OSError:
                    continue
                if int(stat.rsplit(")", 1)[1].split()[1]) == outer.pid and "(sleep)" in stat:
                    inner = p
            if inner:
                break
            time.sleep(0.01)
        assert inner
        proc = read_process(inner)
        assert (proc.uid, proc.vpid, proc.ppid) == (1234, 1, outer.pid)
    finally:
        if inner:
            os.kill(inner, 9)  # the pid namespace's init: only SIGKILL reaches it from here
        outer.kill()
        outer.wait()


@pytest.mark.root
def test_proc_reads_match_stat_and_status():
    """read_ns reads the links' text; it must give the inodes stat() gives
    (what lsns shows); read_process the real uid and the innermost pid."""
    import os

    from tracer.kernel.layout import NS_NAMES
    from tracer.state.proctable import read_process
    from tracer.state.system import read_ns

    checked = 0
    for pid in [int(p) for p in os.listdir("/proc") if p.isdigit()]:
        try:
            truth = [os.stat(f"/proc/{pid}/ns/{n}").st_ino for n in NS_NAMES]
            with open(f"/proc/{pid}/status") as f:
                status = dict(line.split(":", 1) for line in f.read().splitlines() if ":" in line)
        except OSError:
            continue  # gone, or not ours to read
        ns = read_ns(pid)
        proc = read_process(pid)
        if proc is None:
            continue
        assert [getattr(ns, n) for n in NS_NAMES] == truth, pid
        assert proc.uid == int(status["Uid"].split()[0])
        assert proc.vpid == int(status["NSpid"].split()[-1])
        checked += 1
    assert checked >= 10
    assert read_ns(2 ** 22 + 1).mnt == 0  # no such process: 0 = unknown


def test_the_header_snapshot_stays_within_what_replay_reads():
    """Processes alive at start, as many and as long as they come: the header's
    list fits the line replay reads; long command lines are cut first, and
    what still does not fit is left out and counted."""
    from tracer.model.contract import json_bytes
    from tracer.model.events import Namespaces
    from tracer.state.proctable import HEADER_PROCESSES_MAX, Process, snapshot

    def procs(n, arg):
        return [Process(pid=i, ppid=1, comm="java", argv=("java", "-cp", arg), start_ns=i,
                        ns=Namespaces(*range(10))) for i in range(2, n + 2)]

    small, omitted = snapshot(procs(100, "x" * 2040))
    assert omitted == 0 and small[0]["argv"] == ["java", "-cp", "x" * 2040]
    assert "argv_truncated" not in small[0]
    # 3,000 command lines of C1 controls, 36 KiB each in JSON
    cut, omitted = snapshot(procs(3000, "\u009b" * 6000))
    assert omitted == 0 and len(json_bytes(cut)) <= HEADER_PROCESSES_MAX
    shortened = [e for e in cut if e.get("argv_truncated")]
    assert len(shortened) > 2500 and all(e["argv"] == ["java"] for e in shortened)
    # more processes than the line holds at all
    many = procs(20_000, "y")
    for p in many:
        p.comm, p.cgroup = "\u009b" * 15, "\u009b" * 79
    kept, omitted = snapshot(many)
    assert omitted > 0 and len(kept) + omitted == 20_000
    assert len(json_bytes(kept)) <= HEADER_PROCESSES_MAX
