#!/usr/bin/env python3
"""ctrtrace against the tools people would use instead, side by side, in one run.

    sudo .venv/bin/python bench/compare.py [--execs 10000] [--rounds 5] [--workers 1,2]
        [--tracers noop,ctrtrace,ctrtrace-text,ctrtrace-bcc,execsnoop,bcc-execsnoop,bpftrace]
        [--static]

Each round, for each tracer: the exec storm (bench/storm.c: fork+exec of a
copy of /bin/true, N times, with W workers) runs once with no tracer and
once with the tracer running, back to back. These machines are noisy, so
what is reported is the median over rounds of traced/untraced exec rates
(ratio), and of traced/untraced CPU time of the storm's own processes (work
CPU: what the tracer's in-kernel work -- its programs, the syscall tracing
path, ring-buffer wake-ups -- adds to the workload's CPU, less noisy than a
rate), with: execs the tracer reported vs N (seen), what it said it lost (lost:
ctrtrace's events, execsnoop's "Lost N events", bcc's "Possibly lost N
samples", one sample per argument), the time from its launch until it
reported a probe exec (ready) and from when it captured events (capture: the
launch of the earliest probe it reported; probes run one after another, each
under its own name), its peak RSS, and the CPU time its process
used during the traced storm: per exec (CPU/exec), and as lines written per
CPU-second (lines/CPU-s: for ctrtrace, events decoded and written as JSON;
its capacity if it had a CPU to itself); and the run time of its BPF
programs per exec, with how many runs that took (BPF/exec: time spent in the
storm's own syscalls and scheduler events, which CPU/exec does not count;
kernel.bpf_stats_enabled is on during the run). `noop` is a control
"tracer" that does nothing: its ratio shows the noise; `ctrtrace` writes
JSON (--json), `ctrtrace-text` the text view a person reads, `ctrtrace-bcc`
JSON from the bcc backend (--backend bcc; its compiled programs cached by
an earlier start, as they are after the first).  CPU time is psutil's
reading of each tracer's process; peak RSS is the kernel's high-water mark
(VmHWM, which psutil does not give). vs-execsnoop is the
median over rounds of (ratio - execsnoop's ratio in the same round): a
paired comparison, less noisy than the difference of the two medians; vs-noop
the same against the control. Each comes with its 95 % confidence interval
(distribution-free, from the rounds' order statistics; 6 rounds at least):
an interval that holds 0 means the two are not told apart by this run, and
the lines after the table say so for each tracer. With --static the
storm vfork+execs a static binary (busybox as `true`), the fastest exec
there is.

Peers: libbpf-tools' execsnoop (Debian libbpf-tools, the C reference); bcc's
execsnoop (Debian bpfcc-tools) as bench/bcc_execsnoop.py, the same tool on
the execve tracepoints, since kernels without kprobes can't run bcc's own;
and a bpftrace one-liner on sched_process_exec that reads the same namespace
inodes (Debian bpftrace). Their output is line-buffered (stdbuf -oL), as it
is for a person watching; ctrtrace writes --json to a file.

    apt-get install libbpf-tools bpftrace bpfcc-tools linux-headers-$(uname -r)

bcc compiles its BPF against kernel headers. Where the running kernel has
none (a kernel Debian doesn't ship), the newest installed headers package is
used (tracer/kernel/kheaders.py: the newest Debian pair, installed or unpacked
by `./run setup`), through BCC_KERNEL_SOURCE:
the tracepoints' fields come from the kernel itself and are right, but
task_struct offsets may not be (bcc's PPID then comes from /proc, or "?").

By default every tracer runs, and a peer that is not installed is skipped
with a note; one named in --tracers must be there.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))
from tracer.kernel import kheaders  # noqa: E402 - the repository's, beside this script

try:
    import psutil
except ImportError:
    raise SystemExit("bench/compare.py measures the tracers with psutil: run it with the "
                     "project's .venv/bin/python (./run setup)") from None

TRACERS = "noop,ctrtrace,ctrtrace-bcc,execsnoop,bcc-execsnoop,bpftrace"
BCC_PYTHON = "/usr/bin/python3"  # Debian's, which has python3-bpfcc's module

BPFTRACE = r"""tracepoint:sched:sched_process_exec
{
    printf("%d %d %s %u %u %u %u %u\n", pid, curtask->real_parent->tgid, str(args->filename),
           curtask->nsproxy->mnt_ns->ns.inum, curtask->nsproxy->uts_ns->ns.inum,
           curtask->nsproxy->pid_ns_for_children->ns.inum, curtask->nsproxy->net_ns->ns.inum,
           curtask->nsproxy->ipc_ns->ns.inum);
}
"""


PROBE_PREFIX = b"rdy"


def make_probes(workdir, n=5000):
    """Paths to run as ready probes: hard links to one copy of /bin/true, each
    of its own name (so its own comm), so that which ones a tracer reported
    tells when it began to capture, not only when it first wrote."""
    d = os.path.join(workdir, "probes")
    os.mkdir(d)
    paths = [os.path.join(d, f"{PROBE_PREFIX.decode()}{i:04d}") for i in range(n)]
    shutil.copy("/bin/true", paths[0])
    for p in paths[1:]:
        os.link(paths[0], p)
    return paths


class Tracer:
    """One tool under test: how to start it and how to read what it saw."""

    def __init__(self, name, argv, env=None, kind=None):
        self.name, self.argv, self.env = name, argv, env
        self.kind = kind or name  # how its output reads: ctrtrace-base reads as ctrtrace
        self.proc = None
        self.out_path = self.err_path = None
        self.tree_peak_rss_mb = float("nan")  # known once stopped

    def start(self, workdir):
        self.out_path = os.path.join(workdir, f"{self.name}.out")
        self.err_path = os.path.join(workdir, f"{self.name}.err")
        with open(self.out_path, "wb") as out, open(self.err_path, "wb") as err:
            self.t0 = time.monotonic()
            # in the work directory: `python3 -m tracer` puts the current
            # directory first on its path, so a --baseline started from the
            # repository would import the working tree instead of its own
            self.proc = subprocess.Popen(self.argv, stdout=out, stderr=err, cwd=workdir,
                                         env=self.env, start_new_session=True)

    def output(self) -> bytes:
        with open(self.out_path, "rb") as f:
            return f.read()

    def errors(self) -> str:
        with open(self.err_path, "rb") as f:
            return f.read().decode(errors="replace")

    def wait_ready(self, probes, timeout=30.0):
        """Run the probes (make_probes: each its own name) one after another
        until the tracer reports one.  Returns (capture, ready), seconds from
        its launch: when the earliest probe it reported was launched -- it
        captured from then on -- and when its first report had been written."""
        names = [os.path.basename(p).encode() for p in probes]
        launched = []
        for path in probes:
            if time.monotonic() - self.t0 > timeout:
                break
            if self.proc.poll() is not None:
                last = (self.errors().strip().splitlines() or [""])[-1]
                raise SystemExit(f"{self.name} exited early ({self.proc.returncode}): {last}")
            launched.append(time.monotonic() - self.t0)
            subprocess.run([path])
            time.sleep(0.002)
            if self.name == "noop":
                return launched[-1], time.monotonic() - self.t0
            out = self.output()
            if self.kind in ("ctrtrace", "ctrtrace-text"):  # the header lists what ran at start-up: not a report
                out = out.partition(b"\n")[2]
            if PROBE_PREFIX in out:
                ready = time.monotonic() - self.t0
                first = next(i for i, n in enumerate(names[:len(launched)]) if n in out)
                return launched[first], ready
        raise SystemExit(f"{self.name} did not become ready in {timeout} s")

    def cpu_s(self) -> float:
        """CPU time (user + system) the tracer's process has used so far."""
        try:
            t = psutil.Process(self.proc.pid).cpu_times()
        except psutil.Error:
            return float("nan")
        return t.user + t.system

    def events(self) -> int:
        """Lines (events) the tracer wrote, header and summary aside for ctrtrace."""
        n = self.output().count(b"\n")
        return n - {"ctrtrace": 2, "ctrtrace-text": 1}.get(self.kind, 0)

    def bpf_time(self):
        """(run time in ns, runs) summed over the BPF programs the tracer's
        process holds, from their fdinfo (kernel.bpf_stats_enabled on)."""
        progs = bpf_programs(self.proc.pid).values()
        return (sum(int(p.get("run_time_ns", 0)) for p in progs),
                sum(int(p.get("run_cnt", 0)) for p in progs))

    def peak_rss_mb(self) -> float:
        try:
            with open(f"/proc/{self.proc.pid}/status") as f:
                return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) / 1024
        except (OSError, StopIteration):
            return float("nan")

    def stop(self):
        # Ctrl-C for the tracers, which print their summaries on it; the no-op
        # is sleep(1), which a shell started in the background leaves ignoring
        # SIGINT (then each stop would wait out the timeout below)
        self.proc.send_signal(signal.SIGTERM if self.kind == "noop" else signal.SIGINT)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            # reaped here, not by Popen: wait4 says the peak RSS of the
            # process and of every child it waited for (bcc's compiler)
            pid, status, usage = os.wait4(self.proc.pid, os.WNOHANG)
            if pid:
                self.proc.returncode = os.waitstatus_to_exitcode(status)
                self.tree_peak_rss_mb = usage.ru_maxrss / 1024
                return
            time.sleep(0.01)
        if self.proc.returncode is None:
            self.proc.kill()
            self.proc.wait()

    def seen(self, storm_bin: str) -> int:
        """Execs of the storm binary the tracer reported."""
        data = self.output().splitlines()
        if self.kind == "ctrtrace":
            key = b'"filename":' + json.dumps(storm_bin).encode()
            return sum(1 for line in data if b'"type":"exec"' in line and key in line)
        path = storm_bin.encode()
        if self.kind == "ctrtrace-text":
            # TIME EVENT PID PPID VPID COMMAND: the command starts with the path
            return sum(1 for line in data if line.split()[1:2] == [b"exec"]
                       and line.split()[5:6] == [path])
        if self.kind in ("execsnoop", "bcc-execsnoop"):
            # PCOMM PID PPID RET ARGS: ARGS starts with the path
            return sum(1 for line in data if line.split()[3:5] == [b"0", path])
        return sum(1 for line in data if line.split()[2:3] == [path])  # bpftrace: pid ppid filename ...

    def lost(self) -> str:
        if self.kind == "ctrtrace":
            last = self.output().splitlines()[-1]
            return str(json.loads(last)["lost"])
        said = {"execsnoop": r"Lost (\d+) events", "bcc-execsnoop": r"Possibly lost (\d+) samples",
                "ctrtrace-text": r"; lost (\d+)"}
        if self.kind not in said:
            return "-"
        return str(sum(int(n) for n in re.findall(said[self.kind], self.errors())))


def bpf_programs(pid):
    """The BPF programs a process holds: prog_id -> its fdinfo fields."""
    progs = {}
    fd_dir = f"/proc/{pid}/fd"
    try:
        fds = os.listdir(fd_dir)
    except OSError:
        return progs
    for fd in fds:
        try:
            if os.readlink(f"{fd_dir}/{fd}") != "anon_inode:bpf-prog":
                continue
            with open(f"/proc/{pid}/fdinfo/{fd}") as f:
                info = dict(line.rstrip("\n").split(":\t", 1) for line in f if ":\t" in line)
        except OSError:
            continue
        progs.setdefault(info.get("prog_id"), info)
    return progs


# kprobe, tracepoint, perf_event, raw_tracepoint, raw_tracepoint_writable,
# tracing (include/uapi/linux/bpf.h): what adds work to an exec storm
TRACING_PROG_TYPES = {"2", "5", "7", "17", "24", "26"}


def check_untraced():
    """Stop the run if some process holds tracing BPF programs: a tracer left
    over from an interrupted run would tax every storm, the untraced ones
    too, and no ratio would show it."""
    for pid in filter(str.isdigit, os.listdir("/proc")):
        if any(p.get("prog_type") in TRACING_PROG_TYPES for p in bpf_programs(pid).values()):
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    cmd = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
            except OSError:
                cmd = "?"
            raise SystemExit(f"process {pid} ({cmd[:80]}) holds tracing BPF programs: "
                             "the untraced storms would not be untraced; stop it first")


def bcc_tracer():
    """bench/bcc_execsnoop.py, or why it can't run here."""
    if subprocess.run([BCC_PYTHON, "-c", "import bcc"], capture_output=True).returncode != 0:
        return ("bcc-execsnoop: needs bcc for /usr/bin/python3 and kernel headers "
                "(apt install bpfcc-tools linux-headers-$(uname -r))")
    headers = kheaders.find()
    if headers is None:
        return "bcc-execsnoop: needs kernel headers (sudo ./run setup unpacks the nearest)"
    if not headers.running:
        print(f"bcc-execsnoop: no headers for {os.uname().release}, using {headers.version}'s "
              "(the PPID column may come from /proc)", flush=True)
    script = os.path.join(HERE, "bcc_execsnoop.py")
    return Tracer("bcc-execsnoop", ["stdbuf", "-oL", BCC_PYTHON, script])


def make_tracers(names, ctrtrace_cmd, workdir, skip_missing, baseline_cmd=None):
    """The tracers named; a peer that is not installed stops the run, or is
    skipped with a note (returned) when skip_missing."""
    bt = os.path.join(workdir, "ns.bt")
    with open(bt, "w") as f:
        f.write(BPFTRACE)

    def need(path, name, package):
        def make():
            if shutil.which(path) is None:
                return f"{name}: needs {path} (apt install {package})"
            return Tracer(name, ["stdbuf", "-oL", path] + ([bt] if name == "bpftrace" else []))
        return make

    known = {
        "noop": lambda: Tracer("noop", ["sleep", "3600"]),
        "ctrtrace": lambda: Tracer("ctrtrace", shlex.split(ctrtrace_cmd) + ["--json"]),
        # the text view, as a person runs it (into a file here)
        "ctrtrace-text": lambda: Tracer("ctrtrace-text", shlex.split(ctrtrace_cmd),
                                        env={**os.environ, "NO_COLOR": "1"}),
        "ctrtrace-bcc": lambda: Tracer("ctrtrace-bcc",
                                       shlex.split(ctrtrace_cmd) + ["--json", "--backend", "bcc"],
                                       kind="ctrtrace"),
        "execsnoop": need("/usr/sbin/execsnoop", "execsnoop", "libbpf-tools"),
        "bcc-execsnoop": bcc_tracer,
        "bpftrace": need("bpftrace", "bpftrace", "bpftrace"),
    }
    if baseline_cmd:  # runs right after ctrtrace, in the same rounds
        known["ctrtrace-base"] = lambda: Tracer(
            "ctrtrace-base", shlex.split(baseline_cmd) + ["--json"], kind="ctrtrace")
        if "ctrtrace-base" not in names:
            at = names.index("ctrtrace") + 1 if "ctrtrace" in names else len(names)
            names = names[:at] + ["ctrtrace-base"] + names[at:]
    out, skipped = [], []
    for n in names:
        if n not in known:
            raise SystemExit(f"unknown tracer {n!r}: one of {', '.join(known)}")
        t = known[n]()
        if isinstance(t, str):  # what is missing
            if not skip_missing:
                raise SystemExit(t)
            print(f"skipped {t}", flush=True)
            skipped.append(t)
        else:
            out.append(t)
    return out, skipped


def storm(storm_exe, n, workers, target, vfork, args=()):
    cmd = [storm_exe] + (["--vfork"] if vfork else []) + [str(n), str(workers), target, *args]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"storm failed: {r.stderr.strip()[:200]}")
    return json.loads(r.stdout)


class BpfStats:
    """kernel.bpf_stats_enabled on for the run, then as it was: every BPF
    program's run time is counted (two clock reads a run, whoever's program
    it is), which gives BPF/exec -- what the tracer's programs cost the
    workload in its own syscalls, the part of its cost that CPU/exec misses."""

    PATH = "/proc/sys/kernel/bpf_stats_enabled"

    def __init__(self):
        with open(self.PATH) as f:
            self.was = f.read().strip()
        with open(self.PATH, "w") as f:
            f.write("1")

    def close(self):
        with open(self.PATH, "w") as f:
            f.write(self.was)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--execs", type=int, default=10000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--workers", default="1,2")
    ap.add_argument("--tracers", help=f"comma-separated (default {TRACERS}: "
                    "those not installed are skipped, with a note)")
    ap.add_argument("--static", action="store_true", help="vfork+exec a static binary")
    ap.add_argument("--ctrtrace", default="ctrtrace")
    ap.add_argument("--baseline", metavar="CMD",
                    help="also run this ctrtrace command, as ctrtrace-base, in the same rounds "
                         "(e.g. an earlier commit: 'env PYTHONPATH=/tmp/old python3 -m tracer'; "
                         "tracers run in a temporary directory, so relative paths do not work)")
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
        probe = make_probes(workdir)
        named = args.tracers is not None
        tracers, skipped = make_tracers((args.tracers or TRACERS).split(","), args.ctrtrace,
                                        workdir, skip_missing=not named,
                                        baseline_cmd=args.baseline)
        args.tracers = ",".join(t.name for t in tracers)
        results = {}
        stats = BpfStats()  # on for the run
        try:
            run_rounds(args, tracers, storm_exe, target, probe, workdir, results)
        finally:
            stats.close()
            for t in tracers:  # none is left running, whatever happened
                if t.proc is not None and t.proc.poll() is None:
                    t.stop()
        report(args, results, skipped)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def run_rounds(args, tracers, storm_exe, target, probe, workdir, results):
    for w in [int(x) for x in args.workers.split(",")]:
        for r in range(args.rounds):
            for t in tracers:
                check_untraced()
                base_run = storm(storm_exe, args.execs, w, target, args.static)
                base = base_run["rate"]
                t.start(workdir)
                capture, ready = t.wait_ready(probe)
                time.sleep(0.2)  # start-up over: what follows is the storm's cost
                cpu0, events0, (bpf_ns0, bpf_runs0) = t.cpu_s(), t.events(), t.bpf_time()
                traced_run = storm(storm_exe, args.execs, w, target, args.static)
                traced = traced_run["rate"]
                work = traced_run["cpu_s"] / base_run["cpu_s"]
                bpf_ns, bpf_runs = t.bpf_time()
                time.sleep(0.3)  # let the tracer write what it has
                cpu = t.cpu_s() - cpu0
                events = t.events() - events0
                bpf_us = (bpf_ns - bpf_ns0) / 1e3 / args.execs
                bpf_runs = (bpf_runs - bpf_runs0) / args.execs
                rss = t.peak_rss_mb()
                t.stop()
                seen = t.seen(target) if t.name != "noop" else args.execs
                res = results.setdefault((t.name, w), [])
                res.append({"untraced": base, "traced": traced, "ratio": traced / base,
                            "work_cpu": work,
                            "capture_s": capture, "ready_s": ready, "rss_mb": rss, "seen": seen, "lost": t.lost(),
                            "cpu_us_per_exec": 1e6 * cpu / args.execs,
                            "bpf_us_per_exec": bpf_us, "bpf_runs_per_exec": bpf_runs,
                            "events_per_cpu_s": events / cpu if cpu > 0 else float("nan")})
                print(f"round {r + 1} {t.name:<13} w={w} untraced {base:7.0f}/s traced "
                      f"{traced:7.0f}/s ratio {traced / base:.3f} work CPU {work:.3f} capture {capture * 1000:5.0f} ms "
                      f"ready {ready * 1000:5.0f} ms "
                      f"rss {rss:5.1f} MB seen {seen}/{args.execs} lost {t.lost()} "
                      f"cpu {1e6 * cpu / args.execs:5.1f} us/exec "
                      f"bpf {bpf_us:5.2f} us/exec in {bpf_runs:.1f} runs", flush=True)


CI_LEVEL = 0.95


def median_ci(xs, level=CI_LEVEL):
    """A distribution-free confidence interval for the median of xs: the
    order statistics (x_k, x_n+1-k) cover it with probability
    1 - 2 P(Binomial(n, 1/2) < k), whatever the distribution -- these
    machines' noise is neither normal nor steady.  The narrowest such pair
    with at least `level` coverage, or None when n is too small for any
    (fewer than 6 values at 95 %)."""
    xs = sorted(xs)
    n = len(xs)
    best = None
    below = 0.0  # P(Binomial(n, 1/2) < k)
    for k in range(1, n // 2 + 1):
        below += math.comb(n, k - 1) / 2 ** n
        if 1 - 2 * below < level:
            break
        best = (xs[k - 1], xs[n - k])
    return best


def paired(rs, ref):
    """Median over rounds of (ratio - the reference's ratio in the same
    round), and its confidence interval: what slows a whole round (the
    host busier for a while) cancels in each difference, and stays in the
    difference of the two medians."""
    if not ref or rs is ref:
        return float("nan"), None
    d = [x["ratio"] - r["ratio"] for x, r in zip(rs, ref, strict=True)]
    return statistics.median(d), median_ci(d)


def verdict(ci):
    """What a paired interval says: one side of 0, or neither."""
    if ci is None:
        return "too few rounds to tell"
    if ci[1] < 0:
        return "behind"
    if ci[0] > 0:
        return "ahead"
    return "not told apart"


def _with_ci(value, ci):
    if value != value:  # nan: no reference in this run
        return f"{'':>21}"
    if ci is None:
        return f"{value:>+7.3f}{'':>14}"
    return f"{value:>+7.3f} [{ci[0]:+.2f},{ci[1]:+.2f}]"


def report(args, results, skipped):
    print()
    print(f"{'tracer':<13} {'workers':>7} {'rate untraced':>13} {'ratio':>6} {'work CPU':>8} "
          f"{'seen/expected':>14} {'lost':>5} {'capture':>8} {'ready':>6} {'peak RSS':>9} "
          f"{'CPU/exec':>9} {'BPF/exec':>17} "
          f"{'lines/CPU-s':>11} {'vs-noop':>21} {'vs-execsnoop':>21}")
    table = []
    for (name, w), rs in results.items():
        vs_noop, vs_noop_ci = paired(rs, results.get(("noop", w)))
        vs_es, vs_es_ci = paired(rs, results.get(("execsnoop", w)))
        # ctrtrace's other modes and backends against its default, paired too
        vs_ct, vs_ct_ci = paired(rs, results.get(("ctrtrace", w)))
        row = {
            "tracer": name, "workers": w,
            "untraced": statistics.median(x["untraced"] for x in rs),
            "ratio": statistics.median(x["ratio"] for x in rs),
            "work_cpu": statistics.median(x["work_cpu"] for x in rs),
            "seen_min": min(x["seen"] for x in rs), "expected": args.execs,
            "lost": ",".join(sorted({x["lost"] for x in rs})),
            "capture_ms": 1000 * statistics.median(x["capture_s"] for x in rs),
            "ready_ms": 1000 * statistics.median(x["ready_s"] for x in rs),
            "rss_mb": max(x["rss_mb"] for x in rs),
            "cpu_us_per_exec": statistics.median(x["cpu_us_per_exec"] for x in rs),
            "bpf_us_per_exec": statistics.median(x["bpf_us_per_exec"] for x in rs),
            "bpf_runs_per_exec": statistics.median(x["bpf_runs_per_exec"] for x in rs),
            "events_per_cpu_s": statistics.median(x["events_per_cpu_s"] for x in rs),
            "vs_noop": vs_noop, "vs_noop_ci": vs_noop_ci,
            "vs_execsnoop": vs_es, "vs_execsnoop_ci": vs_es_ci, "ci_level": CI_LEVEL,
            "vs_ctrtrace": vs_ct, "vs_ctrtrace_ci": vs_ct_ci,
        }
        table.append(row)
        print(f"{name:<13} {w:>7} {row['untraced']:>11.0f}/s {row['ratio']:>6.2f} "
              f"{row['work_cpu']:>8.3f} "
              f"{row['seen_min']:>7}/{args.execs:<6} {row['lost']:>5} {row['capture_ms']:>6.0f}ms "
              f"{row['ready_ms']:>4.0f}ms "
              f"{row['rss_mb']:>7.1f}MB {row['cpu_us_per_exec']:>7.1f}us "
              f"{row['bpf_us_per_exec']:>5.2f}us/{row['bpf_runs_per_exec']:>4.1f}runs "
              f"{row['events_per_cpu_s']:>11.0f} {_with_ci(vs_noop, vs_noop_ci)} "
              f"{_with_ci(vs_es, vs_es_ci)}")
    print()
    for row in table:
        if row["tracer"] in ("noop", "execsnoop"):
            continue
        said = [f"vs {ref} {row[key]:+.3f} ({verdict(row[key + '_ci'])})"
                for ref, key in (("execsnoop", "vs_execsnoop"), ("noop", "vs_noop"),
                                 ("ctrtrace", "vs_ctrtrace"))
                if row[key] == row[key]]
        if said:
            print(f"{row['tracer']}, {row['workers']} worker{'s' if row['workers'] > 1 else ''}: "
                  + "; ".join(said))
    for note in skipped:
        print(f"skipped {note}")
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump({"args": vars(args), "rows": table, "skipped": skipped}, f, indent=1)


if __name__ == "__main__":
    main()
