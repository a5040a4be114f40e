"""Replay of recorded traces: exact output, filters, views and bad input. No root needed."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from tracer.cli import main
from tracer.model.contract import parse_iso_ts

DATA = Path(__file__).parent / "data"
TRACES = ["session", "docker-run", "docker-exec"]


def replay(*args, input=None):
    return CliRunner().invoke(main, ["replay", *args], input=input, catch_exceptions=False)


def events_of(path: Path):
    return [json.loads(line) for line in path.read_text().splitlines()[1:-1]]


@pytest.mark.parametrize("name", TRACES)
def test_text_is_what_the_live_view_printed(name):
    r = replay(str(DATA / f"{name}.jsonl"))
    assert r.exit_code == 0, r.stderr
    assert r.stdout == (DATA / f"{name}.txt").read_text()
    summary = json.loads((DATA / f"{name}.jsonl").read_text().splitlines()[-1])
    assert r.stderr.startswith(f"ctrtrace: {summary['events']} events (")
    assert f"lost {summary['lost']}" in r.stderr


@pytest.mark.parametrize("name", TRACES)
def test_json_replay_reproduces_the_recording(name):
    r = replay("--json", str(DATA / f"{name}.jsonl"))
    assert r.exit_code == 0
    assert r.stdout == (DATA / f"{name}.jsonl").read_text()


@pytest.mark.parametrize("name", TRACES)
@pytest.mark.parametrize("view", ["tree", "ns"])
def test_views_exact(name, view):
    r = replay(f"--{view}", str(DATA / f"{name}.jsonl"))
    assert r.exit_code == 0
    assert r.stdout == (DATA / f"{name}.{view}.txt").read_text()


def test_tree_shows_the_double_fork_and_the_workload():
    tree = (DATA / "docker-run.tree.txt").read_text().splitlines()
    shims = [line for line in tree if "containerd-shim-runc-v2" in line]
    assert len(shims) == 2
    assert "exit 0" in shims[0] and "(adopted by 1)" in shims[1]
    sleep = next(line for line in tree if line.split("\\_ ")[-1].startswith("sleep 900"))
    assert sleep.rstrip().endswith(f"(adopted by {shims[1].split()[0]})")
    cols = sleep.split()
    assert cols[1] == "1"  # VPID
    assert "+MNT +UTS +IPC +PID +NET" in sleep and "sleep-container" in sleep


def test_ns_table_tells_host_and_container_apart():
    rows = [line.split() for line in (DATA / "docker-run.ns.txt").read_text().splitlines()[1:]]
    container = [r for r in rows if r[5] == "sleep-container"]
    assert sorted(r[1] for r in container) == ["ipc", "mnt", "net", "pid", "uts"]
    assert all(r[2] == "1" and r[6:] == ["sleep", "900"] for r in container)
    host = [r for r in rows if r[5] == "host"]
    assert sorted(r[1] for r in host) == sorted(["cgroup", "ipc", "mnt", "net", "pid", "time", "user", "uts"])


# -- filters at replay time ---------------------------------------------------

def _json_events(*args, name="docker-run"):
    r = replay("--json", *args, str(DATA / f"{name}.jsonl"))
    assert r.exit_code == 0, r.stderr
    lines = [json.loads(line) for line in r.stdout.splitlines()]
    return lines[1:-1], lines[-1]


def test_container_filter_by_name_and_prefix():
    evs = events_of(DATA / "docker-run.jsonl")
    cid = next(e["container"]["id"] for e in evs if e["container"])
    for wanted in ("sleep-container", cid[:12]):
        got, summary = _json_events("--container", wanted)
        assert got and all(e["container"]["id"] == cid for e in got)
        assert summary["events"] == len(got) == sum(summary["counts"].values())
        assert summary["filtered_in_userspace"] == len(evs) - len(got)


def test_containers_only_and_ns_changes():
    got, _ = _json_events("--containers-only")
    assert got and all(e["container"] for e in got)
    got, _ = _json_events("--ns-changes")
    assert got and all(e["ns_change"] for e in got)
    assert {"unshare", "setns"} <= {e["type"] for e in got}


def test_pid_filter_follows_the_family():
    evs = events_of(DATA / "session.jsonl")
    root = evs[0]["ppid"]  # the recorded shell
    got, _ = _json_events("--pid", str(root), name="session")
    family = {root}
    for e in got:
        assert e["pid"] in family or e["ppid"] in family
        family.add(e["pid"])
    assert len(got) == len(evs)  # the whole trace is that shell's family
    inner = next(e for e in evs if e["type"] == "exec" and e.get("argv", [])[:1] == ["unshare"])
    got, _ = _json_events("--pid", str(inner["pid"]), name="session")
    descendants = {inner["pid"]}
    for e in evs:
        if e["type"] == "fork" and e["ppid"] in descendants:
            descendants.add(e["pid"])
    assert len(descendants) == 4  # unshare, sh (pid 1 inside), hostname, sleep
    assert {e["pid"] for e in got} == descendants


def test_comm_filter():
    got, _ = _json_events("--comm", "runc")
    assert got and all(e["comm"] == "runc" for e in got)


def test_since_until():
    evs = events_of(DATA / "docker-run.jsonl")
    header = json.loads((DATA / "docker-run.jsonl").read_text().splitlines()[0])
    start = header["start_ktime_ns"]
    got, _ = _json_events("--since", "0.1", "--until", "0.2")
    want = [e for e in evs if start + 100_000_000 <= e["ktime_ns"] <= start + 200_000_000]
    assert got == want and want
    # an ISO wall-clock time does the same
    iso = evs[len(evs) // 2]["ts"]
    got, _ = _json_events("--since", iso)
    assert got and all(parse_iso_ts(e["ts"]) >= parse_iso_ts(iso) for e in got)
    r = replay("--since", "yesterday", str(DATA / "docker-run.jsonl"))
    assert r.exit_code == 2 and "cannot read the time" in r.stderr


def test_filtered_tree_keeps_ancestors_for_context():
    r = replay("--tree", "--container", "sleep-container", str(DATA / "docker-run.jsonl"))
    lines = r.stdout.splitlines()
    assert any("containerd" in line and "sleep-container" not in line for line in lines)  # an ancestor
    assert not any("set-ipv6" in line for line in lines)  # dockerd's helper is not the container's


# -- input --------------------------------------------------------------------

def test_stdin_and_gzip(tmp_path):
    raw = (DATA / "docker-exec.jsonl").read_bytes()
    want = (DATA / "docker-exec.txt").read_text()
    r = replay("-", input=raw)
    assert r.exit_code == 0 and r.stdout == want
    gz = tmp_path / "t.jsonl.gz"
    gz.write_bytes(gzip.compress(raw))
    r = replay(str(gz))
    assert r.exit_code == 0 and r.stdout == want
    r = replay("-", input=gzip.compress(raw))
    assert r.exit_code == 0 and r.stdout == want


def _bad(r, line_ref: str, text: str) -> None:
    assert r.exit_code == 6, r.output
    errors = [line for line in r.stderr.splitlines() if line.startswith("ctrtrace: error: ")]
    assert len(errors) == 1 and line_ref in errors[0] and text in errors[0], r.stderr
    assert "Traceback" not in r.stderr


def test_not_a_trace(tmp_path):
    f = tmp_path / "notes.txt"
    f.write_text("hello\nworld\n")
    _bad(replay(str(f)), f"{f}:1:", "not a ctrtrace trace")
    f.write_text('{"type": "header", "format": "something-else", "version": 1}\n')
    _bad(replay(str(f)), f"{f}:1:", "not a ctrtrace trace")
    f.write_bytes(b"")
    _bad(replay(str(f)), f"{f}:1:", "empty file")
    _bad(replay(str(tmp_path / "missing.jsonl")), "missing.jsonl", "No such file")


def test_newer_format(tmp_path):
    lines = (DATA / "docker-exec.jsonl").read_text().splitlines()
    head = json.loads(lines[0])
    head["version"] = 99
    f = tmp_path / "new.jsonl"
    f.write_text("\n".join([json.dumps(head)] + lines[1:]) + "\n")
    _bad(replay(str(f)), str(f), "format version 99 is newer")


def test_corrupt_line_names_file_and_line_and_skip_bad_counts(tmp_path):
    lines = (DATA / "docker-exec.jsonl").read_text().splitlines()
    lines[5] = lines[5][: len(lines[5]) // 2]  # cut in the middle
    lines[7] = '{"type": "exec", "pid": 1}'  # missing fields
    f = tmp_path / "bad.jsonl"
    f.write_text("\n".join(lines) + "\n")
    _bad(replay(str(f)), f"{f}:6:", "corrupt line")
    r = replay("--skip-bad", str(f))
    assert r.exit_code == 0
    assert "2 bad lines skipped" in r.stderr
    assert len(r.stdout.splitlines()) == len(lines) - 2 - 2 + 1  # header/summary gone, 2 bad, + columns
    r = replay("--skip-bad", "--json", str(f))
    assert json.loads(r.stdout.splitlines()[-1])["bad_lines"] == 2


def test_truncated_recording(tmp_path):
    text = (DATA / "docker-exec.jsonl").read_text()
    cut = text[: len(text) - 700]  # summary gone, last line partial
    f = tmp_path / "cut.jsonl"
    f.write_text(cut)
    nlines = cut.count("\n") + 1
    _bad(replay(str(f)), f"{f}:{nlines}:", "truncated line")
    r = replay("--skip-bad", str(f))
    assert r.exit_code == 0
    assert "no summary line" in r.stderr and "1 bad lines skipped" in r.stderr
    # a compressed recording cut off the same way (kill -9 mid-write)
    gz = tmp_path / "cut.jsonl.gz"
    gz.write_bytes(gzip.compress(text.encode())[:-300])
    r = replay(str(gz))
    assert r.exit_code == 6 and "cut off" in r.stderr
    r = replay("--skip-bad", str(gz))
    assert r.exit_code == 0 and r.stdout.startswith((DATA / "docker-exec.txt").read_text()[:200])


@pytest.mark.parametrize("mode", [[], ["--json"], ["--tree"], ["--ns", "--skip-bad"]])
def test_replay_to_a_full_standard_output(mode):
    """replay > /dev/full: one error line, status 1, no traceback."""
    with open("/dev/full", "wb") as full:
        r = subprocess.run([sys.executable, "-m", "tracer", "replay", str(DATA / "session.jsonl"),
                            *mode], stdout=full, stderr=subprocess.PIPE, text=True, timeout=60)
    assert r.returncode == 1
    assert r.stderr == "ctrtrace: error: cannot write standard output: No space left on device\n"
