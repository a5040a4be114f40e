"""The kernel's BTF cut down to the types the object's CO-RE relocations use.

At every start libbpf relocates the object against the kernel's BTF: it
parses /sys/kernel/btf/vmlinux (5 MB, ~100,000 types) and, for each type
the programs read, scans every kernel type for candidates.  That scan was
most of ctrtrace's start-up (~40 of ~80 ms to load here).  `bpftool gen
min_core_btf` writes the subset of the kernel's types that these
relocations match -- the kernel's own type records, offsets included -- and
libbpf takes it as btf_custom_path: the relocated instructions are the same
(tests/test_corebtf.py compares them, program by program).

A subset is made once per (object, kernel) pair and cached under
/var/cache/ctrtrace.  Its name carries a CRC-32 of the object and the
kernel's build id (the GNU build-id note in /sys/kernel/notes: the linker's
hash of the image, BTF included) with the size of its BTF -- or, for a
kernel without a build id, a CRC-32 of its BTF -- so a new kernel or a
rebuilt object gets a new subset, never a stale one.  Without bpftool, with
an unsafe cache directory, or on any failure, the kernel's full BTF is
used: slower, same result.
"""

from __future__ import annotations

import os
import struct
import zlib
from typing import NamedTuple, Optional

KERNEL_BTF = "/sys/kernel/btf/vmlinux"
KERNEL_NOTES = "/sys/kernel/notes"
DEFAULT_CACHE_DIR = "/var/cache/ctrtrace"
NT_GNU_BUILD_ID = 3


class CoreBtf(NamedTuple):
    """What libbpf relocates against: a cached subset, or (path None) the kernel's BTF."""

    path: Optional[str]
    source: str  # "subset" | "kernel", and why when it is the kernel's


def cache_dir() -> Optional[str]:
    """$CTRTRACE_CACHE_DIR (empty: no cache), else /var/cache/ctrtrace."""
    d = os.environ.get("CTRTRACE_CACHE_DIR")
    if d is None:
        return DEFAULT_CACHE_DIR
    return d or None


def _crc(path: str) -> str:
    with open(path, "rb") as f:
        data = f.read()
    return f"{zlib.crc32(data):08x}{len(data):x}"


def build_id(notes: bytes) -> Optional[str]:
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


def _safe_dir(path: str) -> bool:
    """Ours, and writable by nobody else: what it holds steers the relocations."""
    try:
        os.makedirs(path, mode=0o700, exist_ok=True)
        st = os.stat(path)
    except OSError:
        return False
    return st.st_uid == os.geteuid() and not st.st_mode & 0o022


def _generate(obj_path: str, out: str) -> bool:
    import shutil  # only on a cache miss: not worth their import time on every start
    import subprocess

    bpftool = shutil.which("bpftool") or next(
        (p for p in ("/usr/sbin/bpftool", "/sbin/bpftool") if os.access(p, os.X_OK)), None)
    if bpftool is None:
        return False
    tmp = f"{out}.{os.getpid()}.tmp"
    try:
        r = subprocess.run([bpftool, "gen", "min_core_btf", KERNEL_BTF, tmp, obj_path],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60)
        if r.returncode != 0 or not os.path.getsize(tmp):
            return False
        os.chmod(tmp, 0o600)
        os.replace(tmp, out)  # atomic: a concurrent start sees all of it or none
        return True
    except (OSError, subprocess.SubprocessError):
        return False
    finally:
        try:
            os.unlink(tmp)
        except OSError:
            pass


def for_object(obj_path: str, directory: Optional[str] = None) -> CoreBtf:
    """The BTF to relocate obj_path against on this kernel."""
    directory = directory if directory is not None else cache_dir()
    if not directory:
        return CoreBtf(None, "kernel (cache off)")
    try:
        key = f"{_crc(obj_path)}-{kernel_key()}"
    except OSError:
        return CoreBtf(None, "kernel")
    if not _safe_dir(directory):
        return CoreBtf(None, f"kernel ({directory} is not a private directory)")
    path = os.path.join(directory, f"core-{key}.btf")
    st = None
    try:
        st = os.stat(path)
    except OSError:
        pass
    if st is None or st.st_uid != os.geteuid() or st.st_mode & 0o022:
        if not _generate(obj_path, path):
            return CoreBtf(None, "kernel (no subset: bpftool gen min_core_btf unavailable)")
    return CoreBtf(path, "subset")
