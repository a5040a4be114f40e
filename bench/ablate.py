#!/usr/bin/env python3
"""Which part of ctrtrace costs the workload: ctrtrace beside variants of
itself, and beside execsnoop, in long paired runs.

    sudo python3 bench/ablate.py [--rounds 60] [--execs 2000] [--json-out FILE]
                                 CONFIG [CONFIG ...]

A CONFIG is one of
    noop, execsnoop       as in compare.py
    ctrtrace              ctrtrace --json, as built
    ctrtrace+stop         the same, its process stopped (SIGSTOP) for the traced
                          storm: its records wait in the ring buffer, its reader
                          costs nothing; any configuration below that runs
                          ctrtrace takes +stop as well
    idle                  every program attached as usual, each returning at once
    exec-only             the exec program working, the others returning at once
    spin=N                the exec program only counting N empty bpf_loop steps
                          (it reads and writes nothing), the others returning at once
    spin-execve-return=N  the same steps in the execve-return program instead
                          (sys_exit_execve: the same task, once exec is done),
                          every other program returning at once
    norec                 every program reading as usual, its record built in a
                          per-CPU scratch map and never written to the ring
                          buffer (ctrtrace reports nothing)
    outfull               the same records written from the scratch with
                          bpf_ringbuf_output: what ctrtrace writes, one copy more
    execrec               as norec, but the exec records written as usual: one
                          ring-buffer write an exec instead of three
    outsmall              as outfull, but the fork, exit, setns and unshare
                          records 160 bytes (two cgroup names) short: ctrtrace
                          cannot read them, so run it as outsmall+stop
    ring=N                ctrtrace with an event buffer of N MiB (--buffer-size)
    slice=US              ctrtrace whose reader asks the scheduler for a slice of
                          US microseconds (tracer/kernel/schedule.py; 0: the kernel's
                          default, as before it gave way)
    object=PATH           ctrtrace with another build of its BPF object (an
                          earlier commit's, a one-off change) beside this one;
                          like the variants, ready once it says it is tracing
                          (a one-off build may report nothing)

The variants are built by bpf/Makefile from bpf/ctrtrace.bpf.c, each with
the -D switches of its ablation section that VARIANTS below names (make -C
bpf OUT=DIR CFLAGS_EXTRA=...). A program is made to return at once by a
first statement that tests the tunables: always true once the object is
loaded, unknown to the compiler, so the verifier, which reads the frozen
rodata, removes the rest of the program. Maps, rodata and attach points stay
as they were.

Each round, in a new random order, each configuration: the storm untraced,
then traced (bench/storm.c, one worker, --execs execs), and the ratio of
their rates and of the storm's CPU time. After the rounds, every pair of
configurations: the median over rounds of their difference in ratio, its
95 % interval and what that says (compare.py's paired and verdict). The
storm varies by 10-15 % from one slice to the next here, so telling apart
3-5 % takes 60-100 rounds; four configurations of 2,000 execs take about
15 s a round.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from compare import Tracer, check_untraced, make_probes, paired, storm, verdict  # noqa: E402

BPF_DIR = os.path.join(os.path.dirname(HERE), "bpf")

# Each variant: the switches of the ablation section of bpf/ctrtrace.bpf.c
# it is built with (-D each).
VARIANTS = {
    "idle": ("CT_ABLATE_RETURN_AT_ONCE",),
    "exec-only": ("CT_ABLATE_RETURN_AT_ONCE", "CT_ABLATE_KEEP=CT_PROG_EXEC"),
    "norec": ("CT_ABLATE_SCRATCH_RECORDS", "CT_ABLATE_NO_OUTPUT"),
    "execrec": ("CT_ABLATE_SCRATCH_RECORDS",),
    "outfull": ("CT_ABLATE_SCRATCH_RECORDS", "CT_ABLATE_OUTPUT_SCRATCH"),
    "outsmall": ("CT_ABLATE_SCRATCH_RECORDS", "CT_ABLATE_OUTPUT_SHORT"),
}
# spin=N and spin-execve-return=N: the program that spins, every other returning at once
SPIN = re.compile(r"(spin|spin-execve-return)=(\d+)")
SPIN_PROGRAMS = {"spin": "CT_PROG_EXEC", "spin-execve-return": "CT_PROG_EXIT_EXECVE"}
RECORDS = ("norec", "execrec", "outfull", "outsmall")


def variant_switches(config: str) -> tuple:
    """The -D switches a variant is built with; ValueError for no variant."""
    if config in VARIANTS:
        return VARIANTS[config]
    spin = SPIN.fullmatch(config)
    if not spin:
        raise ValueError(f"no variant {config!r}")
    return ("CT_ABLATE_RETURN_AT_ONCE", f"CT_ABLATE_KEEP={SPIN_PROGRAMS[spin.group(1)]}",
            f"CT_ABLATE_SPIN={spin.group(2)}")


def build_variant(config: str, workdir: str) -> str:
    """The variant's object, built by bpf/Makefile into a directory of workdir."""
    switches = " ".join(f"-D{s}" for s in variant_switches(config))
    d = os.path.join(workdir, config.replace("=", "-"))
    os.makedirs(d)
    r = subprocess.run(["make", "-C", BPF_DIR, f"OUT={d}", f"CFLAGS_EXTRA={switches}"],
                       capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"{config}: the build failed\n{r.stdout}{r.stderr}")
    return os.path.join(d, "ctrtrace.bpf.o")


FIXED = ("noop", "execsnoop", "ctrtrace")  # each ctrtrace one also as +stop
RING = re.compile(r"ring=([1-9]\d*)")
SLICE = re.compile(r"slice=(0|[1-9]\d*)")


def _options_only(config: str) -> bool:
    """A configuration that runs the built ctrtrace with other settings."""
    return bool(RING.fullmatch(config) or SLICE.fullmatch(config))


def _unstopped(config: str) -> str:
    return config[:-len("+stop")] if config.endswith("+stop") else config


def check_config(config: str) -> None:
    """ValueError for a configuration that is none of the above."""
    if config in ("noop+stop", "execsnoop+stop"):
        raise ValueError(f"{config}: +stop is for ctrtrace")
    config = _unstopped(config)
    if config in FIXED or _options_only(config):
        return
    if config.startswith("object="):
        if not os.path.isfile(config[len("object="):]):
            raise ValueError(f"{config}: no such file")
        return
    variant_switches(config)


def objects_for(configs: list, workdir: str) -> dict:
    """The BPF object of each configuration that runs ctrtrace with another."""
    objects = {}
    for c in configs:
        base = _unstopped(c)
        if base.startswith("object="):
            objects[c] = os.path.abspath(base[len("object="):])
        elif base not in FIXED and not _options_only(base):
            objects[c] = build_variant(base, workdir)
    return objects


def make_tracer(config: str, ctrtrace_cmd: list, objects: dict) -> Tracer:
    if config == "noop":
        return Tracer("noop", ["sleep", "3600"])
    if config == "execsnoop":
        return Tracer("execsnoop", ["stdbuf", "-oL", "/usr/sbin/execsnoop"])
    env = None
    if config in objects:
        env = {**os.environ, "CTRTRACE_BPF_OBJECT": objects[config]}
    ring = RING.fullmatch(_unstopped(config))
    size = ["--buffer-size", ring.group(1)] if ring else []
    slice_us = SLICE.fullmatch(_unstopped(config))
    if slice_us:
        env = {**os.environ, "CTRTRACE_READER_SLICE_US": slice_us.group(1)}
    # the name names its output files: object=PATH's slashes go
    name = re.sub(r"[^\w.+=-]", "_", config)
    return Tracer(name, ctrtrace_cmd + ["--json"] + size, env=env, kind="ctrtrace")


def wait_tracing(t: Tracer, timeout: float = 30.0) -> None:
    """For a variant that reports no exec: until ctrtrace says it is tracing."""
    end = time.monotonic() + timeout
    while "tracing on" not in t.errors():
        if t.proc.poll() is not None or time.monotonic() > end:
            raise SystemExit(f"{t.name} did not start: {t.errors().strip()[-200:]}")
        time.sleep(0.01)


def run(args) -> dict:
    workdir = tempfile.mkdtemp(prefix="ctrtrace-ablate-")
    tracers = []
    try:
        storm_exe = os.path.join(workdir, "storm")
        subprocess.run(["cc", "-O2", "-o", storm_exe, os.path.join(HERE, "storm.c")], check=True)
        target = os.path.join(workdir, "storm-true")
        shutil.copy("/bin/true", target)
        probes = make_probes(workdir)
        objects = objects_for(args.configs, workdir)
        ctrtrace_cmd = args.ctrtrace.split()
        results = {c: [] for c in args.configs}
        for r in range(args.rounds):
            order = list(args.configs)
            random.shuffle(order)
            for c in order:
                check_untraced()
                base = storm(storm_exe, args.execs, 1, target, False)
                t = make_tracer(c, ctrtrace_cmd, objects)
                tracers.append(t)
                t.start(workdir)
                plain = _unstopped(c)
                if plain in ("idle",) + RECORDS or plain.startswith(("spin", "object=")):
                    wait_tracing(t)  # an object= build may report nothing either
                else:
                    t.wait_ready(probes)
                time.sleep(0.2)
                if c.endswith("+stop"):
                    os.kill(t.proc.pid, signal.SIGSTOP)
                traced = storm(storm_exe, args.execs, 1, target, False)
                if c.endswith("+stop"):
                    os.kill(t.proc.pid, signal.SIGCONT)
                t.stop()
                results[c].append({"ratio": traced["rate"] / base["rate"],
                                   "work_cpu": traced["cpu_s"] / base["cpu_s"]})
            print(r, " ".join(f"{c}:{results[c][-1]['ratio']:.3f}" for c in args.configs),
                  flush=True)
        return results
    finally:
        for t in tracers:
            if t.proc is not None and t.proc.poll() is None:
                t.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def pairs(results: dict) -> list:
    """Every pair of configurations: median difference of ratios, its interval."""
    rows, names = [], list(results)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            median, ci = paired(results[a], results[b])
            rows.append({"first": a, "second": b, "median": median, "ci": ci})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("configs", nargs="+", metavar="CONFIG")
    ap.add_argument("--rounds", type=int, default=60)
    ap.add_argument("--execs", type=int, default=2000)
    ap.add_argument("--ctrtrace", default="ctrtrace", help="the command that runs ctrtrace")
    ap.add_argument("--json-out", metavar="FILE")
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root")
    for c in args.configs:
        try:
            check_config(c)
        except ValueError as e:
            raise SystemExit(str(e)) from None
    if len(set(args.configs)) != len(args.configs):
        raise SystemExit("each configuration once")
    results = run(args)
    print()
    for c, rs in results.items():
        print(f"{c:14s} ratio median {statistics.median(x['ratio'] for x in rs):.3f}  "
              f"work CPU median {statistics.median(x['work_cpu'] for x in rs):.3f}")
    rows = pairs(results)
    for p in rows:
        ci = "" if p["ci"] is None else f" [{p['ci'][0]:+.3f}, {p['ci'][1]:+.3f}]"
        print(f"{p['first']:>14s} - {p['second']:<14s} {p['median']:+.3f}{ci}: "
              f"first {verdict(p['ci'])}")
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump({"args": vars(args), "rounds": results, "pairs": rows}, f, indent=1)


if __name__ == "__main__":
    main()
