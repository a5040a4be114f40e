"""The course's container start, end to end, against a real Docker engine."""

from __future__ import annotations

import socket
import threading

import pytest
from conftest import UnixServer, docker, proc_ns

from tracer.model.events import ExecEvent, ExitEvent, ForkEvent, SetnsEvent, UnshareEvent
from tracer.model.flags import NS_FLAGS

pytestmark = [pytest.mark.usefixtures("docker_engine"), pytest.mark.docker, pytest.mark.bpf]

NEW = {name: bit for bit, name in NS_FLAGS.items()}
NAME = "sleep-container"


@pytest.fixture
def sleep_container():
    docker("rm", "-f", NAME, check=False)
    yield NAME
    docker("rm", "-f", NAME, check=False)


def _ppid_from_proc(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("PPid:"))


@pytest.mark.smoke
def test_docker_run_sleep_container(capture, sleep_container):
    cap = capture()
    cid = docker("run", "--rm", "-d", "--name", NAME, "alpine", "sleep", "900")
    sleep = cap.wait_for(lambda e: isinstance(e, ExecEvent) and e.ret == 0
                         and e.argv == ("sleep", "900"))
    pid = int(docker("inspect", "--format", "{{.State.Pid}}", NAME))
    truth = proc_ns(pid)
    cap.finish()

    # the workload: the container's main process, PID 1 inside, in its namespaces
    assert sleep.pid == pid and sleep.vpid == 1
    assert sleep.ns == truth
    assert sleep.container is not None
    assert (sleep.container.id, sleep.container.name) == (cid, NAME)
    assert sleep.container.image == "alpine" and sleep.container.source == "cgroup"
    # cgroupfs: "docker/<id>"; systemd (cgroup v2 hosts): "system.slice/docker-<id>.scope"
    assert cid in sleep.cgroup

    # the shim, with the container's id, started by containerd
    shims = [e for e in cap.events if isinstance(e, ExecEvent) and e.ret == 0
             and e.argv[0].endswith("containerd-shim-runc-v2") and "-id" in e.argv]
    assert shims
    for s in shims:
        i = s.argv.index("-id")
        assert s.argv[i + 1] == cid
        assert s.argv[s.argv.index("-namespace") + 1] == "moby"
        assert s.container is not None and s.container.id == cid

    # the shim double-forks: the first one exits and its child is adopted;
    # the adopter the kernel reported is the one /proc shows now
    long_lived = _ppid_from_proc(pid)  # the shim that is sleep's parent now
    first = [e for e in cap.events if isinstance(e, ExitEvent) and e.reaper is not None
             and e.container is not None and e.container.source == "shim"
             and any(f.pid == long_lived and f.ppid == e.pid for f in cap.events
                     if isinstance(f, ForkEvent))]
    assert len(first) == 1, (long_lived, [(e.pid, e.reaper, e.container) for e in cap.events
                                          if isinstance(e, ExitEvent) and e.reaper is not None],
                             [(f.pid, f.ppid, f.comm, f.thread) for f in cap.events
                              if isinstance(f, ForkEvent) and f.pid == long_lived],
                             [(e.type, e.pid, e.ppid, e.comm) for e in cap.events
                              if e.pid == long_lived or e.ppid == long_lived][:20])
    assert first[0].reaper == _ppid_from_proc(long_lived)
    assert cap.session.table.get(long_lived).ppid == _ppid_from_proc(long_lived)

    # runc creates the namespaces: unshare with the CLONE_NEW* flags
    runc_ns = [e for e in cap.events if isinstance(e, UnshareEvent) and e.container is not None
               and e.container.id == cid and e.flags & NEW["pid"]]
    assert len(runc_ns) == 1, [(e.pid, e.comm, hex(e.flags), e.container) for e in cap.events
                               if isinstance(e, UnshareEvent)]
    want = NEW["mnt"] | NEW["uts"] | NEW["ipc"] | NEW["pid"] | NEW["net"]
    assert runc_ns[0].flags & want == want and runc_ns[0].ret == 0
    assert runc_ns[0].ns.pid_for_children == truth.pid
    for name in ("mnt", "uts", "ipc", "net"):
        assert getattr(runc_ns[0].ns, name) == getattr(truth, name), name
    # the process that becomes PID 1 inside is forked into the new pid namespace
    forks = [e for e in cap.events if isinstance(e, ForkEvent) and e.pid == pid]
    assert len(forks) == 1 and forks[0].vpid == 1 and forks[0].ns.pid == truth.pid

    # runc and its init ran before the cgroup was set: attributed through the shim
    runc = [e for e in cap.events if isinstance(e, ExecEvent) and e.argv[:1] == ("runc",)
            and e.ret == 0 and "create" in e.argv]
    assert runc and all(e.container is not None and e.container.id == cid for e in runc)


def test_docker_exec_is_attributed_with_its_setns(capture, sleep_container):
    cid = docker("run", "--rm", "-d", "--name", NAME, "alpine", "sleep", "900")
    pid = int(docker("inspect", "--format", "{{.State.Pid}}", NAME))
    truth = proc_ns(pid)
    cap = capture()
    docker("exec", NAME, "/bin/cat", "/proc/self/status")
    cap.finish()

    cats = [e for e in cap.events if isinstance(e, ExecEvent) and e.ret == 0
            and e.argv == ("/bin/cat", "/proc/self/status")]
    assert len(cats) == 1
    cat = cats[0]
    assert cat.container is not None and cat.container.id == cid and cat.container.name == NAME
    for name in ("mnt", "uts", "ipc", "pid", "net"):
        assert getattr(cat.ns, name) == getattr(truth, name), name
    assert cat.vpid != 1 and cat.vpid != cat.pid

    setns = [e for e in cap.events if isinstance(e, SetnsEvent) and e.ret == 0
             and e.container is not None and e.container.id == cid]
    entered = {e.nstype for e in setns}
    assert {NEW["mnt"], NEW["uts"], NEW["ipc"], NEW["net"], NEW["pid"]} <= entered
    for e in setns:
        if e.nstype == NEW["net"]:
            assert e.ns.net == truth.net


def test_container_that_exits_at_once_is_fully_attributed(capture, tmp_path):
    cidfile = tmp_path / "cid"
    name = "quick-true"
    docker("rm", "-f", name, check=False)
    cap = capture()
    docker("run", "--rm", "--cidfile", str(cidfile), "--name", name, "alpine", "true")
    cap.finish()
    cid = cidfile.read_text().strip()
    assert docker("ps", "-aq", "--filter", f"id={cid}") == ""  # really gone

    ours = [e for e in cap.events if e.container is not None and e.container.id == cid]
    true = [e for e in ours if isinstance(e, ExecEvent) and e.ret == 0 and e.argv == ("true",)]
    assert len(true) == 1 and true[0].vpid == 1
    exits = [e for e in ours if isinstance(e, ExitEvent) and e.pid == true[0].pid]
    assert len(exits) == 1 and exits[0].exit_code == 0
    for e in ours:
        assert (e.container.name, e.container.image) == (name, "alpine")


def test_parallel_containers_are_not_confused(capture):
    names = [f"par-{i}" for i in range(4)]
    for n in names:
        docker("rm", "-f", n, check=False)
    cap = capture()
    ids = {}

    def run(n: str) -> None:
        ids[n] = docker("run", "-d", "--name", n, "alpine", "env", f"TAG={n}", "sleep", "1")

    threads = [threading.Thread(target=run, args=(n,)) for n in names]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for n in names:
        docker("wait", n)
    cap.finish()
    for n in names:
        docker("rm", "-f", n, check=False)

    by_id = {v: k for k, v in ids.items()}
    seen = set()
    for e in cap.events:
        c = e.container
        if c is None or c.id not in by_id:
            continue
        assert c.name == by_id[c.id]
        if isinstance(e, ExecEvent) and e.ret == 0 and e.argv[:1] == ("env",):
            assert e.argv[1] == f"TAG={c.name}"
            seen.add(c.name)
        if isinstance(e, ExecEvent) and e.ret == 0 and "-id" in e.argv:
            assert e.argv[e.argv.index("-id") + 1] == c.id
    assert seen == set(names)


def _dead_socket(tmp_path) -> str:
    """A unix socket nobody listens on: connecting is refused, as with dockerd down."""
    path = str(tmp_path / "docker.sock")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(path)
    s.close()
    return path


def test_without_a_reachable_engine_ids_are_shown(capture, sleep_container, tmp_path):
    cap = capture(docker_socket=_dead_socket(tmp_path))
    assert not cap.session.header.docker_reachable
    cid = docker("run", "--rm", "-d", "--name", NAME, "alpine", "sleep", "900")
    sleep = cap.wait_for(lambda e: isinstance(e, ExecEvent) and e.argv == ("sleep", "900"))
    cap.finish()
    assert sleep.container is not None
    assert sleep.container.id == cid and sleep.container.name is None


def test_cli_container_filters(sleep_container, tmp_path):
    import json as _json

    from click.testing import CliRunner

    from tracer.cli import main

    cid = docker("run", "--rm", "-d", "--name", NAME, "alpine", "sleep", "900")
    runner = CliRunner()

    def events(*args):
        r = runner.invoke(main, ["--json", *args], catch_exceptions=False)
        lines = [_json.loads(line) for line in r.stdout.splitlines()]
        return r, lines[1:-1], lines[-1]

    for wanted in (NAME, cid[:12]):
        r, evs, summary = events("--container", wanted, "--", "sh", "-c",
                                 f"/bin/true; docker exec {NAME} /bin/true inside")
        assert r.exit_code == 0
        assert evs and all(e["container"]["id"] == cid for e in evs)
        assert any(e["type"] == "exec" and e["argv"] == ["/bin/true", "inside"] for e in evs)
        assert any(e["type"] == "setns" for e in evs)
        assert summary["filtered_in_userspace"] > 0  # the host's /bin/true, docker, ...

    r, evs, _ = events("--containers-only", "--", "docker", "exec", NAME, "/bin/true")
    assert evs and all(e["container"] is not None for e in evs)

    # an unreachable engine: one message, ids only, tracing goes on
    r, evs, _ = events("--docker-socket", _dead_socket(tmp_path), "--containers-only",
                       "--", "docker", "exec", NAME, "/bin/true")
    assert r.exit_code == 0
    assert "Docker is not reachable" in r.stderr
    assert evs and all(e["container"]["id"] == cid and e["container"]["name"] is None for e in evs)


def test_the_json_command_against_ground_truth(sleep_container, tmp_path):
    """`ctrtrace --json -w FILE` (JSON lines made straight from the records)
    during `docker run`: the workload's line against /proc and docker inspect,
    the recording equal to the stream, the summary's counts equal to the lines."""
    import json
    import signal
    import subprocess
    import sys
    import time

    out, rec = tmp_path / "out.jsonl", tmp_path / "rec.jsonl"
    with open(out, "wb") as f:
        p = subprocess.Popen([sys.executable, "-m", "tracer", "--json", "-w", str(rec)], stdout=f)
    try:
        deadline = time.monotonic() + 20
        while out.stat().st_size == 0:  # the header: capturing since before it
            assert p.poll() is None and time.monotonic() < deadline
            time.sleep(0.02)
        cid = docker("run", "--rm", "-d", "--name", NAME, "alpine", "sleep", "900")
        pid = int(docker("inspect", "--format", "{{.State.Pid}}", NAME))
        truth = proc_ns(pid)

        def sleep_line():
            for line in out.read_bytes().splitlines()[1:]:
                d = json.loads(line)
                if d["type"] == "exec" and d["argv"] == ["sleep", "900"] and d["ret"] == 0:
                    return d
            return None

        while (sleep := sleep_line()) is None:
            assert time.monotonic() < deadline, "the workload's exec never came"
            time.sleep(0.05)
    finally:
        p.send_signal(signal.SIGINT)
        p.wait(timeout=20)
    assert p.returncode == 0
    assert (sleep["pid"], sleep["vpid"]) == (pid, 1)
    assert sleep["ns"] == {name: getattr(truth, name) for name in sleep["ns"]}
    c = sleep["container"]
    assert (c["id"], c["name"], c["image"], c["source"]) == (cid, NAME, "alpine", "cgroup")

    lines = [json.loads(line) for line in out.read_bytes().splitlines()]
    events, summary = lines[1:-1], lines[-1]
    runc = [e for e in events if e["type"] == "exec" and e["argv"][:1] == ["runc"]
            and "create" in e["argv"]]
    assert runc and all(e["container"] and e["container"]["id"] == cid for e in runc)
    recorded = [json.loads(line) for line in rec.read_bytes().splitlines()]
    assert recorded[1:-1] == events
    assert summary["counts"] == {t: sum(e["type"] == t for e in events) for t in summary["counts"]}
    assert summary["lost"] == 0


class EngineProxy(UnixServer):
    """The real engine's socket, relayed through one of ours that can go away
    and come back: to the resolver, dockerd stops and starts again, while the
    engine itself (which other tests use at the same time) runs on."""

    def __init__(self, path: str, target: str = "/var/run/docker.sock") -> None:
        super().__init__(path)
        self.target = target
        self.requests = []  # the request line of each connection
        self._conns = []
        self.start()

    def open_connections(self) -> list:
        conns, self._conns = self._conns, []
        return conns

    def handle(self, a) -> None:
        b = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        b.connect(self.target)
        with self._lock:
            self._conns += [a, b]
        for src, dst in ((a, b), (b, a)):
            threading.Thread(target=self._pipe, args=(src, dst, src is a),
                             daemon=True).start()

    def _pipe(self, src, dst, request: bool) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if request:
                    self.requests.append(data.split(b"\r\n", 1)[0].decode())
                    request = False
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def _wait_until(pred, timeout: float = 10.0) -> bool:
    import time

    end = time.monotonic() + timeout
    while not pred() and time.monotonic() < end:
        time.sleep(0.05)
    return pred()


def test_names_come_back_with_the_engine(capture, sleep_container, tmp_path):
    """A container first seen while the engine is away is named once it is
    back; the event stream is followed again and names a container created
    after that."""
    proxy = EngineProxy(str(tmp_path / "docker.sock"))
    quick = "back-again"
    docker("rm", "-f", quick, check=False)
    try:
        cap = capture(docker_socket=proxy.path)
        resolver = cap.session.resolver

        def streams() -> int:
            return sum(" /events?" in r for r in proxy.requests)

        assert streams() == 1
        proxy.stop()  # the engine is away: requests fail, the stream is cut
        cid = docker("run", "--rm", "-d", "--name", NAME, "alpine", "sleep", "900")
        sleep = cap.wait_for(lambda e: isinstance(e, ExecEvent) and e.argv == ("sleep", "900"))
        assert sleep.container is not None and sleep.container.id == cid
        assert sleep.container.name is None  # unnamed for now

        proxy.start()  # the engine is back
        assert _wait_until(lambda: resolver.attribute_process(
            sleep.cgroup, sleep.ns.mnt, sleep.pid).name == NAME)
        docker("exec", NAME, "/bin/true", "again")
        again = cap.wait_for(lambda e: isinstance(e, ExecEvent)
                             and e.argv == ("/bin/true", "again"))
        assert (again.container.id, again.container.name) == (cid, NAME)

        # created after the engine came back, never run, and removed at once:
        # the engine no longer knows it when asked, so only the event stream
        # can have named it
        qid = docker("create", "--name", quick, "alpine", "true")
        docker("rm", quick)
        assert _wait_until(lambda: resolver.attribute_process(
            f"docker/{qid}", 0, 1).name == quick)
        assert streams() == 2
        cap.finish()
    finally:
        proxy.stop()
        docker("rm", "-f", quick, check=False)
