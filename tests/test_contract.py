"""The contract's description is the README's field list, and the writers'
records keep it."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tracer.model.contract import EVENTS, HEADER, SUMMARY, check_header, check_record, reference

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = os.path.join(REPO, "tests", "data")


def test_the_readme_lists_the_contract():
    with open(os.path.join(REPO, "README.md"), encoding="utf-8") as f:
        readme = f.read()
    assert reference() in readme, "README.md's field list is stale: run scripts/contract-doc"
    r = subprocess.run([sys.executable, os.path.join(REPO, "scripts", "contract-doc"), "--check"])
    assert r.returncode == 0


def test_every_field_is_described():
    from tracer.model.contract import CONTAINER, PROCESS

    undescribed = [f.name for rec in (*EVENTS.values(), HEADER, SUMMARY, PROCESS, CONTAINER)
                   for f in rec.fields if not (f.doc and f.kind.doc)]
    assert not undescribed


@pytest.mark.parametrize("name", sorted(n for n in os.listdir(DATA) if n.endswith(".jsonl")))
def test_recorded_traces_keep_the_contract(name):
    """Every line ctrtrace wrote on a real kernel, and every field the
    writers use, is in the description (a field the writers add must be
    described first)."""
    described = {rec_name: {f.name for f in rec.fields} for rec_name, rec in EVENTS.items()}
    with open(os.path.join(DATA, name), "rb") as f:
        lines = [json.loads(line) for line in f]
    check_header(lines[0])
    assert set(lines[0]) <= {f.name for f in HEADER.fields}
    for d in lines[1:]:
        kind = check_record(d)
        fields = described.get(kind) or {f.name for f in SUMMARY.fields}
        assert set(d) <= fields, (kind, set(d) - fields)


def test_the_readme_names_every_module():
    """README's How it works has a line for each module of the package."""
    with open(os.path.join(REPO, "README.md"), encoding="utf-8") as f:
        how = f.read().split("## How it works", 1)[1].split("\n## ", 1)[0]
    package = os.path.join(REPO, "tracer")
    missing = []
    for folder, _, files in os.walk(package):
        for name in files:
            if name.endswith(".py") and name != "__init__.py":
                inner = os.path.relpath(folder, package)
                shown = f"`{name}`" if inner == "." else f"`{inner}/`"
                if f"`{name}`" not in how or shown not in how:
                    missing.append(os.path.join(inner, name))
    assert not missing
