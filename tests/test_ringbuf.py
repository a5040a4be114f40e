"""The ring-buffer reader: the kernel's page layout, emulated in a file, and live."""

from __future__ import annotations

import mmap
import os
import struct
import subprocess

import pytest

from tracer.kernel import layout as L
from tracer.kernel import ringbuf
from tracer.kernel.ringbuf import BUSY_BIT, DISCARD_BIT, HDR_SIZE, RingPages

PAGE = mmap.PAGESIZE
SIZE = 2 * PAGE  # the data area: a power of two, whole pages


class FakeRing:
    """A file laid out as the kernel maps a BPF ring buffer: consumer page,
    producer page, then the data area twice (the kernel maps the same pages
    twice; here both copies are written)."""

    def __init__(self) -> None:
        self.fd = os.memfd_create("ring")
        os.ftruncate(self.fd, 2 * PAGE + 2 * SIZE)
        self.data = bytearray(SIZE)
        self.prod = 0
        self.slots = {}

    def _flush(self) -> None:
        os.pwrite(self.fd, struct.pack("@Q", self.prod), PAGE)
        os.pwrite(self.fd, bytes(self.data) * 2, 2 * PAGE)

    def _put(self, pos: int, raw: bytes) -> None:
        for i, b in enumerate(raw):
            self.data[(pos + i) % SIZE] = b

    def reserve(self, sample: bytes, length_bits: int = 0) -> int:
        pos = self.prod
        self._put(pos, struct.pack("@II", len(sample) | length_bits, 0) + sample)
        self.slots[pos] = sample
        self.prod += (len(sample) + HDR_SIZE + 7) & ~7
        self._flush()
        return pos

    def commit(self, pos: int) -> None:
        self._put(pos, struct.pack("@I", len(self.slots[pos])))
        self._flush()

    def consumer(self) -> int:
        return struct.unpack("@Q", os.pread(self.fd, 8, 0))[0]

    def set_consumer(self, pos: int) -> None:
        os.pwrite(self.fd, struct.pack("@Q", pos), 0)


@pytest.fixture
def ring():
    r = FakeRing()
    yield r
    os.close(r.fd)


def test_records_in_order_and_space_handed_back(ring):
    pages = RingPages(ring.fd, SIZE)
    assert pages.drain() == []
    for s in (b"a", b"bcdefghij", b"x" * 100):
        ring.reserve(s)
    assert pages.drain() == [b"a", b"bcdefghij", b"x" * 100]
    assert ring.consumer() == ring.prod  # the kernel may reuse all of it
    assert pages.drain() == []
    pages.close()


def test_discarded_skipped_busy_waited_for(ring):
    pages = RingPages(ring.fd, SIZE)
    ring.reserve(b"dropped", DISCARD_BIT)
    ring.reserve(b"kept")
    busy = ring.reserve(b"in flight", BUSY_BIT)
    ring.reserve(b"after")  # committed, but behind one that is not
    assert pages.drain() == [b"kept"]
    assert ring.consumer() == busy  # stops at the busy record, without skipping it
    ring.commit(busy)
    assert pages.drain() == [b"in flight", b"after"]
    pages.close()


def test_record_across_the_end_reads_whole(ring):
    start = SIZE - 16  # the next record's header fits, its sample wraps to the start
    ring.prod = start
    ring.set_consumer(start)
    pages = RingPages(ring.fd, SIZE)
    sample = bytes(range(200))
    ring.reserve(sample)
    ring.reserve(b"next")
    assert pages.drain() == [sample, b"next"]
    assert ring.consumer() == ring.prod > SIZE  # positions grow, the mask wraps them
    pages.close()


def test_bad_size_refused(ring):
    with pytest.raises(Exception, match="bad ring buffer size"):
        RingPages(ring.fd, SIZE + PAGE)


def _sees_a_child(cap) -> None:
    child = subprocess.Popen(["/bin/true"])
    cap.wait_for(lambda e: e.type == "exec" and e.pid == child.pid)
    child.wait()
    cap.finish()
    assert [e.type for e in cap.of(child.pid)] == ["fork", "exec", "exit"]


def _readers_made(monkeypatch, module, name: str) -> list:
    """The readers of class module.name made from now on."""
    made = []
    cls = getattr(module, name)
    monkeypatch.setattr(module, name, type(name, (cls,), {
        "__init__": lambda self, *a: made.append(self) or cls.__init__(self, *a)}))
    return made


def test_libbpf_reader_where_not_direct(capture, monkeypatch):
    """Other machines read through libbpf: the same events arrive."""
    monkeypatch.setattr(ringbuf, "DIRECT_MACHINES", ())
    libbpf_readers = _readers_made(monkeypatch, ringbuf, "RingBuffer")
    direct_readers = _readers_made(monkeypatch, ringbuf, "MappedRingBuffer")
    cap = capture()
    assert len(libbpf_readers) == 1 and not direct_readers
    _sees_a_child(cap)


def test_direct_reader_live(capture, monkeypatch):
    libbpf_readers = _readers_made(monkeypatch, ringbuf, "RingBuffer")
    direct_readers = _readers_made(monkeypatch, ringbuf, "MappedRingBuffer")
    cap = capture()
    assert len(direct_readers) == 1 and not libbpf_readers
    _sees_a_child(cap)


def test_records_carry_no_stale_bytes(capture):
    """The kernel does not zero reserved records: the BPF side must, past
    every name's NUL (equal names, equal bytes) and for namespaces it could
    not read (0 = unknown).  The decoder keys its cache of names by their
    raw bytes: a stale byte would make a second entry for the same names."""
    import time

    cap = capture()
    for i in range(20):
        subprocess.run(["/bin/sh", "-c", f"exec /bin/true {'x' * i}"])
    time.sleep(0.2)
    cap.events.extend(cap.session.drain())
    trues = [e for e in cap.events if e.comm == "true"]
    assert len(trues) >= 40
    names = {(e.comm, e.ns, e.cgroup) for e in cap.events}
    assert cap.session.decoder.cached()["idents"] == len(names)
    for e in cap.events:
        if e.no_nsproxy:
            read = {"pid", "user"}  # what is read without an nsproxy
            assert all(v == 0 for n, v in zip(L.NS_NAMES, e.ns, strict=True) if n not in read), e


def test_a_lone_event_wakes_the_reader(capture):
    """The kernel wakes a waiting reader for the first record after a drain
    (rb_flags): one command's events end a long wait at once, they do not
    wait for the buffer to fill or for the timeout."""
    import time

    cap = capture()
    session = cap.session
    session.drain()
    child = subprocess.Popen(["/bin/true"])
    t0 = time.monotonic()
    events = session.poll(20_000)
    waited = time.monotonic() - t0
    child.wait()
    assert events
    assert waited < 10, waited
