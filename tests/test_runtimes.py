"""Runtimes other than Docker, started for real: each container's processes
attributed to it, checked against the runtime's own word and /proc."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile

import pytest
from conftest import NOBODY, lsns_agrees, lsns_of, nspid, proc_ns

from tracer.model.contract import ID_UNMAPPED
from tracer.model.events import ExecEvent
from tracer.output.text import TextRenderer

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
        levels, listed = nspid(pid), lsns_of(pid)
        cap.finish()
        assert ev.argv == ("sleep", "60") and ev.vpid == 1
        assert ev.vpids == levels and len(levels) == 2 and lsns_agrees(ev.ns, listed)
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
    podman("rm", "-f", "-t", "0", PODMAN_NAME, check=False)
    cap = capture()
    try:
        cid = podman(*PODMAN_RUN[1:], "--name", PODMAN_NAME, podman_image, "sleep", "60")
        pid = int(podman("inspect", "-f", "{{.State.Pid}}", PODMAN_NAME))
        ev = cap.wait_for(lambda e: isinstance(e, ExecEvent) and e.pid == pid and not e.ret,
                          timeout=10)
        truth = proc_ns(pid)
        levels, listed = nspid(pid), lsns_of(pid)
        cap.finish()
        assert ev.argv == ("sleep", "60") and ev.vpid == 1 and ev.ns == truth
        assert ev.vpids == levels and len(levels) == 2 and lsns_agrees(ev.ns, listed)
        c = ev.container
        assert c is not None and (c.runtime, c.id, c.name, c.image, c.source) == (
            "podman", cid, PODMAN_NAME, podman_image, "cgroup")
        # its monitor, conmon, is the container's by its command line and lineage
        monitors = [e for e in cap.events if isinstance(e, ExecEvent) and e.argv
                    and e.argv[0].endswith("conmon") and "-c" in e.argv]
        assert monitors and all(e.container is not None and e.container.id == cid
                                and e.container.source == "shim" for e in monitors)
    finally:
        podman("rm", "-f", "-t", "0", PODMAN_NAME, check=False)


ROOTLESS_USER = "ctrtrace-rootless"  # made by the set-up (./run), with subordinate ids
ROOTLESS_NAME = "ctrtrace-rootless-web"


@pytest.fixture
def rootless(docker_engine):
    """podman as the unprivileged set-up user: run(*args) -> its output.
    Its runtime directory is made here (no login session makes one), and
    alpine loaded into its own storage, offline."""
    try:
        user = pwd.getpwnam(ROOTLESS_USER)
    except KeyError:
        pytest.fail(f"no user {ROOTLESS_USER}: the set-up makes it (sudo ./run setup)",
                    pytrace=False)
    runtime_dir = f"/run/user/{user.pw_uid}"
    if not os.path.isdir(runtime_dir):
        os.makedirs(runtime_dir, mode=0o700)
        os.chown(runtime_dir, user.pw_uid, user.pw_gid)
    env = ["env", f"HOME={user.pw_dir}", f"XDG_RUNTIME_DIR={runtime_dir}",
           "PATH=/usr/sbin:/usr/bin:/sbin:/bin"]

    def run(*args: str, check: bool = True, stdin: bytes | None = None) -> str:
        r = subprocess.run(["runuser", "-u", ROOTLESS_USER, "--", *env, "podman", *args],
                           input=stdin, capture_output=True, timeout=180, cwd="/")
        if check and r.returncode != 0:
            raise AssertionError(f"podman (rootless) {' '.join(args)} failed: "
                                 f"{r.stderr.decode(errors='replace').strip()}")
        return r.stdout.decode(errors="replace").strip()

    if "localhost/alpine:latest" not in run("images", "--format", "{{.Repository}}:{{.Tag}}"):
        save = subprocess.run(["docker", "save", "alpine:latest"], capture_output=True,
                              check=True, timeout=120)
        run("load", stdin=save.stdout)
    run.uid, run.gid = user.pw_uid, user.pw_gid  # type: ignore[attr-defined]
    return run


def test_rootless_podman_is_attributed_with_the_ids_it_sees(capture, rootless):
    """A rootless container: its own user namespace maps the user to root
    inside.  No cgroup of its own here (cgroup v1 without systemd): its
    monitor's lineage ties it to the container, its storage names it."""
    rootless("rm", "-f", "-t", "0", ROOTLESS_NAME, check=False)
    cap = capture()
    try:
        cid = rootless(*PODMAN_RUN[1:], "--network", "none", "--name", ROOTLESS_NAME,
                       "localhost/alpine:latest", "sleep", "60")
        pid = int(rootless("inspect", "-f", "{{.State.Pid}}", ROOTLESS_NAME))
        ev = cap.wait_for(lambda e: isinstance(e, ExecEvent) and e.pid == pid and not e.ret,
                          timeout=20)
        truth = proc_ns(pid)
        levels, listed = nspid(pid), lsns_of(pid)
        with open(f"/proc/{pid}/status") as f:
            status = dict(line.split(":", 1) for line in f if ":" in line)
        inside = rootless("exec", ROOTLESS_NAME, "sh", "-c", "id -u; id -g").split()
        cap.finish()
    finally:
        rootless("rm", "-f", "-t", "0", ROOTLESS_NAME, check=False)
    assert ev.argv == ("sleep", "60") and ev.ns == truth and lsns_agrees(ev.ns, listed)
    assert ev.vpids == levels
    assert ev.vpids == tuple(int(n) for n in status["NSpid"].split()) == (pid, 1)
    # the host's ids (/proc), and the ones the process sees (podman exec id)
    assert (ev.uid, ev.gid) == (int(status["Uid"].split()[0]), int(status["Gid"].split()[0]))
    assert (ev.uid, ev.gid) == (rootless.uid, rootless.gid)  # type: ignore[attr-defined]
    assert (ev.ns_uid, ev.ns_gid) == tuple(int(n) for n in inside) == (0, 0)
    assert truth.user != cap.session.header.host_ns.user
    c = ev.container
    assert c is not None and (c.runtime, c.id, c.name, c.image) == (
        "podman", cid, ROOTLESS_NAME, "localhost/alpine:latest")
    line = TextRenderer(cap.session.header.host_ns, cap.session.header.start_ktime_ns).line(ev)
    assert "+user" in line and f"id 0:0 (host {ev.uid}:{ev.gid})" in line, line
    assert line.endswith(f"@podman:{ROOTLESS_NAME}"), line
    # podman exec: its own monitor's lineage ties the process that joins to the container
    joined = [e for e in cap.events if isinstance(e, ExecEvent) and not e.ret
              and e.argv == ("sh", "-c", "id -u; id -g")]
    assert joined and all(e.container is not None and e.container.id == cid
                          and e.ns.pid == ev.ns.pid and (e.ns_uid, e.ns_gid) == (0, 0)
                          for e in joined), joined


def test_a_rootless_container_running_before_the_trace_and_a_process_entering_it(
        capture, rootless):
    """Known from /proc at the start by its monitor's lineage, and its mount
    namespace taught by its init: root entering it with nsenter is its."""
    rootless("rm", "-f", "-t", "0", ROOTLESS_NAME, check=False)
    try:
        cid = rootless(*PODMAN_RUN[1:], "--network", "none", "--name", ROOTLESS_NAME,
                       "localhost/alpine:latest", "sleep", "60")
        pid = int(rootless("inspect", "-f", "{{.State.Pid}}", ROOTLESS_NAME))
        cap = capture()
        init = next(p for p in cap.session.table if p.pid == pid)
        assert init.container is not None and (init.container.id, init.container.name) == (
            cid, ROOTLESS_NAME)
        subprocess.run(["nsenter", "-t", str(pid), "-m", "-p", "-U", "--preserve-credentials",
                        "true"], check=True, timeout=30)
        ev = cap.wait_for(lambda e: isinstance(e, ExecEvent) and not e.ret
                          and e.argv == ("true",), timeout=10)
        cap.finish()
    finally:
        rootless("rm", "-f", "-t", "0", ROOTLESS_NAME, check=False)
    c = ev.container
    assert c is not None and (c.id, c.name, c.source) == (cid, ROOTLESS_NAME, "namespace")
    # root on the host, entering with its own ids: the namespace maps none of them
    assert (ev.uid, ev.ns_uid) == (0, ID_UNMAPPED) and ev.ns.mnt == init.ns.mnt


def test_a_users_own_monitor_naming_a_hostile_storage(capture):
    """Anyone can run a process called conmon whose bundle names a storage of
    their own: a list nested past any parser's depth is not read as podman's,
    and the trace goes on (it ended in a RecursionError once).  The processes
    are still the id's, by lineage.  (Other hostile lists: test_containers.)"""
    cid = "c" * 64
    home = tempfile.mkdtemp(prefix="ctrtrace-storage-")
    try:
        os.chmod(home, 0o755)
        bundle = os.path.join(home, "vfs-containers", cid, "userdata")
        os.makedirs(bundle)
        with open(os.path.join(home, "vfs-containers", "containers.json"), "w") as f:
            f.write("[" * 100_000)
        for root, dirs, files in os.walk(home):
            for name in dirs + files:
                os.chown(os.path.join(root, name), NOBODY, NOBODY)
        cap = capture()
        subprocess.run(["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups",
                        "bash", "-c", 'exec -a conmon sh -c "sleep 0.1; true" -c "$0" -b "$1"',
                        cid, bundle], check=True, timeout=30)
        ev = cap.wait_for(lambda e: isinstance(e, ExecEvent) and e.argv == ("sleep", "0.1"),
                          timeout=10)
        cap.finish()
    finally:
        shutil.rmtree(home)
    c = ev.container
    assert c is not None and (c.runtime, c.id, c.name, c.image) == ("podman", cid, None, None)
    assert ev.uid == NOBODY


NSPAWN_MACHINE = "ctrtrace-ns"


@pytest.fixture
def busybox_root(tmp_path):
    """A root directory holding busybox: enough of a machine for nspawn."""
    root = tmp_path / "root"
    for d in ("bin", "etc", "proc", "sys", "dev", "tmp", "run", "var", "usr"):
        (root / d).mkdir(parents=True)
    shutil.copy("/bin/busybox", root / "bin" / "busybox")
    for tool in ("sh", "sleep", "cat"):
        (root / "bin" / tool).symlink_to("busybox")
    (root / "etc" / "os-release").write_text("ID=busybox\n")
    return root


@pytest.mark.root
def test_systemd_nspawn_without_systemd_is_attributed_by_its_lineage(capture, busybox_root):
    """PID 1 here is not systemd: nspawn registers no machine and makes no
    cgroup (--register=no --keep-unit), so its machine is known by nspawn's
    own command line and the lineage below it."""
    cap = capture()
    nspawn = subprocess.Popen(["systemd-nspawn", "-D", str(busybox_root), "--register=no",
                               "--keep-unit", "-M", NSPAWN_MACHINE, "-q", "/bin/sleep", "1"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        ev = cap.wait_for(lambda e: isinstance(e, ExecEvent) and not e.ret
                          and e.argv == ("/bin/sleep", "1"), timeout=15)
        truth = proc_ns(ev.pid)
        levels, listed = nspid(ev.pid), lsns_of(ev.pid)
        nspawn.wait(timeout=30)
        cap.finish()
    finally:
        if nspawn.poll() is None:
            nspawn.kill()
    assert ev.vpid == 1 and ev.ns == truth
    assert ev.vpids == levels and len(levels) == 2 and lsns_agrees(ev.ns, listed)
    assert ev.ns.mnt != cap.session.header.host_ns.mnt
    assert ev.ns.pid != cap.session.header.host_ns.pid
    c = ev.container
    assert c is not None and (c.runtime, c.id, c.name) == (
        "systemd-nspawn", NSPAWN_MACHINE, NSPAWN_MACHINE)
    assert c.label == f"systemd-nspawn:{NSPAWN_MACHINE}"
    # the machine's init is its by nspawn's lineage when it is made; from then
    # on its mount namespace, which it taught, says so first
    fork = next(e for e in cap.events if e.type == "fork" and e.pid == ev.pid)
    assert fork.container is not None and fork.container.source == "shim"
    assert c.source == "namespace"


LXC_NAME = "ctrtrace-lxc"


@pytest.fixture
def lxc_container():
    """A busybox container made offline by LXC's busybox template, with no
    network device (its default bridge, lxcbr0, is not set up here)."""
    subprocess.run(["lxc-destroy", "-n", LXC_NAME, "-f"], capture_output=True)
    subprocess.run(["lxc-create", "-n", LXC_NAME, "-t", "busybox"], capture_output=True,
                   check=True, timeout=120)
    config = f"/var/lib/lxc/{LXC_NAME}/config"
    with open(config) as f:
        lines = [line for line in f if not line.startswith("lxc.net.0.")]
    with open(config, "w") as f:
        f.writelines(lines + ["lxc.net.0.type = empty\n"])
    yield LXC_NAME
    subprocess.run(["lxc-stop", "-n", LXC_NAME, "-k"], capture_output=True, timeout=60)
    subprocess.run(["lxc-destroy", "-n", LXC_NAME, "-f"], capture_output=True, timeout=60)


@pytest.mark.root
def test_lxc_start_is_attributed_by_its_payload_cgroup(capture, lxc_container):
    cap = capture()
    subprocess.run(["lxc-start", "-n", lxc_container, "-d"], check=True, timeout=60)
    pid = int(subprocess.run(["lxc-info", "-n", lxc_container, "-pH"], capture_output=True,
                             text=True, check=True).stdout)
    ev = cap.wait_for(lambda e: isinstance(e, ExecEvent) and e.pid == pid and not e.ret,
                      timeout=15)
    truth = proc_ns(pid)
    levels, listed = nspid(pid), lsns_of(pid)
    cap.finish()
    assert ev.vpid == 1 and ev.ns == truth
    assert ev.vpids == levels and len(levels) == 2 and lsns_agrees(ev.ns, listed)
    with open(f"/proc/{pid}/cgroup") as f:
        assert f"/lxc.payload.{lxc_container}" in f.read()
    c = ev.container
    assert c is not None and (c.runtime, c.id, c.name, c.source) == (
        "lxc", lxc_container, lxc_container, "cgroup")
