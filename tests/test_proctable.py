"""The process table, fed with recorded events (no kernel needed)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tracer.events import event_from_json
from tracer.proctable import ProcessTable

DATA = Path(__file__).parent / "data"


def _table(name: str) -> ProcessTable:
    t = ProcessTable()
    for line in (DATA / name).read_text().splitlines()[1:-1]:
        t.apply(event_from_json(json.loads(line)))
    return t


def _events(name: str):
    return [json.loads(l) for l in (DATA / name).read_text().splitlines()[1:-1]]


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
            last = proc.parents[-1]
            assert exits[last]["reaper"] == proc.ppid
        elif proc.pid in exit_index and proc.ppid in exit_index:
            # it exited before its parent: never reparented
            assert exit_index[proc.pid] < exit_index[proc.ppid]
    if reparented:
        assert moved >= 1


def test_shim_double_fork_reparents_to_the_reaper():
    events = _events("docker-run.jsonl")
    first = next(e for e in events if e["type"] == "exit" and e["comm"] == "containerd-shim")
    t = _table("docker-run.jsonl")
    shim = [p for p in t if p.parents == [first["pid"]]]
    assert len(shim) == 1 and shim[0].ppid == first["reaper"]
    assert shim[0].argv[0].endswith("containerd-shim-runc-v2")
