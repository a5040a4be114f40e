#!/usr/bin/env python3
"""Start-up time, burst throughput, loss and peak memory of the live command.

    sudo python3 bench/startup_burst.py [--execs 1000] [--rounds 3] [--ctrtrace CMD]

Each round launches `ctrtrace --json` (output to a file, as a recording
would), measures the time until a probe exec shows up in its output, runs a
burst of short-lived processes (fork+exec of /bin/true from one shell loop),
stops the tracer with SIGINT and reads its summary and peak RSS.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import signal
import statistics
import subprocess
import sys
import tempfile
import time


def count_lines(path: str) -> int:
    with open(path, "rb") as f:
        return sum(1 for _ in f)


def wait_for_probe(tracer: subprocess.Popen, path: str, timeout: float = 10.0) -> float:
    """Run probe execs until one appears in the output; return when it was exec'd."""
    end = time.monotonic() + timeout
    n = 0
    while time.monotonic() < end:
        if tracer.poll() is not None:
            raise SystemExit(f"ctrtrace exited early with status {tracer.returncode}")
        n += 1
        tag = f"ctrtrace-probe-{n}"
        subprocess.run(["/bin/true", tag])
        time.sleep(0.005)
        with open(path, "rb") as f:
            if tag.encode() in f.read():
                return time.monotonic()
    raise SystemExit("no probe seen: the tracer did not become ready")


def one_round(cmd, execs: int) -> dict:
    out = tempfile.NamedTemporaryFile(prefix="ctrtrace-bench-", suffix=".jsonl", delete=False)
    t0 = time.monotonic()
    tracer = subprocess.Popen(cmd + ["--json"], stdout=out, stderr=subprocess.DEVNULL)
    ready = wait_for_probe(tracer, out.name) - t0

    script = f"i=0; while [ $i -lt {execs} ]; do /bin/true; i=$((i+1)); done"
    b0 = time.monotonic()
    subprocess.run(["sh", "-c", script], check=True)
    burst = time.monotonic() - b0
    # how long after the burst until the tracer has written its last event
    b1 = time.monotonic()
    drained = b1
    last = count_lines(out.name)
    while time.monotonic() - drained < 0.3:
        time.sleep(0.005)
        now = count_lines(out.name)
        if now != last:
            last, drained = now, time.monotonic()
    drain = drained - b1

    with open(f"/proc/{tracer.pid}/status") as f:
        hwm_kb = next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))
    tracer.send_signal(signal.SIGINT)
    tracer.wait(timeout=30)
    with open(out.name) as f:
        lines = [json.loads(line) for line in f]
    os.unlink(out.name)
    summary = lines[-1]
    assert summary["type"] == "summary", "the output did not end with a summary"
    burst_execs = sum(1 for e in lines if e.get("type") == "exec" and e.get("argv") == ["/bin/true"])
    return {
        "ready_s": ready,
        "burst_s": burst,
        "burst_execs_seen": burst_execs,
        "events": summary["events"],
        "events_per_s_in_burst": 3 * execs / burst,
        "drain_after_burst_s": drain,
        "lost": summary["lost"],
        "peak_rss_mb": hwm_kb / 1024,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--execs", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--ctrtrace", default="ctrtrace", help="command that runs ctrtrace")
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root")
    cmd = shlex.split(args.ctrtrace)
    rounds = []
    for i in range(args.rounds):
        r = one_round(cmd, args.execs)
        rounds.append(r)
        print(f"round {i + 1}: " + ", ".join(
            f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in r.items()))
    med = {k: statistics.median(r[k] for r in rounds) for k in rounds[0]}
    print("median: " + ", ".join(f"{k}={v:.3f}" for k, v in med.items()))
    ok = all(r["burst_execs_seen"] == args.execs and r["lost"] == 0 for r in rounds)
    print("every exec seen, none lost" if ok else "EXECS MISSING OR LOST")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
