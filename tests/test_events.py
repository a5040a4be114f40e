"""The typed event records (events.Record): fields from annotations, read by
name, made by keyword or in one step, compared by type and value."""

from __future__ import annotations

from typing import ClassVar

import pytest

from tracer.model.events import (
    EVENT_CLASSES,
    ExitEvent,
    ForkEvent,
    Namespaces,
    ProcessEvent,
    Record,
    record_of,
    with_container,
)


class Point(Record):
    __slots__ = ()
    kind: ClassVar[str] = "point"
    x: int
    y: int = 7


class Point3(Point):
    __slots__ = ()
    z: int = 0


def test_fields_come_from_annotations_base_first():
    assert Point.FIELDS == ("x", "y") and Point3.FIELDS == ("x", "y", "z")
    assert Point3.DEFAULTS == {"y": 7, "z": 0}
    p = Point3(x=1, z=3)
    assert (p.x, p.y, p.z) == (1, 7, 3) and tuple(p) == (1, 7, 3)
    assert repr(p) == "Point3(x=1, y=7, z=3)"
    with pytest.raises(TypeError):
        Point(1, 2)  # keywords only: a field added in the middle cannot shift values
    with pytest.raises(TypeError):
        Point()  # x has no default


def test_made_in_one_step_and_compared_by_type():
    p = record_of(Point, (1, 2))
    assert p == Point(x=1, y=2) and isinstance(p, Point)
    assert p != (1, 2) and Point3(x=1, y=2, z=0) != p
    assert hash(p) == hash((1, 2))
    assert p.replace(y=5) == Point(x=1, y=5) and p.y == 2  # a copy


def test_a_field_declared_twice_is_refused():
    with pytest.raises(TypeError, match="declared twice"):
        class Again(Point):  # noqa: F841
            __slots__ = ()
            x: int


def test_events_are_light():
    """No instance dictionary: an event is its tuple (25 fields for an exec)."""
    for cls in EVENT_CLASSES.values():
        assert not hasattr(record_of(cls, (0,) * len(cls.FIELDS)), "__dict__"), cls
    ev = ForkEvent(wall_ns=2, ktime_ns=1, cpu=0, pid=5, tid=5, ppid=1, vpid=5, vpids=(5,), comm="sh",
                   uid=0, gid=0, ns_uid=0, ns_gid=0, start_ns=3, parent_start_ns=2, ns=Namespaces(), parent_pid=1,
                   parent_tid=1, clone_flags=None)
    assert not hasattr(ev, "__dict__")
    assert len(ev) == len(ForkEvent.FIELDS) and ev.container is None and ev.thread is False
    c = ("c",)
    moved = with_container(ev, c)  # type: ignore[arg-type]
    assert moved.container == c and moved.replace(container=None) == ev
    assert isinstance(moved, ProcessEvent) and type(moved) is ForkEvent


def test_exit_status_words():
    ev = ExitEvent(wall_ns=2, ktime_ns=1, cpu=0, pid=5, tid=5, ppid=1, vpid=5, vpids=(5,), comm="sh",
                   uid=0, gid=0, ns_uid=0, ns_gid=0, start_ns=3, parent_start_ns=2, ns=Namespaces(), status=0x8B)
    assert (ev.exit_code, ev.signal, ev.core_dumped) == (0, 11, True)
    ev = ev.replace(status=3 << 8)
    assert (ev.exit_code, ev.signal, ev.core_dumped) == (3, 0, False)
