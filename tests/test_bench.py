"""The benchmark drivers run (with small numbers): they are not timed here,
only kept working. The numbers themselves come from bench/, run by hand."""

from __future__ import annotations

import json
import os
import subprocess
import sys

BENCH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench")
CTRTRACE = f"{sys.executable} -m tracer"


def _run(*args: str, timeout: float = 300) -> str:
    r = subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout


def _bpf_stats() -> str:
    with open("/proc/sys/kernel/bpf_stats_enabled") as f:
        return f.read()


def test_compare_driver(tmp_path):
    out = tmp_path / "rows.json"
    stats = _bpf_stats()
    _run(os.path.join(BENCH, "compare.py"), "--execs", "200", "--rounds", "1", "--workers", "1",
         "--tracers", "noop,ctrtrace", "--ctrtrace", CTRTRACE, "--json-out", str(out))
    rows = {r["tracer"]: r for r in json.loads(out.read_text())["rows"]}
    assert rows["ctrtrace"]["seen_min"] == 200 and rows["ctrtrace"]["lost"] == "0"
    assert rows["ctrtrace"]["rss_mb"] > 0 and rows["ctrtrace"]["ready_ms"] > 0
    # capturing began before the first report was written, never after
    assert 0 < rows["ctrtrace"]["capture_ms"] <= rows["ctrtrace"]["ready_ms"]
    assert 0 < rows["noop"]["ratio"] < 10 and 0 < rows["noop"]["work_cpu"] < 10
    # the BPF time counted is the tracer's programs': four runs an exec (fork,
    # exec, the execve's return, exit), more if something else ran meanwhile
    assert 3.9 < rows["ctrtrace"]["bpf_runs_per_exec"] < 6
    assert rows["ctrtrace"]["bpf_us_per_exec"] > 0
    assert rows["noop"]["bpf_runs_per_exec"] == 0
    assert _bpf_stats() == stats  # kernel.bpf_stats_enabled as it was


def test_startup_burst_driver():
    out = _run(os.path.join(BENCH, "startup_burst.py"), "--execs", "200", "--rounds", "1",
               "--ctrtrace", CTRTRACE)
    assert "every exec seen, none lost" in out


def test_replay_driver():
    out = _run(os.path.join(BENCH, "replay.py"), "--events", "20000", "--ctrtrace", CTRTRACE)
    assert out.count("events/s") == 6


def test_ready_driver():
    out = _run(os.path.join(BENCH, "ready.py"), "--launches", "1", "--ctrtrace", CTRTRACE)
    assert [l.split()[0] for l in out.splitlines()] == ["warm", "off", "cold"]
