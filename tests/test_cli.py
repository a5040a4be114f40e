"""The ctrtrace command through click's CliRunner: output, filters, errors."""

from __future__ import annotations

import glob
import json
import os
import subprocess
import sys
import textwrap
import threading
import time

import pytest
from click.testing import CliRunner

import tracer.kernel.host
from tracer.cli import main
from tracer.kernel.layout import NS_NAMES
from tracer.model.events import EVENT_TYPES

COMMON_KEYS = {"type", "ts", "ktime_ns", "pid", "tid", "ppid", "vpid", "comm", "uid", "gid", "ns"}
TYPE_KEYS = {
    "exec": {"filename", "argv", "argv_truncated"},
    "fork": {"parent_pid", "clone_flags"},
    "exit": {"exit_code", "signal"},
    "setns": {"fd", "nstype", "ret", "ns_before"},
    "unshare": {"flags", "ret", "ns_before"},
}


def run(args, **kw):
    return CliRunner().invoke(main, args, catch_exceptions=False, **kw)


def json_lines(text: str):
    return [json.loads(line) for line in text.splitlines()]


@pytest.mark.bpf
def test_json_stream_follows_the_contract():
    r = run(["--json", "--", "sh", "-c", "unshare --uts true; exit 3"])
    assert r.exit_code == 3  # the command's status
    lines = json_lines(r.stdout)
    head, events, summary = lines[0], lines[1:-1], lines[-1]
    assert head["type"] == "header" and head["format"] == "ctrtrace" and head["version"] == 1
    for key in ("hostname", "kernel", "boot_time", "host_ns"):
        assert key in head
    assert set(head["host_ns"]) == set(NS_NAMES)
    assert summary["type"] == "summary" and summary["lost"] == 0
    assert summary["events"] == len(events)
    assert sum(summary["counts"].values()) == len(events)
    assert {e["type"] for e in events} <= set(EVENT_TYPES)
    for e in events:
        missing = (COMMON_KEYS | TYPE_KEYS[e["type"]]) - set(e)
        assert not missing, (e["type"], missing)
        assert set(e["ns"]) == set(NS_NAMES) and all(isinstance(v, int) for v in e["ns"].values())
    types = {e["type"] for e in events}
    assert {"fork", "exec", "exit", "unshare"} <= types
    sh = [e for e in events if e["type"] == "exec" and e["argv"][:2] == ["sh", "-c"] and e["ret"] == 0]
    assert len(sh) == 1
    ex = [e for e in events if e["type"] == "exit" and e["pid"] == sh[0]["pid"]]
    assert ex[0]["exit_code"] == 3


@pytest.mark.bpf
def test_text_output_and_summary_on_stderr():
    r = run(["--", "sh", "-c", "unshare --uts --net true"])
    assert r.exit_code == 0
    out = r.stdout.splitlines()
    assert out[0].split()[:6] == ["TIME(s)", "EVENT", "PID", "PPID", "VPID", "COMMAND"]
    unshare = [line for line in out if " unshare " in line and "unshare(" in line]
    assert len(unshare) == 1
    assert "unshare(CLONE_NEWUTS|CLONE_NEWNET) = 0" in unshare[0]
    assert unshare[0].endswith("[+uts +net]")
    true = [line for line in out if " exec " in line and line.rstrip().endswith("true  [+uts +net]")]
    assert len(true) == 1
    assert "lost 0" in r.stderr and r.stderr.startswith("ctrtrace: ")


@pytest.mark.bpf
def test_comm_filter_runs_in_the_kernel():
    r = run(["--json", "--comm", "sleep", "--", "sh", "-c", "sleep 0.1; /bin/true"])
    assert r.exit_code == 0
    lines = json_lines(r.stdout)
    events = lines[1:-1]
    assert events and all(e["comm"] == "sleep" for e in events)
    assert any(e["type"] == "exec" and e["argv"] == ["sleep", "0.1"] for e in events)
    assert lines[-1]["filtered_in_kernel"] > 0


@pytest.mark.bpf
def test_pid_filter_follows_descendants_only():
    target = subprocess.Popen(["sh", "-c", "sleep 0.6; /bin/echo inside; sh -c 'sleep 0.1'"],
                              stdout=subprocess.DEVNULL)
    noise_stop = threading.Event()

    def noise():
        while not noise_stop.is_set():
            subprocess.run(["/bin/echo", "outside"], stdout=subprocess.DEVNULL)
            time.sleep(0.05)

    t = threading.Thread(target=noise)
    t.start()
    try:
        r = run(["--json", "--pid", str(target.pid), "-d", "1.5"])
    finally:
        noise_stop.set()
        t.join()
        target.wait()
    assert r.exit_code == 0
    events = json_lines(r.stdout)[1:-1]
    family = {target.pid}
    for e in events:  # events come in order: a child's fork precedes its other events
        assert e["pid"] in family or e["ppid"] in family, e
        family.add(e["pid"])
    argvs = [e["argv"] for e in events if e["type"] == "exec" and e["ret"] == 0]
    assert ["/bin/echo", "inside"] in argvs
    assert ["/bin/echo", "outside"] not in argvs
    assert ["sleep", "0.1"] in argvs  # a grandchild


@pytest.mark.bpf
def test_ns_changes_shows_only_namespace_events():
    r = run(["--json", "--ns-changes", "--", "sh", "-c",
             "/bin/true; unshare --uts --ipc /bin/true; /bin/true"])
    assert r.exit_code == 0
    lines = json_lines(r.stdout)
    host = lines[0]["host_ns"]
    events = lines[1:-1]
    assert [e["type"] for e in events if e["type"] == "unshare"] == ["unshare"]
    for e in events:
        if e["type"] in ("setns", "unshare"):
            assert e["ret"] == 0
        else:
            assert e["ns"] != host or e["type"] == "fork", e
    execs = [e for e in events if e["type"] == "exec"]
    assert [e["argv"] for e in execs] == [["/bin/true"]]  # the one in the new namespaces
    assert execs[0]["ns"]["uts"] != host["uts"]


# -- errors: one line, a status, no traceback ---------------------------------

def _one_line_error(r, status: int, text: str) -> None:
    assert r.exit_code == status, r.output
    errors = [line for line in r.stderr.splitlines() if line.startswith("ctrtrace: error: ")]
    assert len(errors) == 1, r.stderr
    assert text in r.stderr
    assert "Traceback" not in r.output + r.stderr


def test_not_root(monkeypatch):
    monkeypatch.setattr(tracer.kernel.host, "effective_caps", lambda: 0)
    _one_line_error(run(["-d", "0"]), 3, "needs root")


@pytest.mark.root
def test_no_btf(monkeypatch):
    monkeypatch.setattr(tracer.kernel.host, "BTF_PATH", "/nonexistent/vmlinux")
    _one_line_error(run(["-d", "0"]), 4, "no BTF")


@pytest.mark.root
def test_no_tracefs(monkeypatch):
    monkeypatch.setattr(tracer.kernel.host, "TRACEFS_PATHS", ("/nonexistent/tracing",))
    _one_line_error(run(["-d", "0"]), 4, "tracefs is not mounted")


def _libbpf_files() -> set[str]:
    """Every file the dynamic loader could take libbpf from."""
    listed = subprocess.run(["ldconfig", "-p"], capture_output=True, text=True).stdout
    names = [line.rsplit(" => ", 1)[-1] for line in listed.splitlines() if "libbpf.so" in line]
    for d in ("/lib*", "/lib*/*", "/usr/lib*", "/usr/lib*/*", "/usr/local/lib*"):
        names += glob.glob(f"{d}/libbpf.so*")
    return {os.path.realpath(n) for n in names if os.path.exists(n)}


@pytest.mark.root
def test_no_libbpf():
    """A machine without libbpf: in a mount namespace of its own, ctrtrace
    finds /dev/null where each copy of the library was."""
    files = sorted(_libbpf_files())
    assert files
    script = 'for f; do mount --bind /dev/null "$f" || exit 99; done; exec "$0" -m tracer -d 0'
    r = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", script,
                        sys.executable, *files], capture_output=True, text=True, timeout=60)
    assert r.returncode == 4, r.stderr
    errors = [line for line in r.stderr.splitlines() if line.startswith("ctrtrace: error: ")]
    assert len(errors) == 1 and "libbpf is not installed" in errors[0], r.stderr
    assert "Traceback" not in r.stdout + r.stderr


@pytest.mark.root
def test_missing_and_corrupt_object(monkeypatch, tmp_path):
    monkeypatch.setenv("CTRTRACE_BPF_OBJECT", str(tmp_path / "missing.o"))
    _one_line_error(run(["--backend", "core", "-d", "0"]), 4, "BPF object is missing")
    bad = tmp_path / "bad.o"
    bad.write_bytes(b"this is not an ELF file")
    monkeypatch.setenv("CTRTRACE_BPF_OBJECT", str(bad))
    _one_line_error(run(["--backend", "core", "-d", "0"]), 5, "cannot open BPF object")


@pytest.mark.bpf
def test_auto_takes_bcc_where_core_cannot_load(monkeypatch, tmp_path):
    monkeypatch.setenv("CTRTRACE_BPF_OBJECT", str(tmp_path / "missing.o"))
    r = run(["--json", "-d", "0"])
    assert r.exit_code == 0, r.output
    assert json_lines(r.stdout)[0]["backend"] == "bcc"
    monkeypatch.delenv("CTRTRACE_BPF_OBJECT")
    r = run(["--json", "-d", "0"])
    assert json_lines(r.stdout)[0]["backend"] == "core"


@pytest.mark.bpf
def test_verifier_rejection_shows_its_last_lines(monkeypatch, tmp_path):
    # a program the verifier refuses: it returns without setting R0
    src = tmp_path / "bad.bpf.c"
    src.write_text(textwrap.dedent("""
        #define SEC(name) __attribute__((section(name), used))
        #define __uint(name, val) int (*name)[val]
        char LICENSE[] SEC("license") = "GPL";
        const volatile char cfg[64] = {};
        struct { __uint(type, 27 /* RINGBUF */); __uint(max_entries, 4096); } events SEC(".maps");
        SEC("tracepoint/syscalls/sys_enter_setns")
        int bad(void *ctx) { int x[4]; return x[ctx ? 1 : 2] + cfg[0]; } /* x is never written */
    """))
    obj = tmp_path / "bad.bpf.o"
    subprocess.run(["clang", "-O2", "-g", "-target", "bpf", "-c", str(src), "-o", str(obj)],
                   check=True)
    monkeypatch.setenv("CTRTRACE_BPF_OBJECT", str(obj))
    r = run(["-d", "0"])
    _one_line_error(r, 5, "the kernel refused the BPF programs")
    assert "BEGIN PROG LOAD LOG" in r.stderr and "processed" in r.stderr


@pytest.mark.root
def test_unknown_pid_is_a_usage_error():
    _one_line_error(run(["--pid", "999999", "-d", "0"]), 2, "no process with pid 999999")


def test_command_not_found():
    _one_line_error(run(["--", "/nonexistent/cmd"]), 2, "cannot run /nonexistent/cmd")


def test_write_to_dash_is_refused(tmp_path, monkeypatch):
    """-w - would record into a file named '-': one line pointing at --json."""
    monkeypatch.chdir(tmp_path)
    _one_line_error(run(["-w", "-", "-d", "0"]), 2, "use --json")
    assert not (tmp_path / "-").exists()
