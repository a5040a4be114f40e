"""Shared helpers: run something under a real trace and collect its events.

What a test needs is said by its marks (registered in pyproject.toml):

- ``root``: needs root (euid 0): BPF, mounts, files or processes of other
  users, setpriv, the scheduler's privileged settings;
- ``bpf``: loads the BPF programs into the running kernel (a live trace);
- ``docker``: needs a Docker engine (docker_engine starts one if none runs).

bpf and docker imply root, and so does using the ``capture`` fixture (bpf)
or ``docker_engine`` (docker): the marks are added here at collection.
``pytest -m "not root"`` runs what needs no privilege.  A root test that is
run without root fails, with a message saying so, rather than skip: CI runs
everything as root, and a skipped kernel test proves nothing.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable

import pytest

from tracer.commands.session import Session, TraceOptions
from tracer.kernel import bcc, kheaders
from tracer.model.events import ExecEvent, ProcessEvent
from tracer.state.system import read_ns

# marks that need root, and fixtures of this file that are a requirement in themselves
ROOT_MARKS = ("root", "bpf", "docker")
FIXTURE_MARKS = {"capture": "bpf", "docker_engine": "docker"}


@pytest.hookimpl(tryfirst=True)  # before -m deselects by marks
def pytest_collection_modifyitems(items) -> None:
    for item in items:
        for fixture, mark in FIXTURE_MARKS.items():
            if fixture in item.fixturenames and item.get_closest_marker(mark) is None:
                item.add_marker(mark)
        if item.get_closest_marker("root") is None and any(
                item.get_closest_marker(m) for m in ROOT_MARKS):
            item.add_marker("root")


@pytest.hookimpl(tryfirst=True)  # before any fixture is set up
def pytest_runtest_setup(item) -> None:
    if item.get_closest_marker("root") is not None and os.geteuid() != 0:
        marks = ", ".join(m for m in ROOT_MARKS if item.get_closest_marker(m))
        pytest.fail(f"this test needs root (marked {marks}) and runs as uid {os.geteuid()}: "
                    "run it as root (sudo ./run test), or leave such tests out with "
                    "-m 'not root'", pytrace=False)


class Capture:
    """A live session whose events accumulate in .events."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self.events: list[ProcessEvent] = []

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
        raise AssertionError(f"no matching event within {timeout:.1f} s")

    def finish(self, settle: float = 0.2):
        self.poll(settle)
        self.events.extend(self.session.drain())
        return self.session.summary()

    def of(self, pid: int, type_: str | None = None) -> list[ProcessEvent]:
        return [e for e in self.events if e.pid == pid and (type_ is None or e.type == type_)]


def _backends() -> tuple[str, ...]:
    """Each build of the programs: CO-RE, bcc at BTF's offsets, and -- where
    the running kernel's own headers are installed (the Vagrant VM) -- bcc at
    the headers' offsets, bcc's native way."""
    headers = kheaders.find()
    return ("core", "bcc") + (("bcc-headers",) if headers and headers.running else ())


BACKENDS = _backends()


@pytest.fixture(params=BACKENDS)
def capture(request, monkeypatch):
    """capture(**TraceOptions fields) -> a Capture whose session is open, on
    each backend in turn: every test that traces checks each against the
    same ground truth."""
    sessions: list[Session] = []
    backend = request.param
    if backend == "bcc-headers":
        monkeypatch.setenv(bcc.OFFSETS_ENV, "headers")
        backend = "bcc"

    def start(**opts) -> Capture:
        opts.setdefault("backend", backend)
        s = Session(TraceOptions.of(**opts))
        s.open()
        sessions.append(s)
        return Capture(s)

    yield start
    for s in sessions:
        s.close()


def execs_of(events: list[ProcessEvent], argv0: str) -> list[ExecEvent]:
    return [e for e in events if isinstance(e, ExecEvent) and e.ret == 0 and e.argv[:1] == (argv0,)]


def proc_ns(pid: int):
    ns = read_ns(pid)
    assert ns.mnt, f"/proc/{pid}/ns unreadable"
    return ns


def nspid(pid: int) -> tuple[int, ...]:
    """/proc/PID/status NSpid: the pid at every level, the host's first."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("NSpid:"):
                return tuple(int(n) for n in line.split()[1:])
    raise AssertionError(f"/proc/{pid}/status has no NSpid line")


def lsns_of(pid: int) -> dict[str, int]:
    """lsns -p PID: each namespace kind's inode, as util-linux reads it."""
    out = subprocess.run(["lsns", "-p", str(pid), "-n", "-r", "-o", "NS,TYPE"],
                         capture_output=True, text=True, check=True).stdout
    return {kind: int(ns) for ns, kind in (line.split() for line in out.splitlines())}


def lsns_agrees(ns, listed: dict[str, int]) -> bool:
    """Each namespace lsns listed (lsns_of) is the event's (ns: its Namespaces)."""
    return bool(listed) and all(getattr(ns, kind) == inode for kind, inode in listed.items())


REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOBODY = 65534


def _as_nobody(caps: str) -> list:
    return ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups",
            f"--inh-caps={caps}", f"--ambient-caps={caps}"]


@pytest.fixture(scope="session")
def ctrtrace_as_nobody():
    """run(caps, *args) -> ctrtrace run as uid 65534 with those capabilities.

    From the tree when that user can read it; else from a copy of the package
    and of click (not root, the command parses its options with click) in a
    directory it can read, with the base interpreter."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONDONTWRITEBYTECODE": "1",
           "CTRTRACE_CACHE_DIR": ""}
    probe = subprocess.run(_as_nobody("-all") + [sys.executable, "-c", "import tracer.cli"],
                           cwd=REPO, env=dict(env, PYTHONPATH=REPO), capture_output=True)
    copy = None
    if probe.returncode == 0:
        python, path = sys.executable, REPO
    else:
        copy = tempfile.mkdtemp(prefix="ctrtrace-nobody-")
        import click

        for pkg in (os.path.join(REPO, "tracer"), os.path.dirname(click.__file__)):
            shutil.copytree(pkg, os.path.join(copy, os.path.basename(pkg)),
                            ignore=shutil.ignore_patterns("__pycache__"))
        for root, dirs, files in os.walk(copy):
            for name in dirs + ["."]:
                os.chmod(os.path.join(root, name), 0o755)
            for name in files:
                os.chmod(os.path.join(root, name), 0o644)
        python, path = os.path.realpath(sys.executable), copy

    def run(caps: str, *args: str, code: str = "") -> subprocess.CompletedProcess:
        """ctrtrace ARGS; with code, python -c CODE ARGS."""
        how = ["-c", code] if code else ["-m", "tracer"]
        return subprocess.run(_as_nobody(caps) + [python, *how, *args],
                              cwd=path, env=dict(env, PYTHONPATH=path),
                              capture_output=True, text=True, timeout=60)

    yield run
    if copy:
        shutil.rmtree(copy)


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


class UnixServer:
    """A server on a unix socket that can go away and come back (stop, start):
    each connection goes to handle(conn) on the accepting thread; the
    connections a subclass keeps in open_connections() are cut at stop."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._listener = None
        self._lock = threading.Lock()

    def start(self) -> None:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.bind(self.path)
        s.listen(64)
        s.settimeout(0.05)
        self._listener = s
        threading.Thread(target=self._accept, args=(s,), daemon=True).start()

    def stop(self) -> None:
        """Gone: nobody listens, every connection kept is cut."""
        s, self._listener = self._listener, None
        if s is not None:
            s.close()
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass
        with self._lock:
            conns = self.open_connections()
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            c.close()

    def open_connections(self) -> list:
        """The connections to cut at stop, taken out of the subclass's keeping."""
        return []

    def handle(self, conn) -> None:
        raise NotImplementedError

    def _accept(self, s) -> None:
        while self._listener is s:
            try:
                conn, _ = s.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.handle(conn)
