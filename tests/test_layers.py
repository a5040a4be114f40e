"""The package's layers hold, and no module reaches into another's private names.

Each folder of tracer/ is a layer and imports only the layers below it:
commands use output, state and kernel; output uses state (the views draw
the process table) and the model; state and kernel use only the model; the
model uses nothing of the package.  The face (cli.py, entry.py) may use all.
"""

from __future__ import annotations

import ast
import os

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.join(REPO, "tracer")

ALLOWED = {
    "model": {"model"},
    "kernel": {"kernel", "model"},
    "state": {"state", "model"},
    "output": {"output", "state", "model"},
    "commands": {"commands", "output", "state", "kernel", "model"},
}


def _modules():
    for folder, _, files in os.walk(PACKAGE):
        for name in sorted(files):
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                rel = os.path.relpath(path, REPO)[:-3].replace(os.sep, ".")
                yield rel.removesuffix(".__init__"), path


def _imports(module: str, path: str):
    """(imported module, names taken, line) of every import, at any depth."""
    is_package = path.endswith("__init__.py")
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read(), path)
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")
                base = base[:len(base) - node.level + (1 if is_package else 0)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for alias in node.names:
                # "from . import layout": the module is the name
                sub = f"{target}.{alias.name}"
                yield (sub if sub.replace(".", os.sep) and os.path.exists(
                    os.path.join(REPO, sub.replace(".", os.sep) + ".py")) else target,
                       alias.name, node.lineno)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, None, node.lineno


def _layer(module: str):
    parts = module.split(".")
    return parts[1] if len(parts) > 2 and parts[1] in ALLOWED else None


def test_each_layer_imports_only_the_layers_below_it():
    wrong = []
    for module, path in _modules():
        layer = _layer(module)
        if layer is None:
            continue
        for target, _, line in _imports(module, path):
            if not target.startswith("tracer"):
                continue
            other = _layer(target)
            if other is None or other not in ALLOWED[layer]:
                wrong.append(f"{module}:{line} imports {target}")
    assert not wrong


def test_no_module_takes_another_modules_private_names():
    taken = []
    for module, path in _modules():
        imported_modules = {}
        for target, name, line in _imports(module, path):
            if not target.startswith("tracer"):
                continue
            if name and name.startswith("_") and not name.startswith("__") and target != module:
                taken.append(f"{module}:{line} takes {target}.{name}")
            if name and target.rsplit(".", 1)[-1] == name:  # a module, by its name
                imported_modules[name] = target
        with open(path, encoding="utf-8") as f:
            tree = ast.parse(f.read(), path)
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and node.attr.startswith("_")
                    and not node.attr.startswith("__") and isinstance(node.value, ast.Name)
                    and node.value.id in imported_modules
                    and os.path.exists(os.path.join(
                        REPO, imported_modules[node.value.id].replace(".", os.sep) + ".py"))):
                taken.append(f"{module}:{node.lineno} uses {node.value.id}.{node.attr}")
    assert not taken
