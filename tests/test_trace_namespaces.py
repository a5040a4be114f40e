"""unshare, clone and setns against /proc ground truth."""

from __future__ import annotations

import os
import subprocess
import time

import pytest
from conftest import proc_ns

from tracer.model.events import ExecEvent, SetnsEvent, UnshareEvent
from tracer.model.flags import NS_FLAGS

pytestmark = pytest.mark.bpf

NEW = {name: bit for bit, name in NS_FLAGS.items()}
UNSHARE_FLAGS = NEW["mnt"] | NEW["uts"] | NEW["ipc"] | NEW["pid"] | NEW["net"]


def _spawn_unshared(seconds: str = "30") -> subprocess.Popen:
    return subprocess.Popen(
        ["unshare", "--fork", "--pid", "--mount-proc", "--uts", "--ipc", "--net",
         "sleep", seconds])


@pytest.mark.smoke
def test_unshare_flags_before_after_and_vpid(capture):
    me = proc_ns(os.getpid())
    cap = capture()
    p = _spawn_unshared()
    try:
        sleep = cap.wait_for(lambda e: e.type == "exec" and e.ret == 0 and e.ppid == p.pid
                             and e.argv[:1] == ("sleep",))
        truth = proc_ns(sleep.pid)
        unshare_truth = proc_ns(p.pid)
    finally:
        p.kill()
        p.wait()
    cap.finish()

    un = [e for e in cap.of(p.pid, "unshare")]
    assert len(un) == 1 and isinstance(un[0], UnshareEvent)
    un = un[0]
    assert un.flags == UNSHARE_FLAGS and un.ret == 0
    assert un.ns_before == me
    # unshare(CLONE_NEWPID) moves only the children: the caller's own pid ns stays
    assert un.ns.pid == me.pid
    assert un.ns.pid_for_children != me.pid_for_children
    for name in ("mnt", "uts", "ipc", "net"):
        assert getattr(un.ns, name) != getattr(me, name)
    for name in ("user", "cgroup", "time", "time_for_children"):
        assert getattr(un.ns, name) == getattr(me, name)
    # the unshare process as /proc sees it afterwards (mnt differs: --mount-proc remounts)
    assert un.ns.uts == unshare_truth.uts and un.ns.net == unshare_truth.net
    assert un.ns.pid_for_children == unshare_truth.pid_for_children

    # the forked child is PID 1 of the new namespace, which is its own pid ns
    fork = cap.of(sleep.pid, "fork")
    assert len(fork) == 1 and fork[0].vpid == 1
    assert fork[0].ns.pid == un.ns.pid_for_children
    assert sleep.vpid == 1
    assert isinstance(sleep, ExecEvent) and sleep.ns == truth
    assert sleep.ns.pid == sleep.ns.pid_for_children == un.ns.pid_for_children


@pytest.mark.smoke
def test_nsenter_setns_then_exec_in_target_namespaces(capture):
    target = _spawn_unshared()
    try:
        # wait until the target's child (pid 1 inside) runs sleep
        deadline = time.monotonic() + 5
        inner = None
        while time.monotonic() < deadline and inner is None:
            out = subprocess.run(["pgrep", "-P", str(target.pid)], capture_output=True, text=True)
            inner = int(out.stdout.split()[0]) if out.stdout.split() else None
            time.sleep(0.02)
        assert inner, "unshare's child did not start"
        truth = proc_ns(inner)

        cap = capture()
        r = subprocess.run(["nsenter", "-t", str(inner), "-u", "-n", "-p", "--",
                            "sh", "-c", "exec sleep 0.2"])
        assert r.returncode == 0
        cap.finish()
    finally:
        target.kill()
        target.wait()

    nsenter = [e for e in cap.events if e.type == "exec" and e.ret == 0 and e.argv[:1] == ("nsenter",)]
    assert len(nsenter) == 1
    setns = [e for e in cap.events if isinstance(e, SetnsEvent) and e.pid == nsenter[0].pid]
    assert {e.nstype for e in setns} == {NEW["uts"], NEW["net"], NEW["pid"]}
    assert all(e.ret == 0 for e in setns)
    after = setns[-1].ns
    assert after.uts == truth.uts and after.net == truth.net
    assert after.pid_for_children == truth.pid  # setns(pid) moves only the children
    for e in setns:
        moved = e.ns_before.changed(e.ns)
        assert len(moved) == 1  # each call enters exactly one namespace

    # nsenter forks (for the pid namespace) and the command runs inside
    sleeps = [e for e in cap.events if e.type == "exec" and e.ret == 0 and e.argv == ("sleep", "0.2")]
    assert len(sleeps) == 1
    s = sleeps[0]
    assert (s.ns.uts, s.ns.net, s.ns.pid) == (truth.uts, truth.net, truth.pid)
    assert s.vpid != s.pid  # a pid inside the target's namespace
