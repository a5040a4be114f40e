"""Recording on the real kernel: what the live view printed is what replay prints;
files survive SIGTERM and kill -9; the views agree with ps and lsns."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time

import pytest
from click.testing import CliRunner
from conftest import docker

from tracer.cli import main

pytestmark = pytest.mark.bpf

SCRIPT = ("/bin/true a; unshare --uts --ipc --fork sh -c 'hostname x; sleep 0.1 &'; "
          "sh -c 'exit 4'; sleep 0.2")


def run(*args):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


@pytest.mark.parametrize("suffix", [".jsonl", ".jsonl.gz"])
def test_live_view_equals_replay(tmp_path, suffix):
    rec = tmp_path / f"t{suffix}"
    live = run("-w", str(rec), "--", "sh", "-c", SCRIPT)
    assert live.exit_code == 0
    assert stat.S_IMODE(os.stat(rec).st_mode) == 0o600  # it holds command lines
    again = run("replay", str(rec))
    assert again.exit_code == 0
    assert again.stdout == live.stdout
    assert "unshare(CLONE_NEWUTS|CLONE_NEWIPC) = 0" in again.stdout


def test_json_view_and_recording_carry_the_same_lines(tmp_path):
    """--json -w: the events on stdout are the recording's, byte for byte."""
    rec = tmp_path / "t.jsonl"
    live = run("--json", "-w", str(rec), "--", "sh", "-c", SCRIPT)
    assert live.exit_code == 0
    shown, kept = live.stdout.splitlines(), rec.read_text().splitlines()
    assert len(shown) > 10 and shown[:-1] == kept[:-1]
    assert json.loads(shown[-1])["events"] == json.loads(kept[-1])["events"]
    # the summary counts the lines written, type by type
    types: dict[str, int] = {}
    for line in shown[1:-1]:
        kind = json.loads(line)["type"]
        types[kind] = types.get(kind, 0) + 1
    counts = json.loads(shown[-1])["counts"]
    assert {k: v for k, v in counts.items() if v} == types and types["exec"] >= 2


def test_filters_apply_to_the_view_and_the_file_keeps_everything(tmp_path):
    rec = tmp_path / "t.jsonl"
    live = run("-w", str(rec), "--ns-changes", "--comm", "unshare", "--", "sh", "-c", SCRIPT)
    assert live.exit_code == 0
    body = live.stdout.splitlines()[1:]
    assert [line.split()[1] for line in body] == ["unshare", "exit"]
    same = run("replay", "--ns-changes", "--comm", "unshare", str(rec))
    assert same.stdout == live.stdout
    everything = run("replay", str(rec)).stdout.splitlines()
    assert len(everything) > len(live.stdout.splitlines())
    assert any("/bin/true a" in line for line in everything)


def test_snapshot_names_processes_that_existed_before(tmp_path):
    rec = tmp_path / "t.jsonl"
    assert run("-w", str(rec), "-d", "0.2").exit_code == 0
    header = json.loads(rec.read_text().splitlines()[0])
    me = next(p for p in header["processes"] if p["pid"] == os.getpid())
    assert me["ppid"] == os.getppid()
    assert set(me["ns"]) >= {"mnt", "pid", "net", "user"}
    with open(f"/proc/{os.getpid()}/cmdline", "rb") as f:
        assert me["argv"] == [a.decode() for a in f.read().split(b"\0") if a]


def _start_recorder(path: str) -> subprocess.Popen:
    p = subprocess.Popen([sys.executable, "-m", "tracer", "-w", path],
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    while "tracing on" not in p.stderr.readline():
        assert p.poll() is None, p.stderr.read()
    return p


@pytest.mark.parametrize("suffix", [".jsonl", ".jsonl.gz"])
def test_sigterm_ends_the_file_cleanly(tmp_path, suffix):
    rec = str(tmp_path / f"t{suffix}")
    p = _start_recorder(rec)
    subprocess.run(["/bin/true", "recorded"])
    time.sleep(0.3)
    p.send_signal(signal.SIGTERM)
    assert p.wait(timeout=20) == 0
    r = run("replay", "--json", rec)
    assert r.exit_code == 0
    lines = [json.loads(line) for line in r.stdout.splitlines()]
    assert lines[-1]["type"] == "summary" and lines[-1]["lost"] == 0
    assert any(e.get("argv") == ["/bin/true", "recorded"] for e in lines)


@pytest.mark.parametrize("suffix", [".jsonl", ".jsonl.gz"])
def test_kill_9_loses_at_most_the_last_line(tmp_path, suffix):
    rec = str(tmp_path / f"t{suffix}")
    p = _start_recorder(rec)
    for i in range(50):
        subprocess.run(["/bin/true", f"n{i}"])
    time.sleep(0.4)  # a poll cycle: the batch is flushed
    p.kill()
    p.wait()
    r = run("replay", "--json", "--skip-bad", rec)
    assert r.exit_code == 0, r.stderr
    assert "no summary line" in r.stderr
    argvs = [json.loads(line).get("argv") for line in r.stdout.splitlines()]
    assert all(["/bin/true", f"n{i}"] in argvs for i in range(50))
    assert "bad lines skipped" not in r.stderr or "1 bad lines skipped" in r.stderr


def _tree_parents(lines):
    """PID -> parent PID from the indentation of a ps --forest style tree."""
    start = lines[0].index("COMMAND")
    parents, stack = {}, []
    for line in lines[1:]:
        pid = int(line.split()[0])
        cmd = line[start:]
        marker = cmd.find("\\_ ")
        depth = 0 if marker < 0 else marker // 4 + 1
        stack[depth:] = [pid]
        parents[pid] = stack[depth - 1] if depth else None
    return parents


@pytest.mark.usefixtures("docker_engine")
def test_views_agree_with_ps_and_lsns():
    docker("rm", "-f", "views-container", check=False)
    docker("run", "-d", "--rm", "--name", "views-container", "alpine", "sleep", "60")
    try:
        pid = int(docker("inspect", "--format", "{{.State.Pid}}", "views-container"))
        r = run("--tree", "--ns", "--container", "views-container", "-d", "0.3")
        assert r.exit_code == 0
        out = r.stdout.splitlines()
        tree_at = next(i for i, line in enumerate(out) if line.split()[:2] == ["PID", "VPID"])
        blank = out.index("", tree_at)
        tree, ns = out[tree_at:blank], out[blank + 1:]
        parents = _tree_parents(tree)
        with open(f"/proc/{pid}/status") as f:
            ppid = next(int(line.split()[1]) for line in f if line.startswith("PPid:"))
        assert parents[pid] == ppid  # the shim, as ps shows
        lsns = subprocess.run(["lsns", "-p", str(pid), "-n", "-r", "-o", "NS,TYPE,NPROCS,PID"],
                              capture_output=True, text=True, check=True).stdout.splitlines()
        truth = {tuple(line.split()[:2]): line.split()[2:] for line in lsns}
        rows = {tuple(line.split()[:2]): line.split()[2:4] for line in ns[1:]}
        own = [k for k, (_, first) in truth.items() if int(first) == pid]
        assert len(own) >= 5  # mnt uts ipc pid net
        for key in own:
            assert rows[key] == truth[key]
    finally:
        docker("rm", "-f", "views-container", check=False)
