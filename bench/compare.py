#!/usr/bin/env python3
"""ctrtrace against the tools people would use instead, side by side, in one run.

    sudo python3 bench/compare.py [--execs 10000] [--rounds 5] [--workers 1,2]
                                  [--tracers noop,ctrtrace,execsnoop,bpftrace] [--static]

Each round, for each tracer: the exec storm (bench/storm.c: fork+exec of a
copy of /bin/true, N times, with W workers) runs once with no tracer and
once with the tracer running, back to back. These machines are noisy, so
what is reported is the median over rounds of traced/untraced exec rates,
with: execs the tracer reported vs N (loss), the time from its launch until
it reported a probe exec (ready), and its peak RSS. `noop` is a control
"tracer" that does nothing: its ratio shows the noise. With --static the
storm vfork+execs a static binary (busybox as `true`), the fastest exec
there is.

Peers: libbpf-tools' execsnoop (Debian libbpf-tools, the C reference) and a
bpftrace one-liner on sched_process_exec that reads the same namespace
inodes (Debian bpftrace). Their output is line-buffered (stdbuf -oL), as it
is for a person watching; ctrtrace writes --json to a file.
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
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))

BPFTRACE = r"""tracepoint:sched:sched_process_exec
{
	printf("%d %d %s %u %u %u %u %u\n", pid, curtask->real_parent->tgid, str(args->filename),
	       curtask->nsproxy->mnt_ns->ns.inum, curtask->nsproxy->uts_ns->ns.inum,
	       curtask->nsproxy->pid_ns_for_children->ns.inum, curtask->nsproxy->net_ns->ns.inum,
	       curtask->nsproxy->ipc_ns->ns.inum);
}
"""


class Tracer:
    """One tool under test: how to start it and how to read what it saw."""

    def __init__(self, name, argv, env=None):
        self.name, self.argv, self.env = name, argv, env
        self.proc = None
        self.out_path = None

    def start(self, workdir):
        self.out_path = os.path.join(workdir, f"{self.name}.out")
        out = open(self.out_path, "wb")
        self.t0 = time.monotonic()
        self.proc = subprocess.Popen(self.argv, stdout=out, stderr=subprocess.DEVNULL,
                                     env=self.env, start_new_session=True)
        out.close()

    def output(self) -> bytes:
        with open(self.out_path, "rb") as f:
            return f.read()

    def wait_ready(self, probe_bin, timeout=30.0) -> float:
        """Run a probe (a copy of /bin/true of its own name) until the tracer reports it."""
        while time.monotonic() - self.t0 < timeout:
            if self.proc.poll() is not None:
                raise SystemExit(f"{self.name} exited early ({self.proc.returncode})")
            subprocess.run([probe_bin])
            time.sleep(0.002)
            if self.name == "noop" or os.path.basename(probe_bin).encode() in self.output():
                return time.monotonic() - self.t0
        raise SystemExit(f"{self.name} did not become ready in {timeout} s")

    def peak_rss_mb(self) -> float:
        try:
            with open(f"/proc/{self.proc.pid}/status") as f:
                return next(int(l.split()[1]) for l in f if l.startswith("VmHWM:")) / 1024
        except (OSError, StopIteration):
            return float("nan")

    def stop(self):
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def seen(self, storm_bin: str) -> int:
        """Execs of the storm binary the tracer reported."""
        data = self.output().splitlines()
        if self.name == "ctrtrace":
            key = b'"filename":' + json.dumps(storm_bin).encode()
            return sum(1 for l in data if b'"type":"exec"' in l and key in l)
        path = storm_bin.encode()
        if self.name == "execsnoop":  # PCOMM PID PPID RET ARGS: ARGS starts with the path
            return sum(1 for l in data if l.split()[3:5] == [b"0", path])
        return sum(1 for l in data if l.split()[2:3] == [path])  # bpftrace: pid ppid filename ...

    def lost(self) -> str:
        if self.name != "ctrtrace":
            return "-"
        last = self.output().splitlines()[-1]
        return str(json.loads(last)["lost"])


def make_tracers(names, ctrtrace_cmd, workdir):
    bt = os.path.join(workdir, "ns.bt")
    with open(bt, "w") as f:
        f.write(BPFTRACE)
    known = {
        "noop": lambda: Tracer("noop", ["sleep", "3600"]),
        "ctrtrace": lambda: Tracer("ctrtrace", shlex.split(ctrtrace_cmd) + ["--json"]),
        "execsnoop": lambda: Tracer("execsnoop", ["stdbuf", "-oL", "/usr/sbin/execsnoop"]),
        "bpftrace": lambda: Tracer("bpftrace", ["stdbuf", "-oL", "bpftrace", bt]),
    }
    out = []
    for n in names:
        if n not in known:
            raise SystemExit(f"unknown tracer {n!r}: one of {', '.join(known)}")
        out.append(known[n]())
    return out


def storm(storm_exe, n, workers, target, vfork, args=()):
    cmd = [storm_exe] + (["--vfork"] if vfork else []) + [str(n), str(workers), target, *args]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"storm failed: {r.stderr.strip()[:200]}")
    return json.loads(r.stdout)["rate"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--execs", type=int, default=10000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--workers", default="1,2")
    ap.add_argument("--tracers", default="noop,ctrtrace,execsnoop,bpftrace")
    ap.add_argument("--static", action="store_true", help="vfork+exec a static binary")
    ap.add_argument("--ctrtrace", default="ctrtrace")
    ap.add_argument("--json-out", metavar="FILE", help="also write the results as JSON")
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root")
    workdir = tempfile.mkdtemp(prefix="ctrtrace-compare-")
    try:
        storm_exe = os.path.join(workdir, "storm")
        subprocess.run(["cc", "-O2", "-o", storm_exe, os.path.join(HERE, "storm.c")], check=True)
        if args.static:
            os.mkdir(os.path.join(workdir, "static"))
            target = os.path.join(workdir, "static", "true")  # busybox runs the applet named by argv[0]
            shutil.copy("/bin/busybox", target)
        else:
            target = os.path.join(workdir, "storm-true")
            shutil.copy("/bin/true", target)
        probe = os.path.join(workdir, "ready-probe")
        shutil.copy("/bin/true", probe)
        tracers = make_tracers(args.tracers.split(","), args.ctrtrace, workdir)
        results = {}
        try:
            run_rounds(args, tracers, storm_exe, target, probe, workdir, results)
        finally:
            for t in tracers:  # none is left running, whatever happened
                if t.proc is not None and t.proc.poll() is None:
                    t.stop()
        report(args, results)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def run_rounds(args, tracers, storm_exe, target, probe, workdir, results):
    for w in [int(x) for x in args.workers.split(",")]:
        for r in range(args.rounds):
            for t in tracers:
                base = storm(storm_exe, args.execs, w, target, args.static)
                t.start(workdir)
                ready = t.wait_ready(probe)
                traced = storm(storm_exe, args.execs, w, target, args.static)
                time.sleep(0.3)  # let the tracer write what it has
                rss = t.peak_rss_mb()
                t.stop()
                seen = t.seen(target) if t.name != "noop" else args.execs
                res = results.setdefault((t.name, w), [])
                res.append({"untraced": base, "traced": traced, "ratio": traced / base,
                            "ready_s": ready, "rss_mb": rss, "seen": seen, "lost": t.lost()})
                print(f"round {r + 1} {t.name:<10} w={w} untraced {base:7.0f}/s traced "
                      f"{traced:7.0f}/s ratio {traced / base:.3f} ready {ready * 1000:5.0f} ms "
                      f"rss {rss:5.1f} MB seen {seen}/{args.execs} lost {t.lost()}", flush=True)


def report(args, results):
    print()
    print(f"{'tracer':<10} {'workers':>7} {'rate untraced':>13} {'ratio':>6} "
          f"{'seen/expected':>14} {'lost':>5} {'ready':>8} {'peak RSS':>9}")
    table = []
    for (name, w), rs in results.items():
        row = {
            "tracer": name, "workers": w,
            "untraced": statistics.median(x["untraced"] for x in rs),
            "ratio": statistics.median(x["ratio"] for x in rs),
            "seen_min": min(x["seen"] for x in rs), "expected": args.execs,
            "lost": ",".join(sorted({x["lost"] for x in rs})),
            "ready_ms": 1000 * statistics.median(x["ready_s"] for x in rs),
            "rss_mb": max(x["rss_mb"] for x in rs),
        }
        table.append(row)
        print(f"{name:<10} {w:>7} {row['untraced']:>11.0f}/s {row['ratio']:>6.2f} "
              f"{row['seen_min']:>7}/{args.execs:<6} {row['lost']:>5} {row['ready_ms']:>6.0f}ms "
              f"{row['rss_mb']:>7.1f}MB")
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump({"args": vars(args), "rows": table}, f, indent=1)


if __name__ == "__main__":
    main()
