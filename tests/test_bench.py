"""The benchmark drivers run (with small numbers): they are not timed here,
only kept working. The numbers themselves come from bench/, run by hand."""

from __future__ import annotations

import ctypes
import importlib.util
import json
import math
import os
import random
import subprocess
import sys
import time

import pytest

BENCH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench")
CTRTRACE = f"{sys.executable} -m tracer"
OBJECT = os.path.join(os.path.dirname(BENCH), "tracer", "bpf", "ctrtrace.bpf.o")


def _run(*args: str, timeout: float = 300) -> str:
    r = subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout


def _bpf_stats() -> str:
    with open("/proc/sys/kernel/bpf_stats_enabled") as f:
        return f.read()


@pytest.mark.bpf
def test_compare_driver(tmp_path):
    out = tmp_path / "rows.json"
    stats = _bpf_stats()
    _run(os.path.join(BENCH, "compare.py"), "--execs", "200", "--rounds", "1", "--workers", "1",
         "--tracers", "noop,ctrtrace,ctrtrace-bcc", "--ctrtrace", CTRTRACE,
         "--json-out", str(out))
    rows = {r["tracer"]: r for r in json.loads(out.read_text())["rows"]}
    for name in ("ctrtrace", "ctrtrace-bcc"):
        assert rows[name]["seen_min"] == 200 and rows[name]["lost"] == "0", name
    assert rows["ctrtrace"]["rss_mb"] > 0 and rows["ctrtrace"]["ready_ms"] > 0
    # capturing began before the first report was written, never after
    assert 0 < rows["ctrtrace"]["capture_ms"] <= rows["ctrtrace"]["ready_ms"]
    assert 0 < rows["noop"]["ratio"] < 10 and 0 < rows["noop"]["work_cpu"] < 10
    # the BPF time counted is the tracer's programs': four runs an exec (fork,
    # exec, the execve's return, exit), more if something else ran meanwhile
    assert 3.9 < rows["ctrtrace"]["bpf_runs_per_exec"] < 6
    assert rows["ctrtrace"]["bpf_us_per_exec"] > 0
    assert rows["noop"]["bpf_runs_per_exec"] == 0
    assert _bpf_stats() == stats  # kernel.bpf_stats_enabled as it was


def _compare_module():
    spec = importlib.util.spec_from_file_location("compare", os.path.join(BENCH, "compare.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_median_ci_order_statistics():
    ci = _compare_module().median_ci
    assert ci([3, 1, 2, 5, 4]) is None  # 5 rounds: even (min, max) covers only 93.75 %
    assert ci([6, 1, 3, 2, 5, 4]) == (1, 6)  # 96.9 %
    # 20 rounds: P(Binomial(20, 1/2) <= 5) = 2.07 %, <= 6: 5.77 % -> the 6th and 15th
    assert ci(list(range(20, 0, -1))) == (6, 15)


def test_median_ci_covers_as_stated():
    """The interval holds the true median as often as its level says, on a
    skewed distribution: 9 values -> (x_2, x_8), which cover it with
    probability 1 - 2 * 10/512 = 96.1 % (x_3, x_7 would give 82 %)."""
    ci = _compare_module().median_ci
    rng = random.Random(1)
    median = math.log(2)  # of the exponential distribution with mean 1
    trials = 4000
    covered = 0
    for _ in range(trials):
        lo, hi = ci([rng.expovariate(1.0) for _ in range(9)])
        covered += lo <= median <= hi
    assert abs(covered / trials - (1 - 2 * 10 / 512)) < 0.015


def test_verdict_reads_the_interval():
    verdict = _compare_module().verdict
    assert verdict((-0.10, -0.001)) == "behind"
    assert verdict((0.002, 0.05)) == "ahead"
    assert verdict((-0.10, 0.0)) == "not told apart"  # the interval holds 0
    assert verdict((-0.05, 0.07)) == "not told apart"
    assert verdict(None) == "too few rounds to tell"


@pytest.mark.bpf
def test_compare_refuses_a_tracer_left_running(tmp_path):
    """A tracer that outlived its run would tax the untraced storms too:
    compare.py names it and stops, and runs once it is gone."""
    compare = _compare_module()
    compare.check_untraced()
    err = tmp_path / "err"
    with open(err, "wb") as e:
        tracer = subprocess.Popen([sys.executable, "-m", "tracer", "--json"],
                                  stdout=subprocess.DEVNULL, stderr=e)
    try:
        deadline = time.monotonic() + 30
        while b"tracing on" not in err.read_bytes():
            assert tracer.poll() is None and time.monotonic() < deadline, err.read_text()
            time.sleep(0.05)
        with pytest.raises(SystemExit, match=f"process {tracer.pid} .*tracer"):
            compare.check_untraced()
    finally:
        tracer.terminate()
        tracer.wait(timeout=30)
    compare.check_untraced()


@pytest.mark.bpf
def test_startup_burst_driver():
    out = _run(os.path.join(BENCH, "startup_burst.py"), "--execs", "200", "--rounds", "1",
               "--ctrtrace", CTRTRACE)
    assert "every exec seen, none lost" in out


def test_replay_driver():
    out = _run(os.path.join(BENCH, "replay.py"), "--events", "20000", "--ctrtrace", CTRTRACE,
               "--baseline", CTRTRACE, "--modes", "json,text,tree")
    assert out.count("events/s") == 12  # 3 modes at two sizes, each with the baseline
    assert out.count("x the baseline's rate") == 6


def test_event_path_driver():
    out = _run(os.path.join(BENCH, "event_path.py"), "--repeat", "2")
    assert out.count("µs/event") == 8
    out = _run(os.path.join(BENCH, "event_path.py"), "--repeat", "2", "--storm")
    assert "exec, fork and exit records" in out


@pytest.mark.bpf
def test_ready_driver():
    out = _run(os.path.join(BENCH, "ready.py"), "--launches", "1", "--ctrtrace", CTRTRACE,
               "--backend", "core,bcc")
    rows = [line.split() for line in out.splitlines()]
    assert [row[:2] for row in rows] == [[b, s] for b in ("core", "bcc")
                                         for s in ("warm", "off", "cold")]
    assert all("nan" not in row for row in rows), out


def test_html_driver():
    out = _run(os.path.join(BENCH, "html.py"), "--events", "1000", "--loads", "1")
    row = out.splitlines()[-1].split()
    assert row[0] == "1000" and int(row[1]) > 100


def _ablate_module():
    spec = importlib.util.spec_from_file_location("ablate", os.path.join(BENCH, "ablate.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_ablate_object_configuration(tmp_path):
    """object=PATH runs ctrtrace with that object, as given; nothing is built for it."""
    ab = _ablate_module()
    obj = tmp_path / "other.bpf.o"
    obj.write_bytes(b"")
    config = f"object={obj}"
    ab.check_config(config)
    assert ab.objects_for(["ctrtrace", config, "execsnoop"], str(tmp_path)) == {config: str(obj)}
    t = ab.make_tracer(config, ["ctrtrace"], {config: str(obj)})
    assert t.env["CTRTRACE_BPF_OBJECT"] == str(obj) and "/" not in t.name
    stopped = f"{config}+stop"
    ab.check_config(stopped)
    ab.check_config("idle+stop")
    assert ab.objects_for([stopped], str(tmp_path)) == {stopped: str(obj)}
    for bad in (f"object={tmp_path}/missing.o", "object=", "fast", "execsnoop+stop"):
        with pytest.raises(ValueError):
            ab.check_config(bad)


def test_ablate_ring_and_slice_configurations(tmp_path):
    """ring=N runs the built ctrtrace with an N MiB buffer, slice=US with its
    reader's slice set; nothing is built for them."""
    ab = _ablate_module()
    for config in ("ring=1", "ring=16+stop", "slice=0", "slice=2000"):
        ab.check_config(config)
        assert ab.objects_for([config], str(tmp_path)) == {}
    t = ab.make_tracer("ring=2+stop", ["ctrtrace"], {})
    assert t.argv[-3:] == ["--json", "--buffer-size", "2"] and t.env is None
    t = ab.make_tracer("slice=0", ["ctrtrace"], {})
    assert t.argv[-1] == "--json" and t.env["CTRTRACE_READER_SLICE_US"] == "0"
    for bad in ("ring=0", "ring=", "ring=x", "ring=01", "slice=", "slice=-1", "slice=01"):
        with pytest.raises(ValueError):
            ab.check_config(bad)


def test_ablate_variant_switches():
    """Each variant is a set of -D switches of the ablation section of
    bpf/ctrtrace.bpf.c; a name that is none is refused."""
    ab = _ablate_module()
    assert ab.variant_switches("idle") == ("CT_ABLATE_RETURN_AT_ONCE",)
    assert ab.variant_switches("spin=7") == (
        "CT_ABLATE_RETURN_AT_ONCE", "CT_ABLATE_KEEP=CT_PROG_EXEC", "CT_ABLATE_SPIN=7")
    assert ab.variant_switches("spin-execve-return=9")[1:] == (
        "CT_ABLATE_KEEP=CT_PROG_EXIT_EXECVE", "CT_ABLATE_SPIN=9")
    for config in (*ab.VARIANTS, "spin=7", "spin-execve-return=9"):
        ab.check_config(config)
        ab.check_config(f"{config}+stop")
    for bad in ("spin=", "spin=x", "fast", "spin-execve-return"):
        with pytest.raises(ValueError):
            ab.variant_switches(bad)
        with pytest.raises(ValueError):
            ab.check_config(bad)


def test_make_refuses_a_variant_in_place_of_the_package_object():
    r = subprocess.run(["make", "-n", "-C", os.path.join(os.path.dirname(BENCH), "bpf"),
                        "CFLAGS_EXTRA=-DCT_ABLATE_RETURN_AT_ONCE"],
                       capture_output=True, text=True)
    assert r.returncode != 0 and "OUT=DIR of its own" in r.stderr


SPIN_STEPS = 1234
VARIANT_CONFIGS = ("idle", "exec-only", f"spin={SPIN_STEPS}", f"spin-execve-return={SPIN_STEPS}",
                   "norec", "execrec", "outfull", "outsmall")


@pytest.fixture(scope="module")
def variants(tmp_path_factory):
    """Every variant ablate.py offers, built as it builds them, and ctrtrace's own object."""
    ab = _ablate_module()
    workdir = str(tmp_path_factory.mktemp("ablate"))
    built = {c: ab.build_variant(c, workdir) for c in VARIANT_CONFIGS}
    return {"ctrtrace": OBJECT, **built}


def _loaded(path: str):
    """The object loaded and attached as ctrtrace loads it (this process ignored)."""
    from tracer.kernel.host import LoadConfig
    from tracer.kernel.loader import ProgramLoader

    return ProgramLoader(LoadConfig(bpf_object=path)).result()


def _programs() -> dict:
    """This process's loaded BPF programs: name -> (id, instructions after the verifier)."""
    progs = {}
    for fd in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{fd}") != "anon_inode:bpf-prog":
                continue
            with open(f"/proc/self/fdinfo/{fd}") as f:
                info = dict(line.split(":\t", 1) for line in f.read().splitlines() if ":\t" in line)
        except OSError:  # the listing's own fd, gone
            continue
        prog_id = info["prog_id"].strip()
        show = json.loads(subprocess.run(["bpftool", "-j", "prog", "show", "id", prog_id],
                                         capture_output=True, text=True, check=True).stdout)
        assert show["name"] not in progs, "another object's programs are loaded"
        progs[show["name"]] = (prog_id, show["bytes_xlated"] // 8)
    return progs


def _records(obj) -> list:
    """(type, length) of each record written while a child forks, execs, unshares
    its UTS namespace, execs again and exits (other processes' records too)."""
    from tracer.kernel import layout as L
    from tracer.kernel.ringbuf import RingBuffer

    rb = RingBuffer(obj.map_fd("events"))
    try:
        rb.drain()
        subprocess.run(["unshare", "--uts", "true"], check=True)
        recs = rb.drain()  # the exit record was written before the wait returned
    finally:
        rb.close()
    head = ctypes.sizeof(L.CtHeader)
    return [(L.CtHeader.from_buffer_copy(r[:head]).type, len(r)) for r in recs]


# A program that returns at once keeps a handful of instructions once the
# verifier has removed the rest; the smallest working one has a couple of hundred.
AT_ONCE = 16


@pytest.mark.bpf
def test_ablate_variants_return_at_once(variants):
    """idle: every program returns at once; exec-only: all but the exec one, which is
    as in ctrtrace; spin=N: all but the exec one, which only spins (its callback
    stays); spin-execve-return=N the same in sys_exit_execve's program.  None of
    them writes a record but exec-only, which writes the execs' only."""
    from tracer.kernel import layout as L

    obj = _loaded(variants["ctrtrace"])
    try:
        full = _programs()
    finally:
        obj.close()
    assert len(full) == 9 and min(n for _, n in full.values()) > 10 * AT_ONCE
    working = {"idle": None, "exec-only": "handle_exec", f"spin={SPIN_STEPS}": "handle_exec",
               f"spin-execve-return={SPIN_STEPS}": "handle_exit_execve"}
    for config, kept in working.items():
        obj = _loaded(variants[config])
        try:
            progs = _programs()
            records = _records(obj)
            dump = "" if kept is None else subprocess.run(
                ["bpftool", "prog", "dump", "xlated", "id", progs[kept][0]],
                capture_output=True, text=True, check=True).stdout
        finally:
            obj.close()
        assert progs.keys() == full.keys(), config
        assert all(n <= AT_ONCE for name, (_, n) in progs.items() if name != kept), config
        if config == "exec-only":
            assert progs[kept][1] == full[kept][1]
            assert {t for t, _ in records} == {L.CT_EVENT_EXEC}
        else:
            assert records == [], config
        if config.startswith("spin"):
            assert "ct_ablate_step" in dump and str(SPIN_STEPS) in dump, config


@pytest.mark.bpf
def test_ablate_record_variants(variants):
    """norec writes no record; execrec the execs' only; outfull every record as
    ctrtrace writes it; outsmall the fork, exit, setns and unshare ones two
    cgroup names short."""
    from tracer.kernel import layout as L

    fixed = {L.CT_EVENT_FORK: L.CtForkEvent, L.CT_EVENT_EXIT: L.CtExitEvent,
             L.CT_EVENT_SETNS: L.CtSetnsEvent, L.CT_EVENT_UNSHARE: L.CtUnshareEvent}
    short = {"ctrtrace": 0, "outfull": 0, "outsmall": 2 * L.CT_CGROUP_NAME_LEN}
    for config in ("ctrtrace", "norec", "execrec", "outfull", "outsmall"):
        obj = _loaded(variants[config])
        try:
            records = _records(obj)
        finally:
            obj.close()
        types = {t for t, _ in records}
        if config == "norec":
            assert records == []
        elif config == "execrec":  # a failed exec elsewhere meanwhile is an exec record too
            assert L.CT_EVENT_EXEC in types <= {L.CT_EVENT_EXEC, L.CT_EVENT_EXEC_FAILED}
        else:
            assert {L.CT_EVENT_EXEC, L.CT_EVENT_FORK, L.CT_EVENT_EXIT,
                    L.CT_EVENT_UNSHARE} <= types, config
            for t, n in records:
                if t in fixed:
                    assert n == ctypes.sizeof(fixed[t]) - short[config], (config, t)


@pytest.mark.bpf
def test_ablate_driver(tmp_path):
    out = tmp_path / "ablate.json"
    _run(os.path.join(BENCH, "ablate.py"), "--rounds", "1", "--execs", "100",
         "--ctrtrace", CTRTRACE, "--json-out", str(out), "ctrtrace", "ctrtrace+stop", "idle",
         f"object={OBJECT}")
    d = json.loads(out.read_text())
    assert sorted(d["rounds"]) == ["ctrtrace", "ctrtrace+stop", "idle", f"object={OBJECT}"]
    assert all(len(rs) == 1 and 0 < rs[0]["ratio"] < 10 for rs in d["rounds"].values())
    assert len(d["pairs"]) == 6 and all(p["ci"] is None for p in d["pairs"])  # 1 round
