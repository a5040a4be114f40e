"""Renderers against exact expected output, on a trace recorded on a real kernel.

The traces in tests/data/ were recorded by scripts/record-test-data:
session.jsonl follows a shell (true, a failing exec, 'exit 7', unshare with
five new namespaces, a SIGKILLed sleep, an orphan, nsenter); docker-run.jsonl
is the course's `docker run --rm -d --name sleep-container alpine sleep 900`;
docker-exec.jsonl a `docker exec` into it.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tracer.model.codec import EventLines, event_of
from tracer.model.events import Header, Namespaces, Summary
from tracer.output.text import TextRenderer, ns_marks

DATA = Path(__file__).parent / "data"


def _load(name: str):
    lines = [json.loads(line) for line in (DATA / name).read_text().splitlines()]
    return Header.from_json(lines[0]), lines[1:-1], Summary.from_json(lines[-1])


TRACES = ["session", "docker-run", "docker-exec"]


@pytest.mark.parametrize("name", TRACES)
def test_text_lines_exact(name):
    header, events, summary = _load(f"{name}.jsonl")
    r = TextRenderer(header.host_ns, header.start_ktime_ns)
    got = [r.columns()] + [r.line(event_of(d)) for d in events]
    assert got == (DATA / f"{name}.txt").read_text().splitlines()


def test_summary_line():
    _, _, summary = _load("session.jsonl")
    text = TextRenderer.summary(summary)
    assert text.startswith(f"{summary.total} events (exec {summary.counts['exec']}, ")
    assert "; lost 0" in text


@pytest.mark.parametrize("name", TRACES)
def test_json_round_trip_is_faithful(name):
    header, events, summary = _load(f"{name}.jsonl")
    lines = (DATA / f"{name}.jsonl").read_text().splitlines()
    assert header.to_json() == json.loads(lines[0])
    for d in events:
        assert json.loads(EventLines().line(event_of(d))) == d
    assert summary.to_json() == json.loads(lines[-1])


HOST = Namespaces(1, 2, 3, 4, 4, 6, 7, 8, 9, 9)


@pytest.mark.parametrize("ns,marks", [
    (HOST, []),
    (Namespaces(11, 12, 13, 14, 14, 16, 7, 8, 9, 9), ["+mnt", "+uts", "+ipc", "+pid", "+net"]),
    # after unshare(CLONE_NEWPID) only the children's pid namespace is new
    (Namespaces(1, 2, 3, 4, 24, 6, 7, 8, 9, 9), ["+pid>"]),
    (Namespaces(1, 2, 3, 4, 4, 6, 17, 18, 19, 29), ["+cgroup", "+user", "+time", "+time>"]),
    (Namespaces(0, 0, 0, 0, 0, 0, 0, 0, 0, 0), []),  # unknown is not "different"
])
def test_ns_marks(ns, marks):
    assert ns_marks(ns, HOST) == marks
