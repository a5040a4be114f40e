"""Recordings: the JSON Lines stream, written as it happens.

Each poll's batch is flushed to the kernel, so a crash or kill -9 loses at
most the line being written; SIGINT and SIGTERM end the file with its
summary.  Recordings hold command lines: they are created readable by their
owner only.  A name ending in .gz is compressed, flushed the same way
(zlib sync points), so a killed recording still decompresses up to its last
batch.
"""

from __future__ import annotations

import gzip
import io
import os
from typing import IO, List, Optional

from .errors import CtrtraceError, ExitStatus
from .events import Header, ProcessEvent, Summary
from .jsonlines import EventLines, json_bytes


def open_private(path: str) -> IO[bytes]:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        os.fchmod(fd, 0o600)  # an existing file keeps its mode otherwise
    except OSError as e:
        raise CtrtraceError(f"cannot write {path}: {e.strerror}", ExitStatus.ERROR)
    return os.fdopen(fd, "wb")


class Recorder:
    """A sink that writes every event of the session to a file."""

    def __init__(self, path: str, lines: Optional[EventLines] = None) -> None:
        """lines: a renderer shared with a JSON view (each event rendered once)."""
        self.path = path
        self._raw = open_private(path)
        self._gz: Optional[gzip.GzipFile] = None
        out: IO[bytes] = self._raw
        if path.endswith(".gz"):
            self._gz = gzip.GzipFile(fileobj=self._raw, mode="wb", compresslevel=6)
            out = self._gz  # type: ignore[assignment]
        # buffered: a batch goes down in few writes, and each flush() ends it
        self._out = io.BufferedWriter(out, buffer_size=1 << 16)  # type: ignore[arg-type]
        self.renderer = lines or EventLines()

    def _write(self, obj) -> None:
        self._out.write(json_bytes(obj) + b"\n")

    def header(self, h: Header) -> None:
        self._write(h.to_json())
        self.flush()

    def event(self, ev: ProcessEvent) -> None:
        self._out.write(self.renderer.line(ev))

    def add_lines(self, lines: List[bytes]) -> None:
        """Lines the renderer made (Session.lines)."""
        self._out.write(b"".join(lines))

    def flush(self) -> None:
        self._out.flush()
        if self._gz is not None:
            self._gz.flush()  # a zlib sync point: all so far decompresses
        self._raw.flush()

    def summary(self, s: Summary) -> None:
        self._write(s.to_json())
        self.close()

    def close(self) -> None:
        if self._out.closed:
            return
        self._out.close()  # closes the gzip stream (its trailer) or the file
        self._raw.close()  # gzip leaves the file it was given open
