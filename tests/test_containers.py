"""Container attribution logic, without a kernel: cgroup names, shims, recorded traces."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tracer.containers import ContainerResolver, container_from_cgroup, shim_container
from tracer.events import Header, event_from_json

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
])
def test_container_from_cgroup(cgroup, want):
    assert container_from_cgroup(cgroup) == want


def test_shim_command_line():
    argv = ["/usr/bin/containerd-shim-runc-v2", "-namespace", "moby", "-id", ID,
            "-address", "/run/containerd/containerd.sock"]
    assert shim_container(argv) == ("moby", ID)
    assert shim_container(["/usr/bin/containerd-shim-runc-v2", "-namespace", "k8s.io",
                           "-address", "x", "-publish-binary", "y", "-id", "abc", "start"]) == ("k8s.io", "abc")
    assert shim_container(["runc", "-id", ID]) is None
    assert shim_container(["/usr/bin/containerd-shim-runc-v2", "-v"]) is None


def _reattribute(*names: str):
    """Run one resolver over recorded traces with no engine: ids come from the kernel's facts."""
    r = None
    out = []
    for name in names:
        lines = [json.loads(l) for l in (DATA / name).read_text().splitlines()]
        if r is None:
            r = ContainerResolver(None, Header.from_json(lines[0]).host_ns)
        for d in lines[1:-1]:
            ev = event_from_json(d)
            recorded = ev.container
            ev.container = r.attribute(ev)
            out.append((ev, recorded))
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
    assert any(e.type == "exec" and e.argv[:1] == ["runc"] for e in by_source["shim"])
    assert any(e.type == "exec" and e.argv == ["sleep", "900"] for e in by_source["cgroup"])


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
