"""--html: the page, loaded in a real headless Chromium from recorded traces.

No console error; one lane per process of the trace; the namespace table
shows a container's PID 1 in the namespaces /proc showed it in while it
was recorded; a screenshot that is not blank and has its regions; nothing
from a traced process becomes markup or script; no outside reference.
"""

from __future__ import annotations

import io
import json
import re
import shutil
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import pytest

from tracer.commands.filters import FilterSpec
from tracer.commands.live import App
from tracer.commands.replay import TraceReader, run_replay
from tracer.output.html import model, page

DATA = Path(__file__).parent / "data"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
NS_TYPES = ("mnt", "uts", "ipc", "pid", "net", "cgroup", "user", "time")


def _chromium(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    assert CHROMIUM, "no chromium: ./run setup installs Debian's"
    return subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu",
                           "--hide-scrollbars", "--enable-logging=stderr", "--v=0", *args],
                          capture_output=True, text=True, timeout=timeout)


def _page(name: str, tmp_path: Path) -> Path:
    out = tmp_path / f"{name}.html"
    run_replay(str(DATA / f"{name}.jsonl"), FilterSpec(), App(out=io.StringIO(),
               err=io.StringIO()), html=str(out))
    return out


def _dom(path: Path) -> tuple[str, str]:
    r = _chromium("--dump-dom", path.as_uri())
    assert r.returncode == 0, r.stderr[-2000:]
    return r.stdout, r.stderr


def _console_errors(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if "CONSOLE" in line]


def _processes(name: str) -> set[tuple[int, int]]:
    """The trace's processes, by (pid, start): those its events are about,
    the parents its forks name, and their ancestors alive at the start."""
    reader = TraceReader(str(DATA / f"{name}.jsonl"))
    seen: set[tuple[int, int]] = set()
    subjects: set[int] = set()
    named: set[int] = set()
    for _, _, ev in reader:
        if ev.type == "fork":
            if ev.thread:
                continue
            named |= {ev.ppid, ev.parent_pid}
        seen.add((ev.pid, ev.start_ns))
        subjects.add(ev.pid)
    reader.close()
    known = {p["pid"]: p for p in reader.header.processes}
    todo = list(named | {known[p]["ppid"] for p in subjects if p in known})
    others: set[int] = set()
    while todo:
        pid = todo.pop()
        if pid and pid not in subjects and pid not in others:
            others.add(pid)
            if pid in known:
                todo.append(known[pid]["ppid"])
    return seen | {(pid, -1) for pid in others}


def test_the_page_refers_to_nothing_outside(tmp_path):
    text = _page("docker-run", tmp_path).read_text()
    assert not re.search(r"(?i)\b(src|href)\s*=|https?:|url\(|@import", text)
    assert "default-src 'none'" in text  # the page itself forbids any fetch


def test_one_lane_per_process_of_the_trace():
    reader = TraceReader(str(DATA / "docker-run.jsonl"))
    events = [ev for _, _, ev in reader]
    reader.close()
    doc = model(reader.header, events)
    assert len(doc["lanes"]) == len(_processes("docker-run"))
    assert len(doc["events"]) == sum(1 for ev in events if not (ev.type == "fork" and ev.thread))


def test_a_lane_and_its_events_say_the_levels_and_ids():
    """A process nested two pid namespaces down, mapped to root inside its
    user namespace: its lane and its event say so in the text view's words."""
    reader = TraceReader(str(DATA / "docker-run.jsonl"))
    events = [ev for _, _, ev in reader]
    reader.close()
    fork = next(ev for ev in events if ev.type == "fork" and not ev.thread)
    nested = fork.replace(pid=90001, tid=90001, vpid=1, vpids=(90001, 7, 1), uid=100000,
                          gid=100000, ns_uid=0, ns_gid=0)
    doc = model(reader.header, events + [nested])
    words = "pids 90001/7/1  id 0:0 (host 100000:100000)"
    lane = next(lane for lane in doc["lanes"] if lane[0] == 90001)
    assert doc["strings"][lane[13]] == words
    assert doc["strings"][doc["events"][-1][4]].endswith(words)
    plain = [lane for lane in doc["lanes"] if lane[0] != 90001]
    assert all(doc["strings"][lane[13]] == "" for lane in plain)


def test_chromium_draws_it_with_the_namespaces_proc_showed(tmp_path):
    path = _page("docker-run", tmp_path)
    dom, stderr = _dom(path)
    assert not _console_errors(stderr), _console_errors(stderr)
    body = re.search(r"<body([^>]*)>", dom).group(1)
    assert "data-errors" not in body
    assert re.search(r'data-drawn="[1-9]', body)
    assert f'data-lanes="{len(_processes("docker-run"))}"' in body
    truth = json.loads((DATA / "docker-run.truth.json").read_text())
    init = next(p for p in truth["processes"] if p["role"] == "init")
    rows = re.findall(r'<tr class="ns" data-ns="(\d+)" data-type="(\w+)" data-pids="([\d ]*)"',
                      dom)
    mine = {kind: int(ns) for ns, kind, pids in rows if str(init["pid"]) in pids.split()}
    assert mine == {k: init["ns"][k] for k in NS_TYPES}  # as lsns -p showed them


def _png_pixels(data: bytes) -> tuple[int, int, list[bytes]]:
    """Width, height and rows of RGB(A) pixels of an 8-bit PNG."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    at, idat, width = 8, b"", 0
    while at < len(data):
        n, kind = struct.unpack(">I4s", data[at:at + 8])
        chunk = data[at + 8:at + 8 + n]
        if kind == b"IHDR":
            width, height, depth, color = struct.unpack(">IIBB", chunk[:10])
            assert depth == 8 and color in (2, 6)
            bpp = 3 if color == 2 else 4
        elif kind == b"IDAT":
            idat += chunk
        at += 12 + n
    raw, rows, prev = zlib.decompress(idat), [], bytearray(width * bpp)
    stride = width * bpp + 1
    for y in range(height):
        f, line = raw[y * stride], bytearray(raw[y * stride + 1:(y + 1) * stride])
        for i in range(len(line)):
            a = line[i - bpp] if i >= bpp else 0
            b, c = prev[i], prev[i - bpp] if i >= bpp else 0
            if f == 1:
                line[i] = (line[i] + a) & 255
            elif f == 2:
                line[i] = (line[i] + b) & 255
            elif f == 3:
                line[i] = (line[i] + (a + b) // 2) & 255
            elif f == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        rows.append(bytes(line) if bpp == 3 else bytes(v for j, v in enumerate(line) if j % 4 != 3))
        prev = line
    return width, height, rows


def test_the_screenshot_shows_lanes_containers_and_namespaces(tmp_path):
    path = _page("docker-run", tmp_path)
    shot = tmp_path / "shot.png"
    r = _chromium(f"--screenshot={shot}", "--window-size=1200,800", path.as_uri())
    assert r.returncode == 0 and shot.exists(), r.stderr[-2000:]
    width, height, rows = _png_pixels(shot.read_bytes())
    assert (width, height) == (1200, 800)
    pixels = [row[i:i + 3] for row in rows for i in range(0, len(row), 3)]
    white = sum(1 for p in pixels if p == b"\xff\xff\xff")
    assert white < 0.95 * len(pixels)  # not blank

    def has(rgb: str, at_least: int) -> bool:
        want = bytes.fromhex(rgb)
        return sum(1 for p in pixels if p == want) >= at_least

    assert has("dbe9f6", 2000)   # the container's group header
    assert has("fff4e0", 2000)   # lanes in namespaces not the host's
    assert has("555555", 500)    # lanes of processes alive at the end


def test_hostile_names_stay_text(tmp_path):
    reader = TraceReader(str(DATA / "session.jsonl"))
    events = [ev for _, _, ev in reader]
    reader.close()
    evil = '</script><script>document.title="pwned"</script><img src=x onerror=alert(1)>\x1b[2J'
    events = [ev.replace(comm=evil[:15], argv=(evil, "&amp;<b>")) if ev.type == "exec" else ev
              for ev in events]
    html = page(model(reader.header, events))
    assert html.count("</script>") == 2 and "<img" not in html and "\x1b" not in html
    path = tmp_path / "evil.html"
    path.write_text(html)
    dom, stderr = _dom(path)
    assert not _console_errors(stderr)
    assert "<title>ctrtrace</title>" in dom and "pwned" not in dom.split("</script>", 2)[-1]
    assert "<img" not in dom and "<b>" not in dom


def test_html_and_explain_need_the_whole_recording():
    r = subprocess.run([sys.executable, "-m", "tracer", "replay", str(DATA / "session.jsonl"),
                        "--html", "/dev/null", "--pid", "1"], capture_output=True, text=True)
    assert r.returncode == 2 and "--html" in r.stderr and r.stderr.count("\n") == 1


@pytest.mark.bpf
def test_a_live_trace_writes_its_page(tmp_path):
    out = tmp_path / "live.html"
    r = subprocess.run([sys.executable, "-m", "tracer", "--html", str(out), "--",
                        "unshare", "--fork", "--pid", "true"], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    dom, stderr = _dom(out)
    assert not _console_errors(stderr)
    lanes = int(re.search(r'data-lanes="(\d+)"', dom).group(1))
    assert lanes >= 3  # ctrtrace's child, unshare, and PID 1 of the new namespace


def test_the_readme_shows_the_pages_picture():
    """docs/docker-run.png is scripts/readme-picture's screenshot of the page."""
    readme = (DATA.parent.parent / "README.md").read_text()
    assert "![ctrtrace --html: the course's docker run](docs/docker-run.png)" in readme
    width, height, rows = _png_pixels((DATA.parent.parent / "docs" / "docker-run.png").read_bytes())
    assert (width, height) == (1400, 820)
    pixels = [row[i:i + 3] for row in rows for i in range(0, len(row), 3)]
    assert pixels.count(bytes.fromhex("dbe9f6")) > 2000  # the container's header
    assert pixels.count(bytes.fromhex("ffe9b3")) > 2000  # PID 1's lane, marked


def test_a_chain_of_thousands_of_processes_alive_at_the_start(tmp_path):
    """Each lane links to its parent's, up the processes alive at the start:
    a chain 5,000 long (sh -c 'sh -c ...') draws, as a loop would."""
    lines = (DATA / "docker-run.jsonl").read_text().splitlines()
    header = json.loads(lines[0])
    base = header["processes"][-1]
    top = base["pid"]
    chain = [dict(base, pid=200_000 + i, vpid=200_000 + i, ppid=200_000 + i - 1 if i else top,
                  comm="sh", argv=["sh", "-c", f"level {i}"]) for i in range(5000)]
    header["processes"] += chain
    fork = json.loads(next(line for line in lines if '"type":"fork"' in line))
    fork.update(ppid=chain[-1]["pid"], parent_pid=chain[-1]["pid"],
                parent_start_ns=chain[-1]["start_ns"])
    rec = tmp_path / "chain.jsonl"
    rec.write_text("\n".join([json.dumps(header), json.dumps(fork), lines[-1]]) + "\n")
    out = tmp_path / "chain.html"
    run_replay(str(rec), FilterSpec(), App(out=io.StringIO(), err=io.StringIO()), html=str(out))
    assert out.stat().st_size > 0
    reader = TraceReader(str(rec))
    events = [ev for _, _, ev in reader]
    reader.close()
    doc = model(reader.header, events)
    pid, parent = 0, 7  # a lane's fields, as the page reads them
    by_pid = {lane[pid]: i for i, lane in enumerate(doc["lanes"])}
    assert all(doc["lanes"][by_pid[p["pid"]]][parent] == by_pid[p["ppid"]] for p in chain)
