"""Lines straight from records (recordlines.py) are the general path's lines,
byte for byte, with the same counts and container decisions."""

from __future__ import annotations

import collections
import ctypes
import dataclasses
import json
import os
import subprocess
import time

import pytest

from tracer.commands.recordlines import RecordLines
from tracer.commands.session import Session, TraceOptions
from tracer.kernel import layout as L
from tracer.kernel.decode import Decoder
from tracer.model.events import (
    EVENT_CLASSES,
    ExecEvent,
    ExitEvent,
    ForkEvent,
    Namespaces,
    SetnsEvent,
    UnshareEvent,
)
from tracer.output.jsonlines import EventLines
from tracer.state.containers import ContainerResolver

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")
HOST = Namespaces(*(4026531840 + i for i in range(10)))


def _set_ns(target, ns: Namespaces) -> None:
    for name in L.NS_NAMES:
        setattr(target, name, getattr(ns, name))


def record_of(ev, offset: int) -> bytes:
    """The ring-buffer record the kernel would send for ev (the inverse of decode.py)."""
    mirror, kind = {ExecEvent: (L.CtExecEvent, L.CT_EVENT_EXEC),
                    ForkEvent: (L.CtForkEvent, L.CT_EVENT_FORK),
                    ExitEvent: (L.CtExitEvent, L.CT_EVENT_EXIT),
                    SetnsEvent: (L.CtSetnsEvent, L.CT_EVENT_SETNS),
                    UnshareEvent: (L.CtUnshareEvent, L.CT_EVENT_UNSHARE)}[type(ev)]
    e = mirror()
    flags = ((L.CT_F_NS_CHANGE if ev.ns_change else 0) | (L.CT_F_CGROUP_V1 if ev.cgroup_v1 else 0)
             | (L.CT_F_NO_NSPROXY if ev.no_nsproxy else 0))
    t = e.task
    t.pid, t.tid, t.ppid, t.vpid, t.uid, t.gid = ev.pid, ev.tid, ev.ppid, ev.vpid, ev.uid, ev.gid
    t.start_ns, t.parent_start_ns, t.cgroup_id = ev.start_ns, ev.parent_start_ns, ev.cgroup_id
    t.comm = ev.comm.encode()[:L.CT_COMM_LEN - 1]
    _set_ns(t.ns, ev.ns)
    parent, _, leaf = ev.cgroup.rpartition("/")
    t.cgroup_parent, t.cgroup_leaf = parent.encode(), leaf.encode()
    size = ctypes.sizeof(e)
    if isinstance(ev, ExecEvent):
        path = ev.filename.encode() + b"\0"
        args = b"".join(a.encode() + b"\0" for a in ev.argv)
        e.old_pid, e.ret, e.filename_len, e.args_len = ev.old_pid, ev.ret, len(path), len(args)
        ctypes.memmove(ctypes.addressof(e) + L.EXEC_DATA_OFFSET, path + args, len(path + args))
        size = L.EXEC_DATA_OFFSET + len(path + args)
        flags |= ((L.CT_F_ARGS_TRUNCATED if ev.argv_truncated else 0)
                  | (L.CT_F_FILENAME_TRUNCATED if ev.filename_truncated else 0))
        if ev.ret:
            kind = L.CT_EVENT_EXEC_FAILED
    elif isinstance(ev, ForkEvent):
        e.parent_pid, e.parent_tid = ev.parent_pid, ev.parent_tid
        e.clone_flags = ev.clone_flags or 0
        flags |= ((L.CT_F_CLONE_FLAGS_KNOWN if ev.clone_flags is not None else 0)
                  | (L.CT_F_THREAD if ev.thread else 0))
    elif isinstance(ev, ExitEvent):
        e.status, e.reaper = ev.status, ev.reaper or 0
        flags |= L.CT_F_HAD_CHILDREN if ev.reaper is not None else 0
    else:
        _set_ns(e.ns_before, ev.ns_before)
        if isinstance(ev, SetnsEvent):
            e.fd, e.nstype, e.ret = ev.fd, ev.nstype, ev.ret
        else:
            e.flags, e.ret = ev.flags, ev.ret
    h = e.hdr
    h.type, h.size, h.flags, h.cpu, h.ktime_ns = kind, size, flags, ev.cpu, ev.ktime_ns
    assert ev.wall_ns - ev.ktime_ns == offset
    return bytes(e)[:size]


def recorded():
    """(records, boot offset) of each recorded trace."""
    for name in sorted(os.listdir(DATA)):
        if name.endswith(".jsonl"):
            with open(os.path.join(DATA, name)) as f:
                lines = [json.loads(line) for line in f]
            offset = lines[0]["boot_time_ns"]
            events = [EVENT_CLASSES[d["type"]].from_json(d) for d in lines
                      if d["type"] in EVENT_CLASSES]
            yield name, [record_of(ev, offset) for ev in events], offset


def both_paths(records, offset, resolver=lambda: ContainerResolver(None, HOST)):
    """(lines, counts) by the general path and by RecordLines, each with its own state."""
    dec, res, lines = Decoder(offset), resolver(), EventLines()
    counts = collections.Counter()
    general = []
    for rec in records:
        ev = dec.decode(rec)
        ev.container = res.attribute(ev)
        counts[ev.type] += 1
        general.append(lines.line(ev))
    fast_counts = collections.Counter()
    fast = RecordLines(Decoder(offset), resolver(), EventLines(), fast_counts)
    by_batches = []
    for i in range(0, len(records), 7):  # batches, as polls give them: state carries over
        by_batches += fast.lines(records[i:i + 7])
    return (general, counts), (by_batches, fast_counts)


def test_recorded_traces():
    kinds = collections.Counter()
    for name, records, offset in recorded():
        (general, counts), (fast, fast_counts) = both_paths(records, offset)
        assert len(fast) == len(general) == len(records), name
        for i, (a, b) in enumerate(zip(general, fast, strict=True)):
            assert a == b, f"{name}: record {i}\n{a}\n{b}"
        assert fast_counts == counts, name
        kinds.update(counts)
    assert all(kinds[k] for k in ("exec", "fork", "exit", "setns", "unshare"))


def test_containers_by_lineage_cgroup_and_namespace():
    """The docker-run trace's shim lineage, cgroup and mount-namespace decisions
    are the same on both paths (the lines hold the containers)."""
    name, records, offset = next(r for r in recorded() if r[0] == "docker-run.jsonl")
    (general, _), (fast, _) = both_paths(records, offset)
    containers = [json.loads(line)["container"] for line in fast]
    assert {c["source"] for c in containers if c} >= {"cgroup", "shim"}
    assert fast == general


def test_the_odd_cases():
    """Optional fields, unusual flags and records of other sizes."""
    name, records, offset = next(recorded())
    dec = Decoder(offset)
    events = [dec.decode(r) for r in records]
    odd = []
    for ev in events[:300]:
        ev = dataclasses.replace(ev, cgroup_v1=True, no_nsproxy=True, ns_change=not ev.ns_change)
        if isinstance(ev, ExecEvent):
            ev = dataclasses.replace(ev, filename_truncated=True, argv_truncated=True,
                                     old_pid=ev.tid + 1, argv=["x\ny", "\u2028", 'q"'])
        elif isinstance(ev, ForkEvent):
            ev = dataclasses.replace(ev, thread=True, clone_flags=None)
        elif isinstance(ev, ExitEvent):
            ev = dataclasses.replace(ev, status=0x8B, reaper=0)  # SIGSEGV, core; reaper unknown
        odd.append(record_of(ev, offset))
    # records that are not the size the fast path knows take the general path
    odd.append(records[1][:-4])
    odd.append(records[1] + bytes(8))
    (general, counts), (fast, fast_counts) = both_paths(odd, offset)
    assert fast == general and fast_counts == counts


def test_exits_end_what_was_learned():
    """A shim's pid, once it exits, is no lineage for the next process given
    that pid; a container init's exit frees its mount namespace's inode."""
    name, records, offset = next(recorded())
    dec = Decoder(offset)
    events = [dec.decode(r) for r in records]
    fork = next(e for e in events if isinstance(e, ForkEvent) and not e.thread)
    exec_ = next(e for e in events if isinstance(e, ExecEvent) and e.ret == 0)
    exit_ = next(e for e in events if isinstance(e, ExitEvent))
    cid = "c" * 64
    shim = ["/usr/bin/containerd-shim-runc-v2", "-namespace", "moby", "-id", cid]
    mnt = dataclasses.replace(HOST, mnt=4026532999)
    seq = [
        dataclasses.replace(exec_, pid=100, tid=100, old_pid=100, argv=shim),
        dataclasses.replace(exit_, pid=100, tid=100, start_ns=exec_.start_ns),  # the shim's
        dataclasses.replace(fork, pid=100, tid=100, parent_pid=1, parent_tid=1, ppid=1),
        # a container's init (cgroup) teaches its mount namespace; its exit forgets it
        dataclasses.replace(fork, pid=300, tid=300, vpid=1, ns=mnt, cgroup=f"docker/{cid}"),
        dataclasses.replace(exit_, pid=300, tid=300, vpid=1, ns=mnt, cgroup=f"docker/{cid}"),
        dataclasses.replace(fork, pid=301, tid=301, ns=mnt, cgroup="/init.scope"),
    ]
    (general, _), (fast, _) = both_paths([record_of(ev, offset) for ev in seq], offset)
    containers = [json.loads(line)["container"] for line in fast]
    assert [c and c["source"] for c in containers] == ["shim", "shim", None, "cgroup", "cgroup",
                                                       None]
    assert fast == general


def test_lines_refuse_a_session_that_keeps_the_process_table():
    with pytest.raises(ValueError, match="process table"):
        Session(TraceOptions(process_table=True)).lines([], EventLines())


@pytest.mark.bpf
def test_a_live_trace():
    """Records from the kernel, both paths: one command's execs, forks and exits."""
    s = Session(TraceOptions())
    s.open()
    try:
        subprocess.run(["sh", "-c", "unshare --uts true; (sleep 0.1 &) ; exit 3"])
        time.sleep(0.3)
        records = s.drain_records()
        offset = s._decoder.wall_offset_ns
        host = s.header.host_ns
    finally:
        s.close()
    (general, counts), (fast, fast_counts) = both_paths(
        records, offset, lambda: ContainerResolver(None, host))
    assert counts["exec"] >= 3 and counts["exit"] >= 3 and counts["unshare"] >= 1
    assert fast == general and fast_counts == counts


@pytest.mark.bpf
def test_trace_writes_json_from_records(tmp_path, monkeypatch):
    """trace() with JSON sinks only and no process table (the command's --json)
    takes the lines path; the view and the recording get the same lines, and
    the summary counts them."""
    import io

    from tracer.commands.session import trace
    from tracer.output.recording import Recorder
    from tracer.output.text import JsonSink

    batches = []
    lines = Session.lines

    def counted(self, records, renderer):
        batches.append(len(records))
        return lines(self, records, renderer)

    monkeypatch.setattr(Session, "lines", counted)
    out = io.TextIOWrapper(io.BytesIO(), encoding="utf-8")
    renderer = EventLines()
    path = str(tmp_path / "t.jsonl")
    result = trace(TraceOptions(docker=False, process_table=False), JsonSink(out, renderer),
                   recorder=Recorder(path, renderer), command=["sh", "-c", "true; true"],
                   linger=0.2)
    out.flush()
    shown = out.buffer.getvalue().splitlines()
    with open(path, "rb") as f:
        recorded_lines = f.read().splitlines()
    assert sum(batches) == len(shown) - 2 > 0  # all but the header and the summary
    assert shown[1:-1] == recorded_lines[1:-1]
    types = collections.Counter(json.loads(line)["type"] for line in shown[1:-1])
    assert {k: v for k, v in result.summary.counts.items() if v} == dict(types)
    assert types["exec"] >= 2


def test_command_line_caches_are_bounded():
    """Each exec's strings are cached by their bytes; thousands of different
    command lines (a build) must not grow the caches without bound."""
    from tracer.output.jsonlines import COMMAND_LINES_MAX

    name, records, offset = next(recorded())
    dec = Decoder(offset)
    exec_ = next(e for e in map(dec.decode, records) if isinstance(e, ExecEvent) and e.ret == 0)
    many = [record_of(dataclasses.replace(exec_, argv=["cc", "-c", f"file{i}.c"]), offset)
            for i in range(COMMAND_LINES_MAX + 100)]
    renderer = EventLines()
    fast = RecordLines(Decoder(offset), ContainerResolver(None, HOST), renderer,
                       collections.Counter())
    lines = fast.lines(many)
    assert [json.loads(line)["argv"][2] for line in lines[-3:]] == [
        f"file{i}.c" for i in range(COMMAND_LINES_MAX + 97, COMMAND_LINES_MAX + 100)]
    assert len(fast._execs) <= COMMAND_LINES_MAX and len(renderer._argvs) <= COMMAND_LINES_MAX
    (general, _), (fast_lines, _) = both_paths(many, offset)
    assert fast_lines == general
