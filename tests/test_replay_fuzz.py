"""Replay never raises: damaged recordings of every kind, in every mode, as an
unprivileged user under an address-space limit, with time and memory bounds.

tests/fuzz_replay.py makes the damaged files from a real recording and
replays each in every mode; these tests run it as nobody and judge what it
saw.  The largest inputs (an endless file, a compressed line of 1 GB, a line
of 50 MB) run as their own `ctrtrace replay` processes, whose peak memory
the kernel reports.
"""

from __future__ import annotations

import collections
import gzip
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.root  # replays as nobody: setpriv

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE = os.path.join(HERE, "data", "docker-run.jsonl")
CTRTRACE = os.path.join(os.path.dirname(sys.executable), "ctrtrace")
NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
AS_LIMIT = 512 << 20  # bytes of address space
MAX_RSS_MB = 120
ERROR_LINE = re.compile(r"ctrtrace: error: (\S+):(\d+): \S.*\n\Z")

# damaged values that are legal after all (an exec without argv, a kernel
# thread's fork, an exit without children, a failed exec's -EPERM, ...)
ACCEPTED = {
    "exec-argv-6", "exec-argv_truncated-4", "exec-comm-5", "exec-comm-8", "exec-container-0",
    "exec-filename-5", "exec-filename-8", "exec-ret-1", "exit-reaper-0",
    "fork-clone_flags-0", "fork-thread-4", "setns-fd-1", "setns-nstype-1",
    "header-hostname-5", "header-hostname-8", "header-processes-6",
    "header-processes.0.argv-6", "summary-duration_s-3",
    "ok", "header-only", "gz-header-only", "no-summary", "two-summaries-then-events", "raw-c1",
}


AS_NOBODY = NOBODY + ["prlimit", f"--as={AS_LIMIT}"]


def _nobody_dir() -> Path:
    """A directory of nobody's, where nobody can reach it (pytest's are root's, 0700)."""
    path = tempfile.mkdtemp(prefix="ctrtrace-fuzz-")
    os.chown(path, 65534, 65534)
    return Path(path)


@pytest.fixture(scope="module")
def work():
    path = _nobody_dir()
    yield path
    shutil.rmtree(path)


@pytest.fixture(scope="module")
def results(work):
    cmd = AS_NOBODY + [sys.executable, os.path.join(HERE, "fuzz_replay.py"), SOURCE, str(work)]
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=str(work), timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    return [json.loads(line) for line in r.stdout.splitlines()]


def test_no_damage_escapes_as_a_traceback(results):
    assert len(results) > 2000
    for r in results:
        where = (r["file"], r["mode"], r["skip_bad"])
        assert r["escaped"] is None, (where, r["escaped"])
        assert r["status"] in (0, 6), (where, r["status"], r["stderr"])
        assert "Traceback" not in r["stderr"], where
        assert r["seconds"] < 10, where
        assert r["out_ok"], ("a control reached the output, or --json broke the contract",
                             where)


def test_a_bad_recording_is_one_line_naming_file_and_line(results):
    for r in results:
        if r["status"] == 6:
            m = ERROR_LINE.match(r["stderr"])
            assert m, (r["file"], r["mode"], r["stderr"])
            assert m.group(1).endswith(r["file"])


def test_every_damage_is_refused_unless_legal(results):
    refused = {r["file"].split(".jsonl")[0] for r in results
               if not r["skip_bad"] and r["mode"] == "" and r["status"] == 6}
    every = {r["file"].split(".jsonl")[0] for r in results}
    assert every - refused == ACCEPTED


def test_every_mode_agrees_on_what_is_bad(results):
    seen = collections.defaultdict(set)
    for r in results:
        seen[(r["file"], r["skip_bad"])].add((r["status"], r["stderr"] if r["status"] == 6
                                              else ""))
    split = {k: v for k, v in seen.items() if len(v) > 1}
    assert not split


def test_skip_bad_goes_on_past_damaged_events(results):
    by = {(r["file"], r["mode"], r["skip_bad"]): r for r in results}
    r = by[("exec-pid-1.jsonl", "", True)]
    assert r["status"] == 0 and "1 bad lines skipped" in r["stderr"]
    assert by[("exec-pid-1.jsonl", "--json", True)]["stderr"] == "ctrtrace: 1 bad lines skipped\n"
    # a damaged header is never skipped: nothing after it can be read
    assert by[("header-version-4.jsonl", "", True)]["status"] == 6


@pytest.mark.parametrize("name, reason", [
    ("header-version-4", "1: damaged header: version: true is not an integer"),
    ("header-version-5", "1: damaged header: version: \"abc\" is not an integer"),
    ("version-2", "1: format version 2 is newer than this ctrtrace reads (1): upgrade ctrtrace"),
    ("header-processes-5", "1: damaged header: processes: \"abc\" is not a list"),
    ("header-processes.0.pid-2", "1: damaged header: processes: [0]: pid: "
                                 "1.1805916207174113e+21 is not an integer"),
    ("header-processes.0.pid-1", "1: damaged header: processes: [0]: pid: "
                                 "-1 is out of range (0..4194304)"),
    ("header-host_ns-0", "1: damaged header: host_ns: null is not an object"),
    ("exec-ns-0", "damaged exec event: ns: null is not an object"),
    ("exec-ts-2", "damaged exec event: ts: 1.1805916207174113e+21 is not a UTC time"),
    ("exec-pid-3", "damaged exec event: pid: 1.5 is not an integer"),
    ("exec-pid-4", "damaged exec event: pid: true is not an integer"),
    ("exec-argv-5", "damaged exec event: argv: \"abc\" is not a list"),
    ("exec-argv_truncated-5", "damaged exec event: argv_truncated: \"abc\" is not true or false"),
    ("header-cut", "1: the header is cut off"),
    ("gz-first-block-damaged", "1: the compressed data is damaged"),
    ("gz-cut-in-first-block", "1: the compressed stream ends early"),
    ("gz-cut", "the compressed stream ends early: the recording was cut off"),
    ("gz-crc-damaged", "the compressed data is damaged (CRC check failed"),
    ("deep-array", "2: corrupt line"),
    ("long-line", "2: line longer than 1 MiB"),
    ("big-int", "2: corrupt line (number is infinity when parsed as double"),
    ("huge-float", "2: corrupt line (number is infinity when parsed as double"),
    ("empty", "1: empty file"),
    ("garbage", "1: not a ctrtrace trace"),
])
def test_what_each_damage_says(results, name, reason):
    (r,) = [r for r in results if r["file"].split(".jsonl")[0] == name
            and r["mode"] == "" and not r["skip_bad"]]
    assert r["status"] == 6 and reason in r["stderr"], r["stderr"]


def _replay(args, cwd):
    """`ctrtrace replay ARGS` as nobody under the limit: status, stderr, seconds, peak MB.

    GNU time reports the peak: the kernel's maxrss of a child of this (large)
    test process would count this process's pages from before its exec."""
    report = cwd / "time.txt"
    t0 = time.monotonic()
    r = subprocess.run(["/usr/bin/time", "-o", str(report), "-f", "%M"] + AS_NOBODY
                       + [CTRTRACE, "replay", *args], cwd=str(cwd), stdout=subprocess.DEVNULL,
                       stderr=subprocess.PIPE, text=True, timeout=120)
    seconds = time.monotonic() - t0
    peak_kb = int(report.read_text().split()[-1])
    return r.returncode, r.stderr, seconds, peak_kb / 1024


@pytest.mark.parametrize("extra", [[], ["--json"], ["--skip-bad", "--tree"]])
def test_endless_input_ends_with_one_line(work, extra):
    status, err, secs, mb = _replay(["/dev/zero", *extra], work)
    assert status == 6 and ERROR_LINE.match(err) and "longer than 16 MiB" in err, err
    assert secs < 10 and mb < MAX_RSS_MB, (secs, mb)


@pytest.fixture(scope="module")
def bomb(work):
    """1 MB of gzip that inflates to a line of 1 GB, between real events."""
    path = work / "bomb.jsonl.gz"
    lines = open(SOURCE, "rb").read().splitlines(keepends=True)
    with gzip.open(path, "wb", compresslevel=9) as f:
        f.write(lines[0] + b'{"type":"exec","comm":"')
        chunk = b"a" * (1 << 20)
        for _ in range(1024):
            f.write(chunk)
        f.write(b'"}\n' + b"".join(lines[1:]))
    os.chmod(path, 0o644)
    return path


@pytest.mark.parametrize("extra, status", [([], 6), (["--json", "--skip-bad"], 0),
                                           (["--skip-bad", "--tree"], 0)])
def test_a_compressed_gigabyte_line(work, bomb, extra, status):
    got, err, secs, mb = _replay([str(bomb), *extra], work)
    assert got == status, err
    assert "line longer than 1 MiB" in err if status else "1 bad lines skipped" in err
    assert secs < 30 and mb < MAX_RSS_MB, (secs, mb)


def test_a_50_mb_line(work):
    lines = open(SOURCE, "rb").read().splitlines(keepends=True)
    path = work / "long.jsonl"
    path.write_bytes(lines[0] + b'{"type":"exec","argv":["' + b"x" * (50 << 20) + b'"]}\n'
                     + b"".join(lines[1:]))
    os.chmod(path, 0o644)
    for extra in ([], ["--skip-bad"], ["--json", "--skip-bad"]):
        status, err, secs, mb = _replay([str(path), *extra], work)
        assert status == (0 if extra else 6), err
        assert secs < 10 and mb < MAX_RSS_MB, (extra, secs, mb)


def test_a_chain_of_processes_as_deep_as_it_wants(work):
    """Each process forks the next: 10,000 levels in the header, 3,000 more by
    fork events.  The tree is drawn without recursion, its indentation
    bounded, every process on its own row."""
    lines = open(SOURCE, "rb").read().splitlines(keepends=True)
    header = json.loads(lines[0])
    proto = header["processes"][-1]
    header["processes"] = [dict(proto, pid=1000 + i, ppid=1000 + i - 1 if i else 1, vpid=1000 + i,
                                start_ns=i * 10_000_000, argv=[f"p{i}"]) for i in range(10_000)]
    fork = next(json.loads(line) for line in lines[1:] if b'"type":"fork"' in line)
    events = []
    for i in range(3000):
        pid, parent = 20_000 + i, (20_000 + i - 1 if i else 1000 + 9999)
        parent_start = 200_000_000_000 + i - 1 if i else 9999 * 10_000_000
        events.append(dict(fork, pid=pid, tid=pid, ppid=parent, parent_pid=parent, parent_tid=parent,
                           start_ns=200_000_000_000 + i, parent_start_ns=parent_start,
                           thread=False, container=None))
    path = work / "chain.jsonl"
    path.write_bytes(b"".join(json.dumps(d, separators=(",", ":")).encode() + b"\n"
                              for d in [header, *events]))
    os.chmod(path, 0o644)
    r = subprocess.run(AS_NOBODY + [CTRTRACE, "replay", str(path), "--tree"], cwd=str(work),
                       capture_output=True, timeout=120)
    assert r.returncode == 0, r.stderr.decode()[-2000:]
    rows = r.stdout.decode().splitlines()[1:]
    assert len(rows) >= 13_000
    assert max(len(row) for row in rows) < 600
    assert any("[depth 12999] " in row for row in rows), rows[-3:]
