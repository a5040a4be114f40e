"""The decoder's structs against the BTF of the built BPF object.

If a field is added, moved or resized on one side only, this fails.
"""

from __future__ import annotations

import ctypes
import json
import shutil
import subprocess

import pytest

from tracer import layout

pytestmark = pytest.mark.smoke
from tracer.session import default_object_path


def _btf_structs(path: str) -> dict:
    bpftool = shutil.which("bpftool")
    assert bpftool, "bpftool is needed to read the object's BTF"
    out = subprocess.run([bpftool, "-j", "btf", "dump", "file", path],
                         capture_output=True, text=True, check=True).stdout
    types = json.loads(out)["types"]
    return {t["name"]: t for t in types if t["kind"] == "STRUCT"}


@pytest.fixture(scope="module")
def btf():
    return _btf_structs(default_object_path())


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


def test_config_is_the_only_rodata(btf):
    # userspace writes the config at offset 0 of .rodata
    out = subprocess.run(["bpftool", "-j", "btf", "dump", "file", default_object_path()],
                         capture_output=True, text=True, check=True).stdout
    types = json.loads(out)["types"]
    by_id = {t["id"]: t for t in types}
    rodata = [t for t in types if t["kind"] == "DATASEC" and t["name"] == ".rodata"]
    assert len(rodata) == 1
    (var,) = rodata[0]["vars"]
    assert var["offset"] == 0
    assert by_id[var["type_id"]]["name"] == "cfg"
    assert var["size"] == ctypes.sizeof(layout.CtConfig)
