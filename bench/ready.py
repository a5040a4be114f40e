#!/usr/bin/env python3
"""Launch to ready, by the state of ctrtrace's CO-RE cache.

    sudo python3 bench/ready.py [--launches 9] [--ctrtrace ctrtrace]

Ready is compare.py's: from launch until ctrtrace --json has written the exec
of a probe (a copy of /bin/true run every few ms).  Three states: warm (the
subset of the kernel BTF is cached), off (CTRTRACE_CACHE_DIR= : libbpf
relocates against the whole kernel BTF), cold (an empty cache: the first
start after a new kernel or object runs `bpftool gen min_core_btf`).
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import statistics
import tempfile
import time

from compare import Tracer


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--launches", type=int, default=9)
    ap.add_argument("--ctrtrace", default="ctrtrace")
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root")
    workdir = tempfile.mkdtemp(prefix="ctrtrace-ready-")
    try:
        probe = os.path.join(workdir, "ready-probe")
        shutil.copy("/bin/true", probe)
        cmd = shlex.split(args.ctrtrace) + ["--json"]
        for state in ("warm", "off", "cold"):
            times = []
            for _ in range(args.launches):
                env = dict(os.environ)
                cache = None
                if state == "off":
                    env["CTRTRACE_CACHE_DIR"] = ""
                elif state == "cold":
                    cache = tempfile.mkdtemp(dir=workdir)
                    env["CTRTRACE_CACHE_DIR"] = cache
                t = Tracer("ctrtrace", cmd, env=env)
                t.start(workdir)
                times.append(t.wait_ready(probe))
                t.stop()
                if cache:
                    shutil.rmtree(cache)
                time.sleep(0.2)
            ms = [round(1000 * x) for x in times]
            print(f"{state:<5} ready median {statistics.median(ms):5.0f} ms  "
                  f"(min {min(ms)}, max {max(ms)}; {len(ms)} launches)", flush=True)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
