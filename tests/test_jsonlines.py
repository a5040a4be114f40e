"""The fast JSON lines are byte for byte what to_json() gives, for every event."""

from __future__ import annotations

import json
import os

import orjson
import pytest

from tracer.model.contract import json_bytes
from tracer.model.events import EVENT_CLASSES
from tracer.output.jsonlines import EventLines

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")


def _recorded():
    for name in sorted(os.listdir(DATA)):
        if name.endswith(".jsonl"):
            with open(os.path.join(DATA, name)) as f:
                for line in f:
                    d = json.loads(line)
                    if d["type"] in EVENT_CLASSES:
                        yield EVENT_CLASSES[d["type"]].from_json(d)


def test_every_recorded_event():
    lines = EventLines()
    events = list(_recorded())
    assert {type(e).__name__ for e in events} >= {"ExecEvent", "ForkEvent", "ExitEvent",
                                                  "SetnsEvent", "UnshareEvent"}
    for ev in events:
        assert lines.line(ev) == orjson.dumps(ev.to_json()) + b"\n"


def test_the_optional_fields_and_odd_strings():
    lines = EventLines()
    for ev in list(_recorded())[:200]:
        ev.cgroup_v1 = ev.no_nsproxy = True
        ev.comm = 'a"b\\c\x01\u00e9'
        if hasattr(ev, "filename_truncated"):
            ev.filename_truncated, ev.old_pid, ev.argv = True, ev.tid + 1, ["x\ny", "\u2028"]
        if hasattr(ev, "thread"):
            ev.thread, ev.clone_flags = True, None
        if hasattr(ev, "status"):
            ev.status, ev.reaper = 0x8B, 0  # SIGSEGV, core dumped; reaper unknown
        # U+2028 is not printable: a \u escape, the same text to any reader
        line = lines.line(ev)
        assert line == json_bytes(ev.to_json()) + b"\n"
        assert b"\\u2028" in line or not hasattr(ev, "argv")
        assert orjson.loads(line) == ev.to_json()


def test_a_shared_renderer_renders_each_event_once():
    """A JSON view and a recording share one renderer: the second sink given
    the same event gets the first one's line, not a second rendering (the
    very same bytes object; an event changed in between would not show)."""
    lines = EventLines()
    events = list(_recorded())[:50]
    for ev in events:
        first = lines.line(ev)
        assert first == orjson.dumps(ev.to_json()) + b"\n"
        ev.comm = ev.comm + "-renamed"
        second = lines.line(ev)
        assert second is first
        assert EventLines().line(ev) != first  # a renderer of its own sees the change


@pytest.mark.bpf
def test_a_live_trace(capture):
    import subprocess
    import time

    cap = capture()
    subprocess.run(["sh", "-c", "unshare --uts true; (sleep 0.1 &) ; exit 3"])
    time.sleep(0.2)
    cap.finish()
    events = cap.events
    assert len(events) > 5
    lines = EventLines()
    for ev in events:
        assert lines.line(ev) == orjson.dumps(ev.to_json()) + b"\n"
