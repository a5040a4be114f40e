#!/usr/bin/env python3
"""What each step of the one event path costs, per event, in-process.

    python3 bench/event_path.py [--repeat 300] [--storm]

The events of the recorded traces (tests/data/*.jsonl), turned back into the
records the kernel sends (decode.encode), repeated: the CPU time per event
of decoding them, attributing them to containers, writing their JSON lines
and their text lines, and of replay's reading of a line (orjson's parse,
then the one reader), best of five passes.  In batches of --batch records
(a poll's), the caches warm, the garbage collector on, as a live trace runs
them.  --storm keeps the exec, fork and exit records only: an exec storm.
The live costs, with the ring buffer, the writes and cold caches after each
wait, are compare.py's CPU/exec.
"""

from __future__ import annotations

import argparse
import glob
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))

import orjson  # noqa: E402

from tracer.kernel.decode import Decoder, encode  # noqa: E402
from tracer.model.codec import EventLines, EventReader  # noqa: E402
from tracer.model.events import with_container  # noqa: E402
from tracer.output.text import TextRenderer  # noqa: E402
from tracer.state.containers import ContainerResolver  # noqa: E402


def best(fn, n: int) -> float:
    """The fastest of five passes, in µs per event."""
    times = []
    for _ in range(5):
        t0 = time.process_time()
        fn()
        times.append(time.process_time() - t0)
    return min(times) / n * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=300)
    ap.add_argument("--batch", type=int, default=200)
    ap.add_argument("--storm", action="store_true")
    args = ap.parse_args()
    reader = EventReader()
    records, lines, offset, host = [], [], 0, None
    for path in sorted(glob.glob(os.path.join(HERE, "..", "tests", "data", "*.jsonl"))):
        with open(path, "rb") as f:
            raw = f.read().splitlines()
        offset = offset or orjson.loads(raw[0])["boot_time_ns"]
        for line in raw[1:-1]:
            ev = reader.read(orjson.loads(line))
            if args.storm and ev.type not in ("exec", "fork", "exit"):
                continue
            # one clock for all: the records of every trace decode with one offset
            ev = ev.replace(wall_ns=ev.ktime_ns + offset)
            host = host or ev.ns
            records.append(encode(ev, offset))
            lines.append(line)
    records, lines = records * args.repeat, lines * args.repeat
    batches = [records[i:i + args.batch] for i in range(0, len(records), args.batch)]
    n = len(records)

    decoder = Decoder(offset)
    resolver = ContainerResolver(None, host)
    attribute = resolver.attribute

    def decode() -> None:
        for batch in batches:
            decoder.events(batch)

    def attributed(batch: list[bytes]) -> list:
        return [ev if (c := attribute(ev)) is None else with_container(ev, c)
                for ev in decoder.events(batch)]

    def decode_attribute() -> None:
        for batch in batches:  # each batch let go, as a live trace does
            attributed(batch)

    events = [attributed(batch) for batch in batches]
    writer = EventLines()
    text = TextRenderer(host, 0)

    def json_lines() -> None:
        for batch in events:
            writer.lines(list(batch))

    def text_lines() -> None:
        line = text.line
        for batch in events:
            [line(ev) for ev in batch]

    loads, readers = orjson.loads, EventReader().readers

    def parse() -> None:
        for line in lines:
            loads(line)

    def read() -> None:
        for line in lines:
            d = loads(line)
            readers[d["type"]](d)

    costs = {"decode": best(decode, n), "decode + attribute": best(decode_attribute, n),
             "JSON line": best(json_lines, n), "text line": best(text_lines, n),
             "replay: parse (orjson)": best(parse, n), "replay: parse + read": best(read, n)}
    kinds = "exec, fork and exit records" if args.storm else "records of every type"
    print(f"{n:,} {kinds} ({len(records) // args.repeat} recorded, x{args.repeat}), "
          f"batches of {args.batch}:")
    for name, us in costs.items():
        print(f"  {name:<24} {us:6.2f} µs/event")
    live_json = costs["decode + attribute"] + costs["JSON line"]
    live_text = costs["decode + attribute"] + costs["text line"]
    print(f"  {'live, JSON':<24} {live_json:6.2f} µs/event")
    print(f"  {'live, text':<24} {live_text:6.2f} µs/event")


if __name__ == "__main__":
    main()
