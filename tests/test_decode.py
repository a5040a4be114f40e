"""The decoder on records built from the ctypes mirror: every field lands where it belongs."""

from __future__ import annotations

import ctypes

import pytest

from tracer.kernel import layout as L
from tracer.kernel.decode import Decoder
from tracer.model.events import Namespaces

NS = (11, 12, 13, 14, 15, 16, 17, 18, 19, 20)
BEFORE = (1, 2, 3, 4, 5, 6, 7, 8, 9, 10)


def _fill(task: L.CtTask) -> None:
    task.pid, task.tid, task.ppid, task.vpid, task.uid, task.gid = 100, 101, 50, 1, 1000, 1001
    task.start_ns, task.parent_start_ns, task.cgroup_id = 7_000, 6_000, 42
    task.comm = b"runc:[1:CHILD]"
    for name, v in zip(L.NS_NAMES, NS, strict=True):
        setattr(task.ns, name, v)
    task.cgroup_parent, task.cgroup_leaf = b"docker", b"abc"


def _hdr(e, type_: int, flags: int = 0) -> None:
    e.hdr.type, e.hdr.size, e.hdr.flags, e.hdr.cpu, e.hdr.ktime_ns = type_, ctypes.sizeof(e), flags, 1, 123_456


def _common(ev) -> None:
    assert (ev.pid, ev.tid, ev.ppid, ev.vpid, ev.uid, ev.gid) == (100, 101, 50, 1, 1000, 1001)
    assert (ev.start_ns, ev.parent_start_ns, ev.cgroup_id) == (7_000, 6_000, 42)
    assert ev.comm == "runc:[1:CHILD]" and ev.cgroup == "docker/abc"
    assert ev.ns == Namespaces(*NS) and (ev.ktime_ns, ev.cpu) == (123_456, 1)
    assert ev.wall_ns == 123_456 + 1_000_000


@pytest.fixture
def dec():
    return Decoder(1_000_000)


def test_exec(dec):
    e = L.CtExecEvent()
    _hdr(e, L.CT_EVENT_EXEC, L.CT_F_ARGS_TRUNCATED | L.CT_F_NS_CHANGE)
    _fill(e.task)
    path, args = b"/bin/sh\0", b"sh\0-c\0tru"
    e.old_pid, e.ret, e.filename_len, e.args_len = 99, 0, len(path), len(args)
    data = path + args
    ctypes.memmove(ctypes.addressof(e) + L.EXEC_DATA_OFFSET, data, len(data))
    ev = dec.decode(bytes(e)[:L.EXEC_DATA_OFFSET + len(data)])  # only the used bytes, as sent
    _common(ev)
    assert ev.filename == "/bin/sh" and ev.argv == ("sh", "-c", "tru")
    assert ev.argv_truncated and ev.ns_change and not ev.filename_truncated
    assert (ev.old_pid, ev.ret) == (99, 0)


def test_fork(dec):
    e = L.CtForkEvent()
    _hdr(e, L.CT_EVENT_FORK, L.CT_F_CLONE_FLAGS_KNOWN)
    _fill(e.task)
    e.parent_pid, e.parent_tid, e.clone_flags = 60, 61, 0x200000000 | 0x20000
    ev = dec.decode(bytes(e))
    _common(ev)
    assert (ev.parent_pid, ev.parent_tid, ev.clone_flags, ev.thread) == (60, 61, 0x200020000, False)
    e.hdr.flags = L.CT_F_THREAD
    ev = dec.decode(bytes(e))
    assert ev.clone_flags is None and ev.thread


def test_exit(dec):
    e = L.CtExitEvent()
    _hdr(e, L.CT_EVENT_EXIT, L.CT_F_HAD_CHILDREN)
    _fill(e.task)
    e.status, e.reaper = (3 << 8), 77
    ev = dec.decode(bytes(e))
    _common(ev)
    assert (ev.exit_code, ev.signal, ev.reaper) == (3, 0, 77)
    e.hdr.flags, e.status = 0, 9
    ev = dec.decode(bytes(e))
    assert (ev.signal, ev.reaper) == (9, None)


def test_setns_and_unshare(dec):
    s = L.CtSetnsEvent()
    _hdr(s, L.CT_EVENT_SETNS)
    _fill(s.task)
    for name, v in zip(L.NS_NAMES, BEFORE, strict=True):
        setattr(s.ns_before, name, v)
    s.fd, s.nstype, s.ret = 5, 0x40000000, -22
    ev = dec.decode(bytes(s))
    _common(ev)
    assert (ev.fd, ev.nstype, ev.ret, ev.ns_before) == (5, 0x40000000, -22, Namespaces(*BEFORE))
    u = L.CtUnshareEvent()
    _hdr(u, L.CT_EVENT_UNSHARE)
    _fill(u.task)
    for name, v in zip(L.NS_NAMES, BEFORE, strict=True):
        setattr(u.ns_before, name, v)
    u.flags, u.ret = 0x7E020000, 0
    ev = dec.decode(bytes(u))
    _common(ev)
    assert (ev.flags, ev.ret, ev.ns_before) == (0x7E020000, 0, Namespaces(*BEFORE))


def test_bad_records(dec):
    from tracer.model.errors import CtrtraceError
    with pytest.raises(CtrtraceError, match="short record"):
        dec.decode(b"\x01\x00")
    e = L.CtExitEvent()
    _hdr(e, 99)
    with pytest.raises(CtrtraceError, match="unknown event type 99"):
        dec.decode(bytes(e))


def _records():
    ex = L.CtExecEvent()
    _hdr(ex, L.CT_EVENT_EXEC)
    fk, xt, sn, un = L.CtForkEvent(), L.CtExitEvent(), L.CtSetnsEvent(), L.CtUnshareEvent()
    for e, t in ((fk, L.CT_EVENT_FORK), (xt, L.CT_EVENT_EXIT), (sn, L.CT_EVENT_SETNS),
                 (un, L.CT_EVENT_UNSHARE)):
        _hdr(e, t)
    for e in (ex, fk, xt, sn, un):
        _fill(e.task)
    return [bytes(ex)[:L.EXEC_DATA_OFFSET], bytes(fk), bytes(xt), bytes(sn), bytes(un)]


def test_every_field_set(dec):
    """Events are made in one step from generated code: each has exactly its
    class's fields, and the event made from them by name is the same one."""
    for rec in _records():
        ev = dec.decode(rec)
        cls = type(ev)
        assert len(ev) == len(cls.FIELDS)
        assert ev == cls(**{name: getattr(ev, name) for name in cls.FIELDS})


def test_identity_cache_keeps_events_apart(dec):
    """comm, namespaces and cgroup come from a cache keyed by their raw bytes:
    a difference in any one of them is a different entry."""
    e = L.CtForkEvent()
    _hdr(e, L.CT_EVENT_FORK)
    _fill(e.task)
    first = dec.decode(bytes(e))
    e.task.ns.time_for_children = 999
    e.task.cgroup_leaf = b"other"
    second = dec.decode(bytes(e))
    e.task.comm = b"sh"
    third = dec.decode(bytes(e))
    assert first.ns.time_for_children == NS[-1] and second.ns.time_for_children == 999
    assert (first.cgroup, second.cgroup, third.cgroup) == ("docker/abc", "docker/other", "docker/other")
    assert (second.comm, third.comm) == ("runc:[1:CHILD]", "sh")
    assert dec.decode(bytes(e)).ns is third.ns  # repeated sets are shared, not rebuilt
