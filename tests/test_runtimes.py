"""Runtimes other than Docker, started for real: each container's processes
attributed to it, checked against the runtime's own word and /proc."""

from __future__ import annotations

import subprocess

import pytest
from conftest import proc_ns

from tracer.model.events import ExecEvent

pytestmark = pytest.mark.docker  # containerd runs beside dockerd (docker_engine)

CTR_NS = "ctrtrace-test"


def ctr(*args: str, check: bool = True) -> str:
    r = subprocess.run(["ctr", "-n", CTR_NS, *args], capture_output=True, text=True, timeout=60)
    if check and r.returncode != 0:
        raise AssertionError(f"ctr {' '.join(args)} failed: {r.stderr.strip()}")
    return r.stdout


@pytest.fixture
def ctr_image(docker_engine):
    """alpine in containerd's own namespace, imported offline from Docker's copy."""
    if "docker.io/library/alpine:latest" not in ctr("images", "ls", "-q").split():
        save = subprocess.run(["docker", "save", "alpine:latest"], capture_output=True,
                              check=True, timeout=120)
        subprocess.run(["ctr", "-n", CTR_NS, "images", "import", "-"], input=save.stdout,
                       capture_output=True, check=True, timeout=120)
    return "docker.io/library/alpine:latest"


def _ctr_rm(name: str) -> None:
    ctr("tasks", "kill", "-s", "KILL", name, check=False)
    for _ in range(50):
        if name not in ctr("tasks", "ls", "-q", check=False).split():
            break
        subprocess.run(["sleep", "0.1"])
    ctr("containers", "rm", name, check=False)


def test_ctr_run_is_attributed_by_its_cgroup(capture, ctr_image):
    name = "ctrtrace-ctr"
    _ctr_rm(name)
    cap = capture()
    try:
        ctr("run", "-d", ctr_image, name, "sleep", "60")
        pid = int(next(line.split()[1] for line in ctr("tasks", "ls").splitlines()
                       if line.split()[:1] == [name]))
        ev = cap.wait_for(lambda e: isinstance(e, ExecEvent) and e.pid == pid and not e.ret,
                          timeout=10)
        truth = proc_ns(pid)
        cap.finish()
        assert ev.argv == ("sleep", "60") and ev.vpid == 1
        assert ev.ns == truth
        c = ev.container
        assert c is not None and (c.runtime, c.id, c.name, c.source) == (
            "containerd", name, name, "cgroup")
        assert ev.cgroup == f"{CTR_NS}/{name}"
        # the shim that runs it is the container's too, by its lineage
        shims = [e for e in cap.events if isinstance(e, ExecEvent) and e.argv
                 and e.argv[0].endswith("containerd-shim-runc-v2") and name in e.argv]
        assert shims and all(e.container is not None and e.container.id == name for e in shims)
    finally:
        _ctr_rm(name)


PODMAN_NAME = "ctrtrace-podman"
# This machine's hard limits are below podman's default rlimits, which the
# OCI runtime then cannot raise, and crun refuses cgroup v1 hosts with v2
# controllers mounted (hybrid): the test asks for limits below the hard
# ones and for runc, which podman supports as well.
PODMAN_RUN = ["podman", "run", "-d", "--runtime", "runc", "--ulimit", "nofile=1024:1024",
              "--ulimit", "nproc=1024:1024"]


def podman(*args: str, check: bool = True) -> str:
    r = subprocess.run(["podman", *args], capture_output=True, text=True, timeout=120)
    if check and r.returncode != 0:
        raise AssertionError(f"podman {' '.join(args)} failed: {r.stderr.strip()}")
    return r.stdout.strip()


@pytest.fixture
def podman_image(docker_engine):
    """alpine in podman's storage, loaded offline from Docker's copy."""
    if "localhost/alpine:latest" not in podman("images", "--format", "{{.Repository}}:{{.Tag}}"):
        save = subprocess.run(["docker", "save", "alpine:latest"], capture_output=True,
                              check=True, timeout=120)
        subprocess.run(["podman", "load"], input=save.stdout, capture_output=True, check=True,
                       timeout=120)
    return "localhost/alpine:latest"


def test_podman_run_is_attributed_with_its_name_and_image(capture, podman_image):
    podman("rm", "-f", PODMAN_NAME, check=False)
    cap = capture()
    try:
        cid = podman(*PODMAN_RUN[1:], "--name", PODMAN_NAME, podman_image, "sleep", "60")
        pid = int(podman("inspect", "-f", "{{.State.Pid}}", PODMAN_NAME))
        ev = cap.wait_for(lambda e: isinstance(e, ExecEvent) and e.pid == pid and not e.ret,
                          timeout=10)
        truth = proc_ns(pid)
        cap.finish()
        assert ev.argv == ("sleep", "60") and ev.vpid == 1 and ev.ns == truth
        c = ev.container
        assert c is not None and (c.runtime, c.id, c.name, c.image, c.source) == (
            "podman", cid, PODMAN_NAME, podman_image, "cgroup")
        # its monitor, conmon, is the container's by its command line and lineage
        monitors = [e for e in cap.events if isinstance(e, ExecEvent) and e.argv
                    and e.argv[0].endswith("conmon") and "-c" in e.argv]
        assert monitors and all(e.container is not None and e.container.id == cid
                                and e.container.source == "shim" for e in monitors)
    finally:
        podman("rm", "-f", PODMAN_NAME, check=False)
