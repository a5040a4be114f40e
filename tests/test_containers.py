"""Container attribution logic, without a kernel: cgroup names, shims, recorded
traces, and names from an engine that goes away and comes back (a fake one on
a unix socket; tests/test_docker.py has the real one)."""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

import pytest
from conftest import NOBODY, UnixServer

from tracer.model.codec import event_of
from tracer.model.events import Container, Header, Namespaces
from tracer.model.files import read_owned
from tracer.state import containers
from tracer.state.containers import (
    PODMAN_ENTRIES_MAX,
    PODMAN_TEXT_MAX,
    ContainerResolver,
    PodmanState,
    conmon_container,
    container_from_cgroup,
    pod_of_cgroup,
    podman_entries,
    shim_container,
)
from tracer.state.dockerapi import DockerClient, EventWatch

DATA = Path(__file__).parent / "data"
ID = "3df112ebced56878fee4b83fd49e463a99621d4dc7e1ac1cd048284ab069df62"


@pytest.mark.parametrize("cgroup,want", [
    (f"docker/{ID}", ("docker", ID)),                          # cgroupfs driver, v1 or v2
    (f"system.slice/docker-{ID}.scope", ("docker", ID)),       # systemd driver (cgroup v2 hosts)
    (f"kubepods-besteffort-pod1.slice/cri-containerd-{ID}.scope", ("containerd", ID)),
    (f"machine.slice/libpod-{ID}.scope", ("podman", ID)),
    ("process_api/331c9ddc583ab15b02a389ad6ab06b40", None),    # 32 hex digits: not a container
    ("user.slice/session-1.scope", None),
    ("/", None),
    (f"elsewhere/{ID}", None),                                   # 64 hex under an unknown parent
    (f"kubepods-burstable-pod0c4e_9a1b.slice/crio-{ID}.scope", ("cri-o", ID)),  # CRI-O, systemd
    (f"pod0c4e9a1b-1111-2222-3333-444455556666/{ID}", ("containerd", ID)),  # kubelet, cgroupfs
    (f"libpod_parent/libpod-{ID}", ("podman", ID)),             # podman, cgroupfs manager
    (f"elsewhere/libpod-{ID}", None),
    ("machine.slice/machine-web\\x2d1.scope", ("systemd-nspawn", "web-1")),  # nspawn + machined
    ("system.slice/machine-web.scope", None),
    ("/lxc.payload.web", ("lxc", "web")),                       # LXC 4+, cgroup v1 and v2
    ("/lxc.monitor.web", ("lxc", "web")),                       # ... its monitor
    ("lxc/web", ("lxc", "web")),                                # LXC before 4
    ("default/c1", None),  # ctr run: <namespace>/<id>, told apart by its shim (below)
])
def test_container_from_cgroup(cgroup, want):
    assert container_from_cgroup(cgroup) == want


@pytest.mark.parametrize("cgroup,pod", [
    (f"kubepods-burstable-pod0c4e9a1b_1111_2222_3333_444455556666.slice/cri-containerd-{ID}.scope",
     "0c4e9a1b-1111-2222-3333-444455556666"),                     # systemd driver
    (f"kubepods-pod0c4e9a1b_1111_2222_3333_444455556666.slice/crio-{ID}.scope",
     "0c4e9a1b-1111-2222-3333-444455556666"),                     # guaranteed QoS, CRI-O
    (f"pod0c4e9a1b-1111-2222-3333-444455556666/{ID}",
     "0c4e9a1b-1111-2222-3333-444455556666"),                     # cgroupfs driver
    (f"pod6f1b3e0c2d4a5b6c7d8e9f0a1b2c3d4e/{ID}", "6f1b3e0c2d4a5b6c7d8e9f0a1b2c3d4e"),  # static pod
    (f"docker/{ID}", None),
    (f"machine.slice/libpod-{ID}.scope", None),
    (f"mypod0c4e9a1b-1111-2222-3333-444455556666/{ID}", None),   # not kubelet's word
])
def test_pod_from_cgroup(cgroup, pod):
    assert pod_of_cgroup(cgroup) == pod


def test_a_kubernetes_container_carries_its_pod():
    r = ContainerResolver(None, HOST)
    uid = "0c4e9a1b-1111-2222-3333-444455556666"
    c = r.attribute_process(
        f"kubepods-besteffort-pod{uid.replace('-', '_')}.slice/cri-containerd-{ID}.scope", 0, 5)
    assert c is not None and (c.runtime, c.id, c.pod) == ("containerd", ID, uid)
    assert Container.from_json(c.to_json()) == c
    assert "pod" not in Container(id=ID).to_json()  # recordings without pods are unchanged


def test_ctr_runs_cgroup_is_its_shims():
    """ctr run puts a container in <namespace>/<id>: a container once a shim
    of that namespace and id was seen, whichever came first."""
    r = ContainerResolver(None, Namespaces(mnt=1))
    assert r.attribute_process("default/c1", 0, 10) is None
    r.on_exec(20, ("/usr/bin/containerd-shim-runc-v2", "-namespace", "default", "-id", "c1",
                   "-address", "/run/containerd/containerd.sock"))
    c = r.attribute_process("default/c1", 0, 10)
    assert c is not None and (c.runtime, c.id, c.name, c.source) == (
        "containerd", "c1", "c1", "cgroup")
    assert r.attribute_process("default/c2", 0, 11) is None
    # docker's own namespace keeps its cgroups (docker/<id>): no <namespace>/<id> rule
    r.on_exec(21, ("/usr/bin/containerd-shim-runc-v2", "-namespace", "moby", "-id", ID))
    assert r.attribute_process(f"moby/{ID}", 0, 12) is None


def test_views_name_the_runtime_unless_docker():
    assert Container(id=ID, name="web").label == "web"
    assert Container(id=ID).label == ID[:12]
    assert Container(id=ID, name="web", runtime="podman").label == "podman:web"
    assert Container(id="c1", name="c1", runtime="containerd").label == "containerd:c1"


def test_shim_command_line():
    argv = ["/usr/bin/containerd-shim-runc-v2", "-namespace", "moby", "-id", ID,
            "-address", "/run/containerd/containerd.sock"]
    assert shim_container(tuple(argv)) == ("moby", ID)
    assert shim_container(("/usr/bin/containerd-shim-runc-v2", "-namespace", "k8s.io",
                           "-address", "x", "-publish-binary", "y", "-id", "abc", "start")) == ("k8s.io", "abc")
    assert shim_container(("runc", "-id", ID)) is None
    assert shim_container(("/usr/bin/containerd-shim-runc-v2", "-v")) is None


def test_monitor_command_line_names_its_storage():
    rootless = "/home/u/.local/share/containers/storage/vfs-containers"
    argv = ("/usr/bin/conmon", "--api-version", "1", "-c", ID, "-u", ID, "-r", "/usr/bin/runc",
            "-b", f"{rootless}/{ID}/userdata", "-n", "web")
    assert conmon_container(argv) == (ID, "web", f"{rootless}/containers.json")
    # a bundle that is not <storage>/<driver>-containers/<id>/userdata names no storage
    assert conmon_container(("/usr/bin/conmon", "-c", ID, "-b", "/tmp/x/userdata")) == (
        ID, None, None)
    assert conmon_container(("/usr/bin/conmon", "-c", ID, "-b", f"rel/{ID}/userdata"))[2] is None
    assert conmon_container(("/usr/bin/podman", "-c", ID)) is None


def _state(path: Path, cid: str, name: str, image: str) -> None:
    path.write_text(json.dumps([{"id": cid, "names": [name],
                                 "metadata": json.dumps({"image-name": image})}]))


def test_a_rootless_storage_is_read_only_when_its_user_owns_it(tmp_path):
    """The storage a monitor names is its user's: read as root, it is not
    followed through a link, not waited on (a FIFO), and a file of another
    user is not read."""
    import os

    me = os.geteuid()
    state = PodmanState(str(tmp_path / "rootful.json"))
    good = tmp_path / "good.json"
    _state(good, "a" * 64, "web", "localhost/alpine:latest")
    state.follow(str(good), me, "a" * 64)
    assert state.lookup("a" * 64) == ("web", "localhost/alpine:latest")

    target = tmp_path / "target.json"
    _state(target, "b" * 64, "secret", "x")
    link = tmp_path / "link.json"
    link.symlink_to(target)
    fifo = tmp_path / "fifo.json"
    os.mkfifo(fifo)
    other = PodmanState(str(tmp_path / "none.json"))
    other.follow(str(link), me, "b" * 64)
    other.follow(str(fifo), me, "c" * 64)
    assert other.lookup("b" * 64) is None  # not through the link
    assert other.lookup("c" * 64) is None  # returns at once: nothing waits on the FIFO
    assert read_owned(str(target), {me}, 1 << 20) is not None
    assert read_owned(str(target), {me + 1}, 1 << 20) is None  # not the owner's
    assert read_owned(str(target), {me}, 8) is None            # past the limit
    assert read_owned(str(link), {me}, 1 << 20) is None


# podman 4.3's entry for a container, as it wrote it on this machine
PODMAN_ENTRY = {
    "id": "1f5787073acc6a17b3fba3d17b381eb4e163259d2f3e2a8b9e47fd4d89926c20",
    "names": ["ratio-probe"],
    "image": "143e1d4372ccea3c3ac759bdfbcbdd1751dafdb387432a1740fac86f163ed9bf",
    "layer": "5c218659bb816e9c3091f5418f29cfc0f1af995da362df94d624d8ab9df83d29",
    "metadata": json.dumps({"image-name": "localhost/alpine:latest",
                            "image-id": "143e1d4372ccea3c3ac759bdfbcbdd1751dafdb387432a1740fac86f163ed9bf",
                            "name": "ratio-probe", "created-at": 1796278878},
                           separators=(",", ":")),
    "created": "2026-12-03T06:21:18.976934661Z",
    "flags": {"MountLabel": "", "ProcessLabel": ""},
}


def _entry(i: int, **fields) -> dict:
    return dict(PODMAN_ENTRY, id=f"{i:064x}", **fields)


def test_a_storage_list_is_read_within_bounds():
    """A list podman wrote is read; what a user could write instead is read
    only as far as podman's own lists go: no nesting past the parser's depth,
    no more than a bracket in 32 bytes (millions of objects), the newest
    entries only, names and images cut short."""
    real = json.dumps([PODMAN_ENTRY], separators=(",", ":")).encode()
    assert podman_entries(real) == {PODMAN_ENTRY["id"]: ("ratio-probe", "localhost/alpine:latest")}
    many = json.dumps([_entry(i) for i in range(PODMAN_ENTRIES_MAX + 10)]).encode()
    found = podman_entries(many)
    assert found is not None and len(found) == PODMAN_ENTRIES_MAX
    assert f"{PODMAN_ENTRIES_MAX + 9:064x}" in found and f"{9:064x}" not in found  # the newest
    assert podman_entries(b"[" * 100_000) is None
    assert podman_entries(b'[{"id":"a","names":["' + b"[" * 5000 + b'"]}]') is None
    assert podman_entries(b"[" + b"{}," * 300_000 + b"{}]") is None
    assert podman_entries(b"{}") is None and podman_entries(b"not json") is None
    long = podman_entries(json.dumps([_entry(1, names=["n" * 10_000],
                                             metadata=json.dumps({"image-name": "i" * 10_000}))
                                      ]).encode())
    assert long == {f"{1:064x}": ("n" * PODMAN_TEXT_MAX, "i" * PODMAN_TEXT_MAX)}
    odd = podman_entries(json.dumps([_entry(1, names=[7], metadata="[1"), {"id": 5}, 3,
                                     _entry(2, names=[], metadata=json.dumps([1]))]).encode())
    assert odd == {f"{1:064x}": (None, None), f"{2:064x}": (None, None)}


def test_a_storage_list_read_again_replaces_what_it_said(tmp_path, monkeypatch):
    """What a list said is forgotten when it is written anew (a long trace
    does not keep every container ever listed)."""
    path = tmp_path / "containers.json"
    monkeypatch.setattr(containers, "RETRY_INTERVAL", 0)  # every lookup may read
    path.write_text(json.dumps([_entry(1)]))
    state = PodmanState(str(path))
    assert state.lookup(f"{1:064x}") == ("ratio-probe", "localhost/alpine:latest")
    path.write_text(json.dumps([_entry(2, names=["other"])]))
    os.utime(path, ns=(1, 1))  # another mtime, whatever the clock's grain
    assert state.lookup(f"{2:064x}") == ("other", "localhost/alpine:latest")
    assert state.lookup(f"{1:064x}") is None


def _reattribute(*names: str):
    """Run one resolver over recorded traces with no engine: ids come from the kernel's facts."""
    r = None
    out = []
    for name in names:
        lines = [json.loads(line) for line in (DATA / name).read_text().splitlines()]
        if r is None:
            r = ContainerResolver(None, Header.from_json(lines[0]).host_ns)
        for d in lines[1:-1]:
            ev = event_of(d)
            recorded = ev.container
            out.append((ev.replace(container=r.attribute(ev)), recorded))
    return out


def test_recorded_docker_run_reattributes_the_same_way():
    pairs = _reattribute("docker-run.jsonl")
    attributed = [(e, rec) for e, rec in pairs if rec is not None]
    assert attributed
    for ev, rec in pairs:
        got = ev.container
        assert (got.id if got else None) == (rec.id if rec else None), ev
        if got:
            assert got.source == rec.source and got.name is None  # no engine: id only


def test_sources_in_docker_run():
    pairs = _reattribute("docker-run.jsonl")
    by_source = {}
    for ev, _ in pairs:
        if ev.container:
            by_source.setdefault(ev.container.source, []).append(ev)
    # runc and the shims before the cgroup exists; the workload by its cgroup
    assert any(e.type == "exec" and e.argv[:1] == ("runc",) for e in by_source["shim"])
    assert any(e.type == "exec" and e.argv == ("sleep", "900") for e in by_source["cgroup"])


def test_docker_exec_setns_is_attributed_before_the_cgroup():
    # the two recordings follow each other: the run teaches the shim and the
    # container's mount namespace, which attribute the exec's setns calls
    pairs = _reattribute("docker-run.jsonl", "docker-exec.jsonl")
    setns = [(e, rec) for e, rec in pairs if e.type == "setns" and rec is not None]
    assert len(setns) == 5
    for e, rec in setns:
        assert e.container is not None and e.container.id == rec.id
        assert e.container.source == rec.source
    # entering the mount namespace ties the process by itself; before, the shim does
    assert [rec.source for _, rec in setns] == ["shim"] * 4 + ["namespace"]


def test_host_processes_are_not_attributed():
    pairs = _reattribute("session.jsonl")
    assert all(e.container is None for e, _ in pairs)


# -- an engine that goes away and comes back ---------------------------------------


class FakeEngine(UnixServer):
    """A Docker engine on a unix socket that can stop and start again: inspect,
    list, and the stream of creations (create() announces to every open stream).

    mode "up" answers; "broken" reads each request and closes without a word
    (a client sees no answer, as from an engine that is away, but the request
    is counted); "hung" reads it and never answers.  With events False the
    engine answers everything but its event stream (404)."""

    def __init__(self, path: str) -> None:
        super().__init__(path)
        self.containers = {}
        self.requests = []           # the path of every request read
        self.mode = "up"
        self.streams = []
        self.events = True
        self._held = []              # "hung" connections, closed at stop
        self.start()

    def start(self, mode: str = "up") -> None:
        self.mode = mode
        super().start()

    def open_connections(self) -> list:
        """Every event stream, and the "hung" connections."""
        conns, self.streams, self._held = self.streams + self._held, [], []
        return conns

    def handle(self, conn) -> None:
        threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn) -> None:
        req = b""
        while b"\r\n\r\n" not in req:
            data = conn.recv(4096)
            if not data:
                conn.close()
                return
            req += data
        path = req.split()[1].decode()
        with self._lock:
            self.requests.append(path)
            mode = self.mode
        if mode == "broken":
            conn.close()
            return
        if mode == "hung":
            with self._lock:
                self._held.append(conn)
            return
        if path.startswith("/events") and not self.events:
            body = b'{"message": "no events here"}'
            conn.sendall(b"HTTP/1.1 404 Not Found\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
            conn.close()
            return
        if path.startswith("/events"):
            conn.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
            with self._lock:
                self.streams.append(conn)
            return
        if path == "/containers/json":
            body, status = json.dumps([{"Id": c} for c in self.containers]).encode(), "200 OK"
        else:
            cid = path.split("/")[2]
            data = self.containers.get(cid)
            body = json.dumps(data or {"message": "No such container"}).encode()
            status = "200 OK" if data else "404 Not Found"
        conn.sendall(f"HTTP/1.1 {status}\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body)
        conn.close()

    def create(self, cid: str, name: str, announce: bool = True, known: bool = True) -> None:
        """A container; announce: on every open event stream; known: to inspect
        and list (not: only its creation event can name it)."""
        if known:
            self.containers[cid] = {"Id": cid, "Name": "/" + name, "Config": {"Image": "alpine"},
                                    "State": {"Pid": 0}}
        if not announce:
            return
        line = json.dumps({"Type": "container", "Action": "create",
                           "Actor": {"ID": cid, "Attributes": {"name": name, "image": "alpine"}}})
        chunk = f"{len(line) + 1:x}\r\n{line}\n\r\n".encode()
        with self._lock:
            streams = list(self.streams)
        for c in streams:
            try:
                c.sendall(chunk)
            except OSError:
                pass

    def asked(self, cid: str) -> int:
        with self._lock:
            return self.requests.count(f"/containers/{cid}/json")


HOST = Namespaces(mnt=1, uts=2, ipc=3, pid=4, pid_for_children=4, net=5, cgroup=6, user=7,
                  time=8, time_for_children=8)
CID1, CID2 = "1" * 64, "2" * 64


@pytest.fixture
def engine(tmp_path):
    e = FakeEngine(str(tmp_path / "docker.sock"))
    yield e
    e.stop()


@pytest.fixture
def resolver_for():
    made = []

    def make(engine, retry_interval: float = 0.2, timeout: float = 1.0) -> ContainerResolver:
        r = ContainerResolver(DockerClient(engine.path, timeout=timeout), HOST)
        r.retry_interval = retry_interval
        r.seed([], lambda pid: HOST)
        made.append(r)
        return r

    yield make
    for r in made:
        r.close()


@pytest.fixture
def fast_reconnect(monkeypatch):
    monkeypatch.setattr(EventWatch, "RETRY_MAX", 0.2, raising=False)


def _name(r: ContainerResolver, cid: str):
    c = r.attribute_process(f"docker/{cid}", 0, 12345)
    assert c is not None and c.id == cid
    return c.name


def _eventually(pred, timeout: float = 5.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.02)
    return pred()


def test_an_id_first_seen_while_the_engine_is_away_is_named_once_it_is_back(
        engine, resolver_for, fast_reconnect):
    engine.create(CID1, "before", announce=False)
    engine.stop()
    r = resolver_for(engine)
    assert _name(r, CID1) is None
    engine.start()
    assert _eventually(lambda: _name(r, CID1) == "before")
    c = r.attribute_process(f"docker/{CID1}", 0, 1)
    assert (c.name, c.image, c.source) == ("before", "alpine", "cgroup")


def test_named_when_the_engine_is_back_even_without_its_event_stream(engine, resolver_for):
    # the retries alone: the engine comes back without its event stream, so
    # nothing tells the resolver it is back
    engine.create(CID1, "before", announce=False)
    engine.stop()
    engine.events = False
    r = resolver_for(engine)
    assert _name(r, CID1) is None
    engine.start()
    assert _eventually(lambda: _name(r, CID1) == "before", timeout=3)
    assert not engine.streams and engine.asked(CID1) == 1  # asked again, by the retries


def test_the_event_stream_reconnects_after_the_engine_restarts(engine, resolver_for,
                                                               fast_reconnect):
    r = resolver_for(engine)
    assert _eventually(lambda: len(engine.streams) == 1)
    engine.stop()
    engine.start()
    assert _eventually(lambda: len(engine.streams) == 1)
    # announced on the new stream only, and unknown to inspect: only the
    # stream can name it (asking gets a 404, and is not repeated)
    engine.create(CID2, "after", known=False)
    assert _eventually(lambda: _name(r, CID2) == "after")
    assert engine.asked(CID2) <= 1
    reconnects = [p for p in engine.requests if p.startswith("/events")]
    assert len(reconnects) == 2 and "since=" in reconnects[1]


def test_an_engine_started_after_the_trace_is_followed(engine, resolver_for, fast_reconnect):
    engine.stop()
    r = resolver_for(engine)
    engine.start()
    assert _eventually(lambda: len(engine.streams) == 1)
    engine.create(CID2, "later", known=False)  # only the stream can name it
    assert _eventually(lambda: _name(r, CID2) == "later")
    assert engine.asked(CID2) <= 1


def test_questions_to_an_engine_that_does_not_answer_are_rate_limited(engine, resolver_for):
    engine.mode = "broken"  # reads each request, answers nothing
    r = resolver_for(engine, retry_interval=0.5)
    t0 = time.monotonic()
    n = 0
    while time.monotonic() - t0 < 2.2:  # the event path: every event of the container
        assert _name(r, CID1) is None
        n += 1
    assert n > 1000
    # at first sight (unless known away), then once per interval: not per event
    assert 2 <= engine.asked(CID1) <= 1 + 2.2 / 0.5 + 1, engine.asked(CID1)


def test_an_engine_that_hangs_costs_the_event_path_one_timeout(engine, resolver_for):
    r = resolver_for(engine, timeout=0.3)
    engine.mode = "hung"
    t0 = time.monotonic()
    for i in range(20):
        assert _name(r, f"{i:064x}") is None
    assert time.monotonic() - t0 < 0.3 * 2, "each new id waited for the engine"


def test_an_id_the_engine_does_not_know_is_not_asked_again(engine, resolver_for):
    r = resolver_for(engine)
    for _ in range(100):
        assert _name(r, CID1) is None
    time.sleep(0.5)
    assert engine.asked(CID1) == 1
    engine.create(CID1, "late")  # its creation event still names it
    assert _eventually(lambda: _name(r, CID1) == "late")


def test_close_stops_every_thread_at_once(engine, resolver_for, fast_reconnect):
    engine.stop()  # the engine's own threads end: what starts now is the resolver's
    before = set(threading.enumerate())
    r = resolver_for(engine)
    _name(r, CID1)  # something to retry
    threads = [t for t in threading.enumerate() if t not in before]
    assert len(threads) == 2  # the event stream's, waiting for the engine; the retries'
    t0 = time.monotonic()
    r.close()
    assert time.monotonic() - t0 < 1
    assert not any(t.is_alive() for t in threads)


def test_shim_lineage_is_a_process_not_a_pid():
    """A shim's lineage follows (pid, start time): when an exit is lost (a full
    ring buffer) and the pid comes back as an unrelated process, that process
    is not the container's."""
    from tracer.model.events import Namespaces

    cid = "c" * 64
    r = ContainerResolver(None, Namespaces(mnt=1))
    shim = ("/usr/bin/containerd-shim-runc-v2", "-namespace", "moby", "-id", cid)
    r.on_exec(100, shim, start=1_000)
    r.on_fork(200, 100, 100, start=2_000, parent_start=1_000)        # runc, under the shim
    assert r.attribute_process("host/x", 5, 200, 2_000).source == "shim"
    # 200 exits unseen; an unrelated process gets pid 200, forked by pid 1
    r.on_fork(200, 1, 1, start=9_000, parent_start=10)
    assert r.attribute_process("host/x", 5, 200, 9_000) is None
    # the shim's own exit lost too: a new process 100 is nobody's
    assert r.attribute_process("host/x", 5, 100, 8_000) is None
    # and a child of that new 100 inherits nothing
    r.on_fork(300, 100, 100, start=9_500, parent_start=8_000)
    assert r.attribute_process("host/x", 5, 300, 9_500) is None


def test_a_shim_from_proc_matches_its_events_to_the_clock_tick():
    from tracer.model.events import Namespaces
    from tracer.state.proctable import Process

    cid = "d" * 64
    shim = Process(pid=100, ppid=1, comm="containerd-shim",
                   argv=("/usr/bin/containerd-shim-runc-v2", "-id", cid),
                   start_ns=5_000_000_000, ns=Namespaces(), from_proc=True)
    r = ContainerResolver(None, Namespaces(mnt=1))
    r.seed([shim], lambda pid: Namespaces())
    # the kernel's start time of the same shim: within the tick /proc rounds to
    assert r.attribute_process("host/x", 5, 100, 5_004_000_000).source == "shim"
    r.on_fork(101, 100, 100, start=6_000_000_000, parent_start=5_004_000_000)
    assert r.attribute_process("host/x", 5, 101, 6_000_000_000).source == "shim"


def _conmon(pid: int, cid: str, start: int, uid: int = 995):
    from tracer.model.events import Namespaces
    from tracer.state.proctable import Process

    storage = "/home/u/.local/share/containers/storage/vfs-containers"
    return Process(pid=pid, ppid=1, comm="conmon", uid=uid, from_proc=True,
                   argv=("/usr/bin/conmon", "-c", cid, "-n", "web", "-b",
                         f"{storage}/{cid}/userdata"),
                   start_ns=start, ns=Namespaces(mnt=50))


def test_a_rootless_container_teaches_its_mount_namespace_by_its_init():
    """No cgroup of its own: the container's init (PID 1 of its pid namespace),
    known by its monitor's lineage, teaches its mount namespace, so that a
    process entering it (nsenter) is the container's.  The monitor and runc,
    in the mount namespace every rootless container of the user shares, do
    not teach theirs."""
    cid = "e" * 64
    r = ContainerResolver(None, Namespaces(mnt=1))
    r.on_exec(100, _conmon(100, cid, 1_000).argv, start=1_000, uid=995)
    r.on_fork(101, 100, 100, start=2_000, parent_start=1_000)    # runc, in the user's shared mnt 50
    assert r.attribute_process("u/x", 50, 101, 2_000, vpid=101).source == "shim"
    r.on_fork(102, 101, 100, start=3_000, parent_start=1_000)    # the init, new mnt 60
    assert r.attribute_process("u/x", 60, 102, 3_000, vpid=1).source == "shim"
    joined = r.attribute_process("u/x", 60, 500, 9_000, vpid=7)  # nsenter'd: no lineage
    assert joined is not None and (joined.id, joined.source) == (cid, "namespace")
    assert r.attribute_process("u/x", 50, 501, 9_000, vpid=501) is None  # the shared one
    # its exit (init, vpid 1) forgets the namespace: the inode may be reused
    r.on_exit(102, 1, 60, joined, 3_000)
    assert r.attribute_process("u/x", 60, 502, 9_500, vpid=9) is None


def test_containers_running_at_start_are_known_by_their_monitors_lineage():
    from tracer.state.proctable import Process

    cid = "f" * 64
    init = Process(pid=201, ppid=200, comm="sleep", argv=("sleep", "60"), start_ns=7_000,
                   ns=Namespaces(mnt=70), vpid=1, from_proc=True)
    other = Process(pid=300, ppid=1, comm="bash", argv=("bash",), start_ns=8_000,
                    ns=Namespaces(mnt=1), from_proc=True)
    r = ContainerResolver(None, Namespaces(mnt=1))
    r.seed([init, other, _conmon(200, cid, 6_000)], lambda pid: Namespaces())  # any order
    c = r.attribute_process("u/x", 70, 201, 7_000, vpid=1)
    assert c is not None and (c.id, c.name, c.source) == (cid, "web", "shim")
    assert r.attribute_process("u/x", 1, 300, 8_000, vpid=300) is None


def test_an_engine_describing_containers_oddly_names_nothing_wrongly(engine, resolver_for):
    """Fields not of the engine's types are not taken (a name that is not a
    string is no name; a State that is not an object has no pid), at the
    start and per event."""
    engine.containers[CID1] = {"Id": CID1, "Name": 5, "Config": ["alpine"], "Image": {},
                               "State": "running"}
    engine.containers[CID2] = {"Id": CID2, "Name": "/two", "Config": {"Image": 7},
                               "Image": "sha256:x", "State": {"Pid": "12"}}
    r = resolver_for(engine)  # seeds from the engine's list and inspections
    one = r.attribute_process(f"docker/{CID1}", 0, 1)
    two = r.attribute_process(f"docker/{CID2}", 0, 1)
    assert (one.id, one.name, one.image) == (CID1, None, None)
    assert (two.id, two.name, two.image) == (CID2, "two", "sha256:x")


def test_what_traced_processes_name_is_remembered_within_bounds(monkeypatch):
    """Processes named conmon or containerd-shim name ids, and a delegated
    cgroup tree its user names: the resolver keeps the newest of each, up to
    its bound, and attributes the newest as before."""
    monkeypatch.setattr(containers, "REMEMBERED_MAX", 100)
    r = ContainerResolver(None, HOST)
    for i in range(1000):
        cid = f"{i:064x}"
        pid = 10_000 + i
        r.on_exec(pid, ("/usr/bin/conmon", "-c", cid, "-n", f"n{i}"), start=i)
        r.on_exec(pid + 5000, ("/usr/bin/containerd-shim-runc-v2", "-namespace", "x",
                               "-id", cid), start=i)
        r.attribute_process(f"/user.slice/docker-{cid}.scope", 0, 1)
        r.on_exit(pid, pid, 0, None, i)
        r.on_exit(pid + 5000, pid + 5000, 0, None, i)
    sizes = r.remembered()
    assert max(sizes.values()) <= 100 and sizes["ids"] == sizes["cgroups"] == 100, sizes
    newest = f"{999:064x}"
    r.on_exec(1, ("/usr/bin/conmon", "-c", newest, "-n", "n999"), start=1)
    c = r.attribute_process("/", 0, 1, start=1)
    assert c is not None and (c.runtime, c.id, c.name) == ("podman", newest, "n999")


def test_a_process_named_conmon_does_not_rename_a_docker_container(engine, resolver_for):
    """The monitor's -n names a podman container; a Docker container with the
    same id keeps the engine's name, and the lookalike's own processes are
    not given it either."""
    r = resolver_for(engine)
    engine.create(CID1, "real", announce=False)  # after the start: not yet known
    r.on_exec(4000, ("conmon", "-c", CID1, "-n", "evil"), start=1, uid=1000)
    real = r.attribute_process(f"system.slice/docker-{CID1}.scope", 0, 4001)
    assert (real.runtime, real.name, real.image) == ("docker", "real", "alpine")
    fake = r.attribute_process("/user.slice", 0, 4000, start=1)
    assert (fake.runtime, fake.id, fake.name) == ("podman", CID1, None)


def test_a_users_storage_answers_for_its_own_monitors_ids_only(tmp_path, monkeypatch):
    """A user's list is read for the ids its monitors named (a list full of
    other ids names nothing else), at most 2 MiB of it; root's up to 16."""
    monkeypatch.setattr(containers, "RETRY_INTERVAL", 0)
    mine, other = f"{1:064x}", f"{2:064x}"
    users = tmp_path / "containers.json"
    users.write_text(json.dumps([_entry(1, names=["mine"]), _entry(2, names=["claimed"])]))
    os.chown(users, NOBODY, NOBODY)
    state = PodmanState(str(tmp_path / "none.json"))
    state.follow(str(users), NOBODY, mine)
    assert state.lookup(other) is None
    assert state.lookup(mine) == ("mine", "localhost/alpine:latest")

    big = tmp_path / "big.json"
    entries = [_entry(i) for i in range(3, 3 + 6000)]
    big.write_text(json.dumps(entries))
    assert 2 << 20 < big.stat().st_size < 16 << 20
    for owner, found in ((NOBODY, None), (0, ("ratio-probe", "localhost/alpine:latest"))):
        os.chown(big, owner, owner)
        os.utime(big, ns=(owner + 1, owner + 1))  # read again
        state.follow(str(big), owner, f"{6002:064x}")  # the newest
        assert state.lookup(f"{6002:064x}") == found


def test_the_event_path_asks_the_engine_so_often_at_most(engine, resolver_for):
    """Each question waits for the engine's answer: past ASKS_PER_SECOND in a
    second, ids are asked by the retry thread instead (cgroups named like
    Docker's in a user's delegated tree make up as many ids as they like)."""
    r = resolver_for(engine, retry_interval=0.1)
    ids = [f"{i:064x}" for i in range(100, 160)]
    for cid in ids:
        engine.create(cid, f"c{cid[-2:]}", announce=False)  # known, not yet named
    names = [_name(r, cid) for cid in ids]
    now = containers.ASKS_PER_SECOND
    assert names[:now] == [f"c{cid[-2:]}" for cid in ids[:now]]
    assert names[now:] == [None] * (len(ids) - now)
    assert _eventually(lambda: all(_name(r, cid) == f"c{cid[-2:]}" for cid in ids))
