"""The basics against ground truth: pids, parents, argv, every namespace, exits."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest
from conftest import execs_of, proc_ns

from tracer.model.events import ExecEvent, ExitEvent, ForkEvent
from tracer.model.flags import CLONE_NEW_MASK

CLONE_VM, CLONE_THREAD = 0x100, 0x10000

pytestmark = pytest.mark.bpf


@pytest.mark.smoke
def test_known_child_matches_proc(capture):
    cap = capture()
    child = subprocess.Popen(["sleep", "0.5"])
    ex = cap.wait_for(lambda e: e.type == "exec" and e.ret == 0 and e.pid == child.pid)
    truth = proc_ns(child.pid)  # read while the child is alive
    with open(f"/proc/{child.pid}/stat") as f:
        start_ticks = int(f.read().rsplit(")", 1)[1].split()[19])
    child.wait()
    cap.finish()

    assert isinstance(ex, ExecEvent)
    assert ex.ret == 0
    assert ex.ppid == os.getpid()
    assert ex.tid == child.pid and ex.vpid == child.pid
    assert ex.argv == ("sleep", "0.5") and not ex.argv_truncated
    assert os.path.basename(ex.filename) == "sleep"
    assert ex.comm == "sleep"
    assert (ex.uid, ex.gid) == (os.getuid(), os.getgid())
    assert ex.ns == truth  # all ten inodes, as /proc/PID/ns shows them
    # the start time is the kernel's, /proc rounds it to clock ticks
    assert abs(ex.start_ns // 10_000_000 - start_ticks * 100 // os.sysconf("SC_CLK_TCK")) <= 1

    fork = [e for e in cap.of(child.pid, "fork")]
    assert len(fork) == 1 and isinstance(fork[0], ForkEvent)
    assert fork[0].ppid == os.getpid() and fork[0].parent_pid == os.getpid()
    assert fork[0].clone_flags is not None and not fork[0].clone_flags & CLONE_NEW_MASK
    assert fork[0].ns == truth

    exits = cap.of(child.pid, "exit")
    assert len(exits) == 1 and exits[0].exit_code == 0 and exits[0].signal == 0
    assert exits[0].ns == truth


@pytest.mark.smoke
def test_exit_codes_and_signals(capture):
    cap = capture()
    a = subprocess.Popen(["sh", "-c", "exit 7"])
    b = subprocess.Popen(["sh", "-c", "kill -TERM $$; sleep 5"])
    c = subprocess.Popen(["sleep", "30"])
    cap.wait_for(lambda e: e.type == "exec" and e.ret == 0 and e.pid == c.pid)
    c.send_signal(signal.SIGKILL)
    for p in (a, b, c):
        p.wait()
    cap.finish()

    def exit_of(p) -> ExitEvent:
        ex = cap.of(p.pid, "exit")
        assert len(ex) == 1, ex
        return ex[0]

    assert (exit_of(a).exit_code, exit_of(a).signal) == (7, 0)
    assert exit_of(b).signal == signal.SIGTERM and b.returncode == -signal.SIGTERM
    assert exit_of(c).signal == signal.SIGKILL


@pytest.mark.smoke
def test_failed_exec_reports_errno_and_argv(capture):
    cap = capture()
    r = subprocess.run(["sh", "-c", "exec /nonexistent/prog one two; exit 9"])
    assert r.returncode != 0
    cap.finish()
    failed = [e for e in cap.events if e.type == "exec" and e.filename == "/nonexistent/prog"]
    assert len(failed) == 1
    assert failed[0].ret == -2  # ENOENT
    assert failed[0].argv == ("/nonexistent/prog", "one", "two")


PROGS = os.path.join(os.path.dirname(__file__), "progs")


def test_each_fork_syscall_gives_its_flags_and_failed_execs_their_argv(capture, tmp_path):
    """fork, vfork, clone and clone3 with flags the program chose; a failed
    execve and execveat.  Flags and arguments are read from the caller's
    registers at the fork and at the failed exec's return."""
    prog = str(tmp_path / "forks")
    subprocess.run(["clang", "-O2", "-o", prog, os.path.join(PROGS, "forks.c")], check=True)
    cap = capture()
    out = subprocess.run([prog], check=True, capture_output=True, text=True).stdout
    cap.finish()
    calls = [json.loads(line) for line in out.splitlines()]
    assert [c["call"] for c in calls] == ["fork", "vfork", "clone", "clone3"]
    runner = next(e for e in cap.events if e.type == "exec" and e.ret == 0 and e.filename == prog)
    for c in calls:
        forks = cap.of(c["pid"], "fork")
        assert len(forks) == 1, c
        assert forks[0].parent_pid == runner.pid, c
        assert forks[0].clone_flags == c["flags"], (c, forks[0].clone_flags)
        # a new namespace asked for is one the child is in, and it is marked
        assert forks[0].ns_change == bool(c["flags"] & CLONE_NEW_MASK), c
    assert cap.of(calls[2]["pid"], "fork")[0].ns.uts != runner.ns.uts
    assert cap.of(calls[3]["pid"], "fork")[0].ns.ipc != runner.ns.ipc
    failed = [e for e in cap.of(runner.pid, "exec") if e.ret != 0]
    assert [(e.ret, e.filename, e.argv) for e in failed] == \
        [(-2, "/nonexistent/forks-exec", ("/nonexistent/forks-exec", "one", "two"))] * 2


def test_threads_carry_their_clone_flags(capture):
    cap = capture(threads=True)
    code = "import threading; t = threading.Thread(target=int); t.start(); t.join()"
    p = subprocess.run([sys.executable, "-c", code], check=True)
    assert p.returncode == 0
    cap.finish()
    runner = next(e for e in cap.events if e.type == "exec" and e.ret == 0 and e.argv[1:] == ("-c", code))
    made = [e for e in cap.of(runner.pid, "fork") if e.thread]
    assert len(made) == 1
    flags = made[0].clone_flags
    assert flags is not None and flags & CLONE_THREAD and flags & CLONE_VM, flags
    assert made[0].parent_tid == runner.pid and made[0].tid != runner.pid
    assert not made[0].ns_change


def test_long_argv_is_truncated_and_flagged(capture):
    cap = capture()
    args = ["x" * 100] * 40  # 4 KB of arguments, more than the kernel side copies
    subprocess.run(["/bin/true", *args], check=True)
    cap.finish()
    ev = execs_of(cap.events, "/bin/true")
    assert len(ev) == 1
    assert ev[0].argv_truncated
    assert ev[0].argv[0] == "/bin/true"
    assert all(a == "x" * 100 for a in ev[0].argv[1:-1])
    assert 1 <= len(ev[0].argv) - 1 < 40


def test_burst_of_1000_processes_all_reported(capture):
    cap = capture()
    n = 1000
    script = f"i=0; while [ $i -lt {n} ]; do /bin/true; i=$((i+1)); done"
    p = subprocess.Popen(["sh", "-c", script])
    # consume while the burst runs, as the live command does
    while p.poll() is None:
        cap.poll(0.05)
    summary = cap.finish()
    execs = [e for e in cap.events if e.type == "exec" and e.ret == 0 and e.ppid == p.pid
             and e.filename == "/bin/true"]
    exits = [e for e in cap.events if e.type == "exit" and e.ppid == p.pid]
    forks = [e for e in cap.events if e.type == "fork" and e.ppid == p.pid]
    assert len(execs) == n
    assert len(forks) == n
    assert len(exits) == n
    assert summary.lost == 0


def _ppid(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("PPid:"))


SUBREAPER = """
import ctypes, subprocess, sys, time
ctypes.CDLL(None).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
out = subprocess.run(["sh", "-c", "sleep 1 & echo $!"], capture_output=True, text=True)
print(out.stdout.strip(), flush=True)
time.sleep(1.5)
"""


def test_orphans_reaper_is_the_kernels(capture):
    cap = capture(keep_exited=True)
    # no subreaper of ours: the orphan goes to init (or a subreaper above us)
    r = subprocess.run(["sh", "-c", "sleep 0.5 & echo $!"], capture_output=True, text=True)
    orphan = int(r.stdout)
    truth = _ppid(orphan)
    # a subreaper: the orphan goes to it
    sub = subprocess.Popen([sys.executable, "-c", SUBREAPER], stdout=subprocess.PIPE, text=True)
    orphan2 = int(sub.stdout.readline())
    truth2 = _ppid(orphan2)
    cap.finish()
    sub.wait()

    exits = {e.pid: e for e in cap.events if isinstance(e, ExitEvent)}
    forks = {e.pid: e for e in cap.events if isinstance(e, ForkEvent)}
    parent = exits[forks[orphan].ppid]
    assert parent.reaper == truth
    parent2 = exits[forks[orphan2].ppid]
    assert parent2.reaper == truth2 == sub.pid
    # the process table follows
    assert cap.session.table.get(orphan).ppid == truth
    assert cap.session.table.get(orphan2).ppid == sub.pid
    # a process without children names no reaper
    sleeper_exit = [e for e in cap.events if isinstance(e, ExitEvent) and e.pid == orphan]
    assert not sleeper_exit or sleeper_exit[0].reaper is None


THREAD_PARENT = """
import os, subprocess, threading, time
forked = threading.Event()
def work():  # the child hangs on this thread, not on the group leader
    print(subprocess.Popen(["sleep", "1"]).pid, flush=True)
    forked.set()
    time.sleep(5)
threading.Thread(target=work, daemon=True).start()
forked.wait()
os._exit(0)
"""


def test_reaper_of_a_child_forked_by_a_thread(capture):
    """A process whose child hangs on one of its threads, not on its leader,
    still names the reaper at its exit.  (Which of the exit program's paths
    runs -- the last thread's own children, another thread's found by the
    walk, or a handed-on record -- depends on the order the threads exit in.)"""
    cap = capture(keep_exited=True)
    proc = subprocess.Popen([sys.executable, "-c", THREAD_PARENT], stdout=subprocess.PIPE, text=True)
    orphan = int(proc.stdout.readline())
    proc.wait()
    truth = _ppid(orphan)
    cap.finish()

    assert truth != proc.pid
    fork = next(e for e in cap.events if isinstance(e, ForkEvent) and e.pid == orphan)
    assert fork.ppid == proc.pid and fork.parent_tid != proc.pid  # forked by the thread
    exit_ = next(e for e in cap.events if isinstance(e, ExitEvent) and e.pid == proc.pid)
    assert exit_.reaper == truth


def test_capture_starts_when_the_programs_load(tmp_path):
    """The loader attaches the programs as soon as they load: what runs before
    the session opens waits in the ring buffer and comes as its first events."""
    import shutil

    from tracer.commands.session import Session, TraceOptions
    from tracer.kernel.host import LoadConfig
    from tracer.kernel.loader import ProgramLoader

    probe = tmp_path / "before-open"
    shutil.copy("/bin/true", probe)
    loader = ProgramLoader(LoadConfig())
    loader.result()  # loaded and attached; the session takes it below
    subprocess.run([str(probe)], check=True)
    with Session(TraceOptions(), loader) as s:
        events = s.drain()
        header = s.header
    ex = [e for e in events if e.type == "exec" and e.filename == str(probe)]
    assert len(ex) == 1
    assert header.start_ktime_ns <= min(e.ktime_ns for e in events)


NS_LAST_PID = "/proc/sys/kernel/ns_last_pid"

# Writes ns_last_pid, then forks: the child gets the pid after it (unless
# another fork on the machine came in between: the caller checks and retries).
SECOND_WITH_PID = """
import subprocess, sys
with open(sys.argv[1], "w") as f:
    f.write(sys.argv[2])
p = subprocess.Popen(["sh", "-c", "sleep 0.02 & wait", "second"])
print(p.pid, flush=True)
p.wait()
"""


def _free_pid(after: int) -> int:
    with open("/proc/sys/kernel/pid_max") as f:
        pid_max = int(f.read())
    n = after
    while True:
        n = n + 1 if n + 1 < min(pid_max, 2 ** 22) else 301
        if not os.path.exists(f"/proc/{n}"):
            return n


def test_a_reused_pid_is_two_processes_in_the_tree(capture):
    """Two processes get the same pid in one trace (ns_last_pid makes the
    kernel's next pid N): the tree shows both, each with its own child and
    command, under its own parent."""
    from tracer.output import views

    cap = capture(keep_exited=True, process_table=True)
    with open(NS_LAST_PID) as f:
        n = _free_pid(int(f.read()) + 2000)
    for _attempt in range(20):
        with open(NS_LAST_PID, "w") as f:
            f.write(str(n - 1))
        first = subprocess.Popen(["sh", "-c", "sleep 0.01 & wait", "first"])
        first.wait()  # reaped: its pid is free again
        cap.events.extend(cap.session.drain())
        if first.pid != n:
            n = _free_pid(n + 100)
            continue
        runner = subprocess.Popen([sys.executable, "-c", SECOND_WITH_PID, NS_LAST_PID, str(n - 1)],
                                  stdout=subprocess.PIPE, text=True)
        second = int(runner.stdout.readline())
        runner.wait()
        cap.events.extend(cap.session.drain())
        if second == n:
            break
        n = _free_pid(n + 100)
    else:
        pytest.fail("could not make the kernel reuse a pid (other processes kept taking it)")
    cap.finish()

    # (a process of the machine's may have had pid n too, before or after: not ours)
    ours = (os.getpid(), runner.pid)
    forks = [e for e in cap.events if isinstance(e, ForkEvent) and e.pid == n and e.ppid in ours]
    assert len(forks) == 2 and forks[0].start_ns < forks[1].start_ns
    assert forks[0].ppid == os.getpid() and forks[1].ppid == runner.pid

    table = cap.session.table
    lines = views.process_tree(table, cap.session.header.host_ns)
    rows = [line for line in lines if line.split()[0] == str(n) and " & wait " in line]
    assert len(rows) == 2, "\n".join(lines)
    for row, word, sleep in zip(rows, ("first", "second"), ("sleep 0.01", "sleep 0.02"), strict=True):
        assert row.endswith(f"sleep {sleep[-4:]} & wait {word}")
        below = lines[lines.index(row) + 1]
        assert below.endswith("\\_ " + sleep)
        assert below.index("\\_ ") == row.index("\\_ ") + 4  # its child, one level down
    parent_row = lines[lines.index(rows[1]) - 1]
    assert parent_row.split()[0] == str(runner.pid)  # the second's parent, not the first's

    procs = [p for p in table.with_pid(n) if p.birth_ppid in ours]
    assert [p.key for p in procs] == [(n, f.start_ns) for f in forks]
    for p, word, parent in zip(procs, ("first", "second"), ours, strict=True):
        assert p.argv == ("sh", "-c", f"sleep 0.0{1 if word == 'first' else 2} & wait", word)
        assert p.exited and p.exit_status == 0 and p.birth_ppid == parent
        kids = [table.by_key(k) for k in p.children]
        assert len(kids) == 1 and kids[0].birth_key == p.key
        assert kids[0].argv == ("sleep", "0.01" if word == "first" else "0.02")
