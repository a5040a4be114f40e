"""The bcc backend is the CO-RE backend's programs, built by bcc: the same
programs and maps, the same records of the same events.

(Every test that traces through the ``capture`` fixture runs on both
backends against the kernel's ground truth; this file holds what keeps the
two builds one: the program list and the maps against the CO-RE object's,
the struct layouts against BTF, and both backends loaded at once over one
workload, every record compared.)
"""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import subprocess
import sys
import textwrap

import pytest

from tracer.commands.session import Session, TraceOptions
from tracer.kernel import bcc, bpfsys, host, kheaders, kstructs, layout, loader
from tracer.kernel.btf import Btf
from tracer.kernel.libbpf import BpfObject
from tracer.model.events import ForkEvent

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _source() -> str:
    with open(os.path.join(bcc.source_dir(), bcc.SOURCE_NAME)) as f:
        return f.read()


@pytest.fixture(scope="module")
def core_object():
    obj = BpfObject(loader.default_object_path())
    yield obj
    obj.close()


def test_the_programs_are_the_core_objects(core_object):
    # one text: the same programs, attached to the same places
    assert [tuple(p) for p in bcc.programs(_source())] == core_object.programs()


def test_the_maps_are_the_core_objects(core_object):
    specs = core_object.map_specs()
    for name, spec in bcc.MAPS.items():
        if name == "events":  # sized at creation, by both
            assert specs[name][0] == spec.kind == bpfsys.MAP_RINGBUF
        elif name == "config":  # what libbpf makes of .rodata
            kind, key, value, entries, flags = specs["ctrtrace.rodata"]
            assert (kind, key, entries) == (spec.kind, spec.key_size, spec.max_entries)
            assert value == spec.value_size == ctypes.sizeof(layout.CtConfig)
            assert flags & spec.flags == bpfsys.BPF_F_RDONLY_PROG
        else:
            assert specs[name] == tuple(spec), name


def test_the_installed_source_is_the_repositorys():
    names = [n for n in os.listdir(bcc.source_dir()) if not n.startswith(".")]
    assert bcc.SOURCE_NAME in names and "build.bpf.h" in names
    for name in names:
        with open(os.path.join(bcc.source_dir(), name), "rb") as a, \
                open(os.path.join(REPO, "bpf", name), "rb") as b:
            assert a.read() == b.read(), f"{name}: run make -C bpf"


def test_the_layout_compiles_at_btfs_offsets(tmp_path):
    """ct_kernel.h asserts every field's offset and every struct's size:
    the host's compiler checks them (the bcc build does too, each time)."""
    kernel = Btf.of_kernel()
    (tmp_path / "ct_kernel.h").write_text(kstructs.header(kernel))
    (tmp_path / "check.c").write_text(textwrap.dedent("""\
        #include <linux/types.h>
        struct list_head { struct list_head *next, *prev; };
        #include "ct_kernel.h"
        int check_thread_info(struct task_struct *t) { return t->pid; }
    """))
    r = subprocess.run(["clang", "-fsyntax-only", "-Werror", f"-I{tmp_path}",
                        str(tmp_path / "check.c")], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    text = (tmp_path / "ct_kernel.h").read_text()
    assert f"== {kernel.offset('task_struct.tgid')}, \"task_struct.tgid\"" in text
    assert f"== {kernel.offset('mnt_namespace.ns.inum')}, \"mnt_namespace.ns.inum\"" in text
    # the fields some kernels rename: which this one has
    assert "#define CT_HAS_kernfs_node___parent " + str(int(kernel.has("kernfs_node.__parent"))) \
        in text


def test_the_headers_rule_for_the_subreaper_bits_holds_here():
    """headers.bpf.h finds the subreaper bitfields just after
    signal->core_state; BTF knows where they are."""
    kernel = Btf.of_kernel()
    after = kernel.offset("signal_struct.core_state") + 8
    assert kernel.field("signal_struct.is_child_subreaper").offset == after
    child = kernel.field("signal_struct.is_child_subreaper")
    parent = kernel.field("signal_struct.has_child_subreaper")
    assert (child.bit_offset, parent.bit_offset) == (0, 1)


def test_relocation_touches_only_map_loads():
    fds = {name: 100 + i for i, name in enumerate(bcc.MAPS)}
    ring = (bcc.PLACEHOLDER_FD + 0).to_bytes(4, "little")
    cfg_i = list(bcc.MAPS).index("config")
    cfg = (bcc.PLACEHOLDER_FD + cfg_i).to_bytes(4, "little")
    insns = (bytes([0x18, 0x11, 0, 0]) + ring + bytes(8)       # r1 = map (pseudo fd)
             + bytes([0x18, 0x21, 0, 0]) + cfg + bytes(8)      # r1 = &config value
             + bytes([0x18, 0x01, 0, 0]) + ring + bytes(8)     # a plain 64-bit constant
             + bytes([0xb7, 0x01, 0, 0]) + ring)               # r1 = constant
    out = bcc.relocate(insns, fds)
    assert out[4:8] == (100).to_bytes(4, "little")
    assert out[20:24] == (100 + cfg_i).to_bytes(4, "little")
    assert out[32:] == insns[32:]


def test_a_cached_build_is_checked_before_use():
    names = ["a", "b"]
    good = (bcc.BUILD_FORMAT + '\n{"key": "k", "programs": {"a": "b700000000000000", '
            '"b": "9500000000000000"}}').encode()
    assert bcc.parse_build(good, "k", names) == {"a": bytes.fromhex("b700000000000000"),
                                                  "b": bytes.fromhex("9500000000000000")}
    assert bcc.parse_build(good, "other key", names) is None
    assert bcc.parse_build(good.replace(b"9500000000000000", b"95000000"), "k", names) is None
    assert bcc.parse_build(good.replace(b'"b":', b'"c":'), "k", names) is None
    assert bcc.parse_build(b"garbage\n{}", "k", names) is None
    assert bcc.parse_build(good[:-5], "k", names) is None


def test_mismatched_headers_are_refused_without_btf(monkeypatch):
    monkeypatch.delenv(bcc.OFFSETS_ENV, raising=False)
    other = kheaders.Headers("1.2.3", False, {}, ())
    with pytest.raises(Exception, match="no BTF, and the kernel headers found are 1.2.3's"):
        bcc.choose_offsets(other, btf_path="/nonexistent/vmlinux")
    assert bcc.choose_offsets(other, btf_path=__file__) == bcc.Offsets(False, True)
    own = kheaders.Headers(os.uname().release, True, {}, ())
    assert bcc.choose_offsets(own, btf_path="/nonexistent") == bcc.Offsets(True, False)
    monkeypatch.setenv(bcc.OFFSETS_ENV, "headers")
    assert bcc.choose_offsets(own, btf_path=__file__) == bcc.Offsets(True, True)
    with pytest.raises(Exception, match="asks for its headers"):
        bcc.choose_offsets(other, btf_path=__file__)


# -- on the kernel ---------------------------------------------------------------

@pytest.mark.bpf
@pytest.mark.parametrize("kernel_btf", [True, False], ids=["btf-helpers", "no-btf-helpers"])
def test_the_headers_build_compiles_and_loads(kernel_btf, tmp_path, monkeypatch):
    """The bcc-native build (the kernel's own headers' struct layouts) is
    accepted by the verifier, with and without the helpers that need BTF.
    (Here the headers are another kernel's, so what it would read is not
    checked; the Vagrant VM runs it on its own kernel's headers.)"""
    monkeypatch.setenv("CTRTRACE_CACHE_DIR", str(tmp_path))
    headers = kheaders.find()
    assert headers is not None
    built = bcc.build(bcc.source_dir(), headers, bcc.Offsets(True, kernel_btf))
    progs = bcc.BccPrograms(1 << 20)
    try:
        progs.configure(host.config_for(host.LoadConfig(), 1 << 20))
        assert len(progs.load(built, bcc.programs(_source()))) == len(bcc.programs(_source()))
    finally:
        progs.close()


@pytest.mark.bpf
def test_a_broken_program_text_is_one_clear_error(tmp_path, monkeypatch):
    src = tmp_path / "src"
    shutil.copytree(bcc.source_dir(), src)
    text = (src / bcc.SOURCE_NAME).read_text()
    (src / bcc.SOURCE_NAME).write_text(text.replace("count(CT_CNT_LOST);", "count(CT_CNT_LOST)", 1))
    r = subprocess.run([sys.executable, "-m", "tracer", "--backend", "bcc", "-d", "0"],
                       capture_output=True, text=True, cwd=REPO, timeout=120,
                       env={**os.environ, "CTRTRACE_BPF_SOURCE": str(src),
                            "CTRTRACE_CACHE_DIR": str(tmp_path / "cache")})
    assert r.returncode == 5, r.stderr
    assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr
    assert r.stderr.startswith("ctrtrace: error: bcc's compiler failed (exit status 1): ")
    assert "error: expected ';'" in r.stderr


@pytest.mark.bpf
def test_both_backends_write_the_same_records():
    """Both builds loaded at once see every event of one workload: each
    event is one record from each, equal but for the time each program
    read the clock."""
    sessions = [Session(TraceOptions.of(backend=b, keep_exited=True)) for b in ("core", "bcc")]
    for s in sessions:
        s.open()
    assert [s.header.backend for s in sessions] == ["core", "bcc"]
    try:
        script = textwrap.dedent("""\
            read go
            true a "b c"; sh -c 'exit 7'; /nonexistent/x 2>/dev/null
            unshare --fork --pid --mount-proc --uts --ipc --net sh -c 'hostname box; true'
            sleep 5 & p=$!; kill -KILL $p; wait
            sh -c 'sleep 0.2 &'; nsenter -t $$ -u -n true
            python3 -c 'import threading; t=threading.Thread(target=print); t.start(); t.join()'
            for i in 1 2 3 4 5 6 7 8 9 10; do /bin/true $i; done
        """)
        child = subprocess.Popen(["sh", "-c", script], stdin=subprocess.PIPE,
                                 stdout=subprocess.DEVNULL)
        assert child.stdin is not None
        child.stdin.write(b"go\n")
        child.stdin.close()
        child.wait(timeout=30)
        got = []
        for s in sessions:
            events = list(s.poll(300))
            events.extend(s.drain())
            summary = s.summary()
            assert summary.lost == 0
            family = {child.pid}
            mine = []
            for ev in events:  # in order: a child's fork comes before its own events
                if isinstance(ev, ForkEvent) and ev.parent_pid in family:
                    family.add(ev.pid)
                if ev.pid in family:
                    mine.append(ev.replace(ktime_ns=0, wall_ns=0))
            got.append(sorted(mine, key=repr))
    finally:
        for s in sessions:
            s.close()
    core, bcc_events = got
    types = {ev.type for ev in core}
    assert types >= {"fork", "exec", "exit", "unshare", "setns"}, types
    assert any(ev.type == "exec" and ev.ret != 0 for ev in core)  # a failed exec
    assert len(core) > 40
    assert bcc_events == core


def _bcc_session(**opts) -> Session:
    s = Session(TraceOptions.of(backend="bcc", **opts))
    s.open()
    return s


@pytest.mark.bpf
def test_the_build_is_cached_and_a_bad_cache_is_made_again(tmp_path, monkeypatch):
    """The compiled programs are cached as root's private file; one that is
    not ours alone, or that the kernel refuses, is compiled again."""
    monkeypatch.setenv("CTRTRACE_CACHE_DIR", str(tmp_path))
    _bcc_session().close()
    (cached,) = tmp_path.glob("bcc-*.json")
    assert cached.stat().st_mode & 0o777 == 0o600
    first = cached.read_bytes()
    header, _, body = first.partition(b"\n")
    assert header.decode() == bcc.BUILD_FORMAT

    # well-formed, but a program the verifier refuses (exit, R0 never set)
    doc = json.loads(body)
    doc["programs"]["handle_fork"] = "9500000000000000"
    cached.write_bytes(header + b"\n" + json.dumps(doc).encode())
    s = _bcc_session()
    try:
        child = subprocess.Popen(["true"])
        child.wait()
        events = list(s.poll(200)) + list(s.drain())
        assert any(e.type == "fork" and e.pid == child.pid for e in events)
    finally:
        s.close()
    assert cached.read_bytes() == first  # made again, and cached again

    # someone else could have written it: not used, made again
    cached.write_bytes(b"x")
    cached.chmod(0o666)
    _bcc_session().close()
    assert cached.read_bytes() == first and cached.stat().st_mode & 0o777 == 0o600
