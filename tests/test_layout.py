"""tracer/kernel/layout.py, the Python mirror, against bpf/ctrtrace.h and the built object.

- Structs: each mirror's size and field names and offsets against the BTF of
  the built object (tracer/bpf/ctrtrace.bpf.o).
- #defines: every CT_* macro of the header, preprocessed by clang with the
  flags bpf/Makefile builds with, against layout.py's value.
- Enums: every enumerator of the header's enums (ct_event_type, ct_counter)
  against layout.py's value, read from the BTF clang emits for the header
  (the built object's BTF carries no enum: nothing in it has an enum type).
- Every CT_* name in layout.py is one of those: nothing is mirrored unchecked.

If a field or a constant is added, moved, resized or renumbered on one side
only, this fails.  Needs clang, bpftool and make (which build the object),
no privilege.
"""

from __future__ import annotations

import ast
import ctypes
import json
import os
import re
import shutil
import subprocess

import pytest

from tracer.kernel import layout
from tracer.kernel.loader import default_object_path

pytestmark = pytest.mark.smoke

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BPF_DIR = os.path.join(REPO, "bpf")
HEADER = os.path.join(BPF_DIR, "ctrtrace.h")
CLANG = os.environ.get("CLANG", "clang")
BPFTOOL = os.environ.get("BPFTOOL", "bpftool")
CONSTANT = re.compile(r"CT_[A-Z0-9_]+")


def _tool(name: str) -> str:
    path = shutil.which(name)
    assert path, f"{name} is needed (it builds the object: see bpf/Makefile)"
    return path


def _btf_types(path: str) -> list:
    out = subprocess.run([_tool(BPFTOOL), "-j", "btf", "dump", "file", path],
                         capture_output=True, text=True, check=True).stdout
    return json.loads(out)["types"]


def _clang_flags() -> list:
    """What bpf/Makefile compiles with: the target, the architecture, -I."""
    machine = os.uname().machine
    arch = {"x86_64": "x86", "aarch64": "arm64"}.get(machine, machine)
    return ["-target", "bpf", f"-D__TARGET_ARCH_{arch}", "-I", BPF_DIR]


def _clang(*args: str, stdin: str = "") -> str:
    r = subprocess.run([_tool(CLANG), *_clang_flags(), *args], input=stdin,
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return r.stdout


def _c_int(expr: str) -> int:
    """The value of an integer constant expression as the preprocessor leaves
    it: literals (0x, octal, U/L suffixes), parentheses, arithmetic and bit
    operators.  Anything else (a cast, a string) is an error to extend this for."""
    def literal(m: re.Match) -> str:
        text = m.group(1)
        if re.fullmatch(r"0[0-7]+", text):
            text = "0o" + text[1:]
        return text

    py = re.sub(r"\b(0[xX][0-9a-fA-F]+|\d+)[uUlL]*\b", literal, expr.strip())
    ops = {ast.Add: lambda a, b: a + b, ast.Sub: lambda a, b: a - b,
           ast.Mult: lambda a, b: a * b, ast.LShift: lambda a, b: a << b,
           ast.RShift: lambda a, b: a >> b, ast.BitOr: lambda a, b: a | b,
           ast.BitAnd: lambda a, b: a & b, ast.BitXor: lambda a, b: a ^ b}
    unary = {ast.USub: lambda a: -a, ast.UAdd: lambda a: a, ast.Invert: lambda a: ~a}

    def ev(node):
        if isinstance(node, ast.Expression):
            return ev(node.body)
        if isinstance(node, ast.Constant) and type(node.value) is int:
            return node.value
        if isinstance(node, ast.BinOp) and type(node.op) in ops:
            return ops[type(node.op)](ev(node.left), ev(node.right))
        if isinstance(node, ast.UnaryOp) and type(node.op) in unary:
            return unary[type(node.op)](ev(node.operand))
        raise ValueError(f"not an integer constant expression this test reads: {expr!r}")

    try:
        return ev(ast.parse(py, mode="eval"))
    except SyntaxError:
        raise ValueError(f"not an integer constant expression this test reads: {expr!r}") from None


def header_defines() -> dict:
    """CT_* object-like macros of the header -> their values, as clang expands them."""
    def defines(source: str) -> dict:
        out = {}
        for line in _clang("-E", "-dM", "-x", "c", "-", stdin=source).splitlines():
            name = line.split()[1]
            out[name] = line
        return out

    before = defines("")
    after = defines('#include "ctrtrace.h"\n')
    # function-like macros (NAME(...)) are not constants: nothing to mirror
    names = sorted(n for n in after if n not in before and CONSTANT.fullmatch(n))
    # expand each in the header's context: a macro may be made of others
    # (ct_probe_NAME is one identifier: it is not expanded)
    probe = '#include "ctrtrace.h"\n' + "".join(f"ct_probe_{n} = {n}\n" for n in names)
    expanded = {}
    for line in _clang("-E", "-P", "-x", "c", "-", stdin=probe).splitlines():
        if line.startswith("ct_probe_"):
            name, value = line[len("ct_probe_"):].split(" = ", 1)
            expanded[name] = _c_int(value)
    assert sorted(expanded) == names
    return expanded


def header_enums(tmp_dir: str) -> dict:
    """enum name -> {enumerator: value}, from the BTF of the header compiled
    as bpf/Makefile compiles the programs (vmlinux.h first, for __u16 and the rest)."""
    text = _clang("-E", "-P", "-x", "c", "-", stdin='#include "ctrtrace.h"\n')
    enums = sorted(set(re.findall(r"\benum\s+(\w+)\s*\{", text)))
    source = ('#include "vmlinux.h"\n#include "ctrtrace.h"\n'
              + "".join(f"enum {e} ct_probe_{e};\n" for e in enums))  # into the BTF
    obj = os.path.join(tmp_dir, "header.o")
    _clang("-g", "-O2", "-c", "-x", "c", "-", "-o", obj, stdin=source)
    out = {}
    for t in _btf_types(obj):
        if t["kind"] in ("ENUM", "ENUM64") and t["name"] in enums:
            out[t["name"]] = {v["name"]: v["val"] for v in t["values"]}
    assert sorted(out) == enums, "an enum of the header is missing from its BTF"
    return out


def python_constants() -> dict:
    return {n: getattr(layout, n) for n in dir(layout) if CONSTANT.fullmatch(n)}


def drifts(c_side: dict, what: str) -> list:
    py = python_constants()
    out = []
    for name, value in sorted(c_side.items()):
        if name not in py:
            out.append(f"{name} = {value} ({what}) is not in tracer/kernel/layout.py")
        elif py[name] != value:
            out.append(f"{name}: {what} says {value}, tracer/kernel/layout.py says {py[name]}")
    return out


# -- the object is what the sources build ------------------------------------------


def test_the_object_is_built_from_these_sources():
    """Else what follows compares a stale object: make -C bpf builds it again."""
    if os.environ.get("CTRTRACE_BPF_OBJECT"):
        return  # an object given by its path: whatever it was built from
    r = subprocess.run([_tool("make"), "-q", "-C", BPF_DIR], capture_output=True, text=True)
    assert r.returncode == 0, ("tracer/bpf/ctrtrace.bpf.o is older than bpf/: run make -C bpf"
                               + r.stdout + r.stderr)


# -- structs -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def object_btf():
    return _btf_types(default_object_path())


@pytest.fixture(scope="module")
def btf(object_btf):
    return {t["name"]: t for t in object_btf if t["kind"] == "STRUCT"}


@pytest.mark.parametrize("cname", sorted(layout.MIRRORS))
def test_struct_matches_btf(btf, cname):
    mirror = layout.MIRRORS[cname]
    assert cname in btf, f"struct {cname} is not in the object's BTF"
    t = btf[cname]
    assert t["size"] == ctypes.sizeof(mirror), f"size of {cname}"
    c_fields = [(m["name"], m["bits_offset"] // 8) for m in t["members"]]
    py_fields = [(name, getattr(mirror, name).offset) for name, *_ in mirror._fields_]
    assert py_fields == c_fields


def test_exec_head_is_the_fixed_prefix():
    assert ctypes.sizeof(layout.CtExecHead) == layout.EXEC_DATA_OFFSET


def test_config_is_the_only_rodata(object_btf):
    # userspace writes the config at offset 0 of .rodata
    by_id = {t["id"]: t for t in object_btf}
    rodata = [t for t in object_btf if t["kind"] == "DATASEC" and t["name"] == ".rodata"]
    assert len(rodata) == 1
    (var,) = rodata[0]["vars"]
    assert var["offset"] == 0
    assert by_id[var["type_id"]]["name"] == "cfg"
    assert var["size"] == ctypes.sizeof(layout.CtConfig)


# -- constants ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def defines():
    return header_defines()


@pytest.fixture(scope="module")
def enums(tmp_path_factory):
    return header_enums(str(tmp_path_factory.mktemp("layout")))


def test_every_define_of_the_header_is_mirrored(defines):
    # the flags and sizes decode.py, recordlines.py and the rest read
    assert {"CT_COMM_LEN", "CT_ARGS_MAX", "CT_F_NS_CHANGE"} <= set(defines)
    found = drifts(defines, "bpf/ctrtrace.h")
    assert not found, "\n".join(found)


def test_every_enumerator_of_the_header_is_mirrored(enums):
    assert {"ct_event_type", "ct_counter"} <= set(enums)
    values = {}
    for members in enums.values():
        values.update(members)
    found = drifts(values, "the header's BTF")
    assert not found, "\n".join(found)


def test_every_constant_of_layout_py_is_the_headers(defines, enums):
    c_names = set(defines).union(*enums.values())
    extra = sorted(set(python_constants()) - c_names)
    assert not extra, f"tracer/kernel/layout.py has constants bpf/ctrtrace.h does not define: {extra}"


def test_the_expression_reader():
    assert _c_int("0x80") == 128 and _c_int("2048") == 2048 and _c_int("010") == 8
    assert _c_int("(1U << 4) | 0x2ULL") == 18 and _c_int("~0 & 0xff") == 255
    with pytest.raises(ValueError):
        _c_int("(__u32)1")


def test_the_contract_names_and_limits_are_the_kernels():
    """The JSON contract's namespace order and text limits are the record's."""
    from tracer.model import contract

    assert tuple(name for name, _ in layout.CtNs._fields_) == contract.NS_NAMES
    assert contract.COMM_MAX == layout.CT_COMM_LEN - 1
    assert contract.ARGV_MAX == layout.CT_ARGS_MAX
