#!/usr/bin/env python3
"""How soon after a runtime's start command returns is the trace of the start complete?

    sudo python3 bench/container_start.py [--rounds 5] [--ctrtrace CMD]
                               [--runtimes docker,podman,podman-rootless,ctr,lxc,nspawn]

One ctrtrace --json runs throughout (output to a file). Each round starts a
container with each runtime (docker run -d, podman run -d as root and as
the set-up's unprivileged user, ctr run -d,
lxc-start -d: they return once the container runs; systemd-nspawn stays in
the foreground and is started in the background), notes when the command
returned, and watches the output until the workload's exec (attributed to
that container by name) is written. Reported: how long after the command
returned the trace had it (for nspawn, which does not return, nothing),
how long after the exec itself (the exec's kernel time is CLOCK_MONOTONIC,
as time.monotonic() is), and the start as the kernel saw it: from the first
event attributed to the container (its shim's, monitor's or runtime's exec,
or for LXC the fork of its init) to the workload's exec.
Images come from Docker's alpine, imported offline as the tests do.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import signal
import statistics
import subprocess
import tempfile
import time

PODMAN_LIMITS = ["--runtime", "runc", "--ulimit", "nofile=1024:1024", "--ulimit",
                 "nproc=1024:1024"]  # as tests/test_runtimes.py says why


def _quiet(*argv: str) -> None:
    subprocess.run(argv, capture_output=True, timeout=120)


class Runtime:
    """How one runtime starts a container named n and takes it away."""

    def __init__(self, name: str, workload: list[str], detached: bool = True) -> None:
        self.name, self.workload, self.detached = name, workload, detached

    def prepare(self, n: str, work: str) -> None: ...
    def start(self, n: str, work: str) -> list[str]: raise NotImplementedError
    def remove(self, n: str) -> None: ...


class Docker(Runtime):
    def __init__(self) -> None:
        super().__init__("docker", ["sleep", "30"])

    def start(self, n, work):
        return ["docker", "run", "--rm", "-d", "--name", n, "alpine", "sleep", "30"]

    def remove(self, n):
        _quiet("docker", "rm", "-f", n)


class Podman(Runtime):
    def __init__(self) -> None:
        super().__init__("podman", ["sleep", "30"])

    def prepare(self, n, work):
        images = subprocess.run(["podman", "images", "-q", "localhost/alpine:latest"],
                                capture_output=True, text=True).stdout
        if not images.strip():
            save = subprocess.run(["docker", "save", "alpine:latest"], capture_output=True,
                                  check=True)
            subprocess.run(["podman", "load"], input=save.stdout, capture_output=True, check=True)

    def start(self, n, work):
        return ["podman", "run", "-d", *PODMAN_LIMITS, "--name", n, "alpine", "sleep", "30"]

    def remove(self, n):
        _quiet("podman", "rm", "-f", "-t", "0", n)


class RootlessPodman(Runtime):
    """podman as the set-up's unprivileged user (./run makes it)."""

    USER = "ctrtrace-rootless"

    def __init__(self) -> None:
        super().__init__("podman-rootless", ["sleep", "30"])

    def _as_user(self, *argv: str) -> list[str]:
        import pwd

        user = pwd.getpwnam(self.USER)
        runtime_dir = f"/run/user/{user.pw_uid}"
        if not os.path.isdir(runtime_dir):
            os.makedirs(runtime_dir, mode=0o700)
            os.chown(runtime_dir, user.pw_uid, user.pw_gid)
        return ["runuser", "-u", self.USER, "--", "env", f"HOME={user.pw_dir}",
                f"XDG_RUNTIME_DIR={runtime_dir}", *argv]

    def prepare(self, n, work):
        images = subprocess.run(self._as_user("podman", "images", "-q", "localhost/alpine:latest"),
                                capture_output=True, text=True, cwd="/").stdout
        if not images.strip():
            save = subprocess.run(["docker", "save", "alpine:latest"], capture_output=True,
                                  check=True)
            subprocess.run(self._as_user("podman", "load"), input=save.stdout,
                           capture_output=True, check=True, cwd="/")

    def start(self, n, work):
        return self._as_user("podman", "run", "-d", *PODMAN_LIMITS, "--network", "none",
                             "--name", n, "localhost/alpine:latest", "sleep", "30")

    def remove(self, n):
        subprocess.run(self._as_user("podman", "rm", "-f", "-t", "0", n), capture_output=True,
                       timeout=120, cwd="/")


class Ctr(Runtime):
    NS = "ctrtrace-bench"

    def __init__(self) -> None:
        super().__init__("ctr", ["sleep", "30"])

    def prepare(self, n, work):
        listed = subprocess.run(["ctr", "-n", self.NS, "images", "ls", "-q"], capture_output=True,
                                text=True).stdout.split()
        if "docker.io/library/alpine:latest" not in listed:
            save = subprocess.run(["docker", "save", "alpine:latest"], capture_output=True,
                                  check=True)
            subprocess.run(["ctr", "-n", self.NS, "images", "import", "-"], input=save.stdout,
                           capture_output=True, check=True)

    def start(self, n, work):
        return ["ctr", "-n", self.NS, "run", "-d", "docker.io/library/alpine:latest", n,
                "sleep", "30"]

    def remove(self, n):
        _quiet("ctr", "-n", self.NS, "tasks", "kill", "-s", "KILL", n)
        time.sleep(0.3)
        _quiet("ctr", "-n", self.NS, "containers", "rm", n)


class Lxc(Runtime):
    def __init__(self) -> None:
        super().__init__("lxc", ["/sbin/init"])

    def prepare(self, n, work):
        _quiet("lxc-destroy", "-n", n, "-f")
        subprocess.run(["lxc-create", "-n", n, "-t", "busybox"], capture_output=True, check=True)
        config = f"/var/lib/lxc/{n}/config"
        with open(config) as f:
            lines = [line for line in f if not line.startswith("lxc.net.0.")]
        with open(config, "w") as f:
            f.writelines(lines + ["lxc.net.0.type = empty\n"])

    def start(self, n, work):
        return ["lxc-start", "-n", n, "-d"]

    def remove(self, n):
        _quiet("lxc-stop", "-n", n, "-k")
        _quiet("lxc-destroy", "-n", n, "-f")


class Nspawn(Runtime):
    def __init__(self) -> None:
        super().__init__("nspawn", ["/bin/sleep", "30"], detached=False)

    def prepare(self, n, work):
        root = os.path.join(work, "root")
        if not os.path.isdir(root):
            for d in ("bin", "etc", "proc", "sys", "dev", "tmp", "run", "var", "usr"):
                os.makedirs(os.path.join(root, d))
            shutil.copy("/bin/busybox", os.path.join(root, "bin", "busybox"))
            os.symlink("busybox", os.path.join(root, "bin", "sleep"))
            with open(os.path.join(root, "etc", "os-release"), "w") as f:
                f.write("ID=busybox\n")

    def start(self, n, work):
        return ["systemd-nspawn", "-D", os.path.join(work, "root"), "--register=no",
                "--keep-unit", "-M", n, "-q", "/bin/sleep", "30"]

    def remove(self, n):
        _quiet("pkill", "-f", f"systemd-nspawn .*-M {n} ")


RUNTIMES = {r.name: r for r in (Docker(), Podman(), RootlessPodman(), Ctr(), Lxc(), Nspawn())}


def wait_ready(tracer: subprocess.Popen, path: str) -> None:
    for n in range(2000):
        tag = f"ctrtrace-probe-{n}"
        subprocess.run(["/bin/true", tag])
        time.sleep(0.005)
        with open(path, "rb") as f:
            if tag.encode() in f.read():
                return
        if tracer.poll() is not None:
            raise SystemExit("ctrtrace exited early")
    raise SystemExit("ctrtrace did not become ready")


def _lines(path: str) -> list[dict]:
    out = []
    with open(path) as f:
        for line in f:
            if line.endswith("\n"):
                out.append(json.loads(line))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--ctrtrace", default="ctrtrace")
    ap.add_argument("--runtimes", default="docker")
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root")
    runtimes = [RUNTIMES[r] for r in args.runtimes.split(",")]
    work = tempfile.mkdtemp(prefix="ctrtrace-bench-")
    out = os.path.join(work, "trace.jsonl")
    results: dict[str, tuple[list, list, list]] = {r.name: ([], [], []) for r in runtimes}
    with open(out, "wb") as f:
        tracer = subprocess.Popen(shlex.split(args.ctrtrace) + ["--json"], stdout=f,
                                  stderr=subprocess.DEVNULL)
    try:
        wait_ready(tracer, out)
        for i in range(args.rounds):
            for rt in runtimes:
                n = f"ctrtrace-bench-{rt.name}-{i}"
                rt.remove(n)
                rt.prepare(n, work)
                started = time.monotonic()
                if rt.detached:
                    subprocess.run(rt.start(n, work), capture_output=True, check=True, timeout=120,
                                   cwd="/")
                    proc = None
                else:
                    proc = subprocess.Popen(rt.start(n, work), stdout=subprocess.DEVNULL,
                                            stderr=subprocess.DEVNULL)
                returned = time.monotonic()
                workload = None
                # cheap text tests first: parsing every line of a growing file
                # at each look would be the bench's delay, not the trace's
                argv = json.dumps(rt.workload, separators=(",", ":"))
                key_argv, key_name = f'"argv":{argv}'.encode(), f'"name":"{n}"'.encode()
                done = 0
                while workload is None and time.monotonic() - started < 20:
                    with open(out, "rb") as f:
                        f.seek(done)
                        chunk = f.read()
                    end = chunk.rfind(b"\n") + 1
                    for line in chunk[:end].splitlines():
                        if key_argv in line and key_name in line and b'"type":"exec"' in line:
                            ev = json.loads(line)
                            if not ev.get("ret"):
                                workload = ev
                                break
                    done += end
                    if workload is None:
                        time.sleep(0.001)
                seen = time.monotonic()
                if workload is None:
                    raise SystemExit(f"{rt.name} round {i}: workload exec not attributed to {n}")
                first = min(ev["ktime_ns"] for ev in _lines(out)
                            if ev.get("type") != "header" and (ev.get("container") or {}).get(
                                "name") == n)
                after_return, after_exec, kernel = results[rt.name]
                if rt.detached:
                    after_return.append(seen - returned)
                after_exec.append(seen - workload["ktime_ns"] / 1e9)
                kernel.append((workload["ktime_ns"] - first) / 1e9)
                print(f"{rt.name} round {i + 1}: "
                      + (f"complete {1000 * (seen - returned):.1f} ms after the command returned; "
                         if rt.detached else "")
                      + f"{1000 * after_exec[-1]:.1f} ms after the exec; start in the kernel "
                      f"{1000 * kernel[-1]:.1f} ms", flush=True)
                rt.remove(n)
                if proc is not None:
                    proc.kill()
                    proc.wait()
    finally:
        tracer.send_signal(signal.SIGINT)
        tracer.wait(timeout=30)
        summary = _lines(out)[-1]
        shutil.rmtree(work, ignore_errors=True)
    for name, (after_return, after_exec, kernel) in results.items():
        if not after_exec:
            continue
        ret = (f"{1000 * statistics.median(after_return):.1f} ms after the command returned "
               f"(max {1000 * max(after_return):.1f}), " if after_return else "")
        print(f"{name}: median {ret}{1000 * statistics.median(after_exec):.1f} ms after the "
              f"exec (max {1000 * max(after_exec):.1f}); start in the kernel "
              f"{1000 * statistics.median(kernel):.1f} ms")
    print(f"lost {summary['lost']}")


if __name__ == "__main__":
    main()
