"""Shared helpers: run something under a real trace and collect its events.

These tests load the BPF programs into the running kernel: they need root,
BTF and tracefs, which CI has.  They fail rather than skip when those are
missing, since a skipped kernel test proves nothing.
"""

from __future__ import annotations

import os
import subprocess
import time
from typing import Callable, List, Optional

import pytest

from tracer.events import ExecEvent, ProcessEvent
from tracer.session import Session, TraceOptions
from tracer.system import read_ns


class Capture:
    """A live session whose events accumulate in .events."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self.events: List[ProcessEvent] = []

    def poll(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while True:
            left = end - time.monotonic()
            if left <= 0:
                break
            self.events.extend(self.session.poll(max(1, int(left * 1000))))

    def wait_for(self, pred: Callable[[ProcessEvent], bool], timeout: float = 5.0) -> ProcessEvent:
        end = time.monotonic() + timeout
        seen = 0
        while time.monotonic() < end:
            for ev in self.events[seen:]:
                if pred(ev):
                    return ev
            seen = len(self.events)
            self.events.extend(self.session.poll(50))
        raise AssertionError("no matching event within %.1f s" % timeout)

    def finish(self, settle: float = 0.2):
        self.poll(settle)
        self.events.extend(self.session.drain())
        return self.session.summary()

    def of(self, pid: int, type_: Optional[str] = None) -> List[ProcessEvent]:
        return [e for e in self.events if e.pid == pid and (type_ is None or e.type == type_)]


@pytest.fixture
def capture():
    """capture(**TraceOptions fields) -> a Capture whose session is open."""
    sessions: List[Session] = []

    def start(**opts) -> Capture:
        s = Session(TraceOptions(**opts))
        s.open()
        sessions.append(s)
        return Capture(s)

    yield start
    for s in sessions:
        s.close()


def execs_of(events: List[ProcessEvent], argv0: str) -> List[ExecEvent]:
    return [e for e in events if isinstance(e, ExecEvent) and e.ret == 0 and e.argv[:1] == [argv0]]


def proc_ns(pid: int):
    ns = read_ns(pid)
    assert ns.mnt, f"/proc/{pid}/ns unreadable"
    return ns


REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENGINE = os.path.join(REPO, "scripts", "docker-engine")


def _docker_answers() -> bool:
    return subprocess.run(["docker", "info"], capture_output=True).returncode == 0


@pytest.fixture(scope="session")
def docker_engine():
    """A running Docker engine with the offline alpine image; stopped at the end
    if this fixture started it."""
    started = False
    if not _docker_answers():
        subprocess.run([ENGINE, "start"], check=True)
        started = True
    subprocess.run([ENGINE, "image", "alpine:latest"], check=True)
    yield
    if started:
        subprocess.run([ENGINE, "stop"], check=False)


def docker(*args: str, check: bool = True) -> str:
    r = subprocess.run(["docker", *args], capture_output=True, text=True)
    if check and r.returncode != 0:
        raise AssertionError(f"docker {' '.join(args)} failed: {r.stderr.strip()}")
    return r.stdout.strip()
