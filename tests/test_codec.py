"""The one JSON writer and the one reader (codec.py), both made from the
contract: exact lines, round trips, the contract's order, damaged fields."""

from __future__ import annotations

import json
import os

import pytest

from tracer.kernel.decode import Decoder, encode
from tracer.model.codec import CACHE_MAX, COMMAND_LINES_MAX, EventLines, EventReader, event_of
from tracer.model.contract import EVENTS, ID_UNMAPPED, RAW_SUFFIX, Invalid
from tracer.model.events import (
    EVENT_CLASSES,
    Container,
    ExecEvent,
    ExitEvent,
    ForkEvent,
    Namespaces,
    SetnsEvent,
    UnshareEvent,
    with_container,
)
from tracer.state.containers import ContainerResolver

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")
HOST = Namespaces(*(4026531830 + i for i in range(10)))
OFFSET = 1_795_000_000_000_000_000
NOT_UTF8 = b"\xff\xfe".decode("utf-8", "surrogateescape")


def recorded():
    """(name, header dict, [(line dict, event)]) of each recorded trace."""
    reader = EventReader()
    for name in sorted(os.listdir(DATA)):
        if name.endswith(".jsonl"):
            with open(os.path.join(DATA, name), "rb") as f:
                lines = [json.loads(line) for line in f]
            yield name, lines[0], [(d, reader.read(d)) for d in lines[1:-1]]


def common(**changes):
    values = dict(wall_ns=OFFSET + 2_000_000_123, ktime_ns=2_000_000_123, cpu=1, pid=42, tid=42,
                  ppid=1, vpid=42, vpids=(42,), comm="sh", uid=0, gid=0, ns_uid=0, ns_gid=0, start_ns=5, parent_start_ns=1,
                  ns=HOST, cgroup_id=7, cgroup="user.slice/x")
    values.update(changes)
    return values


# one event of each type, and its line, byte for byte
EXACT = [
    (ExecEvent(**common(), filename="/bin/sh", argv=("sh", "-c", "true"), argv_truncated=False,
               old_pid=42, ret=0),
     b'{"type":"exec","ts":"2026-11-18T11:06:42.000000123Z","ktime_ns":2000000123,"cpu":1,'
     b'"pid":42,"tid":42,"ppid":1,"vpid":42,"comm":"sh","uid":0,"gid":0,"start_ns":5,'
     b'"parent_start_ns":1,"ns":{"mnt":4026531830,"uts":4026531831,"ipc":4026531832,'
     b'"pid":4026531833,"pid_for_children":4026531834,"net":4026531835,"cgroup":4026531836,'
     b'"user":4026531837,"time":4026531838,"time_for_children":4026531839},"cgroup_id":7,'
     b'"cgroup":"user.slice/x","ns_change":false,"container":null,"filename":"/bin/sh",'
     b'"argv":["sh","-c","true"],"argv_truncated":false,"ret":0}\n'),
    (ForkEvent(**common(no_nsproxy=True, cgroup_v1=True, ns_change=True,
                        container=Container(id="c" * 64, name="web", image="alpine",
                                            source="shim")),
               parent_pid=41, parent_tid=43, clone_flags=None, thread=True),
     b'{"type":"fork","ts":"2026-11-18T11:06:42.000000123Z","ktime_ns":2000000123,"cpu":1,'
     b'"pid":42,"tid":42,"ppid":1,"vpid":42,"comm":"sh","uid":0,"gid":0,"start_ns":5,'
     b'"parent_start_ns":1,"ns":{"mnt":4026531830,"uts":4026531831,"ipc":4026531832,'
     b'"pid":4026531833,"pid_for_children":4026531834,"net":4026531835,"cgroup":4026531836,'
     b'"user":4026531837,"time":4026531838,"time_for_children":4026531839},'
     b'"no_nsproxy":true,"cgroup_id":7,"cgroup":"user.slice/x","cgroup_v1":true,'
     b'"ns_change":true,"container":{"id":"' + b"c" * 64 + b'","name":"web","image":"alpine",'
     b'"runtime":"docker","source":"shim"},"parent_pid":41,"parent_tid":43,'
     b'"clone_flags":null,"thread":true}\n'),
    (ExitEvent(**common(comm="ok" + NOT_UTF8), status=0x8B, reaper=0),
     b'{"type":"exit","ts":"2026-11-18T11:06:42.000000123Z","ktime_ns":2000000123,"cpu":1,'
     b'"pid":42,"tid":42,"ppid":1,"vpid":42,"comm":"ok\xef\xbf\xbd\xef\xbf\xbd",'
     b'"comm_base64":"b2v//g==","uid":0,"gid":0,"start_ns":5,"parent_start_ns":1,'
     b'"ns":{"mnt":4026531830,"uts":4026531831,"ipc":4026531832,"pid":4026531833,'
     b'"pid_for_children":4026531834,"net":4026531835,"cgroup":4026531836,"user":4026531837,'
     b'"time":4026531838,"time_for_children":4026531839},"cgroup_id":7,"cgroup":"user.slice/x",'
     b'"ns_change":false,"container":null,"exit_code":0,"signal":11,"status":139,'
     b'"core_dumped":true,"reaper":0}\n'),
    (SetnsEvent(**common(ns=HOST._replace(uts=5)), fd=3, nstype=0x04000000, ret=0, ns_before=HOST),
     b'{"type":"setns","ts":"2026-11-18T11:06:42.000000123Z","ktime_ns":2000000123,"cpu":1,'
     b'"pid":42,"tid":42,"ppid":1,"vpid":42,"comm":"sh","uid":0,"gid":0,"start_ns":5,'
     b'"parent_start_ns":1,"ns":{"mnt":4026531830,"uts":5,"ipc":4026531832,'
     b'"pid":4026531833,"pid_for_children":4026531834,"net":4026531835,"cgroup":4026531836,'
     b'"user":4026531837,"time":4026531838,"time_for_children":4026531839},"cgroup_id":7,'
     b'"cgroup":"user.slice/x","ns_change":false,"container":null,"fd":3,"nstype":67108864,'
     b'"ret":0,"ns_before":{"mnt":4026531830,"uts":4026531831,"ipc":4026531832,'
     b'"pid":4026531833,"pid_for_children":4026531834,"net":4026531835,"cgroup":4026531836,'
     b'"user":4026531837,"time":4026531838,"time_for_children":4026531839}}\n'),
    (UnshareEvent(**common(), flags=0x20000, ret=-1, ns_before=HOST),
     b'{"type":"unshare","ts":"2026-11-18T11:06:42.000000123Z","ktime_ns":2000000123,"cpu":1,'
     b'"pid":42,"tid":42,"ppid":1,"vpid":42,"comm":"sh","uid":0,"gid":0,"start_ns":5,'
     b'"parent_start_ns":1,"ns":{"mnt":4026531830,"uts":4026531831,"ipc":4026531832,'
     b'"pid":4026531833,"pid_for_children":4026531834,"net":4026531835,"cgroup":4026531836,'
     b'"user":4026531837,"time":4026531838,"time_for_children":4026531839},"cgroup_id":7,'
     b'"cgroup":"user.slice/x","ns_change":false,"container":null,"flags":131072,"ret":-1,'
     b'"ns_before":{"mnt":4026531830,"uts":4026531831,"ipc":4026531832,"pid":4026531833,'
     b'"pid_for_children":4026531834,"net":4026531835,"cgroup":4026531836,"user":4026531837,'
     b'"time":4026531838,"time_for_children":4026531839}}\n'),
]


@pytest.mark.parametrize("ev, line", EXACT, ids=[ev.type for ev, _ in EXACT])
def test_exact_line(ev, line):
    assert EventLines().line(ev) == line
    assert EventReader().read(json.loads(line)) == ev


def test_each_class_holds_its_contracts_fields_in_order():
    for kind, cls in EVENT_CLASSES.items():
        held = tuple(f.held_as for f in EVENTS[kind].fields if f.held_as is not None)
        assert cls.FIELDS == held, kind


def test_every_recorded_event_round_trips():
    """The recorded lines read into events and written again are the same
    objects, keys in the contract's order; the events through the kernel's
    record layout (encode, decode) are the same events."""
    kinds = set()
    for name, header, pairs in recorded():
        lines, decoder = EventLines(), Decoder(header["boot_time_ns"])
        for d, ev in pairs:
            written = lines.line(ev)
            assert json.loads(written) == d, name
            order = [f.name for f in EVENTS[ev.type].fields]
            keys = list(json.loads(written))
            assert keys == sorted(keys, key=order.index), name
            back = decoder.decode(encode(ev, header["boot_time_ns"]))
            assert with_container(back, ev.container) == ev, name
            kinds.add(ev.type)
    assert kinds == set(EVENT_CLASSES)


def test_the_odd_cases_round_trip():
    """Optional fields, unusual flags, text that is not UTF-8: written, read
    back, decoded from a record, always the same event."""
    odd = [
        ExecEvent(**common(comm="a\nb" + NOT_UTF8, cgroup="x/" + NOT_UTF8, cgroup_v1=True),
                  filename="/bin/" + NOT_UTF8, argv=("x\ny", "\u2028", 'q"', NOT_UTF8),
                  argv_truncated=True, filename_truncated=True, old_pid=43, ret=0),
        ExecEvent(**common(), filename="nope", argv=(), argv_truncated=False, old_pid=42,
                  ret=-2),
        ForkEvent(**common(no_nsproxy=True), parent_pid=41, parent_tid=41,
                  clone_flags=0x7E020000, thread=False),
        ExitEvent(**common(), status=3 << 8, reaper=None),
        # nested three pid namespaces down, in a user namespace that maps it to root
        ForkEvent(**common(vpid=1, vpids=(42, 7, 1), ns_uid=0, ns_gid=ID_UNMAPPED, uid=100000,
                           gid=100000), parent_pid=41, parent_tid=41, clone_flags=0, thread=False),
        # one level down with the same pid number as the host's: vpids is written
        ForkEvent(**common(vpid=42, vpids=(42, 42)), parent_pid=41, parent_tid=41,
                  clone_flags=0, thread=False),
        # deeper than the record keeps: the levels it did not keep are 0
        ForkEvent(**common(vpid=1, vpids=(42, 2, 3, 4, 5, 6, 7, 8, 0, 0, 1)), parent_pid=41,
                  parent_tid=41, clone_flags=0, thread=False),
    ]
    for ev in odd:
        line = EventLines().line(ev)
        d = json.loads(line)
        assert EventReader().read(d) == ev
        assert Decoder(OFFSET).decode(encode(ev, OFFSET)) == ev
    d = json.loads(EventLines().line(odd[0]))
    assert d["old_pid"] == 43 and d["filename_truncated"] is True and d["cgroup_v1"] is True
    assert d["comm"] == "a\nb\ufffd\ufffd" and "comm_base64" in d and "argv_base64" in d
    assert "old_pid" not in json.loads(EventLines().line(odd[1]))
    assert json.loads(EventLines().line(odd[3]))["reaper"] is None
    nested = json.loads(EventLines().line(odd[4]))
    assert (nested["vpids"], nested["ns_uid"], nested["ns_gid"]) == ([42, 7, 1], 0, ID_UNMAPPED)
    assert json.loads(EventLines().line(odd[5]))["vpids"] == [42, 42]
    plain = json.loads(EXACT[0][1])  # one level, ids the host's: nothing more written
    assert not {"vpids", "ns_uid", "ns_gid"} & set(plain)


def test_pid_levels_that_do_not_agree_are_refused():
    good = json.loads(EXACT[0][1])  # pid 42, vpid 42
    for vpids, why in (([], "fewer than 1 items"), ([41, 42], "does not agree"),
                       ([42, 7], "does not agree"), ([42, "7", 42], r"\[1\]"),
                       ([42] * 34, "more than 33 items")):
        with pytest.raises(Invalid, match=why):
            EventReader().read({**good, "vpids": vpids})
    assert EventReader().read({**good, "vpids": [42, 9, 42]}).vpids == (42, 9, 42)


def test_absent_optional_fields_take_the_contracts_defaults():
    d = json.loads(EXACT[0][1])
    for name in ("cpu", "start_ns", "parent_start_ns", "cgroup_id", "cgroup", "ns_change",
                 "container", "ret"):
        del d[name]
    ev = event_of(d)
    assert (ev.cpu, ev.start_ns, ev.cgroup_id, ev.cgroup, ev.ns_change, ev.container, ev.ret,
            ev.old_pid) == (0, 0, 0, "", False, None, 0, ev.tid)
    exit_line = json.loads(EXACT[2][1])
    del exit_line["status"]
    assert event_of(exit_line).status == 11  # from exit_code and signal
    fork = json.loads(EXACT[1][1])
    del fork["parent_tid"]
    assert event_of(fork).parent_tid == 41


@pytest.mark.parametrize("kind", list(EVENT_CLASSES))
def test_a_damaged_field_is_named(kind):
    """Each field of the contract, given a value of the wrong type: the reader
    refuses the line and says which field."""
    good = json.loads(next(line for ev, line in EXACT if ev.type == kind))
    for f in EVENTS[kind].fields:
        if f.name == "type":
            continue
        d = dict(good)
        d[f.name] = [1] if f.name.endswith(RAW_SUFFIX) and f.name != "argv" + RAW_SUFFIX \
            else {"x": [1]}
        with pytest.raises(Invalid, match=f.name):
            EventReader().read(d)
        if f.required:
            d = dict(good)
            del d[f.name]
            with pytest.raises(Invalid, match=f"no {f.name}"):
                EventReader().read(d)


def test_damaged_siblings_and_nested_objects():
    good = json.loads(EXACT[0][1])
    for change, why in (({"comm_base64": "!!"}, "comm_base64"),
                        ({"argv_base64": ["eA=="]}, "argv_base64"),
                        ({"ns": {**good["ns"], "uts": -1}}, "ns"),
                        ({"ns": {**good["ns"], "uts": [1]}}, "ns"),
                        ({"container": {"id": 5}}, "container"),
                        ({"container": {"id": "x", "name": ["a"]}}, "container"),
                        ({"ts": "2026-11-18T11:06:42.00000012xZ"}, "ts"),
                        ({"pid": True}, "pid"), ({"pid": 1 << 23}, "pid")):
        with pytest.raises(Invalid, match=why):
            EventReader().read({**good, **change})
    with pytest.raises(Invalid, match="unknown record type"):
        EventReader().read({**good, "type": ["exec"]})


def test_a_shared_writer_writes_each_batch_once():
    """A JSON view and a recording share one writer: the second sink given
    the same batch gets the very same lines."""
    lines = EventLines()
    batch = [ev for ev, _ in EXACT]
    first = lines.lines(batch)
    assert lines.lines(batch) is first
    assert first == [line for _, line in EXACT]
    assert lines.lines(list(batch)) is not first  # another batch: written again


def test_caches_are_bounded():
    """Thousands of different command lines, names and namespace sets (a build)
    must not grow the writer's, the decoder's or the reader's caches without bound."""
    lines, decoder, reader = EventLines(), Decoder(OFFSET), EventReader()
    base = EXACT[0][0]
    for i in range(CACHE_MAX + 200):
        ev = base.replace(argv=("cc", "-c", f"file{i}.c"), comm=f"c{i}", cgroup=f"x/{i}",
                          ns=HOST._replace(net=i + 1), wall_ns=OFFSET + i * 1_000_000_000 + 5,
                          ktime_ns=i * 1_000_000_000 + 5)
        line = lines.line(ev)
        assert decoder.decode(encode(ev, OFFSET)) == ev
        assert reader.read(json.loads(line)) == ev
    assert all(n <= CACHE_MAX for n in lines.cached().values())
    assert lines.cached()["text_argv"] <= COMMAND_LINES_MAX
    assert decoder.cached()["command_lines"] <= COMMAND_LINES_MAX
    assert all(n <= CACHE_MAX for n in decoder.cached().values())


def test_attribution_learns_and_forgets_on_the_one_path():
    """A shim's pid, once it exits, is no lineage for the next process given
    that pid; a container init's exit frees its mount namespace's inode."""
    cid = "c" * 64
    shim = ("/usr/bin/containerd-shim-runc-v2", "-namespace", "moby", "-id", cid)
    exec_, fork, exit_ = EXACT[0][0], EXACT[1][0].replace(
        container=None, thread=False, no_nsproxy=False, cgroup_v1=False), EXACT[2][0]
    mnt = HOST._replace(mnt=4026532999)
    seq = [
        exec_.replace(pid=100, tid=100, old_pid=100, argv=shim),
        exit_.replace(pid=100, tid=100, start_ns=exec_.start_ns),  # the shim's
        fork.replace(pid=100, tid=100, parent_pid=1, parent_tid=1, ppid=1),
        # a container's init (cgroup) teaches its mount namespace; its exit forgets it
        fork.replace(pid=300, tid=300, vpid=1, vpids=(300, 1), ns=mnt, cgroup=f"docker/{cid}"),
        exit_.replace(pid=300, tid=300, vpid=1, vpids=(300, 1), ns=mnt, cgroup=f"docker/{cid}"),
        # a member the init leaves behind exits after it: it does not teach again
        exit_.replace(pid=302, tid=302, vpid=2, vpids=(302, 2), ns=mnt, cgroup=f"docker/{cid}"),
        # the inode, free again, names another container's mount namespace
        fork.replace(pid=301, tid=301, ns=mnt, cgroup="/init.scope"),
    ]
    resolver, decoder = ContainerResolver(None, HOST), Decoder(OFFSET)
    found = [resolver.attribute(decoder.decode(encode(ev, OFFSET))) for ev in seq]
    assert [c and c.source for c in found] == [
        "shim", "shim", None, "cgroup", "cgroup", "cgroup", None]
