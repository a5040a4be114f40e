"""The Python mirror of bpf/ctrtrace.h.

Field names, order and sizes match the C header exactly;
tests/test_layout.py checks every struct here against the BTF of the built
object, so an edit on one side only fails the tests.
"""

from __future__ import annotations

import ctypes
from collections.abc import Collection
from ctypes import c_char, c_int32, c_int64, c_uint8, c_uint16, c_uint32, c_uint64

from ..model import contract

CT_COMM_LEN = 16
CT_FILENAME_MAX = 256
CT_ARGS_MAX = 2048
CT_FAILED_ARGC_MAX = 24
CT_FAILED_ARG_MAX = 128
CT_CGROUP_NAME_LEN = 80
CT_PID_LEVELS_BETWEEN = 7
CT_ID_UNMAPPED = 0xFFFFFFFF

# enum ct_event_type
CT_EVENT_EXEC = 1
CT_EVENT_FORK = 2
CT_EVENT_EXIT = 3
CT_EVENT_SETNS = 4
CT_EVENT_UNSHARE = 5
CT_EVENT_EXEC_FAILED = 6

# enum ct_counter
CT_CNT_LOST = 0
CT_CNT_THREADS = 1
CT_CNT_FILTERED = 2
CT_CNT_MAX = 3

CT_F_ARGS_TRUNCATED = 0x01
CT_F_FILENAME_TRUNCATED = 0x02
CT_F_CLONE_FLAGS_KNOWN = 0x04
CT_F_THREAD = 0x08
CT_F_NO_NSPROXY = 0x10
CT_F_CGROUP_V1 = 0x20
CT_F_HAD_CHILDREN = 0x40
CT_F_NS_CHANGE = 0x80

# the record's namespace ids are in the contract's order
NS_NAMES = contract.NS_NAMES


class CtHeader(ctypes.Structure):
    _fields_ = [
        ("type", c_uint16),
        ("size", c_uint16),
        ("flags", c_uint16),
        ("cpu", c_uint16),
        ("ktime_ns", c_uint64),
    ]


class CtNs(ctypes.Structure):
    _fields_ = [(name, c_uint32) for name in NS_NAMES]


class CtTask(ctypes.Structure):
    _fields_ = [
        ("pid", c_uint32),
        ("tid", c_uint32),
        ("ppid", c_uint32),
        ("vpid", c_uint32),
        ("uid", c_uint32),
        ("gid", c_uint32),
        ("start_ns", c_uint64),
        ("parent_start_ns", c_uint64),
        ("cgroup_id", c_uint64),
        ("comm", c_char * CT_COMM_LEN),
        ("ns", CtNs),
        ("cgroup_parent", c_char * CT_CGROUP_NAME_LEN),
        ("cgroup_leaf", c_char * CT_CGROUP_NAME_LEN),
        ("ns_uid", c_uint32),
        ("ns_gid", c_uint32),
        ("pid_level", c_uint32),
        ("vpids_between", c_uint32 * CT_PID_LEVELS_BETWEEN),
    ]


_EXEC_FIXED = [
    ("hdr", CtHeader),
    ("task", CtTask),
    ("old_pid", c_uint32),
    ("ret", c_int32),
    ("filename_len", c_uint16),
    ("args_len", c_uint16),
    ("__pad", c_uint32),
]


class CtExecEvent(ctypes.Structure):
    _fields_ = _EXEC_FIXED + [("data", c_char * (CT_FILENAME_MAX + CT_ARGS_MAX))]


class CtExecHead(ctypes.Structure):
    """The fixed part of an exec record: the kernel sends only the used bytes of data[]."""

    _fields_ = _EXEC_FIXED


class CtForkEvent(ctypes.Structure):
    _fields_ = [
        ("hdr", CtHeader),
        ("task", CtTask),
        ("parent_pid", c_uint32),
        ("parent_tid", c_uint32),
        ("clone_flags", c_uint64),
    ]


class CtExitEvent(ctypes.Structure):
    _fields_ = [
        ("hdr", CtHeader),
        ("task", CtTask),
        ("status", c_uint32),
        ("reaper", c_uint32),
    ]


class CtSetnsEvent(ctypes.Structure):
    _fields_ = [
        ("hdr", CtHeader),
        ("task", CtTask),
        ("ns_before", CtNs),
        ("fd", c_int32),
        ("nstype", c_int32),
        ("ret", c_int64),
    ]


class CtUnshareEvent(ctypes.Structure):
    _fields_ = [
        ("hdr", CtHeader),
        ("task", CtTask),
        ("ns_before", CtNs),
        ("__pad", c_uint32),
        ("flags", c_uint64),
        ("ret", c_int64),
    ]


class CtConfig(ctypes.Structure):
    _fields_ = [
        ("ignore_tgid", c_uint32),
        ("filter_pid", c_uint8),
        ("filter_comm", c_uint8),
        ("ns_changes_only", c_uint8),
        ("emit_threads", c_uint8),
        ("comm", c_char * CT_COMM_LEN),
        ("wakeup_bytes", c_uint64),
    ]


# C struct name -> mirror, for the layout test.
MIRRORS = {
    "ct_header": CtHeader,
    "ct_ns": CtNs,
    "ct_task": CtTask,
    "ct_exec_event": CtExecEvent,
    "ct_fork_event": CtForkEvent,
    "ct_exit_event": CtExitEvent,
    "ct_setns_event": CtSetnsEvent,
    "ct_unshare_event": CtUnshareEvent,
    "ct_config": CtConfig,
}

EXEC_DATA_OFFSET = CtExecEvent.data.offset


def struct_format(cls, prefix: str = "=", skip: Collection[str] = ()) -> str:
    """A struct module format for a mirror, nested structs flattened and gaps
    padded, so records decode with one precompiled Struct.unpack_from.
    skip: dotted names of fields (or nested structs) left out, as padding."""
    return struct_layout(cls, prefix, skip)[0]


def struct_fields(cls, skip: Collection[str] = ()) -> list:
    """The dotted field names, in the order Struct.unpack_from returns them."""
    return struct_layout(cls, skip=skip)[1]


def struct_layout(cls, prefix: str = "=", skip: Collection[str] = ()):
    codes = {ctypes.c_uint8: "B", ctypes.c_uint16: "H", ctypes.c_uint32: "I",
             ctypes.c_int32: "i", ctypes.c_uint64: "Q", ctypes.c_int64: "q"}
    out, names, pos = [], [], 0

    def walk(c, base: int, path: str) -> None:
        nonlocal pos
        for name, typ, *_ in c._fields_:
            if path + name in skip:
                continue  # the next field's offset pads over it
            off = base + getattr(c, name).offset
            if off > pos:
                out.append(f"{off - pos}x")
                pos = off
            if isinstance(typ, type) and issubclass(typ, ctypes.Structure):
                walk(typ, off, f"{path}{name}.")
                continue
            if getattr(typ, "_type_", None) is ctypes.c_char and hasattr(typ, "_length_"):
                names.append(path + name)
                out.append(f"{typ._length_}s")
            elif hasattr(typ, "_length_"):  # an array of numbers: NAME.0, NAME.1, ...
                names.extend(f"{path}{name}.{i}" for i in range(typ._length_))
                out.append(f"{typ._length_}{codes[typ._type_]}")
            else:
                names.append(path + name)
                out.append(codes[typ])
            pos = off + ctypes.sizeof(typ)

    walk(cls, 0, "")
    if ctypes.sizeof(cls) > pos:
        out.append(f"{ctypes.sizeof(cls) - pos}x")
    return prefix + "".join(out), names
