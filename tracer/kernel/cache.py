"""ctrtrace's cache of what it makes once per kernel: the CO-RE BTF subset
(corebtf.py), the bcc build (bcc.py).

What a cached file holds steers what is loaded into the kernel, and ctrtrace
runs as root, so every file is read and written the same careful way: in a
directory that is ours and writable by nobody else; read only if it is a
regular file of ours, writable by us only, of a bounded size, and then
checked by its reader; written under a new name nobody else can have taken
(O_EXCL|O_NOFOLLOW) and renamed into place, so a concurrent start sees all
of it or none.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable

from ..model.files import read_owned

DEFAULT_DIR = "/var/cache/ctrtrace"


def directory() -> str | None:
    """$CTRTRACE_CACHE_DIR (empty: no cache), else /var/cache/ctrtrace."""
    d = os.environ.get("CTRTRACE_CACHE_DIR")
    if d is None:
        return DEFAULT_DIR
    return d or None


def safe_dir(path: str) -> bool:
    """Ours, and writable by nobody else.  Not a symbolic link someone else
    made, nor in a directory where anyone could swap it for theirs
    (world-writable without the sticky bit)."""
    try:
        os.makedirs(path, mode=0o700, exist_ok=True)
        lst = os.lstat(path)
        st = os.stat(path)
        parent = os.stat(os.path.dirname(os.path.realpath(path)))
    except OSError:
        return False
    me = os.geteuid()
    return (lst.st_uid == me and st.st_uid == me and not st.st_mode & 0o022
            and stat.S_ISDIR(st.st_mode)
            and not (parent.st_mode & 0o002 and not parent.st_mode & stat.S_ISVTX))


def read(path: str, limit: int) -> bytes | None:
    """A cached file's bytes, if it is ours, writable by us only and at most
    limit bytes; None otherwise (missing, a link, someone else's)."""
    return read_owned(path, (os.geteuid(),), limit, private=True)


def write(out: str, fill: Callable[[int], bool]) -> bool:
    """Makes out: fill(fd) writes a new private file (returning whether it
    is good), which is then renamed to out.  False if anything failed."""
    where, base = os.path.split(out)
    tmp = os.path.join(where, f".{base}.{os.urandom(6).hex()}.tmp")
    try:
        fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except OSError:
        return False
    try:
        if not fill(fd):
            return False
        os.replace(tmp, out)
        return True
    except OSError:
        return False
    finally:
        os.close(fd)
        try:
            os.unlink(tmp)
        except OSError:
            pass


def discard(path: str) -> None:
    """A cached file that was refused: the next start makes it again."""
    try:
        os.unlink(path)
    except OSError:
        pass
