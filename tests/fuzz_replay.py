"""Damaged recordings of every kind, made from a real one, replayed in every mode.

    python3 tests/fuzz_replay.py SOURCE.jsonl WORKDIR

Writes the damaged files into WORKDIR, replays each in every mode in this
process (through the click command, as `ctrtrace replay` runs), and prints
one JSON object per replay: the file, the mode, the exit status, what the
command wrote to stderr, whether anything but SystemExit escaped, whether
its output was printable and every line --json wrote keeps the contract,
and the seconds it took.
tests/test_replay_fuzz.py runs it as an unprivileged user under an
address-space limit and judges the results.
"""

from __future__ import annotations

import copy
import gzip
import io
import json
import os
import sys
import time
import traceback
from collections.abc import Iterator
from typing import Any

BAD_VALUES: list[Any] = [None, -1, 2**70, 1.5, True, "abc", [], {}, "1"]

# (line type, path to the field): each gets every bad value
EVENT_FIELDS = {
    "exec": ["pid", "ts", "comm", "ns", "ns.mnt", "argv", "argv_truncated", "filename",
             "container", "container.name", "ret", "type"],
    "fork": ["ppid", "ktime_ns", "parent_pid", "clone_flags", "thread", "start_ns"],
    "exit": ["exit_code", "signal", "reaper", "status", "vpid"],
    "unshare": ["flags", "ns_before", "ns_before.pid"],
    "setns": ["fd", "nstype"],
}
HEADER_FIELDS = ["version", "processes", "processes.0", "processes.0.pid", "processes.0.ns",
                 "processes.0.argv", "host_ns", "host_ns.mnt", "ts", "start_ktime_ns",
                 "boot_time_ns", "hostname", "format"]
SUMMARY_FIELDS = ["counts", "counts.exec", "lost", "ts", "duration_s"]

MODES: list[list[str]] = [[], ["--json"], ["--tree"], ["--ns"], ["--tree", "--ns"],
                          ["--json", "--container", "sleep-container"], ["--comm", "sleep"],
                          ["--pid", "1"], ["--tree", "--pid", "1"], ["--since", "0.1"]]


def _set(d: Any, path: str, value: Any) -> bool:
    keys = path.split(".")
    for k in keys[:-1]:
        if isinstance(d, list):
            if not d:
                return False
            d = d[int(k)]
        elif isinstance(d, dict) and isinstance(d.get(k), (dict, list)):
            d = d[k]
        else:
            return False
    last = keys[-1]
    if isinstance(d, list):
        d[int(last)] = value
    else:
        d[last] = value
    return True


def _dump(d: Any) -> bytes:
    return json.dumps(d, separators=(",", ":")).encode() + b"\n"


def variants(lines: list[bytes]) -> Iterator[tuple[str, bytes]]:
    """(name, content) of damaged recordings; a name ending in .gz is compressed."""
    header, events, summary = lines[0], lines[1:-1], lines[-1]
    parsed = [json.loads(line) for line in events]
    whole = b"".join(lines)

    for kind, fields in EVENT_FIELDS.items():
        at = next(i for i, d in enumerate(parsed) if d["type"] == kind)
        for path in fields:
            for n, value in enumerate(BAD_VALUES):
                d = copy.deepcopy(parsed[at])
                if _set(d, path, value):
                    body = events[:at] + [_dump(d)] + events[at + 1:]
                    yield f"{kind}-{path}-{n}.jsonl", header + b"".join(body) + summary
    h = json.loads(header)
    for path in HEADER_FIELDS:
        for n, value in enumerate(BAD_VALUES):
            d = copy.deepcopy(h)
            if _set(d, path, value):
                yield f"header-{path}-{n}.jsonl", _dump(d) + b"".join(events) + summary
    s = json.loads(summary)
    for path in SUMMARY_FIELDS:
        for n, value in enumerate(BAD_VALUES[:5]):
            d = copy.deepcopy(s)
            if _set(d, path, value):
                yield f"summary-{path}-{n}.jsonl", header + b"".join(events) + _dump(d)

    mid = len(events) // 2
    odd = {
        "empty": b"",
        "newline": b"\n",
        "garbage": bytes(range(256)) * 4,
        "header-only": header,
        "header-cut": header[:len(header) // 2],
        "header-cut-at-1": header[:1],
        "no-summary": header + b"".join(events),
        "cut-mid-event": whole[:len(header) + sum(map(len, events[:mid])) + 40],
        "not-utf8": header + events[0][:30] + b"\xff\xfe" + events[0][30:] + summary,
        "nul-bytes": header + b"\0" * 100 + b"\n" + summary,
        "deep-array": header + b"[" * 100_000 + b"]" * 100_000 + b"\n" + summary,
        "deep-object": header + b'{"a":' * 5000 + b"1" + b"}" * 5000 + b"\n" + summary,
        "big-int": header + events[0].replace(b'"pid":', b'"pid":' + b"9" * 5000, 1) + summary,
        "huge-float": header + events[0].replace(b'"ktime_ns":', b'"ktime_ns":1e999,"x":', 1)
        + summary,
        "long-line": header + b'{"type":"exec","x":"' + b"a" * (2 << 20) + b'"}\n'
        + b"".join(events) + summary,
        "long-last-line": header + b"".join(events) + b"b" * (1 << 20) * 2,
        "version-2": whole.replace(b'"version":1', b'"version":2', 1),
        "events-before-header": b"".join(events) + header + summary,
        "two-summaries-then-events": header + summary + b"".join(events) + summary,
        "byte-flips": bytes(b ^ 0x20 if i % 97 == 13 else b for i, b in enumerate(whole)),
        # valid JSON whose strings hold raw C1 controls and a bidi override
        "raw-c1": header.replace(b'"hostname":"', '"hostname":"\u009b2J\u202e'.encode(), 1)
        + events[0].replace(b'"comm":"', '"comm":"\u009b31m\u202e'.encode(), 1)
        + b"".join(events[1:]) + summary,
    }
    for name, content in odd.items():
        yield name + ".jsonl", content

    gz = gzip.compress(whole)
    yield "ok.jsonl.gz", gz
    yield "gz-cut.jsonl.gz", gz[:len(gz) // 2]
    yield "gz-cut-in-first-block.jsonl.gz", gz[:20]
    yield "gz-first-block-damaged.jsonl.gz", gz[:12] + bytes(b ^ 0xFF for b in gz[12:40]) + gz[40:]
    yield "gz-crc-damaged.jsonl.gz", gz[:-8] + bytes(b ^ 0xFF for b in gz[-8:-4]) + gz[-4:]
    yield "gz-header-only.jsonl.gz", gzip.compress(header)
    yield "gz-garbage-after.jsonl.gz", gz + b"\x1f\x8b\x08garbage"


def replay(path: str, mode: list[str], skip_bad: bool) -> dict[str, Any]:
    from tracer.cli import App, main
    from tracer.model.contract import Invalid, check_header, check_record

    out = io.TextIOWrapper(io.BytesIO(), encoding="utf-8", errors="strict")
    err = io.StringIO()
    args = ["replay", path, *mode] + (["--skip-bad"] if skip_bad else [])
    status: Any = 0
    escaped = None
    t0 = time.monotonic()
    try:
        main.main(args=args, obj=App(out=out, err=err), standalone_mode=False)
    except SystemExit as e:
        status = e.code
    except BaseException:  # noqa: BLE001 - what the test is looking for
        escaped = traceback.format_exc(limit=-3)
    seconds = time.monotonic() - t0
    out.flush()
    data = out.buffer.getvalue()  # type: ignore[attr-defined]
    contract_ok = True
    try:  # what reaches a terminal: UTF-8, printable
        if not all(line.isprintable() for line in data.decode().splitlines()):
            contract_ok = False
    except UnicodeDecodeError:
        contract_ok = False
    if "--json" in mode and status == 0 and escaped is None:
        for i, line in enumerate(data.splitlines()):
            try:
                d = json.loads(line)
                check_header(d) if i == 0 else check_record(d)
            except (ValueError, Invalid):
                contract_ok = False
    return {"file": os.path.basename(path), "mode": " ".join(mode), "skip_bad": skip_bad,
            "status": status, "stderr": err.getvalue(), "escaped": escaped,
            "out_ok": contract_ok, "seconds": round(seconds, 3)}


def main() -> None:
    source, workdir = sys.argv[1], sys.argv[2]
    with open(source, "rb") as f:
        lines = f.read().splitlines(keepends=True)
    for name, content in variants(lines):
        path = os.path.join(workdir, name)
        with open(path, "wb") as f:
            f.write(content)
        for mode in MODES:
            for skip_bad in (False, True):
                print(json.dumps(replay(path, mode, skip_bad)), flush=True)


if __name__ == "__main__":
    main()
