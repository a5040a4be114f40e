#!/usr/bin/env python3
"""--html on big traces: the page's size and Chromium's time to load and draw it.

    python3 bench/html.py [--events 1000,10000,100000] [--ctrtrace CMD] [--loads 3]

Each trace is made as bench/replay.py makes its own (the real events of
tests/data/docker-run.jsonl, repeated with new pids and times).  For each:
the time `ctrtrace replay T --html P` takes, the page's size, and, over
--loads headless Chromium loads (`--dump-dom`, as the tests run it): the
page's own measure of load-to-drawn (performance.now() once the first
drawing is done: parsing the page and its data, building the lanes and the
namespace table, drawing), the time one redraw takes, and the wall time of
the whole Chromium run (its own start included).
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from replay import synthesize  # noqa: E402 - the trace bench/replay.py makes


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", default="1000,10000,100000")
    ap.add_argument("--ctrtrace", default=f"{sys.executable} -m tracer")
    ap.add_argument("--loads", type=int, default=3)
    args = ap.parse_args()
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        raise SystemExit("needs chromium (apt-get install chromium)")
    work = tempfile.mkdtemp(prefix="ctrtrace-html-")
    try:
        print(f"{'events':>8} {'lanes':>7} {'page':>9} {'--html':>8} {'load+draw':>10} "
              f"{'redraw':>7} {'chromium run':>13}")
        for n in (int(x) for x in args.events.split(",")):
            trace = os.path.join(work, f"t{n}.jsonl")
            synthesize(trace, n)
            page = os.path.join(work, f"t{n}.html")
            t = time.monotonic()
            subprocess.run([*shlex.split(args.ctrtrace), "replay", trace, "--html", page],
                           check=True, capture_output=True, cwd=os.path.join(HERE, ".."))
            make = time.monotonic() - t
            ready, redraw, wall, lanes = [], [], [], 0
            for _ in range(args.loads):
                t = time.monotonic()
                r = subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu",
                                    "--window-size=1400,900", "--dump-dom", "file://" + page],
                                   capture_output=True, text=True, timeout=600)
                wall.append(time.monotonic() - t)
                body = re.search(r"<body([^>]*)>", r.stdout)
                if body is None or "data-errors" in body.group(1):
                    raise SystemExit(f"the page failed at {n} events: {r.stdout[:300]}")
                attrs = dict(re.findall(r'data-([\w-]+)="([^"]*)"', body.group(1)))
                ready.append(float(attrs["ready-ms"]))
                redraw.append(float(attrs["draw-ms"]))
                lanes = int(attrs["lanes"])
            size = os.path.getsize(page)
            print(f"{n:>8} {lanes:>7} {size / 1e6:>7.2f}MB {make:>7.2f}s "
                  f"{statistics.median(ready):>8.0f}ms {statistics.median(redraw):>5.1f}ms "
                  f"{statistics.median(wall):>11.2f}s", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
