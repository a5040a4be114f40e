#!/usr/bin/env python3
"""Replay throughput and memory on a large synthetic trace.

    python3 bench/replay.py [--events 1000000] [--ctrtrace CMD]

    python3 bench/replay.py --baseline "PYTHONPATH=/old python3 -m tracer" ...

Builds a trace of N events from the real events of tests/data/docker-run.jsonl
(pids and times shifted so every process is new), then times each mode of
`ctrtrace replay` (--json, --json --container NAME, the text view, the text
view with --container NAME, --tree, --ns) into /dev/null, each in its own
process, and reports events per second and peak RSS. The same runs at N/10
events show whether memory stays flat.  With --baseline, each run is made
with the baseline command right after, in the same pass, and the ratio of
the rates is printed.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE = os.path.join(HERE, "..", "tests", "data", "docker-run.jsonl")
PID_MAX = 1 << 22  # the kernel's PID_MAX_LIMIT: a recording's pids are below it


def synthesize(path: str, n: int) -> None:
    lines = open(SOURCE).read().splitlines()
    header = json.loads(lines[0])
    events = [json.loads(line) for line in lines[1:-1]]
    span = events[-1]["ktime_ns"] - events[0]["ktime_ns"] + 1_000_000
    counts = {}
    with open(path, "w") as f:
        f.write(json.dumps(header, separators=(",", ":")) + "\n")
        written, round_ = 0, 0
        while written < n:
            # a new family of processes each round: other pids (within the
            # kernel's range, so pids come back as they do on a busy host) and
            # later start times
            shift_pid = 1_000 * (round_ + 1)
            for e in events:
                if written == n:
                    break
                d = dict(e)
                d["pid"] = 1 + (d["pid"] + shift_pid) % (PID_MAX - 1)
                d["tid"] = 1 + (d["tid"] + shift_pid) % (PID_MAX - 1)
                d["ktime_ns"] += round_ * span
                d["start_ns"] = d.get("start_ns", 0) + round_ * span
                f.write(json.dumps(d, separators=(",", ":")) + "\n")
                counts[d["type"]] = counts.get(d["type"], 0) + 1
                written += 1
            round_ += 1
        f.write(json.dumps({"type": "summary", "ts": header["ts"], "events": n, "counts": counts,
                            "lost": 0, "threads": 0, "filtered_in_kernel": 0,
                            "filtered_in_userspace": 0, "duration_s": 1.0}, separators=(",", ":")) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=1_000_000)
    # the installed command, with its dependencies (a bare python3 may lack
    # orjson, and measure the fallback)
    ap.add_argument("--ctrtrace", default="ctrtrace")
    ap.add_argument("--baseline", default=None, help="another ctrtrace command to compare")
    ap.add_argument("--modes", default="json,json --container,text,text --container,tree,ns")
    args = ap.parse_args()
    commands = [("", shlex.split(args.ctrtrace))]
    if args.baseline:
        commands.append(("baseline ", shlex.split(args.baseline)))
    modes = {"json": ["--json"], "json --container": ["--json", "--container", "sleep-container"],
             "text": [], "text --container": ["--container", "sleep-container"],
             "tree": ["--tree"], "ns": ["--ns"]}
    with tempfile.TemporaryDirectory() as tmp:
        for n in (args.events // 10, args.events):
            path = os.path.join(tmp, f"synthetic-{n}.jsonl")
            synthesize(path, n)
            size = os.path.getsize(path) / 1e6
            for label in args.modes.split(","):
                rates = []
                for who, base in commands:
                    # a fresh interpreter each time, so peak RSS is this run's
                    cmd = ["/usr/bin/env"] + base + ["replay", *modes[label], path]
                    r = subprocess.run(["/usr/bin/time", "-f", "%e %M"] + cmd,
                                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                       text=True)
                    secs, kb = r.stderr.strip().splitlines()[-1].split()
                    rate = n / max(float(secs), 0.01)
                    rates.append(rate)
                    print(f"{n:>9} events ({size:.0f} MB) {who}replay {label:<17} "
                          f"{rate:>10,.0f} events/s  peak RSS {int(kb) / 1024:.1f} MB",
                          flush=True)
                if len(rates) == 2:
                    print(f"{'':>9} ratio {label}: {rates[0] / rates[1]:.2f}x the baseline's rate",
                          flush=True)


if __name__ == "__main__":
    main()
