"""Reading recordings back: validated, streamed line by line, filtered, rendered.

Replay needs no root and no BPF; it prints what the live view printed for the
same events, with the same renderer and the same filters.
"""

from __future__ import annotations

import collections
import contextlib
import gc
import gzip
import io
import sys
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import IO, Any

from ..model.codec import EventReader
from ..model.contract import HEADER_LINE_MAX, LINE_MAX, Invalid, check_header, check_record
from ..model.errors import CtrtraceError, ExitStatus
from ..model.events import EVENT_TYPES, Header, ProcessEvent, Summary
from ..model.jsonparse import NOT_JSON
from ..model.jsonparse import loads as _loads

# what reading a damaged or cut-off compressed recording raises
_DAMAGED = (EOFError, zlib.error, gzip.BadGzipFile)


def _open(path: str, stdin: IO[bytes] | None) -> IO[bytes]:
    if path == "-":
        raw = stdin if stdin is not None else sys.stdin.buffer
    else:
        try:
            raw = open(path, "rb")
        except OSError as e:
            raise CtrtraceError(f"{path}: {e.strerror}", ExitStatus.BAD_INPUT) from None
    if not hasattr(raw, "peek"):
        raw = io.BufferedReader(raw)
    try:
        head = raw.peek(2)[:2]
    except OSError as e:
        raise CtrtraceError(f"{path}: {e.strerror}", ExitStatus.BAD_INPUT) from None
    if head == b"\x1f\x8b":
        return gzip.GzipFile(fileobj=raw, mode="rb")  # type: ignore[return-value]
    return raw


def _damage(e: BaseException) -> str:
    if isinstance(e, EOFError):
        return "the compressed stream ends early: the recording was cut off"
    return f"the compressed data is damaged ({e})"


def _mib(n: int) -> str:
    return f"{n >> 20} MiB"


@dataclass
class TraceReader:
    """Iterates over a recording's events as (line number, raw line, event).

    Every line is read with a bound (LINE_MAX; the header HEADER_LINE_MAX)
    and read into its typed event by the one reader (codec.EventReader),
    which checks it against the contract, whatever the mode: the views, the
    filters and --json see the same events and agree on what is bad."""

    path: str
    skip_bad: bool = False
    stdin: IO[bytes] | None = None
    header: Header = field(init=False)
    header_line: bytes = field(init=False, default=b"")
    summary: dict[str, Any] | None = field(init=False, default=None)
    summary_line: bytes = field(init=False, default=b"")
    bad: int = field(init=False, default=0)

    def __post_init__(self) -> None:
        self.name = "<stdin>" if self.path == "-" else self.path
        self._f = _open(self.path, self.stdin)
        try:
            self._read_header()
        except BaseException:
            self.close()
            raise

    def _read_header(self) -> None:
        try:
            line = self._f.readline(HEADER_LINE_MAX + 1)
        except _DAMAGED as e:
            raise self._error(1, _damage(e) + ": not a readable recording") from None
        except OSError as e:
            raise self._error(1, e.strerror or str(e)) from None
        if not line:
            raise self._error(1, "empty file: not a ctrtrace trace")
        if not line.endswith(b"\n"):
            if len(line) > HEADER_LINE_MAX:
                raise self._error(1, f"the first line is longer than {_mib(HEADER_LINE_MAX)}: "
                                     "not a ctrtrace trace")
            if line.startswith(b'{"type":"header"'):
                raise self._error(1, "the header is cut off: the recording was cut off "
                                     "before its first event")
            raise self._error(1, "not a ctrtrace trace (no ctrtrace header on the first line)")
        try:
            d = _loads(line)
        except NOT_JSON:
            raise self._error(
                1, "not a ctrtrace trace (no ctrtrace header on the first line)") from None
        try:
            check_header(d)
            self.header = Header.from_json(d)
        except Invalid as e:
            raise self._error(1, str(e)) from None
        except (KeyError, TypeError, ValueError) as e:  # the contract should have caught it
            raise self._error(1, f"damaged header ({e})") from None
        self.header_line = line

    def _error(self, lineno: int, reason: str) -> CtrtraceError:
        return CtrtraceError(f"{self.name}:{lineno}: {reason}", ExitStatus.BAD_INPUT)

    def __iter__(self) -> Iterator[tuple[int, bytes, ProcessEvent]]:
        """Line 2 on: each at most LINE_MAX bytes (a longer one is skipped to
        its end without being kept; a damaged compressed stream ends it),
        read into its event by the one reader; a summary is kept aside."""
        events = EventReader()
        readers, loads, readline = events.readers, _loads, self._f.readline
        lineno = 1
        while True:
            lineno += 1
            try:
                line = readline(LINE_MAX + 1)
            except _DAMAGED as e:
                self.skip(lineno, _damage(e))
                return
            except OSError as e:
                self.skip(lineno, e.strerror or str(e))
                return
            if line[-1:] == b"\n":
                try:
                    d = loads(line)
                except NOT_JSON as e:
                    self.skip(lineno, f"corrupt line ({e})")
                    continue
                try:
                    ev = readers[d["type"]](d)
                except (KeyError, TypeError, IndexError):  # no type, an unknown one, no object
                    ev = None
                if ev is not None:
                    yield lineno, line, ev
                    continue
                try:
                    if type(d) is dict and d.get("type") == "summary":
                        check_record(d)
                        self.summary, self.summary_line = d, line
                    else:
                        events.read(d)  # raises, saying what is wrong
                    continue
                except Invalid as e:
                    self.skip(lineno, str(e))
            elif not line:
                return
            elif len(line) > LINE_MAX:
                self.skip(lineno, f"line longer than {_mib(LINE_MAX)}: not a ctrtrace event")
                try:
                    while line and not line.endswith(b"\n"):  # --skip-bad: past it
                        line = readline(LINE_MAX)
                except (*_DAMAGED, OSError):
                    pass  # the next read says so
            else:
                self.skip(lineno, "truncated line: the recording was cut off")

    def skip(self, lineno: int, reason: str) -> None:
        """A bad line: counted with --skip-bad, else the end of the replay."""
        if not self.skip_bad:
            raise self._error(lineno, reason + " (--skip-bad goes on past bad lines)")
        self.bad += 1

    def close(self) -> None:
        if self._f is not (self.stdin or sys.stdin.buffer):
            self._f.close()


def shown_summary(reader: TraceReader, counts: dict[str, int], dropped: int) -> Summary:
    """The summary of a replay: the recording's, with the counts of what was shown."""
    rec = reader.summary or {}
    try:
        base = Summary.from_json(rec) if rec else None
    except (KeyError, TypeError, ValueError):
        base = None
    return Summary(
        counts=dict(counts),
        lost=base.lost if base else 0,
        threads=base.threads if base else 0,
        filtered_in_kernel=base.filtered_in_kernel if base else 0,
        duration_s=base.duration_s if base else 0.0,
        end_wall_ns=base.end_wall_ns if base else reader.header.start_wall_ns,
        filtered_in_userspace=dropped,
    )


def event_counts() -> dict[str, int]:
    return collections.Counter({t: 0 for t in EVENT_TYPES})


def run_replay(path: str, spec, app, as_json: bool = False, tree: bool = False,
               ns_table: bool = False, explain: bool = False, dot: str | None = None,
               html: str | None = None, skip_bad: bool = False,
               color: bool = False) -> Summary:
    """Replay a recording through the live view's filters and renderers."""
    if explain or html:
        if as_json or tree or ns_table or dot or spec.active:
            raise CtrtraceError("--explain and --html read the whole recording: "
                                "without --json, --tree, --ns, --dot or filters", ExitStatus.USAGE)
        return _replay_whole(path, app, skip_bad, explain, html)
    from ..output.text import TextRenderer
    from ..state.proctable import ProcessTable
    from .filters import EventFilter

    reader = TraceReader(path, skip_bad=skip_bad, stdin=app.stdin)
    header = reader.header
    out = app.out
    views = bool(tree or ns_table or dot)
    event_filter = EventFilter(spec, header, views=views) if spec.active else None
    table: ProcessTable | None = None
    if views:
        table = ProcessTable()
        table.seed_from_snapshot(header.processes)
    shown: set[tuple[int, int]] = set()  # (pid, start_ns) of each shown event's process
    counts = event_counts()
    renderer = TextRenderer(header.host_ns, header.start_ktime_ns, color=color)
    if as_json and views:
        raise CtrtraceError("--tree, --ns and --dot draw the whole trace: without --json",
                            ExitStatus.USAGE)
    if as_json:
        return _replay_json(reader, event_filter, app, counts)
    if not views:
        out.write(renderer.columns() + "\n")
    # The views' table keeps every process of the recording: hundreds of
    # thousands of objects that make no reference cycle, which the cyclic
    # collector would walk again and again for nothing (bench/README.md);
    # reference counting frees all the rest.
    with _cyclic_collection(not views):
        try:
            if views:
                assert table is not None
                apply = table.apply
                for _, _, ev in reader:
                    apply(ev)
                    if event_filter is None or event_filter.wants(ev):
                        counts[ev.type] += 1
                        shown.add((ev.pid, ev.start_ns))
            else:
                line, write = renderer.line, out.write
                for _, _, ev in reader:
                    if event_filter is None or event_filter.wants(ev):
                        counts[ev.type] += 1
                        write(line(ev) + "\n")
        finally:
            reader.close()

        summary = shown_summary(reader, counts, event_filter.dropped if event_filter else 0)
        if reader.summary is None:
            app.message(f"{reader.name}: no summary line: the recording did not end cleanly")
        if views:
            from ..output.views import render, selection

            assert table is not None
            chosen = selection(table, event_filter, shown)
            if tree or ns_table:
                app.lines(render(tree, ns_table, table, header.host_ns, chosen))
            if dot:
                from ..output.dot import dot_text, write_dot

                write_dot(dot, dot_text(table, header.host_ns, chosen))
    out.flush()
    text = TextRenderer.summary(summary)
    if reader.bad:
        text += f"; {reader.bad} bad lines skipped"
    app.message(text)
    return summary


def _replay_whole(path: str, app, skip_bad: bool, explain: bool, html: str | None) -> Summary:
    """The views made from every event: --explain's stories, --html's page."""
    from ..output.collect import Collector, whole_trace_views

    reader = TraceReader(path, skip_bad=skip_bad, stdin=app.stdin)
    counts = event_counts()
    kept = Collector()
    kept.header(reader.header)
    batch: list[ProcessEvent] = []
    try:
        for _, _, ev in reader:
            counts[ev.type] += 1
            batch.append(ev)
            if len(batch) == 4096:
                kept.events(batch)
                batch = []
        kept.events(batch)
    finally:
        reader.close()
    if reader.summary is None:
        app.message(f"{reader.name}: no summary line: the recording did not end cleanly")
    told = whole_trace_views(kept, html, explain)
    if told:
        app.lines(told)
    app.out.flush()
    summary = shown_summary(reader, counts, 0)
    from ..output.text import TextRenderer

    text = TextRenderer.summary(summary)
    if reader.bad:
        text += f"; {reader.bad} bad lines skipped"
    app.message(text)
    return summary


@contextlib.contextmanager
def _cyclic_collection(on: bool) -> Iterator[None]:
    """The cyclic garbage collector on or off for a block, as it was after."""
    was = gc.isenabled()
    if not on:
        gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def _shown_json(line: bytes) -> bytes:
    """A recorded line as it was, unless it holds a character that is not
    printable (ctrtrace writes those as \\u escapes; a made-up recording
    need not): then the same values, re-encoded with them escaped."""
    if line.isascii() or line[:-1].decode().isprintable():
        return line
    from ..model.contract import json_bytes

    return json_bytes(_loads(line)) + b"\n"


def _replay_json(reader: TraceReader, event_filter, app, counts: dict[str, int]) -> Summary:
    """JSON Lines out: the header and each kept event exactly as recorded."""
    from ..model.contract import json_bytes

    out = app.out
    out.flush()
    buf = getattr(out, "buffer", None)
    if buf is not None:
        write = buf.write
    else:  # a text-only stream
        def write(line: bytes) -> None:
            out.write(line.decode())
    try:
        write(_shown_json(reader.header_line))
        for _, line, ev in reader:
            if event_filter is None or event_filter.wants(ev):
                write(line if line.isascii() else _shown_json(line))
                counts[ev.type] += 1
    finally:
        reader.close()
    summary = shown_summary(reader, counts, event_filter.dropped if event_filter else 0)
    if reader.summary is None:
        app.message(f"{reader.name}: no summary line: the recording did not end cleanly")
    if reader.summary is not None and event_filter is None and not reader.bad:
        write(_shown_json(reader.summary_line))  # replay reproduces the file
    else:
        obj = summary.to_json()
        obj["bad_lines"] = reader.bad
        write(json_bytes(obj) + b"\n")
    if buf is not None:
        buf.flush()
    out.flush()
    if reader.bad:
        app.message(f"{reader.bad} bad lines skipped")
    return summary
