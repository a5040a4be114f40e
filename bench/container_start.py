#!/usr/bin/env python3
"""How soon after `docker run -d` returns is the trace of the container start complete?

    sudo python3 bench/container_start.py [--rounds 5] [--ctrtrace CMD]

One ctrtrace --json runs throughout (output to a file). Each round starts
`docker run --rm -d --name ctrtrace-bench-N alpine sleep 30`, notes when the
command returned, and watches the output until the workload's exec (sleep 30,
attributed to that container by name) is written. Also reported: the start
as the kernel saw it, from the shim's exec to the workload's exec.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import signal
import statistics
import subprocess
import tempfile
import time


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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--ctrtrace", default="ctrtrace")
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root")
    out = tempfile.NamedTemporaryFile(prefix="ctrtrace-bench-", suffix=".jsonl", delete=False)
    tracer = subprocess.Popen(shlex.split(args.ctrtrace) + ["--json"], stdout=out,
                              stderr=subprocess.DEVNULL)
    wait_ready(tracer, out.name)
    after_return, kernel_start = [], []
    try:
        for i in range(args.rounds):
            name = f"ctrtrace-bench-{i}"
            subprocess.run(["docker", "rm", "-f", name], capture_output=True)
            r = subprocess.run(["docker", "run", "--rm", "-d", "--name", name, "alpine", "sleep", "30"],
                               capture_output=True, text=True, check=True)
            returned = time.monotonic()
            cid = r.stdout.strip()
            workload = None
            while workload is None and time.monotonic() - returned < 10:
                with open(out.name) as f:
                    for line in f:
                        if cid in line and '"argv":["sleep","30"]' in line:
                            workload = json.loads(line)
                            break
                if workload is None:
                    time.sleep(0.002)
            seen = time.monotonic()
            if workload is None or (workload["container"] or {}).get("name") != name:
                raise SystemExit(f"round {i}: workload exec not attributed to {name}")
            with open(out.name) as f:
                shim = next(json.loads(line) for line in f if '"type":"exec"' in line and
                            "containerd-shim" in line and cid in line)
            after_return.append(seen - returned)
            kernel_start.append((workload["ktime_ns"] - shim["ktime_ns"]) / 1e9)
            print(f"round {i + 1}: trace complete {1000 * (seen - returned):.1f} ms after docker run "
                  f"returned; shim exec -> workload exec {1000 * kernel_start[-1]:.1f} ms")
            subprocess.run(["docker", "rm", "-f", name], capture_output=True)
    finally:
        tracer.send_signal(signal.SIGINT)
        tracer.wait(timeout=30)
        with open(out.name) as f:
            summary = json.loads(f.readlines()[-1])
        os.unlink(out.name)
    print(f"median: {1000 * statistics.median(after_return):.1f} ms after docker run returned "
          f"(max {1000 * max(after_return):.1f}); start in the kernel "
          f"{1000 * statistics.median(kernel_start):.1f} ms; lost {summary['lost']}")


if __name__ == "__main__":
    main()
