"""--explain: the story of each start, from the events.

Exact output on the recordings of tests/data/ (docker run, docker exec, and
a plain unshare --fork --pid), held to what /proc and docker inspect said
while they were recorded (NAME.truth.json); the steps a story expects and
the trace lacks; escaping; and a live `docker run` against ps and /proc.
"""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import docker

from tracer.commands.filters import FilterSpec
from tracer.commands.live import App
from tracer.commands.replay import TraceReader, run_replay
from tracer.output.explain import STEPS_SHOWN, VISITORS_SHOWN, explain

DATA = Path(__file__).parent / "data"
NAMES = ("docker-run", "docker-exec", "session")
NS_TYPES = ("mnt", "uts", "ipc", "pid", "net", "cgroup", "user", "time")


def _explained(name: str) -> str:
    out, err = io.StringIO(), io.StringIO()
    run_replay(str(DATA / f"{name}.jsonl"), FilterSpec(), App(out=out, err=err), explain=True)
    return out.getvalue()


@pytest.mark.parametrize("name", NAMES)
def test_the_story_is_exact(name):
    assert _explained(name) == (DATA / f"{name}.explain.txt").read_text()


def test_a_user_namespace_and_nested_levels_are_said():
    """The same start, its PID 1 mapped to root inside a user namespace and
    one pid level deeper: its fork says both, in the text view's words."""
    reader = TraceReader(str(DATA / "docker-run.jsonl"))
    events = [ev for _, _, ev in reader]
    reader.close()
    init = next(ev for ev in events if ev.type == "fork" and ev.vpid == 1)
    moved = [ev.replace(uid=100000, gid=100000, ns_uid=0, ns_gid=0,
                        vpids=(ev.pid, 4, 1)) if ev.pid == init.pid else ev for ev in events]
    line = next(line for line in explain(reader.header, moved)
                if f"forked {init.pid} " in line)
    assert f"(PID 1 in its pid namespace, {init.pid}/4/1 from the host's down)" in line, line
    assert line.endswith(", as id 0:0 (host 100000:100000)"), line


def _table(text: str) -> dict[str, int]:
    """The namespace table of a story: type -> inode."""
    rows = re.findall(r"^\s+(\d+) (\w+)\s", text.split("Its namespaces", 1)[1], re.M)
    return {kind: int(inode) for inode, kind in rows}


def _truth(name: str) -> dict:
    return json.loads((DATA / f"{name}.truth.json").read_text())


def test_docker_run_reads_as_proc_and_docker_inspect_said():
    text = _explained("docker-run")
    truth = _truth("docker-run")
    init = next(p for p in truth["processes"] if p["role"] == "init")
    assert init["pid"] == truth["container"]["State.Pid"]
    assert text.startswith(f"Container sleep-container ({truth['container']['Id'][:12]}, "
                           f"image alpine): {init['pid']} is PID 1 of a new pid namespace.")
    # the parent ps showed, and the one it was adopted by
    assert f"Its parent at the end of the trace: containerd-shim ({init['ppid']})" in text
    assert _table(text) == {k: init["ns"][k] for k in NS_TYPES}
    shim = next(p for p in truth["processes"] if p["role"] == "shim")
    assert shim["ppid"] == 1
    assert re.search(rf"handed its children \({shim['pid']}\) to PID 1$", text, re.M)
    assert "re-executing itself (/proc/self/exe)" in text
    assert "re-executing itself from an in-memory copy (/dev/fd/" in text
    assert re.search(r"called unshare\(CLONE_NEWNS\|CLONE_NEWUTS\|CLONE_NEWIPC\|CLONE_NEWPID\|"
                     r"CLONE_NEWNET\)", text)
    assert "Also entered its namespaces with setns: dockerd" in text


def test_docker_exec_joins_the_inits_namespaces():
    text = _explained("docker-exec")
    init = _truth("docker-run")["processes"][0]
    assert re.match(r"Container sleep-container \(\w+, image alpine\): (\d+) joined an existing "
                    r"pid namespace as PID (\d+)\.", text)
    assert "called setns 5 times" in text and f"PID 1's (sleep, {init['pid']})" in text
    table = _table(text)
    assert {k: table[k] for k in ("mnt", "uts", "ipc", "pid", "net")} == \
        {k: init["ns"][k] for k in ("mnt", "uts", "ipc", "pid", "net")}
    assert "runs cat /etc/hostname" in text


def test_a_plain_unshare_is_not_a_container():
    text = _explained("session")
    assert text.startswith("Not in a container: ")
    assert "called unshare(CLONE_NEWNS|CLONE_NEWUTS|CLONE_NEWIPC|CLONE_NEWPID|CLONE_NEWNET)" in text
    assert "(after 3 failed execs: a PATH search)" in text


def _events(name: str):
    reader = TraceReader(str(DATA / f"{name}.jsonl"))
    events = [ev for _, _, ev in reader]
    reader.close()
    return reader.header, events


def test_what_the_trace_lacks_is_said():
    header, events = _events("docker-run")
    init_fork = next(e for e in events if e.type == "fork" and e.vpid == 1)
    # the trace began just before runc made PID 1: runc's own start is not in it
    late = [e for e in events if e.ktime_ns >= init_fork.ktime_ns - 1]
    text = "\n".join(explain(header, late))
    assert "The trace began after its first creator was born" in text
    # ... and ended before PID 1 exec'd its program
    early = [e for e in events if not (e.type == "exec" and e.pid == init_fork.pid)]
    text = "\n".join(explain(header, early))
    assert f"{init_fork.pid} has not exec'd a program of its own in the trace" in text
    # a namespace no event created
    no_unshare = [e for e in events if e.type != "unshare"]
    text = "\n".join(explain(header, no_unshare))
    assert "made before the trace began: no event in it created this one" in text
    assert explain(header, []) == [
        "No process in the trace was born into a pid namespace of its own or joined one: "
        "no container or sandbox start to explain."]


def test_names_from_the_traced_processes_are_escaped():
    header, events = _events("session")
    evil = "\x1b]2;PWNED\x07\u202e"
    events = [e.replace(comm=evil) if e.type == "unshare" else e for e in events]
    out = io.StringIO()
    App(out=out, err=io.StringIO()).lines(explain(header, events))
    assert "\x1b" not in out.getvalue() and "\u202e" not in out.getvalue()
    assert "\\x1b]2;PWNED\\x07\\u202e (" in out.getvalue()


def test_explain_takes_no_filters_or_json():
    r = subprocess.run([sys.executable, "-m", "tracer", "replay", str(DATA / "session.jsonl"),
                        "--explain", "--json"], capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "--explain" in r.stderr


@pytest.mark.docker
def test_live_docker_run_explained_against_ps_and_proc(docker_engine):
    docker("rm", "-f", "explain-container", check=False)
    try:
        r = subprocess.run([sys.executable, "-m", "tracer", "--explain", "--", "docker", "run",
                            "--rm", "-d", "--name", "explain-container", "alpine", "sleep", "60"],
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        pid = int(docker("inspect", "-f", "{{.State.Pid}}", "explain-container"))
        story = r.stdout.split("Container explain-container", 1)[1]
        story = story.split("\n\n", 1)[0]
        assert re.match(rf" \(\w+, image alpine\): {pid} is PID 1 of a new pid namespace\.", story)
        ppid = int(subprocess.run(["ps", "-o", "ppid=", "-p", str(pid)], capture_output=True,
                                  text=True).stdout)
        assert re.search(rf"Its parent at the end of the trace: \S+ \({ppid}\)", story)
        lsns = subprocess.run(["lsns", "-p", str(pid), "-n", "-o", "NS,TYPE"],
                              capture_output=True, text=True, check=True).stdout
        truth = {kind: int(ns) for ns, kind in (line.split() for line in lsns.splitlines())}
        assert truth == {k: os.stat(f"/proc/{pid}/ns/{k}").st_ino for k in NS_TYPES}
        assert _table(story) == truth
        assert f"{pid} runs sleep 60" in story
    finally:
        docker("rm", "-f", "explain-container", check=False)


def test_a_crowd_entering_a_starts_namespaces_is_counted_not_listed():
    """Anyone may enter a container's namespaces as often as they like: the
    story names the first VISITORS_SHOWN processes and counts the entries."""
    header, events = _events("docker-run")
    text = "\n".join(explain(header, events))
    (visit,) = [e for e in events if e.type == "setns" and e.comm == "exe"]  # into its net
    crowd = [visit.replace(pid=50_000 + i, tid=50_000 + i, start_ns=visit.start_ns + i,
                           ktime_ns=visit.ktime_ns + i + 1) for i in range(1000)]
    later = [e for e in events if e.ktime_ns > visit.ktime_ns]
    told = "\n".join(explain(header, [e for e in events if e.ktime_ns <= visit.ktime_ns]
                             + crowd + later))
    (line,) = [x for x in told.splitlines() if "Also entered its namespaces" in x]
    named = re.findall(r"\((\d+)\): net", line)
    assert len(named) == VISITORS_SHOWN
    assert line.endswith("; and more: 1002 entries into its namespaces while it lived")
    # the rest of the story is the one told without the crowd
    assert [x for x in told.splitlines() if "Also entered" not in x] == \
        [x for x in text.splitlines() if "Also entered" not in x]


def test_what_is_kept_for_the_whole_trace_is_bounded_in_objects(monkeypatch):
    """--explain and --html keep the trace's events, live and replayed, up to
    KEPT_MAX objects (an exec counts its arguments: a process chooses up to
    1,024 of them); the story says what was not kept."""
    from tracer.output import collect

    header, events = _events("docker-run")
    monkeypatch.setattr(collect, "KEPT_MAX", 5 * 1025 + 30)
    kept = collect.Collector()
    kept.header(header)
    exec_ = next(e for e in events if e.type == "exec")
    wide = exec_.replace(argv=tuple("x" * 1024))
    kept.events([wide] * 5 + events)
    kept.events(events)
    fit, room = 0, 30  # of the recording's events, after the five wide execs
    for ev in events:
        room -= 1 + len(ev.argv) if ev.type == "exec" else 1
        if room < 0:
            break
        fit += 1
    assert 0 < fit < len(events)
    assert kept.kept == [wide] * 5 + events[:fit]
    assert kept.left_out == 2 * len(events) - fit
    assert kept.note() == (f"made from the first {5 + fit} events: {kept.left_out} later ones "
                           "were not kept")
    monkeypatch.setattr(collect, "KEPT_MAX", 20)
    out = io.StringIO()
    run_replay(str(DATA / "docker-run.jsonl"), FilterSpec(), App(out=out, err=io.StringIO()),
               explain=True)
    last = out.getvalue().splitlines()[-1]
    assert re.fullmatch(r"\(made from the first \d+ events: \d+ later ones were not kept\)", last)


def test_a_creator_with_many_steps_tells_the_first_and_counts_the_rest():
    """A process of the story with more than STEPS_SHOWN steps: the first are
    told, the rest counted (a creator of many starts would tell them all
    again in each start's story)."""
    header, events = _events("docker-run")
    init_fork = next(e for e in events if e.type == "fork" and e.vpid == 1)
    init_exec = next(e for e in events if e.type == "exec" and e.pid == init_fork.pid
                     and not e.ret)
    extra = [init_exec.replace(ktime_ns=init_exec.ktime_ns + 1 + i, argv=("x", str(i)))
             for i in range(200)]
    told = "\n".join(explain(header, sorted(events + extra, key=lambda e: e.ktime_ns)))
    assert "exec'd x 61\n" in told and "exec'd x 62\n" not in told  # the 64th step, the 65th
    more = re.findall(r"\.\.\. and (\d+) more steps of \S+ \((\d+)\)", told)
    assert [int(n) for n in more[0]] == [1 + 200 + 1 - STEPS_SHOWN, init_fork.pid], more
