"""Reading recordings back: validated, streamed line by line, filtered, rendered.

Replay needs no root and no BPF; it prints what the live view printed for the
same events, with the same renderer and the same filters.
"""

from __future__ import annotations

import collections
import gzip
import io
import json
import sys
import zlib
from dataclasses import dataclass, field
from typing import IO, Any, Dict, Iterator, List, Optional, Set, Tuple

from .errors import CtrtraceError, ExitStatus
from .events import (
    EVENT_TYPES, FORMAT_NAME, FORMAT_VERSION, Header, Summary, event_from_json,
)

try:  # much faster parsing where available; the json module is the fallback
    import orjson as _orjson

    _loads = _orjson.loads
except ImportError:  # pragma: no cover - exercised where orjson is absent
    _loads = json.loads

try:  # validates a line without building Python objects: the --json fast path
    import simdjson as _simdjson
except ImportError:  # pragma: no cover - exercised where pysimdjson is absent
    _simdjson = None

_EVENT_KEYS = ("ts", "ktime_ns", "pid", "tid", "ppid", "vpid", "comm", "ns")


class BadLine(Exception):
    def __init__(self, lineno: int, reason: str) -> None:
        super().__init__(reason)
        self.lineno = lineno
        self.reason = reason


def _open(path: str, stdin: Optional[IO[bytes]]) -> IO[bytes]:
    if path == "-":
        raw = stdin if stdin is not None else sys.stdin.buffer
    else:
        try:
            raw = open(path, "rb")
        except OSError as e:
            raise CtrtraceError(f"{path}: {e.strerror}", ExitStatus.BAD_INPUT)
    if not hasattr(raw, "peek"):
        raw = io.BufferedReader(raw)  # type: ignore[arg-type]
    head = raw.peek(2)[:2]
    if head == b"\x1f\x8b":
        return gzip.GzipFile(fileobj=raw, mode="rb")  # type: ignore[return-value]
    return raw


@dataclass
class TraceReader:
    """Iterates over a recording's events as (line number, raw line, dict)."""

    path: str
    skip_bad: bool = False
    stdin: Optional[IO[bytes]] = None
    header: Header = field(init=False)
    header_line: bytes = field(init=False, default=b"")
    summary: Optional[Dict[str, Any]] = field(init=False, default=None)
    summary_line: bytes = field(init=False, default=b"")
    bad: int = field(init=False, default=0)

    def __post_init__(self) -> None:
        self.name = "<stdin>" if self.path == "-" else self.path
        self._f = _open(self.path, self.stdin)
        self._lines = self._raw_lines()
        first = next(self._lines, None)
        if first is None:
            raise self._error(1, "empty file: not a ctrtrace trace")
        lineno, line = first
        try:
            d = _loads(line)
            if not isinstance(d, dict) or d.get("type") != "header" or d.get("format") != FORMAT_NAME:
                raise ValueError("the first line is not a ctrtrace header")
        except ValueError:
            raise self._error(lineno, "not a ctrtrace trace (no ctrtrace header on the first line)")
        version = d.get("version")
        if not isinstance(version, int) or version > FORMAT_VERSION:
            raise CtrtraceError(
                f"{self.name}: format version {version} is newer than this ctrtrace reads "
                f"({FORMAT_VERSION}): upgrade ctrtrace to replay it", ExitStatus.BAD_INPUT)
        try:
            self.header = Header.from_json(d)
        except (KeyError, TypeError, ValueError) as e:
            raise self._error(lineno, f"damaged header ({e})")
        self.header_line = line

    def _error(self, lineno: int, reason: str) -> CtrtraceError:
        return CtrtraceError(f"{self.name}:{lineno}: {reason}", ExitStatus.BAD_INPUT)

    def _raw_lines(self) -> Iterator[Tuple[int, bytes]]:
        n = 0
        try:
            for line in self._f:
                n += 1
                yield n, line
        except (EOFError, zlib.error, gzip.BadGzipFile) as e:
            # a compressed recording that was cut off: what came before is intact
            yield n + 1, b"\0cut: " + str(e).encode()

    def __iter__(self) -> Iterator[Tuple[int, bytes, Dict[str, Any]]]:
        for lineno, line in self._lines:
            try:
                d = self._parse(lineno, line)
            except BadLine as b:
                if not self.skip_bad:
                    raise self._error(b.lineno, b.reason + " (--skip-bad goes on past bad lines)")
                self.bad += 1
                continue
            if d["type"] == "summary":
                self.summary, self.summary_line = d, line
                continue
            yield lineno, line, d

    def _parse(self, lineno: int, line: bytes) -> Dict[str, Any]:
        if line.startswith(b"\0cut: "):
            raise BadLine(lineno, "the compressed stream ends early: the recording was cut off")
        if not line.endswith(b"\n"):
            raise BadLine(lineno, "truncated line: the recording was cut off")
        try:
            d = _loads(line)
        except ValueError as e:
            raise BadLine(lineno, f"corrupt line ({e})")
        if not isinstance(d, dict):
            raise BadLine(lineno, "corrupt line (not a JSON object)")
        t = d.get("type")
        if t == "summary":
            return d
        if t not in EVENT_TYPES:
            raise BadLine(lineno, f"unknown record type {t!r}")
        missing = [k for k in _EVENT_KEYS if k not in d]
        if missing:
            raise BadLine(lineno, f"{t} event without {', '.join(missing)}")
        return d

    def passthrough(self, keep, write, counts: Dict[str, int]) -> None:
        """The --json path: each event line is validated and filtered without
        building Python objects (simdjson's lazy parse) and written as it was
        recorded; counts[type] is kept up to date.

        One tight loop, as this is where replay spends its time."""
        if _simdjson is None:
            for _, line, d in self:
                if keep(d):
                    write(line)
                    counts[d["type"]] += 1
            return
        parse = _simdjson.Parser().parse
        Object, types = _simdjson.Object, EVENT_TYPES
        batch: List[bytes] = []
        for lineno, line in self._lines:
            reason = None
            if line[-1:] != b"\n" or line.startswith(b"\0cut: "):
                reason = self._parse_error(lineno, line)
            else:
                try:
                    d = parse(line)
                    t = d["type"] if isinstance(d, Object) else None
                    if t in types:
                        if ("ts" in d and "ktime_ns" in d and "pid" in d and "tid" in d
                                and "ppid" in d and "vpid" in d and "comm" in d and "ns" in d):
                            if keep(d):
                                batch.append(line)
                                counts[t] += 1
                        else:
                            reason = f"{t} event without " + ", ".join(
                                k for k in _EVENT_KEYS if k not in d)
                    elif t == "summary":
                        self.summary, self.summary_line = d.as_dict(), line
                    else:
                        reason = f"unknown record type {t!r}"
                except ValueError as e:
                    reason = f"corrupt line ({e})"
                except (KeyError, TypeError) as e:
                    reason = f"damaged event (no {e})"
                d = None  # the parser is reused: no reference may outlive the line
            if reason is not None:
                if not self.skip_bad:
                    raise self._error(lineno, reason + " (--skip-bad goes on past bad lines)")
                self.bad += 1
            if len(batch) >= 512:
                write(b"".join(batch))
                batch.clear()
        write(b"".join(batch))

    def _parse_error(self, lineno: int, line: bytes) -> str:
        try:
            self._parse(lineno, line)
        except BadLine as b:
            return b.reason
        return "bad line"

    def close(self) -> None:
        if self._f is not (self.stdin or sys.stdin.buffer):
            self._f.close()


def shown_summary(reader: TraceReader, counts: Dict[str, int], dropped: int) -> Summary:
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


def event_counts() -> Dict[str, int]:
    return collections.Counter({t: 0 for t in EVENT_TYPES})


def run_replay(path: str, spec, app, as_json: bool = False, tree: bool = False,
               ns_table: bool = False, skip_bad: bool = False) -> Summary:
    """Replay a recording through the live view's filters and renderers."""
    from .filters import EventFilter
    from .proctable import ProcessTable
    from .render import TextRenderer

    reader = TraceReader(path, skip_bad=skip_bad, stdin=app.stdin)
    header = reader.header
    out = app.out
    flt = EventFilter(spec, header) if spec.active else None
    views = tree or ns_table
    table: Optional[ProcessTable] = None
    if views:
        table = ProcessTable()
        table.seed_from_snapshot(header.processes)
    shown_pids: Set[int] = set()
    counts = event_counts()
    renderer = TextRenderer(header.host_ns, header.start_ktime_ns)
    if as_json and not views:
        return _replay_json(reader, flt, app, counts)
    if not views:
        out.write(renderer.columns() + "\n")
    try:
        for lineno, line, d in reader:
            try:
                ev = event_from_json(d)
            except (KeyError, TypeError, ValueError) as e:
                if not skip_bad:
                    raise reader._error(lineno, f"damaged {d['type']} event ({e!r}) "
                                                "(--skip-bad goes on past bad lines)")
                reader.bad += 1
                continue
            if table is not None:
                table.apply(ev)
            if flt is not None and not flt.wants(d):
                continue
            counts[d["type"]] += 1
            if views:
                shown_pids.add(d["pid"])
            else:
                out.write(renderer.line(ev) + "\n")
    finally:
        reader.close()

    summary = shown_summary(reader, counts, flt.dropped if flt else 0)
    if reader.summary is None:
        app.message(f"{reader.name}: no summary line: the recording did not end cleanly")
    if views:
        from . import views as v

        assert table is not None
        app.lines(v.render(tree, ns_table, table, header.host_ns,
                           v.selection(table, flt, shown_pids)))
    out.flush()
    text = TextRenderer.summary(summary)
    if reader.bad:
        text += f"; {reader.bad} bad lines skipped"
    app.message(text)
    return summary


def _replay_json(reader: TraceReader, flt, app, counts: Dict[str, int]) -> Summary:
    """JSON Lines out: the header and each kept event exactly as recorded."""
    from .jsonlines import json_bytes

    out = app.out
    out.flush()
    buf = getattr(out, "buffer", None)
    if buf is not None:
        write = buf.write
    else:  # a text-only stream
        def write(line: bytes) -> None:
            out.write(line.decode())
    keep = flt.wants if flt is not None else (lambda d: True)
    try:
        write(reader.header_line)
        reader.passthrough(keep, write, counts)
    finally:
        reader.close()
    summary = shown_summary(reader, counts, flt.dropped if flt else 0)
    if reader.summary is None:
        app.message(f"{reader.name}: no summary line: the recording did not end cleanly")
    if reader.summary is not None and flt is None and not reader.bad:
        write(reader.summary_line)  # unchanged: replay reproduces the file
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
