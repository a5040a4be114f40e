"""Recordings: the JSON Lines stream, written as it happens.

Each poll's batch goes to the kernel in whole: a crash or kill -9 loses at
most the batch being written; SIGINT and SIGTERM end the file with its
summary.  A name ending in .gz is compressed, each batch ending at a zlib
sync point, so a killed recording still decompresses up to its last batch.

ctrtrace runs as root and recordings hold every command line, often in
directories others can write to (/tmp): a recording never goes through a
name someone else controls.  It is written to a new file, created with
O_EXCL|O_NOFOLLOW and readable by its owner only, next to its name, and
moved to that name once its header is written, early, so that it can be
followed (tail -f) while the trace runs.  The move replaces a symbolic link
itself, never its target, and replaces only a file of ours: a name that
belongs to another user is refused.  A device, FIFO or socket of ours
(/dev/null, a pipe through /dev/stdout) is written as it is.

When a write fails (a full disk, /dev/full) the file is cut back to the end
of the last batch written whole, so that it replays up to there, and the
error says which file: the trace then stops (session.trace).
"""

from __future__ import annotations

import errno
import os
import stat
import zlib

from ..model.codec import EventLines
from ..model.contract import json_bytes
from ..model.errors import CtrtraceError, ExitStatus
from ..model.events import Header, ProcessEvent, Summary

GZIP_LEVEL = 6


def _fail(path: str, why: str) -> CtrtraceError:
    return CtrtraceError(f"cannot write {path}: {why}", ExitStatus.ERROR)


def _refusal(path: str, st: os.stat_result) -> str | None:
    """Why the existing name path (lstat st) must not become the recording, if it must not."""
    if st.st_uid != os.geteuid():
        return f"it exists and belongs to uid {st.st_uid}"
    if stat.S_ISDIR(st.st_mode):
        return "it is a directory"
    return None


def _open_special(path: str) -> int:
    """An existing device, FIFO or socket, or one of ours reached by a symbolic
    link of ours (/dev/stdout): opened as it is, never created or truncated;
    a link to a file or a directory is refused (its target is not checked)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError as e:
        raise _fail(path, e.strerror or str(e)) from None
    st = os.fstat(fd)
    if stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode):
        os.close(fd)
        raise _fail(path, "it is a symbolic link (give its target's name)")
    return fd


def _create_beside(path: str) -> tuple[int, str]:
    """A new file of ours, readable by us only, in path's directory."""
    directory, base = os.path.split(path)
    for _ in range(100):
        # hidden, and short enough for NAME_MAX whatever the name
        tmp = os.path.join(directory, f".{base[:200]}.{os.urandom(6).hex()}.tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                         0o600)
        except FileExistsError:
            continue
        except OSError as e:
            raise _fail(path, e.strerror or str(e)) from None
        return fd, tmp
    raise _fail(path, "cannot create a temporary file beside it")


def open_private(path: str) -> tuple[int, str | None]:
    """(fd, temporary name) to record path to: the temporary file is moved to
    path by publish(); (fd, None) for a device, FIFO or socket written as it is."""
    try:
        st: os.stat_result | None = os.lstat(path)
    except FileNotFoundError:
        st = None
    except OSError as e:
        raise _fail(path, e.strerror or str(e)) from None
    if st is not None:
        why = _refusal(path, st)
        if why:
            raise _fail(path, why)
        if stat.S_ISLNK(st.st_mode) or not stat.S_ISREG(st.st_mode):
            return _open_special(path), None
    return _create_beside(path)


def publish(tmp: str, path: str) -> None:
    """The temporary file tmp takes the name path: without replacing anything
    when the name is free (link), else only a regular file or a symbolic link
    of ours (rename: the link itself goes, not its target)."""
    for _ in range(100):  # the name comes and goes: someone else is playing with it
        try:
            os.link(tmp, path)
        except FileExistsError:
            try:
                st = os.lstat(path)
            except FileNotFoundError:
                continue
            why = _refusal(path, st)
            if why is None and not (stat.S_ISREG(st.st_mode) or stat.S_ISLNK(st.st_mode)):
                why = "it is not a regular file"
            if why:
                raise _fail(path, why) from None
            os.rename(tmp, path)
            return
        except OSError as e:
            if e.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.EMLINK, errno.ENOSYS):
                raise
            os.rename(tmp, path)  # a file system without hard links
            return
        os.unlink(tmp)
        return
    raise _fail(path, "its name keeps changing")


def write_file(path: str, data: bytes) -> None:
    """A whole file (a picture, a diagram) written by the recordings' rules:
    never through a name someone else controls."""
    fd, tmp = open_private(path)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
    except OSError as e:
        os.close(fd)
        if tmp is not None:
            os.unlink(tmp)
        raise _fail(path, e.strerror or str(e)) from None
    os.close(fd)
    if tmp is not None:
        try:
            publish(tmp, path)
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise


class Recorder:
    """A sink that writes every event of the session to a file."""

    def __init__(self, path: str, lines: EventLines | None = None) -> None:
        """lines: a renderer shared with a JSON view (each event rendered once)."""
        self.path = path
        self._fd, self._tmp = open_private(path)
        self._zip = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, 31) if path.endswith(".gz") \
            else None  # wbits 31: a gzip stream
        self._batch: list[bytes] = []
        self._written = 0  # bytes in the file at the end of the last whole batch
        self._failed = False
        self.renderer = lines or EventLines()

    @property
    def closed(self) -> bool:
        return self._fd < 0

    def header(self, h: Header) -> None:
        self._batch.append(json_bytes(h.to_json()) + b"\n")
        self.flush()
        if self._tmp is not None:
            try:
                publish(self._tmp, self.path)
            except CtrtraceError:
                self._fail()
                raise
            except OSError as e:
                self._fail()
                raise _fail(self.path, e.strerror or str(e)) from None
            self._tmp = None

    def events(self, batch: list[ProcessEvent]) -> None:
        self._batch.extend(self.renderer.lines(batch))

    def flush(self) -> None:
        """The batch, written whole or not at all (CtrtraceError, the file cut
        back to the previous batch's end)."""
        if not self._batch or self._failed:
            self._batch.clear()
            return
        data = b"".join(self._batch)
        self._batch.clear()
        if self._zip is not None:
            # a sync point: everything so far decompresses
            data = self._zip.compress(data) + self._zip.flush(zlib.Z_SYNC_FLUSH)
        self._write(data)

    def _write(self, data: bytes) -> None:
        view = memoryview(data)
        try:
            while view:
                view = view[os.write(self._fd, view):]
        except OSError as e:
            self._fail()
            raise _fail(self.path, e.strerror or str(e)) from None
        self._written += len(data)

    def _fail(self) -> None:
        """No more writes; the file ends where the last whole batch did."""
        self._failed = True
        try:
            os.ftruncate(self._fd, self._written)
        except OSError:
            pass  # a device or a pipe: nothing to cut back
        if self._tmp is not None:  # never published: leave nothing behind
            self._discard()

    def _discard(self) -> None:
        assert self._tmp is not None
        try:
            os.unlink(self._tmp)
        except OSError:
            pass
        self._tmp = None

    def summary(self, s: Summary) -> None:
        self._batch.append(json_bytes(s.to_json()) + b"\n")
        self.flush()
        self._finish()
        self.close()

    def _finish(self) -> None:
        if self._zip is not None and not self._failed:
            zip_, self._zip = self._zip, None
            self._write(zip_.flush(zlib.Z_FINISH))  # the gzip trailer

    def close(self) -> None:
        """Ends the file; never raises (a write that fails here is dropped, the
        file cut back to the last whole batch)."""
        if self.closed:
            return
        try:
            self.flush()
            if self._written:  # an empty file stays empty
                self._finish()
        except CtrtraceError:
            pass
        if self._tmp is not None:  # the trace ended before the header: no recording
            self._discard()
        fd, self._fd = self._fd, -1
        os.close(fd)
