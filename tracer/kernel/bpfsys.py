"""The bpf(2) and perf_event_open(2) calls the bcc backend makes itself:
create a map, load a program, attach it to a raw or a syscall tracepoint.

bcc compiles (bcc.py); loading and attaching are these few calls, made by
ctrtrace so that the compiler runs apart from the trace, its output can be
cached, and the kernel's refusals are ctrtrace's to report.  The argument
layouts are the kernel's ABI (include/uapi/linux/bpf.h, perf_event.h).
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import struct

# syscall numbers by machine
_NR = {"x86_64": {"bpf": 321, "perf_event_open": 298},
       "aarch64": {"bpf": 280, "perf_event_open": 241}}

BPF_MAP_CREATE, BPF_MAP_LOOKUP_ELEM, BPF_MAP_UPDATE_ELEM, BPF_PROG_LOAD = 0, 1, 2, 5
BPF_RAW_TRACEPOINT_OPEN, BPF_MAP_FREEZE = 17, 22
BPF_F_RDONLY_PROG = 1 << 7

MAP_HASH, MAP_ARRAY, MAP_PERCPU_ARRAY, MAP_LRU_HASH, MAP_RINGBUF = 1, 2, 6, 9, 27
PROG_TRACEPOINT, PROG_RAW_TRACEPOINT = 5, 17

PERF_TYPE_TRACEPOINT = 2
PERF_FLAG_FD_CLOEXEC = 1 << 3
PERF_EVENT_IOC_ENABLE = 0x2400
PERF_EVENT_IOC_SET_BPF = 0x40042408
_PERF_ATTR_SIZE = 112  # PERF_ATTR_SIZE_VER5: known to every kernel with BPF tracepoints

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


class BpfSysError(OSError):
    """A call the kernel refused; .log holds the verifier's words for a load."""

    def __init__(self, err: int | None, what: str, log: str = "") -> None:
        err = err or errno.EIO
        super().__init__(err, f"{what}: {os.strerror(err)} (errno {err})")
        self.log = log


def _syscall(name: str, *args: object) -> int:
    nr = _NR.get(os.uname().machine, {}).get(name)
    if nr is None:
        raise BpfSysError(errno.ENOSYS, f"{name} on {os.uname().machine}")
    ret = _libc.syscall(ctypes.c_long(nr), *args)
    if ret < 0:
        raise BpfSysError(ctypes.get_errno(), name)
    return ret


def _bpf(cmd: int, attr: ctypes.Array) -> int:
    return _syscall("bpf", ctypes.c_int(cmd), attr, ctypes.c_uint(len(attr)))


def _attr(fmt: str, *values: object) -> ctypes.Array:
    buf = ctypes.create_string_buffer(128)
    struct.pack_into(fmt, buf, 0, *values)
    return buf


def map_create(map_type: int, key_size: int, value_size: int, max_entries: int,
               name: str, flags: int = 0) -> int:
    # map_type, key_size, value_size, max_entries, map_flags, inner_map_fd,
    # numa_node, map_name
    attr = _attr("<IIIIIII16s", map_type, key_size, value_size, max_entries, flags, 0, 0,
                 name.encode()[:15])
    try:
        return _bpf(BPF_MAP_CREATE, attr)
    except BpfSysError as e:
        raise BpfSysError(e.errno, f"creating map {name}") from None


def map_update(fd: int, key: bytes, value: bytes) -> None:
    k = ctypes.create_string_buffer(key, len(key))
    v = ctypes.create_string_buffer(value, len(value))
    _bpf(BPF_MAP_UPDATE_ELEM, _attr("<IIQQQ", fd, 0, ctypes.addressof(k), ctypes.addressof(v), 0))


def map_lookup(fd: int, key: bytes, value_size: int) -> bytes:
    """A value's bytes (a per-CPU map's: value_size for each possible CPU)."""
    k, v = ctypes.create_string_buffer(key, len(key)), ctypes.create_string_buffer(value_size)
    _bpf(BPF_MAP_LOOKUP_ELEM, _attr("<IIQQQ", fd, 0, ctypes.addressof(k), ctypes.addressof(v), 0))
    return v.raw


def possible_cpus(path: str = "/sys/devices/system/cpu/possible") -> int:
    """How many values a per-CPU map holds: one per possible CPU ("0-3,5": 5)."""
    with open(path) as f:
        text = f.read().strip()
    n = 0
    for part in text.split(","):
        first, _, last = part.partition("-")
        n += int(last or first) - int(first) + 1
    return n


def map_freeze(fd: int) -> None:
    """No more writes from userspace: with BPF_F_RDONLY_PROG, the verifier
    then takes the map's values for constants."""
    _bpf(BPF_MAP_FREEZE, _attr("<I", fd))


def prog_load(prog_type: int, name: str, insns: bytes, license: str = "Dual BSD/GPL",
              log_size: int = 0) -> int:
    """A program's fd.  log_size: room for the verifier's log (0: none)."""
    code = ctypes.create_string_buffer(insns, len(insns))
    lic = ctypes.create_string_buffer(license.encode())
    log = ctypes.create_string_buffer(log_size) if log_size else None
    # prog_type, insn_cnt, insns, license, log_level, log_size, log_buf,
    # kern_version, prog_flags, prog_name
    attr = _attr("<IIQQIIQII16s", prog_type, len(insns) // 8, ctypes.addressof(code),
                 ctypes.addressof(lic), 1 if log else 0, log_size,
                 ctypes.addressof(log) if log else 0, 0, 0, name.encode()[:15])
    try:
        return _bpf(BPF_PROG_LOAD, attr)
    except BpfSysError as e:
        text = log.value.decode(errors="replace") if log else ""
        raise BpfSysError(e.errno, f"loading {name}", text) from None


def attach_raw_tracepoint(name: str, prog_fd: int) -> int:
    """The attachment's fd: closing it detaches."""
    tp = ctypes.create_string_buffer(name.encode())
    try:
        return _bpf(BPF_RAW_TRACEPOINT_OPEN, _attr("<QI", ctypes.addressof(tp), prog_fd))
    except BpfSysError as e:
        raise BpfSysError(e.errno, f"attaching to raw tracepoint {name}") from None


def attach_tracepoint(tracefs: str, category: str, name: str, prog_fd: int) -> int:
    """A perf event on the tracepoint running the program: its fd (closing it detaches)."""
    where = f"tracepoint {category}:{name}"
    try:
        with open(os.path.join(tracefs, "events", category, name, "id")) as f:
            tp_id = int(f.read())
    except (OSError, ValueError) as e:
        raise BpfSysError(getattr(e, "errno", None) or errno.ENOENT,
                          f"reading the id of {where}") from None
    # type, size, config, sample_period, sample_type, read_format, flags, wakeup_events
    attr = _attr("<IIQQQQQI", PERF_TYPE_TRACEPOINT, _PERF_ATTR_SIZE, tp_id, 1, 0, 0, 0, 1)
    try:
        fd = _syscall("perf_event_open", attr, ctypes.c_int(-1), ctypes.c_int(0),
                      ctypes.c_int(-1), ctypes.c_ulong(PERF_FLAG_FD_CLOEXEC))
    except BpfSysError as e:
        raise BpfSysError(e.errno, f"opening {where}") from None
    try:
        fcntl.ioctl(fd, PERF_EVENT_IOC_SET_BPF, prog_fd)
        fcntl.ioctl(fd, PERF_EVENT_IOC_ENABLE, 0)
    except OSError as e:
        os.close(fd)
        raise BpfSysError(e.errno or errno.EINVAL, f"attaching to {where}") from None
    return fd
