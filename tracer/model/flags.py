"""Names for clone/unshare flags, setns nstypes, errnos and signals."""

from __future__ import annotations

import errno
import signal

# include/uapi/linux/sched.h
CLONE_FLAGS = [
    (0x00000100, "CLONE_VM"),
    (0x00000200, "CLONE_FS"),
    (0x00000400, "CLONE_FILES"),
    (0x00000800, "CLONE_SIGHAND"),
    (0x00001000, "CLONE_PIDFD"),
    (0x00002000, "CLONE_PTRACE"),
    (0x00004000, "CLONE_VFORK"),
    (0x00008000, "CLONE_PARENT"),
    (0x00010000, "CLONE_THREAD"),
    (0x00020000, "CLONE_NEWNS"),
    (0x00040000, "CLONE_SYSVSEM"),
    (0x00080000, "CLONE_SETTLS"),
    (0x00100000, "CLONE_PARENT_SETTID"),
    (0x00200000, "CLONE_CHILD_CLEARTID"),
    (0x00400000, "CLONE_DETACHED"),
    (0x00800000, "CLONE_UNTRACED"),
    (0x01000000, "CLONE_CHILD_SETTID"),
    (0x02000000, "CLONE_NEWCGROUP"),
    (0x04000000, "CLONE_NEWUTS"),
    (0x08000000, "CLONE_NEWIPC"),
    (0x10000000, "CLONE_NEWUSER"),
    (0x20000000, "CLONE_NEWPID"),
    (0x40000000, "CLONE_NEWNET"),
    (0x80000000, "CLONE_IO"),
    (0x100000000, "CLONE_CLEAR_SIGHAND"),
    (0x200000000, "CLONE_INTO_CGROUP"),
]

# CLONE_NEW* flag -> the namespace it creates (unshare/clone) or joins (setns)
NS_FLAGS = {
    0x00000080: "time",
    0x00020000: "mnt",
    0x02000000: "cgroup",
    0x04000000: "uts",
    0x08000000: "ipc",
    0x10000000: "user",
    0x20000000: "pid",
    0x40000000: "net",
}
CLONE_NEWTIME = 0x00000080
CLONE_NEW_MASK = sum(NS_FLAGS)
_NS_FLAG_NAMES = {0x00000080: "CLONE_NEWTIME", **{f: n for f, n in CLONE_FLAGS if f in NS_FLAGS}}


def clone_flag_names(flags: int) -> list[str]:
    """Names of the flags set.

    clone(2) keeps the exit signal in the low byte; signals stop at 64, so
    0x80 there is CLONE_NEWTIME (clone3) and never part of a signal.
    """
    names = [name for bit, name in CLONE_FLAGS if flags & bit]
    if flags & CLONE_NEWTIME:
        names.append("CLONE_NEWTIME")
    sig = flags & 0x7F
    if sig:
        names.append(signal_name(sig) or f"sig{sig}")
    return names


def unshare_flag_names(flags: int) -> list[str]:
    """unshare(2) takes CLONE_* flags, and CLONE_NEWTIME lives in the low byte there."""
    names = [name for bit, name in CLONE_FLAGS if flags & bit]
    if flags & CLONE_NEWTIME:
        names.append("CLONE_NEWTIME")
    return names


def nstype_name(nstype: int) -> str:
    """setns(2)'s nstype: 0 (any), one CLONE_NEW* flag, or a pidfd's set of them."""
    if nstype == 0:
        return "0"
    names = [_NS_FLAG_NAMES[f] for f in sorted(NS_FLAGS) if nstype & f]
    rest = nstype & ~CLONE_NEW_MASK
    if rest:
        names.append(hex(rest))
    return "|".join(names)


def errno_name(err: int) -> str:
    return errno.errorcode.get(abs(err), str(abs(err)))


def signal_name(sig: int) -> str | None:
    try:
        return signal.Signals(sig).name
    except ValueError:
        return None
