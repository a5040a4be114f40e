"""Field offsets read from the running kernel's BTF (kernel/btf.py), checked
against bpftool's dump of the same BTF, member by member."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from tracer.kernel import btf

# the structs a BPF program reads to report a task: its ids, its family,
# its namespaces, its cgroup, its command line
STRUCTS = ("task_struct", "nsproxy", "ns_common", "pid", "upid", "pid_namespace",
           "mnt_namespace", "uts_namespace", "ipc_namespace", "net", "cgroup_namespace",
           "user_namespace", "time_namespace", "mm_struct", "signal_struct", "css_set",
           "cgroup", "kernfs_node", "linux_binprm")


@pytest.fixture(scope="module")
def kernel() -> btf.Btf:
    return btf.Btf.of_kernel()


def _bpftool_dump() -> str:
    bpftool = shutil.which("bpftool") or "/usr/sbin/bpftool"
    return subprocess.run([bpftool, "btf", "dump", "file", btf.KERNEL_BTF, "format", "raw"],
                          capture_output=True, text=True, check=True).stdout


def _bpftool_members(dump: str, name: str | None = None, type_id: int | None = None,
                     base: int = 0) -> dict[str, tuple[int, int]]:
    """name -> (bits_offset, bitfield_size) of a struct's members, as bpftool
    prints them; the members of an anonymous struct or union member are the
    struct's own, at its offset plus theirs."""
    head = rf"\[{type_id}\] (?:STRUCT|UNION) '\(anon\)'" if name is None else \
        rf"\[\d+\] (?:STRUCT|UNION) '{name}'"
    m = re.search(rf"^{head} size=\d+ vlen=(\d+)\n", dump, re.M)
    assert m, name or type_id
    members = {}
    for line in dump[m.end():].splitlines()[:int(m.group(1))]:
        mm = re.match(r"\s+'([^']*)' type_id=(\d+) bits_offset=(\d+)(?: bitfield_size=(\d+))?",
                      line)
        assert mm, line
        bits = base + int(mm.group(3))
        if mm.group(1) == "(anon)":
            members.update(_bpftool_members(dump, type_id=int(mm.group(2)), base=bits))
        else:
            members[mm.group(1)] = (bits, int(mm.group(4) or 0))
    return members


@pytest.fixture(scope="module")
def dumped() -> dict[str, dict[str, tuple[int, int]]]:
    dump = _bpftool_dump()
    return {name: _bpftool_members(dump, name) for name in STRUCTS}


@pytest.mark.parametrize("name", STRUCTS)
def test_every_member_where_bpftool_puts_it(kernel, dumped, name):
    theirs = dumped[name]
    assert len(theirs) > 1
    for member, (bits, size) in theirs.items():
        f = kernel.field(f"{name}.{member}")
        assert (f.offset * 8 + f.bit_offset, f.bitfield_size) == (bits, size), member


def test_embedded_structs_and_anonymous_members(kernel, dumped):
    """mnt_namespace.ns.inum: through an embedded struct; a member of an
    anonymous union is found by its own name, as C does."""
    ns = kernel.offset("mnt_namespace.ns")
    assert kernel.offset("mnt_namespace.ns.inum") == ns + kernel.offset("ns_common.inum")
    anonymous = [m for m, _, _, _ in kernel.members(kernel.struct_id("ns_common")) if not m]
    assert anonymous  # ns_common holds an anonymous union: its members are ns_common's
    assert kernel.has("task_struct.tgid") and not kernel.has("task_struct.no_such_field")
    with pytest.raises(btf.BtfError, match="has no field"):
        kernel.field("task_struct.no_such_field")
    with pytest.raises(btf.BtfError, match="no struct"):
        kernel.field("no_such_struct.x")


def test_bitfields_are_not_byte_offsets(kernel, dumped):
    bitfield = next(m for m, (_, size) in dumped["task_struct"].items() if size)
    f = kernel.field(f"task_struct.{bitfield}")
    assert f.bitfield_size
    with pytest.raises(btf.BtfError, match="bitfield"):
        kernel.offset(f"task_struct.{bitfield}")


def test_damaged_btf_is_refused():
    with open(btf.KERNEL_BTF, "rb") as f:
        data = f.read()
    assert btf.valid(data) and len(btf.Btf(data)) > 10_000
    for bad in (b"", data[:20], data[:-1], data + b"\0", b"\x9f\xeb\x01\x00 not BTF"):
        with pytest.raises(btf.BtfError):
            btf.Btf(bad)
