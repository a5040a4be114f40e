"""The tests use the package through its public names only.

A test that reads a private cache, calls a private function or replaces one
with monkeypatch checks how the code is written rather than what it does,
and breaks when the code is rewritten the same behaviour.  This keeps every
test file (and conftest.py) off the names the package keeps to itself: a
name starting with one underscore, defined in a module of tracer/ (at module
level, in a class, or as an attribute set on self).
"""

from __future__ import annotations

import ast
import os

TESTS = os.path.dirname(os.path.abspath(__file__))
PACKAGE = os.path.join(os.path.dirname(TESTS), "tracer")
# what takes an attribute's name as a string
BY_NAME = {"setattr", "getattr", "hasattr", "delattr", "setitem"}


def _private(name: str) -> bool:
    # not __dunder__, nor ctypes' _fields_ and the like (_sunder_)
    return name.startswith("_") and not name.startswith("__") and not name.endswith("_")


def _parse(path: str) -> ast.AST:
    with open(path, encoding="utf-8") as f:
        return ast.parse(f.read(), path)


def _package_private_names() -> set[str]:
    names = set()
    for folder, _, files in os.walk(PACKAGE):
        for file in files:
            if not file.endswith(".py"):
                continue
            for node in ast.walk(_parse(os.path.join(folder, file))):
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                    names.add(node.name)
                elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                    names.add(node.id)
                elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
                    names.add(node.attr)
                elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
                    names.add(node.target.id)
    return {n for n in names if _private(n)}


def _uses(path: str, private: set[str]) -> list[tuple[int, str]]:
    return sorted(_each_use(_parse(path), private))


def _each_use(tree: ast.AST, private: set[str]):
    # names bound to what is not the package (os, sys, ...): os._exit is not ours
    outside = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            outside |= {(a.asname or a.name).split(".")[0] for a in node.names
                        if not a.name.startswith("tracer")}
        elif isinstance(node, ast.ImportFrom) and not (node.module or "").startswith("tracer"):
            outside |= {a.asname or a.name for a in node.names}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("tracer"):
            for alias in node.names:
                if _private(alias.name):
                    yield node.lineno, f"from {node.module} import {alias.name}"
        elif isinstance(node, ast.Attribute) and node.attr in private:
            if not (isinstance(node.value, ast.Name)
                    and (node.value.id in ("self", "cls") or node.value.id in outside)):
                yield node.lineno, ast.unparse(node)
        elif isinstance(node, ast.Call):
            fn = node.func
            called = fn.attr if isinstance(fn, ast.Attribute) else getattr(fn, "id", "")
            if called in BY_NAME:
                for arg in node.args[1:2]:
                    if isinstance(arg, ast.Constant) and arg.value in private:
                        yield node.lineno, ast.unparse(node)


# Uses allowed, with the reason (none today).
KNOWN: set[tuple[str, str]] = set()


def test_no_test_uses_a_private_name_of_the_package():
    private = _package_private_names()
    assert {"_padded", "_open", "_status_field"} <= private  # what it looks for
    found = []
    for name in sorted(os.listdir(TESTS)):
        if name.endswith(".py"):
            found += [f"tests/{name}:{line}: {text}"
                      for line, text in _uses(os.path.join(TESTS, name), private)
                      if (name, text) not in KNOWN]
    assert not found, "\n".join(found)


def test_the_check_sees_each_kind_of_use(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text(
        "from tracer.state.proctable import _status_field\n"
        "import os, tracer.kernel.libbpf\n"
        "decoder._padded(s, rec)\n"
        "monkeypatch.setattr(tracer.kernel.libbpf, '_lib', None)\n"
        "self._padded(ev)\n"          # a test helper's own attribute: allowed
        "os._exit(0)\n")              # not the package's
    got = [line for line, _ in _uses(str(sample), _package_private_names())]
    assert got == [1, 3, 4]
