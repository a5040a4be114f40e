"""Outside text reaches a person escaped, one way; JSON keeps its exact bytes."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tracer.model.codec import EventLines, event_of
from tracer.model.contract import check_record, list_json, text_json, text_of, texts_of
from tracer.model.escape import escape
from tracer.model.events import Container, ExecEvent, ExitEvent, Namespaces
from tracer.output.text import TextRenderer

ESC_TITLE = "\x1b]2;PWNED\x07\x1b[2J"
NOT_UTF8 = b"\xff\xfe\x9b".decode("utf-8", "surrogateescape")


@pytest.mark.parametrize("raw, shown", [
    ("plain", "plain"),
    (ESC_TITLE, "\\x1b]2;PWNED\\x07\\x1b[2J"),
    ("a\nb\tc\rd", "a\\nb\\tc\\rd"),
    ("\x7f", "\\x7f"),
    ("\u009b2J", "\\u009b2J"),           # the C1 CSI as a character
    (NOT_UTF8, "\\xff\\xfe\\x9b"),        # bytes that are not UTF-8
    ("evil\u202etxt.exe", "evil\\u202etxt.exe"),  # right-to-left override
    ("\u2066\u2069\u200e\u200f\u061c", "\\u2066\\u2069\\u200e\\u200f\\u061c"),
    ("zero\u200bwidth\ufeff", "zero\\u200bwidth\\ufeff"),
    ("line\u2028para\u2029", "line\\u2028para\\u2029"),
    ("nb\u00a0sp", "nb\\u00a0sp"),
    ("\U000e0041tag", "\\U000e0041tag"),
    ("caf\u00e9 \u65e5\u672c \U0001f600", "caf\u00e9 \u65e5\u672c \U0001f600"),  # printable: kept
    ("back\\slash", "back\\slash"),
])
def test_escape(raw, shown):
    assert escape(raw) == shown
    assert escape(shown) == shown  # escaped text is printable: escaping again changes nothing
    assert shown.isprintable()


def test_every_non_printable_character_is_escaped():
    for code in list(range(0x0, 0x100)) + list(range(0x2000, 0x2070)) + [0xFEFF, 0xDC80]:
        text = escape(chr(code))
        assert text.isprintable(), hex(code)


NS = Namespaces(*range(4026531830, 4026531840))


def _exec(comm: str, filename: str, argv, container=None) -> ExecEvent:
    return ExecEvent(ktime_ns=2_000_000_000, wall_ns=1_795_815_313_563_861_468, cpu=0, pid=42,
                     tid=42, ppid=1, vpid=42, vpids=(42,), comm=comm, uid=0, gid=0, ns_uid=0, ns_gid=0, start_ns=5,
                     parent_start_ns=1, ns=NS, no_nsproxy=False, cgroup="user.slice/x",
                     container=container, filename=filename, argv=tuple(argv),
                     argv_truncated=False, filename_truncated=False, old_pid=42, ret=0)


def test_text_line_escapes_every_field():
    c = Container(id="a" * 64, name=f"web{ESC_TITLE}", image="alpine")
    ev = _exec(ESC_TITLE[:15], f"/tmp/x\u202e{NOT_UTF8}", ["x", ESC_TITLE, "\u009b"], c)
    line = TextRenderer(NS, 1_000_000_000).line(ev)
    assert line == ("  1.000000 exec         42       1    42  "
                    "[/tmp/x\\u202e\\xff\\xfe\\x9b] x '\\x1b]2;PWNED\\x07\\x1b[2J' '\\u009b'"
                    "  @web\\x1b]2;PWNED\\x07\\x1b[2J")
    assert line.isprintable()

    ex = ExitEvent(**{name: value for name, value in zip(ev.FIELDS, ev, strict=True)
                      if name in ExitEvent.FIELDS}, status=0)
    assert TextRenderer(NS, 1_000_000_000).line(ex).endswith(
        "\\x1b]2;PWNED\\x07\\x1b[2J exit 0  @web\\x1b]2;PWNED\\x07\\x1b[2J")


def test_json_keeps_exact_bytes_in_a_sibling_field():
    ev = _exec("ok" + NOT_UTF8, "/bin/" + NOT_UTF8, ["a", "b" + NOT_UTF8, ESC_TITLE])
    for line in (EventLines().line(ev),):
        d = json.loads(line)  # valid UTF-8 JSON
        check_record(d)
        assert d["comm"] == "ok\ufffd\ufffd\ufffd"
        assert base64.b64decode(d["comm_base64"]) == b"ok\xff\xfe\x9b"
        assert base64.b64decode(d["filename_base64"]) == b"/bin/\xff\xfe\x9b"
        assert [base64.b64decode(a) for a in d["argv_base64"]] == [
            b"a", b"b\xff\xfe\x9b", ESC_TITLE.encode()]
        assert d["argv"][2] == ESC_TITLE  # valid UTF-8: kept as it is, controls and all
        back = event_of(d)
        assert (back.comm, back.filename, back.argv) == (ev.comm, ev.filename, ev.argv)


def test_valid_text_has_no_sibling():
    assert text_json("comm", "sh") == b'"sh"'
    assert list_json("argv", ["a", "\u00e9"]) == '["a","\u00e9"]'.encode()
    d = json.loads(EventLines().line(_exec("sh", "/bin/sh", ["sh"])))
    assert not [k for k in d if k.endswith("_base64")]
    assert text_of(d, "comm") == "sh" and texts_of(d, "argv") == ["sh"]


@pytest.mark.parametrize("encoding", ["ascii", "latin-1"])
@pytest.mark.parametrize("view", ["", "--tree", "--ns", "--explain"])
def test_a_terminal_that_is_not_utf8_gets_escapes(tmp_path, encoding, view):
    """Printable text a process chose that the terminal's encoding lacks
    ("中" in ASCII or Latin-1) is written as a \\u escape in every view, not
    an error (it was a UnicodeEncodeError once)."""
    data = Path(__file__).parent / "data" / "docker-run.jsonl"
    rec = tmp_path / "u.jsonl"
    rec.write_text(data.read_text(encoding="utf-8").replace(
        '"argv":["sleep","900"]', '"argv":["sleep","900","中é"]'), encoding="utf-8")
    env = dict(os.environ, LC_ALL="C", PYTHONUTF8="0", PYTHONIOENCODING=encoding)
    r = subprocess.run([sys.executable, "-m", "tracer", "replay", str(rec), *filter(None, [view])],
                       capture_output=True, env=env, timeout=60)
    assert r.returncode == 0, r.stderr.decode(errors="replace")
    assert b"\\u4e2d" in r.stdout
