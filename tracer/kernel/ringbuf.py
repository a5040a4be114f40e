"""Reading the BPF ring buffer: its pages mapped into this process, no callback
(MappedRingBuffer), or through libbpf's reader (RingBuffer).

libbpf's reader calls back into Python once per record through ctypes, a
cost per record paid on the CPUs the traced workload needs (bench/README.md,
"Where the code's choices come from"). The ring
buffer's layout is kernel ABI (include/uapi/linux/bpf.h, kernel/bpf/ringbuf.c):

- page 0, read-write: consumer_pos, which the reader advances;
- page 1, read-only: producer_pos, which BPF programs advance on reserve;
- then the data area, mapped twice in a row so that a record that wraps
  around the end reads as one contiguous run;
- each record: a u32 length (BUSY bit: reserved, not yet committed;
  DISCARD bit: dropped by the program), a u32 page offset, the sample,
  padded to 8 bytes.

The kernel orders its side with release/acquire. Here the loads and stores
are plain, which on x86-64 (TSO: loads are not reordered with loads, stores
not with stores or earlier loads) has the same effect; other architectures
use libbpf's reader (open_reader chooses). Positions are 64-bit aligned
words, read and written whole (ctypes, one mov each).
"""

from __future__ import annotations

import ctypes
import mmap
import os
import select
import struct
from typing import Protocol

from ..model.errors import CtrtraceError, ExitStatus
from .libbpf import SAMPLE_FN, errno_text, lib

BUSY_BIT = 1 << 31
DISCARD_BIT = 1 << 30
HDR_SIZE = 8  # struct bpf_ringbuf_hdr

_U32 = struct.Struct("@I")
_U64 = struct.Struct("@Q")

# where plain loads and stores have acquire and release semantics
DIRECT_MACHINES = ("x86_64",)


class RecordReader(Protocol):
    def poll(self, timeout_ms: int) -> list[bytes]: ...
    def drain(self) -> list[bytes]: ...
    def close(self) -> None: ...


class RingPages:
    """The pages of one BPF_MAP_TYPE_RINGBUF, mapped; drain() copies records out."""

    def __init__(self, map_fd: int, data_size: int) -> None:
        page = mmap.PAGESIZE
        if data_size <= 0 or data_size & (data_size - 1) or data_size % page:
            raise CtrtraceError(f"bad ring buffer size {data_size}", ExitStatus.BPF)
        self._mask = data_size - 1
        self._base = page  # the data area, within the producer mapping
        self._cons_map: mmap.mmap | None = None
        self._prod_map: mmap.mmap | None = None
        self._cons: ctypes.c_uint64 | None = None
        try:
            self._cons_map = mmap.mmap(map_fd, page, mmap.MAP_SHARED,
                                       mmap.PROT_READ | mmap.PROT_WRITE, offset=0)
            self._prod_map = mmap.mmap(map_fd, page + 2 * data_size, mmap.MAP_SHARED,
                                       mmap.PROT_READ, offset=page)
        except OSError as e:
            self.close()
            raise CtrtraceError(f"cannot map the ring buffer: {e.strerror} (errno {e.errno})",
                                ExitStatus.BPF) from None
        self._cons = ctypes.c_uint64.from_buffer(self._cons_map)

    def drain(self) -> list[bytes]:
        """Every committed record, without waiting; each one's space is
        handed back to the kernel as soon as it is copied."""
        prod_map, cons = self._prod_map, self._cons
        assert prod_map is not None and cons is not None
        pos = cons.value
        end = _U64.unpack_from(prod_map, 0)[0]
        out: list[bytes] = []
        if pos == end:
            return out
        mask, base, unpack = self._mask, self._base, _U32.unpack_from
        while pos < end:
            at = base + (pos & mask)
            length = unpack(prod_map, at)[0]
            if length & BUSY_BIT:
                break  # reserved, not committed yet: the next drain takes it
            size = length & ~(BUSY_BIT | DISCARD_BIT)
            if not length & DISCARD_BIT:
                out.append(prod_map[at + HDR_SIZE:at + HDR_SIZE + size])
            pos += (size + HDR_SIZE + 7) & ~7
            cons.value = pos
        return out

    def close(self) -> None:
        self._cons = None  # releases its export of the consumer page
        for m in (self._cons_map, self._prod_map):
            if m is not None:
                m.close()
        self._cons_map = self._prod_map = None


class MappedRingBuffer(RingPages):
    """RingPages, and a wait for the kernel's wake-up (epoll on the map)."""

    def __init__(self, map_fd: int, data_size: int) -> None:
        super().__init__(map_fd, data_size)
        self._epoll: select.epoll | None = None
        try:
            self._epoll = select.epoll(1)
            self._epoll.register(map_fd, select.EPOLLIN)
        except OSError as e:
            self.close()
            raise CtrtraceError(f"cannot wait on the ring buffer: {e.strerror} (errno {e.errno})",
                                ExitStatus.BPF) from None

    def poll(self, timeout_ms: int) -> list[bytes]:
        """Wait up to timeout_ms for a wake-up, then take everything waiting."""
        assert self._epoll is not None
        try:
            self._epoll.poll(timeout_ms / 1000)
        except OSError as e:
            raise CtrtraceError(f"ring buffer poll failed: {e.strerror} (errno {e.errno})",
                                ExitStatus.BPF) from None
        return self.drain()

    def close(self) -> None:
        if self._epoll is not None:
            self._epoll.close()
            self._epoll = None
        super().close()


class RingBuffer:
    """libbpf's reader of a BPF ring buffer, one callback per record: for
    machines where the direct reader's plain loads and stores are not
    ordered enough.  Records are handed out as bytes, in batches."""

    def __init__(self, map_fd: int) -> None:
        self._lib = lib()
        self._batch: list[bytes] = []
        self._cb = SAMPLE_FN(self._on_sample)
        self._rb = self._lib.dll.ring_buffer__new(map_fd, self._cb, None, None)
        if not self._rb:
            raise CtrtraceError(
                "cannot create the ring buffer reader: " + errno_text(ctypes.get_errno()),
                ExitStatus.BPF,
            )

    def _on_sample(self, _ctx: int, data: int, size: int) -> int:
        self._batch.append(ctypes.string_at(data, size))
        return 0

    def poll(self, timeout_ms: int) -> list[bytes]:
        """Wait up to timeout_ms for a wake-up, then take everything waiting.

        The BPF side wakes the reader only when much is waiting, so a timeout
        is the usual way out of the wait: the records are there all the same."""
        n = self._lib.dll.ring_buffer__poll(self._rb, timeout_ms)
        if n < 0 and -n != 4:  # EINTR: a signal arrived, the caller decides
            raise CtrtraceError("ring buffer poll failed: " + errno_text(-n), ExitStatus.BPF)
        self._lib.dll.ring_buffer__consume(self._rb)
        batch, self._batch = self._batch, []
        return batch

    def drain(self) -> list[bytes]:
        """Everything still in the buffer, without waiting."""
        self._lib.dll.ring_buffer__consume(self._rb)
        batch, self._batch = self._batch, []
        return batch

    def close(self) -> None:
        if self._rb:
            self._lib.dll.ring_buffer__free(self._rb)
            self._rb = None


def open_reader(map_fd: int, data_size: int) -> RecordReader:
    """The direct reader where the machine allows it, else libbpf's."""
    if os.uname().machine in DIRECT_MACHINES:
        return MappedRingBuffer(map_fd, data_size)
    return RingBuffer(map_fd)
