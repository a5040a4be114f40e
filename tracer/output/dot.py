"""--dot: the process tree as a Graphviz diagram, containers and namespace
sets as clusters.

Each process is a node (pid, name, command line, VPID when it differs),
under the parent it has at the end (solid edge) and, when the kernel
reparented it, its birth parent too (dashed, "adopted").  Processes of a
container are boxed in the container's cluster; inside (and among the
host's), the processes that share a set of namespaces differing from the
host's are boxed together, labelled like the tree's marks ("+mnt +pid ...").
A name ending in .svg is drawn by Graphviz's `dot` (one error line when it
is not installed); any other name gets the DOT text.

Text from traced processes goes through the one escape rule
(model/escape.py) and then DOT's own quoting, so it cannot end a string or
start a directive.
"""

from __future__ import annotations

import shutil
import subprocess

from ..model.errors import CtrtraceError, ExitStatus
from ..model.escape import escape
from ..model.events import Namespaces
from ..state.proctable import Process, ProcessTable
from .recording import write_file
from .views import NS_KINDS, Shown, displayed, vpid_text

LABEL_MAX = 60  # characters of a command line on a node


def _quote(*lines: str) -> str:
    """A DOT string of these lines: each escaped (model/escape.py), then its
    backslashes and quotes escaped for DOT; DOT's own \\n between them."""
    return '"' + "\\n".join(escape(line).replace("\\", "\\\\").replace('"', '\\"')
                             for line in lines) + '"'


def _marks(ns: Namespaces, host: Namespaces) -> str:
    return " ".join("+" + k for k in NS_KINDS
                    if getattr(ns, k) and getattr(ns, k) != getattr(host, k))


def _label(p: Process) -> str:
    command = " ".join(p.argv) if p.argv else f"[{p.comm}]"
    if len(command) > LABEL_MAX:
        command = command[:LABEL_MAX - 4] + " ..."
    head = f"{p.pid} {p.comm}" + (f" (PID {vpid_text(p)} inside)" if p.vpid != p.pid else "")
    return _quote(head, command)


def _node(p: Process) -> str:
    return f"p{p.pid}_{p.start_ns}"


def dot_text(table: ProcessTable, host: Namespaces, shown: Shown | None = None) -> str:
    procs = displayed(table, shown)
    out = ["digraph ctrtrace {", '  rankdir=LR; node [shape=box, fontname="monospace", '
           'fontsize=10]; edge [color="#555555"];']
    # container -> namespace marks -> processes
    groups: dict[str, dict[str, list[Process]]] = {}
    labels: dict[str, str] = {}
    for p in sorted(procs.values(), key=lambda p: (p.start_ns, p.pid)):
        cid = p.container.id if p.container else ""
        if cid:
            labels[cid] = p.container.label if p.container else cid
        groups.setdefault(cid, {}).setdefault(_marks(p.ns, host), []).append(p)
    n = 0
    for cid, by_marks in groups.items():
        indent = "  "
        if cid:
            n += 1
            out.append(f"  subgraph cluster_{n} {{ label={_quote('container ' + labels[cid])}; "
                       'style=rounded; color="#1f77b4";')
            indent = "    "
        for marks, members in by_marks.items():
            inner = indent
            if marks:
                n += 1
                out.append(f"{indent}subgraph cluster_{n} {{ label={_quote(marks)}; "
                           'style="filled,dashed"; fillcolor="#fff4e0"; color="#d62728";')
                inner = indent + "  "
            for p in members:
                out.append(f"{inner}{_node(p)} [label={_label(p)}"
                           + (', color="#999999", fontcolor="#555555"' if p.exited else "") + "];")
            if marks:
                out.append(f"{indent}}}")
        if cid:
            out.append("  }")
    for p in procs.values():
        parent = procs.get(p.parent_key)
        if parent is not None:
            out.append(f"  {_node(parent)} -> {_node(p)};")
        birth = procs.get(p.birth_key)
        if p.parents and birth is not None and birth is not parent:
            out.append(f'  {_node(birth)} -> {_node(p)} [style=dashed, label="adopted", '
                       'fontsize=8];')
    out.append("}")
    return "\n".join(out) + "\n"


def write_dot(path: str, text: str) -> None:
    if not path.endswith(".svg"):
        write_file(path, text.encode())
        return
    dot = shutil.which("dot")
    if dot is None:
        raise CtrtraceError("an .svg needs Graphviz's dot (apt-get install graphviz); "
                            "or give a .dot name", ExitStatus.ENVIRONMENT)
    r = subprocess.run([dot, "-Tsvg"], input=text.encode(), capture_output=True, timeout=120)
    if r.returncode != 0:
        why = r.stderr.decode(errors="replace").strip().splitlines()
        raise CtrtraceError(f"dot could not draw the diagram: {why[-1] if why else r.returncode}",
                            ExitStatus.ERROR)
    write_file(path, r.stdout)
