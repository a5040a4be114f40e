"""The kernel's BTF cut down to the types the object's CO-RE relocations use.

At every start libbpf relocates the object against the kernel's BTF: it
parses /sys/kernel/btf/vmlinux (every type of the kernel) and, for each
type the programs read, scans every kernel type for candidates.  That scan
was most of ctrtrace's start-up (bench/README.md, "Where the code's choices
come from").  `bpftool gen
min_core_btf` writes the subset of the kernel's types that these
relocations match -- the kernel's own type records, offsets included -- and
libbpf takes it as btf_custom_path: the relocated instructions are the same
(tests/test_corebtf.py compares them, program by program).

A subset is made once per (object, kernel) pair and cached under
/var/cache/ctrtrace.  Its name carries a CRC-32 of the object and the
kernel's build id (the GNU build-id note in /sys/kernel/notes: the linker's
hash of the image, BTF included) with the size of its BTF -- or, for a
kernel without a build id, a CRC-32 of its BTF -- so a new kernel or a
rebuilt object gets a new subset, never a stale one.  A cached file that is
not whole, well-formed BTF of ours (cut short, overwritten) is made again.
The files are read and written as cache.py says.  Without bpftool, with an unsafe cache directory,
or on any failure, the kernel's full BTF is used: slower, same result.
"""

from __future__ import annotations

import os
import struct
import zlib
from typing import NamedTuple

from . import btf, cache

KERNEL_BTF = "/sys/kernel/btf/vmlinux"
KERNEL_NOTES = "/sys/kernel/notes"
NT_GNU_BUILD_ID = 3


class CoreBtf(NamedTuple):
    """What libbpf relocates against: a cached subset, or (path None) the kernel's BTF."""

    path: str | None
    source: str  # "subset" | "kernel", and why when it is the kernel's


cache_dir = cache.directory


def _crc(path: str) -> str:
    with open(path, "rb") as f:
        data = f.read()
    return f"{zlib.crc32(data):08x}{len(data):x}"


def build_id(notes: bytes) -> str | None:
    """The GNU build id among ELF notes (namesz, descsz, type, name, desc; 4-aligned)."""
    off = 0
    while off + 12 <= len(notes):
        namesz, descsz, ntype = struct.unpack_from("<III", notes, off)
        name_at = off + 12
        desc_at = name_at + (namesz + 3) // 4 * 4
        end = desc_at + (descsz + 3) // 4 * 4
        if end > len(notes):
            break
        if ntype == NT_GNU_BUILD_ID and notes[name_at:name_at + namesz] == b"GNU\0" and descsz:
            return notes[desc_at:desc_at + descsz].hex()
        off = end
    return None


def kernel_key() -> str:
    """Names this kernel's BTF: its build id and BTF size, else the BTF's CRC-32."""
    try:
        with open(KERNEL_NOTES, "rb") as f:
            bid = build_id(f.read())
    except OSError:
        bid = None
    if bid:
        return f"{bid}-{os.stat(KERNEL_BTF).st_size:x}"
    return _crc(KERNEL_BTF)


def _usable(path: str) -> bool:
    """A cached subset we made, whole: ours, writable by us only, valid BTF."""
    data = cache.read(path, 64 << 20)
    return data is not None and btf.valid(data)


def _generate(obj_path: str, out: str) -> bool:
    import shutil  # only on a cache miss: not worth their import time on every start
    import subprocess

    bpftool = shutil.which("bpftool") or next(
        (p for p in ("/usr/sbin/bpftool", "/sbin/bpftool") if os.access(p, os.X_OK)), None)
    if bpftool is None:
        return False
    # bpftool writes into the new file through /proc/self/fd, so that
    # nothing else could be written

    def fill(fd: int) -> bool:
        try:
            r = subprocess.run([bpftool, "gen", "min_core_btf", KERNEL_BTF,
                                f"/proc/self/fd/{fd}", obj_path], pass_fds=(fd,),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60)
        except (OSError, subprocess.SubprocessError):
            return False
        if r.returncode != 0:
            return False
        with os.fdopen(os.dup(fd), "rb") as f:
            return btf.valid(f.read())

    return cache.write(out, fill)


discard = cache.discard


def for_object(obj_path: str, directory: str | None = None) -> CoreBtf:
    """The BTF to relocate obj_path against on this kernel."""
    directory = directory if directory is not None else cache_dir()
    if not directory:
        return CoreBtf(None, "kernel (cache off)")
    try:
        key = f"{_crc(obj_path)}-{kernel_key()}"
    except OSError:
        return CoreBtf(None, "kernel")
    if not cache.safe_dir(directory):
        return CoreBtf(None, f"kernel ({directory} is not a private directory)")
    path = os.path.join(directory, f"core-{key}.btf")
    # missing, not ours, or damaged (cut short, overwritten): made again
    if not _usable(path) and not _generate(obj_path, path):
        return CoreBtf(None, "kernel (no subset: bpftool gen min_core_btf unavailable)")
    return CoreBtf(path, "subset")
