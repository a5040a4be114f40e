"""--dot: the process tree as Graphviz, containers and namespace sets as
clusters; exact on a recording, drawn by the real `dot`, hostile names
quoted."""

from __future__ import annotations

import io
import re
from pathlib import Path

import pytest

from tracer.commands.filters import FilterSpec
from tracer.commands.live import App
from tracer.commands.replay import TraceReader, run_replay
from tracer.model.errors import CtrtraceError
from tracer.output import dot as dotmod
from tracer.output.dot import dot_text
from tracer.state.proctable import ProcessTable

DATA = Path(__file__).parent / "data"


def _replay_dot(name: str, out: Path) -> None:
    run_replay(str(DATA / f"{name}.jsonl"), FilterSpec(), App(out=io.StringIO(),
               err=io.StringIO()), dot=str(out))


def test_the_diagram_is_exact(tmp_path):
    out = tmp_path / "run.dot"
    _replay_dot("docker-run", out)
    assert out.read_text() == (DATA / "docker-run.dot").read_text()
    assert out.stat().st_mode & 0o777 == 0o600  # written as recordings are


def test_container_and_namespace_clusters(tmp_path):
    text = (DATA / "docker-run.dot").read_text()
    container = text.split('label="container sleep-container"', 1)[1]
    # the container's PID 1 sits in the cluster of its five new namespaces
    assert re.search(r'label="\+mnt \+uts \+ipc \+pid \+net";[^}]*p7834_\d+ '
                     r'\[label="7834 sleep \(PID 1 inside\)\\nsleep 900"\]', container)
    # reparented: the shim's double fork and runc's child, dashed from the birth parent
    assert re.search(r"p7806_\d+ -> p7812_\d+ \[style=dashed", text)
    assert re.search(r"p7823_\d+ -> p7834_\d+ \[style=dashed", text)
    assert re.search(r"p1_\d+ -> p7812_\d+;", text) and re.search(r"p7812_\d+ -> p7834_\d+;",
                                                                     text)


def test_dot_draws_it_and_hostile_names_stay_text(tmp_path):
    reader = TraceReader(str(DATA / "session.jsonl"))
    table = ProcessTable()
    table.seed_from_snapshot(reader.header.processes)
    evil = 'x"];\nevil [label="pwned'
    for _, _, ev in reader:
        if ev.type == "fork":
            ev = ev.replace(comm=evil + "\\")
        elif ev.type == "exec":
            ev = ev.replace(argv=(evil, "\\"))
        table.apply(ev)
    reader.close()
    text = dot_text(table, reader.header.host_ns)
    assert "\nevil [" not in text and 'x\\"];\\\\nevil' in text
    out = tmp_path / "s.svg"
    dotmod.write_dot(str(out), text)
    svg = out.read_text()
    assert svg.count('class="node"') == len(table)
    assert "pwned" in svg and 'class="node"><title>evil' not in svg


def test_an_svg_without_graphviz_is_one_error(tmp_path, monkeypatch):
    monkeypatch.setattr(dotmod.shutil, "which", lambda name: None)
    with pytest.raises(CtrtraceError, match="needs Graphviz's dot"):
        dotmod.write_dot(str(tmp_path / "x.svg"), "digraph {}")
