"""Kernel headers for bcc, which compiles its programs against them.

bcc finds the running kernel's headers under /lib/modules/$(uname -r)/build.
A kernel that no distribution ships has none; the nearest installed ones
then serve bcc's own prelude -- and only that: their struct layouts are
another kernel's, so a program must not read a kernel struct through them,
but at offsets taken from the running kernel's BTF (btf.py).

Debian splits a version's headers in two directories: the common half
(linux-headers-VER-common) and the generated one for an architecture
(linux-headers-VER-ARCH), installed under /usr/src, or unpacked (not
installed: the package would bring a kernel image) by the set-up under
UNPACKED.  bcc is pointed at the first through BCC_KERNEL_SOURCE and given
the second's include directories as -I flags: nothing is written anywhere.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

SRC = "/usr/src"
UNPACKED = "/var/cache/ctrtrace/kernel-headers/usr/src"  # ./run setup's
_ARCH = {"x86_64": ("amd64", "x86"), "aarch64": ("arm64", "arm64")}


@dataclass(frozen=True)
class Headers:
    """What bcc is given: its environment and compiler flags."""

    version: str            # the headers' kernel version ("6.12.107+deb12")
    running: bool           # the running kernel's own
    env: dict[str, str]     # BCC_KERNEL_SOURCE, for headers outside /lib/modules
    cflags: tuple[str, ...]


def _version_key(version: str) -> tuple[int, ...]:
    return tuple(int(n) for n in re.findall(r"\d+", version))


def find(release: str | None = None, dirs: tuple[str, ...] = (SRC, UNPACKED)) -> Headers | None:
    """The running kernel's headers if installed, else the newest Debian
    pair (common and this architecture's) in dirs; None if neither."""
    release = release or os.uname().release
    if os.path.isdir(f"/lib/modules/{release}/build/include"):
        return Headers(release, True, {}, ())
    flavour, arch = _ARCH.get(os.uname().machine, (os.uname().machine, os.uname().machine))
    pairs = []
    for src in dirs:
        try:
            names = os.listdir(src)
        except OSError:
            continue
        for name in names:
            m = re.fullmatch(rf"linux-headers-(.+)-{re.escape(flavour)}", name)
            if m and f"linux-headers-{m.group(1)}-common" in names:
                pairs.append((_version_key(m.group(1)), m.group(1), src))
    if not pairs:
        return None
    _, version, src = max(pairs)
    generated = os.path.join(src, f"linux-headers-{version}-{flavour}")
    cflags = tuple(f"-I{generated}/{d}" for d in (f"arch/{arch}/include/generated",
                                                  f"arch/{arch}/include/generated/uapi",
                                                  "include", "include/generated/uapi"))
    return Headers(version, version == release,
                   {"BCC_KERNEL_SOURCE": os.path.join(src, f"linux-headers-{version}-common")},
                   cflags)
