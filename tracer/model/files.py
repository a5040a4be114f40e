"""Reading a file that someone other than ctrtrace may control.

ctrtrace runs as root and reads files it did not write: its own cache
(kernel/cache.py), a rootless podman user's storage (state/containers.py).
One rule for all of them: the last part of the path is never followed as a
link, opening never waits (a FIFO, a device), the file must be a regular
one owned by someone trusted for it (and, for ctrtrace's own files,
writable by nobody else), and at most a bounded size is read.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Collection


def read_owned(path: str, owners: Collection[int], limit: int,
               private: bool = False) -> bytes | None:
    """The bytes of a regular file one of owners (uids) owns, at most limit
    of them; with private, only if no group or other may write it.  None
    otherwise: missing, a link, not a regular file, someone else's, larger."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if (not stat.S_ISREG(st.st_mode) or st.st_uid not in owners or st.st_size > limit
                or (private and st.st_mode & 0o022)):
            return None
        data = b""
        while len(data) <= limit and (more := os.read(fd, limit + 1 - len(data))):
            data += more
        return data if len(data) <= limit else None
    except OSError:
        return None
    finally:
        os.close(fd)
