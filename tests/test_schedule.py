"""The reader's scheduler slice, checked against what the kernel reports in
/proc/PID/sched (se.slice), for ctrtrace's reader and for what it starts."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap

import pytest

from tracer.kernel.schedule import READER_SLICE_NS, giving_way, reader_slice_ns


def _slice(path: str = "/proc/thread-self/sched") -> int:
    with open(path) as f:
        return int(re.search(r"^se\.slice\s*:\s*(\d+)", f.read(), re.M).group(1))


@pytest.mark.root
def test_the_slice_is_the_threads_while_in_the_block():
    before = _slice()
    assert before != 30_000_000
    with giving_way(30_000_000) as now:
        assert now == 30_000_000 == _slice()
        # a process started meanwhile has the kernel's default again
        child = subprocess.run(["cat", "/proc/self/sched"], capture_output=True, text=True,
                               check=True).stdout
        assert re.search(r"^se\.slice\s*:\s*(\d+)", child, re.M).group(1) == str(before)
    assert _slice() == before


def test_nothing_asked_nothing_changed():
    before = _slice()
    with giving_way(0) as now:
        assert now is None and _slice() == before


@pytest.mark.root
def test_nice_value_and_policy_stay():
    script = textwrap.dedent("""
        import os
        from tracer.kernel.schedule import giving_way
        os.nice(7)
        with giving_way(20_000_000) as now:
            print(now, os.getpriority(os.PRIO_PROCESS, 0),
                  os.sched_getscheduler(0) & ~os.SCHED_RESET_ON_FORK)
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(1))
        with giving_way(20_000_000) as now:  # real time: left alone
            print(now, os.sched_getscheduler(0))
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         check=True).stdout.split("\n")
    assert out[0] == f"20000000 7 {os.SCHED_OTHER}"
    assert out[1] == f"None {os.SCHED_FIFO}"


@pytest.mark.parametrize("value, expected", [(None, READER_SLICE_NS), ("0", 0),
                                             ("2500", 2_500_000), ("x", READER_SLICE_NS)])
def test_slice_from_the_environment(monkeypatch, value, expected):
    if value is None:
        monkeypatch.delenv("CTRTRACE_READER_SLICE_US", raising=False)
    else:
        monkeypatch.setenv("CTRTRACE_READER_SLICE_US", value)
    assert reader_slice_ns() == expected


@pytest.mark.bpf
def test_the_live_reader_gives_way_and_its_command_does_not():
    """ctrtrace's reader (its main thread) runs with the long slice; the
    command it traces (-- CMD), its child, with the kernel's default."""
    default = _slice("/proc/self/sched")
    env = {k: v for k, v in os.environ.items() if k != "CTRTRACE_READER_SLICE_US"}
    r = subprocess.run([sys.executable, "-m", "tracer", "--json", "--no-docker", "--linger", "0",
                        "--", "sh", "-c", "grep ^se.slice /proc/$PPID/sched /proc/$$/sched"],
                       capture_output=True, text=True, timeout=60, env=env)
    assert r.returncode == 0, r.stderr
    slices = [int(m) for m in re.findall(r"sched:se\.slice\s*:\s*(\d+)", r.stderr)]
    assert slices == [READER_SLICE_NS, default]
