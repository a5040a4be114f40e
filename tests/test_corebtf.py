"""The cached CO-RE subset of the kernel's BTF: the same relocations, never stale."""

from __future__ import annotations

import os
import struct

import pytest

from tracer.kernel import btf, corebtf
from tracer.kernel.host import LoadConfig
from tracer.kernel.loader import ProgramLoader, default_object_path

BPF_LD_IMM64 = 0x18
BPF_PSEUDO_MAP_FD, BPF_PSEUDO_MAP_VALUE = 1, 2


def _without_map_fds(insns: bytes) -> bytes:
    """Map references are file descriptors, which differ between two loads."""
    out = bytearray(insns)
    for off in range(0, len(out) - 15, 8):
        code, regs = out[off], out[off + 1]
        if code == BPF_LD_IMM64 and (regs >> 4) in (BPF_PSEUDO_MAP_FD, BPF_PSEUDO_MAP_VALUE):
            out[off + 4:off + 8] = b"\0\0\0\0"
    return bytes(out)


def _relocated(monkeypatch, cache_dir: str) -> tuple[corebtf.CoreBtf, dict[str, bytes]]:
    """The programs as the loader relocated them, with CTRTRACE_CACHE_DIR=cache_dir
    ("": no cache, the kernel's BTF), and the BTF it used."""
    monkeypatch.setenv("CTRTRACE_CACHE_DIR", cache_dir)
    ld = ProgramLoader(LoadConfig())
    obj = ld.result()
    try:
        return ld.core_btf, {name: _without_map_fds(code)
                             for name, code in obj.program_insns().items()}
    finally:
        obj.close()


@pytest.mark.bpf
def test_the_subset_relocates_exactly_as_the_kernel_btf(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    subset, with_subset = _relocated(monkeypatch, str(cache))
    assert subset.source == "subset", subset
    assert os.path.dirname(subset.path) == str(cache)
    assert os.path.getsize(subset.path) < os.path.getsize(corebtf.KERNEL_BTF) // 100
    kernel, with_kernel = _relocated(monkeypatch, "")
    assert kernel.path is None
    assert with_subset.keys() == with_kernel.keys() and len(with_kernel) >= 9  # every program
    for name in with_kernel:
        assert with_subset[name] == with_kernel[name], name


def test_the_key_names_this_kernel_and_this_object(tmp_path):
    cache = tmp_path / "cache"
    first = corebtf.for_object(default_object_path(), str(cache))
    assert corebtf.for_object(default_object_path(), str(cache)) == first  # cached
    other = tmp_path / "other.bpf.o"
    other.write_bytes(open(default_object_path(), "rb").read() + b"\0")
    assert corebtf.for_object(str(other), str(cache)).path != first.path
    with open(corebtf.KERNEL_NOTES, "rb") as f:
        bid = corebtf.build_id(f.read())
    if bid:  # the kernel's GNU build id when it has one, else a CRC of its BTF
        assert bid in first.path


def test_build_id_from_elf_notes():
    def note(name: bytes, ntype: int, desc: bytes) -> bytes:
        pad = lambda b: b + b"\0" * (-len(b) % 4)  # noqa: E731
        return struct.pack("<III", len(name), len(desc), ntype) + pad(name) + pad(desc)

    notes = note(b"Xen\0", 6, b"abcde") + note(b"GNU\0", 3, bytes(range(20)))
    assert corebtf.build_id(notes) == bytes(range(20)).hex()
    assert corebtf.build_id(note(b"Linux\0", 3, b"1234")) is None
    assert corebtf.build_id(notes[:-4]) is None  # cut short


def test_an_unsafe_or_disabled_cache_falls_back_to_the_kernel_btf(tmp_path, monkeypatch):
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o777)
    os.chmod(shared, 0o777)
    got = corebtf.for_object(default_object_path(), str(shared))
    assert got.path is None and "not a private directory" in got.source
    monkeypatch.setenv("CTRTRACE_CACHE_DIR", "")
    assert corebtf.for_object(default_object_path()).path is None


def _tiny_btf() -> bytes:
    """Well-formed BTF with one type, int: not what the relocations need."""
    strings = b"\0int\0"
    types = struct.pack("<IIII", 1, 1 << 24, 4, 32)  # BTF_KIND_INT, 4 bytes, 32 bits
    return struct.pack("<HBBIIIII", 0xEB9F, 1, 0, 24, 0, len(types), len(types),
                       len(strings)) + types + strings


def test_the_cached_subset_is_checked_as_btf():
    with open(corebtf.KERNEL_BTF, "rb") as f:
        kernel = f.read()
    assert btf.valid(kernel) and btf.valid(_tiny_btf())
    for bad in (b"", kernel[:20], kernel[:-1], kernel + b"\0", b"\x9f\xeb\x01\x00 not BTF",
                _tiny_btf()[:-1], _tiny_btf().replace(b"\x20\0\0\0", b"")):
        assert not btf.valid(bad)


@pytest.mark.parametrize("damage", ["cut", "garbage", "empty"])
def test_a_damaged_subset_is_made_again(tmp_path, damage):
    """A subset cut short (a full disk, a crash) or overwritten is not used as
    it is (libbpf refusing it would cost the subset on every start): it is
    made again."""
    cache = tmp_path / "cache"
    good = corebtf.for_object(default_object_path(), str(cache))
    with open(good.path, "rb") as f:
        whole = f.read()
    spoilt = {"cut": whole[:len(whole) // 2], "garbage": b"\x9f\xeb\x01\x00 not BTF",
              "empty": b""}[damage]
    with open(good.path, "wb") as f:
        f.write(spoilt)
    again = corebtf.for_object(default_object_path(), str(cache))
    assert again == good
    with open(again.path, "rb") as f:
        assert f.read() == whole
    assert sorted(os.listdir(cache)) == [os.path.basename(good.path)]  # no temporary left


@pytest.mark.bpf
def test_a_subset_libbpf_refuses_is_not_used(tmp_path, monkeypatch):
    """Well-formed, but not the types the relocations need: the kernel's BTF decides."""
    cache = tmp_path / "cache"
    good = corebtf.for_object(default_object_path(), str(cache))
    with open(good.path, "wb") as f:
        f.write(_tiny_btf())
    monkeypatch.setenv("CTRTRACE_CACHE_DIR", str(cache))
    ld = ProgramLoader(LoadConfig())
    obj = ld.result()
    try:
        assert ld.core_btf.path is None and "refused" in ld.core_btf.source
    finally:
        obj.close()


def test_a_symlink_in_the_cache_is_not_followed(tmp_path):
    cache = tmp_path / "cache"
    good = corebtf.for_object(default_object_path(), str(cache))
    elsewhere = tmp_path / "elsewhere.btf"
    elsewhere.write_bytes(_tiny_btf())
    os.unlink(good.path)
    os.symlink(elsewhere, good.path)
    again = corebtf.for_object(default_object_path(), str(cache))
    assert again == good and not os.path.islink(again.path)
    with open(again.path, "rb") as f:
        made = f.read()
    assert btf.valid(made) and made != _tiny_btf()
    assert elsewhere.read_bytes() == _tiny_btf()


@pytest.mark.root
def test_a_cache_another_user_could_swap_is_not_used(tmp_path):
    """In a world-writable directory without the sticky bit anyone can rename
    the cache away and put theirs in its place; a symbolic link someone else
    made is theirs too."""
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o777)
    got = corebtf.for_object(default_object_path(), str(shared / "cache"))
    assert got.path is None and "not a private directory" in got.source
    os.chmod(shared, 0o1777)  # sticky: only the owner renames
    assert corebtf.for_object(default_object_path(), str(shared / "cache")).source == "subset"
    mine = tmp_path / "mine"
    mine.mkdir(mode=0o700)
    os.symlink(mine, shared / "theirs")
    os.lchown(shared / "theirs", 65534, 65534)
    got = corebtf.for_object(default_object_path(), str(shared / "theirs"))
    assert got.path is None and "not a private directory" in got.source
