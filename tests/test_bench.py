"""The benchmark drivers run (with small numbers): they are not timed here,
only kept working. The numbers themselves come from bench/, run by hand."""

from __future__ import annotations

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


def test_compare_driver(tmp_path):
    out = tmp_path / "rows.json"
    stats = _bpf_stats()
    _run(os.path.join(BENCH, "compare.py"), "--execs", "200", "--rounds", "1", "--workers", "1",
         "--tracers", "noop,ctrtrace", "--ctrtrace", CTRTRACE, "--json-out", str(out))
    rows = {r["tracer"]: r for r in json.loads(out.read_text())["rows"]}
    assert rows["ctrtrace"]["seen_min"] == 200 and rows["ctrtrace"]["lost"] == "0"
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


def test_startup_burst_driver():
    out = _run(os.path.join(BENCH, "startup_burst.py"), "--execs", "200", "--rounds", "1",
               "--ctrtrace", CTRTRACE)
    assert "every exec seen, none lost" in out


def test_replay_driver():
    out = _run(os.path.join(BENCH, "replay.py"), "--events", "20000", "--ctrtrace", CTRTRACE)
    assert out.count("events/s") == 6


def test_ready_driver():
    out = _run(os.path.join(BENCH, "ready.py"), "--launches", "1", "--ctrtrace", CTRTRACE)
    assert [l.split()[0] for l in out.splitlines()] == ["warm", "off", "cold"]


def _ablate_module():
    spec = importlib.util.spec_from_file_location("ablate", os.path.join(BENCH, "ablate.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _bpf_source() -> str:
    with open(os.path.join(os.path.dirname(BENCH), "bpf", "ctrtrace.bpf.c")) as f:
        return f.read()


def test_ablate_variants_change_only_the_programs_they_name():
    ab = _ablate_module()
    src = _bpf_source()
    programs = src.count("\nSEC(")
    assert programs >= 9
    idle = ab.variant_source(src, "idle")
    assert idle.count(ab.RETURN_AT_ONCE) == programs
    # nothing else changed: the inserted lines are all there is to it
    assert [line for line in idle.split("\n") if line != ab.RETURN_AT_ONCE] == src.split("\n")
    only = ab.variant_source(src, "exec-only")
    assert only.count(ab.RETURN_AT_ONCE) == programs - 1
    exec_body = only.split(ab.EXEC_SEC)[1].split("\n")
    assert exec_body[2] == "{" and exec_body[3] != ab.RETURN_AT_ONCE
    spin = ab.variant_source(src, "spin=7")
    assert spin.count(ab.RETURN_AT_ONCE) == programs - 1 and "bpf_loop(7, ablate_step" in spin
    ret = ab.variant_source(src, "spin-execve-return=9")
    assert ret.count(ab.RETURN_AT_ONCE) == programs - 1 and "bpf_loop(9, ablate_step" in ret
    assert ret.split(ab.SPIN_SECS["spin-execve-return"])[1].split("\n")[3].startswith(
        "\tif (cfg.ignore_tgid != 0xfffffffe) { __u64 n = 0; bpf_loop(9,")
    for bad in ("spin=", "spin=x", "fast", "spin-execve-return"):
        with pytest.raises(ValueError):
            ab.variant_source(src, bad)


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


def _execs_seen(tmp_path, env) -> int:
    r = subprocess.run([sys.executable, "-m", "tracer", "--json", "--linger", "0.2", "--", "true"],
                       capture_output=True, text=True, timeout=60, env=env)
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout.splitlines()[-1])
    assert summary["type"] == "summary"
    return summary["counts"]["exec"]


def test_ablate_variants_load_and_do_what_they_say(tmp_path):
    """The variants the ablation runs are real objects: they load, and the
    ones that return at once report nothing where ctrtrace reports the exec."""
    ab = _ablate_module()
    assert _execs_seen(tmp_path, None) >= 1
    for config in ("idle", "spin=10", "spin-execve-return=10"):
        obj = ab.build_variant(config, str(tmp_path))
        assert _execs_seen(tmp_path, {**os.environ, "CTRTRACE_BPF_OBJECT": obj}) == 0, config
    obj = ab.build_variant("exec-only", str(tmp_path))
    assert _execs_seen(tmp_path, {**os.environ, "CTRTRACE_BPF_OBJECT": obj}) >= 1


def test_ablate_record_variants(tmp_path):
    """norec writes no record, execrec only the execs', outfull the records ctrtrace reads, and
    outsmall's short ones load; a source they no longer fit is refused."""
    from tracer.loader import LoadConfig, ProgramLoader

    ab = _ablate_module()
    src = _bpf_source()
    with pytest.raises(ValueError):
        ab.variant_source(src.replace("bpf_ringbuf_discard(e, 0);", "", 1), "norec")
    norec = ab.build_variant("norec", str(tmp_path))
    assert _execs_seen(tmp_path, {**os.environ, "CTRTRACE_BPF_OBJECT": norec}) == 0
    execrec = ab.variant_source(src, "execrec")
    assert execrec.count("bpf_ringbuf_output") == 2 and "bpf_ringbuf_submit" not in execrec
    full = ab.build_variant("outfull", str(tmp_path))
    assert _execs_seen(tmp_path, {**os.environ, "CTRTRACE_BPF_OBJECT": full}) >= 1
    small = ab.build_variant("outsmall", str(tmp_path))
    ProgramLoader(LoadConfig(bpf_object=small)).result().close()


def test_ablate_driver(tmp_path):
    out = tmp_path / "ablate.json"
    _run(os.path.join(BENCH, "ablate.py"), "--rounds", "1", "--execs", "100",
         "--ctrtrace", CTRTRACE, "--json-out", str(out), "ctrtrace", "ctrtrace+stop", "idle",
         f"object={OBJECT}")
    d = json.loads(out.read_text())
    assert sorted(d["rounds"]) == ["ctrtrace", "ctrtrace+stop", "idle", f"object={OBJECT}"]
    assert all(len(rs) == 1 and 0 < rs[0]["ratio"] < 10 for rs in d["rounds"].values())
    assert len(d["pairs"]) == 6 and all(p["ci"] is None for p in d["pairs"])  # 1 round
