#!/usr/bin/env python3
"""Launch to ready, by the state of ctrtrace's cache, for each backend.

    sudo .venv/bin/python bench/ready.py [--launches 9] [--ctrtrace ctrtrace]
                                         [--backend core|bcc|core,bcc]

Ready is compare.py's: from launch until ctrtrace --json has written the exec
of a probe (a copy of /bin/true run every few ms); capturing-from is when the
earliest probe it reported was launched (each probe runs under its own name).  Three states: warm (the
subset of the kernel BTF is cached), off (CTRTRACE_CACHE_DIR= : libbpf
relocates against the whole kernel BTF), cold (an empty cache: the first
start after a new kernel or object runs `bpftool gen min_core_btf`).  For
--backend bcc the cache holds the compiled programs: warm loads them, off and
cold run bcc's compiler (in a child process) first.  Peak RSS is ctrtrace's
own and, after "with children", the largest of it and the children it
waited for (bcc's compiler), as wait4(2) reports them.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import statistics
import tempfile
import time

from compare import Tracer, make_probes


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--launches", type=int, default=9)
    ap.add_argument("--ctrtrace", default="ctrtrace")
    ap.add_argument("--backend", default="core", help="core, bcc, or both: core,bcc")
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root")
    workdir = tempfile.mkdtemp(prefix="ctrtrace-ready-")
    try:
        probes = make_probes(workdir)
        for backend, state in [(b, s) for b in args.backend.split(",")
                               for s in ("warm", "off", "cold")]:
            cmd = shlex.split(args.ctrtrace) + ["--json", "--backend", backend]
            captures, times, rss, tree_rss = [], [], [], []
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
                capture, ready = t.wait_ready(probes)
                captures.append(capture)
                times.append(ready)
                rss.append(t.peak_rss_mb())
                t.stop()
                tree_rss.append(t.tree_peak_rss_mb)
                if cache:
                    shutil.rmtree(cache)
                time.sleep(0.2)
            ms = [round(1000 * x) for x in times]
            cap = [round(1000 * x) for x in captures]
            print(f"{backend:<4} {state:<5} ready median {statistics.median(ms):5.0f} ms  "
                  f"(min {min(ms)}, max {max(ms)}); capturing from {statistics.median(cap):4.0f} ms "
                  f"(min {min(cap)}, max {max(cap)}); peak RSS {max(rss):5.1f} MB, with "
                  f"children {max(tree_rss):5.1f} MB; {len(ms)} launches", flush=True)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
