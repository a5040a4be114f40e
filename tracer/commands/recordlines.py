"""JSON lines straight from ring-buffer records, for a trace that only writes JSON.

The general path makes an event object of each record (decode.py),
attributes it to a container (containers.py) and renders its line
(jsonlines.py).  A trace with no filter, no process table and only JSON
sinks uses nothing of the event but its line; and an exec storm is made of
exec, fork and exit records.  Those go here from the unpacked record to the
line in one step -- the same formats (jsonlines.EXEC_LINE, FORK_LINE,
EXIT_LINE), the same container steps (ContainerResolver.on_shim_exec,
on_fork, on_exit), the decoder's identity cache -- for less CPU per record
than the event would cost (bench/README.md, "Where the code's choices come
from").  Every other record (failed execs, setns, unshare, a record of an
unexpected size) takes the general path.  tests/test_recordlines.py checks
that both paths give the same bytes, record by record, for recorded traces
and a live one.
"""

from __future__ import annotations

from ..kernel import decode, layout
from ..output.jsonlines import (
    BOOL_JSON,
    COMMAND_LINES_MAX,
    CORE_JSON,
    EXEC_LINE,
    EXIT_LINE,
    FILENAME_TRUNCATED_JSON,
    FORK_LINE,
    NULL_JSON,
    OPTIONAL_JSON,
    THREAD_JSON,
    EventLines,
    keep,
)
from ..state.containers import ContainerResolver, shim_container


def _index(name: str) -> int:
    """Where a field is in the tuple the Structs unpack (the header's and the
    task's numbers are at the same place in each)."""
    at = decode.field_index(layout.CtForkEvent, name)
    if name.startswith(("hdr.", "task.")) and any(
            decode.field_index(m, name) != at for m in (layout.CtExitEvent, layout.CtExecHead)):
        raise ImportError(f"recordlines.py expects {name} at the same place in every record")
    return at


_FLAGS, _CPU, _KTIME = _index("hdr.flags"), _index("hdr.cpu"), _index("hdr.ktime_ns")
_PID, _TID, _PPID, _VPID = (_index(f"task.{n}") for n in ("pid", "tid", "ppid", "vpid"))
_UID, _GID, _CGROUP_ID = _index("task.uid"), _index("task.gid"), _index("task.cgroup_id")
_START, _PARENT_START = _index("task.start_ns"), _index("task.parent_start_ns")
_PARENT_PID, _PARENT_TID = _index("parent_pid"), _index("parent_tid")
_CLONE_FLAGS = _index("clone_flags")
_STATUS = decode.field_index(layout.CtExitEvent, "status")  # the wait(2) status word
_REAPER = decode.field_index(layout.CtExitEvent, "reaper")
_OLD_PID = decode.field_index(layout.CtExecHead, "old_pid")  # then ret, filename_len, args_len
# an exec's strings with their lengths: the key to their decoded form
_EXEC_STRINGS_AT = layout.CtExecHead.filename_len.offset

# hdr.flags -> the JSON of ns_change and of the optional fields
_TASK_MASK = layout.CT_F_NS_CHANGE | layout.CT_F_CGROUP_V1 | layout.CT_F_NO_NSPROXY
_TASK_JSON = tuple(
    (BOOL_JSON[bool(flags & layout.CT_F_NS_CHANGE)],
     OPTIONAL_JSON[bool(flags & layout.CT_F_CGROUP_V1)][bool(flags & layout.CT_F_NO_NSPROXY)])
    for flags in range(_TASK_MASK + 1))

# what the loop reads, as module globals (one lookup each, not two)
_EXEC, _FORK, _EXIT = decode.EXEC, decode.FORK, decode.EXIT
_EXEC_SIZE, _FORK_SIZE, _EXIT_SIZE = decode.EXEC.size, decode.FORK.size, decode.EXIT.size
_IDENT, _TYPE_LO, _TYPE_HI = decode.IDENT, decode.TYPE_LO, decode.TYPE_HI
_EXEC_TYPE, _FORK_TYPE, _EXIT_TYPE = (
    layout.CT_EVENT_EXEC, layout.CT_EVENT_FORK, layout.CT_EVENT_EXIT)
_THREAD, _CLONE_FLAGS_KNOWN, _HAD_CHILDREN = (
    layout.CT_F_THREAD, layout.CT_F_CLONE_FLAGS_KNOWN, layout.CT_F_HAD_CHILDREN)
_ARGS_TRUNCATED, _FILENAME_TRUNCATED = layout.CT_F_ARGS_TRUNCATED, layout.CT_F_FILENAME_TRUNCATED

_Ident = tuple[bytes, bytes, bytes, str, int]  # comm, ns, cgroup as JSON; cgroup, mount ns
# filename, argv as JSON; the shim's (namespace, id) if the command is one
_ExecStrings = tuple[bytes, bytes, tuple[str, str] | None]


class RecordLines:
    """Records -> JSON lines, keeping the session's counts and container state."""

    def __init__(self, decoder: decode.Decoder, resolver: ContainerResolver, lines: EventLines,
                 counts: dict[str, int]) -> None:
        self._decoder = decoder
        self._resolver = resolver
        self._lines = lines
        self._counts = counts
        self._idents: dict[bytes, _Ident] = {}
        self._execs: dict[bytes, _ExecStrings] = {}

    def _ident(self, raw: bytes) -> _Ident:
        comm, ns, cgroup = self._decoder.ident(raw)
        lines = self._lines
        return keep(self._idents, raw, (lines.text("comm", comm), lines.namespaces(ns),
                                        lines.text("cgroup", cgroup), cgroup, ns.mnt))

    def _exec_strings(self, key: bytes, filename_len: int, args_len: int) -> _ExecStrings:
        at = _EXEC_SIZE - _EXEC_STRINGS_AT
        filename, argv = decode.exec_strings(key[at:], filename_len, args_len)
        return keep(self._execs, key, (self._lines.text("filename", filename),
                                       self._lines.argv(argv),
                                       shim_container(argv)), limit=COMMAND_LINES_MAX)

    def lines(self, records: list[bytes]) -> list[bytes]:
        """The line of each record, as jsonlines renders the event decode.py
        makes of it, attributed by the resolver: in order."""
        out: list[bytes] = []
        append = out.append
        decode_record = self._decoder.decode
        attribute, line = self._resolver.attribute, self._lines.line
        attribute_process = self._resolver.attribute_process
        on_shim_exec, on_fork, on_exit = (
            self._resolver.on_shim_exec, self._resolver.on_fork, self._resolver.on_exit)
        idents, ident, execs, exec_strings = (
            self._idents, self._ident, self._execs, self._exec_strings)
        seconds, second, container = self._lines.seconds, self._lines.second, self._lines.container
        offset = self._decoder.wall_offset_ns
        counts = self._counts
        n_exec = n_fork = n_exit = 0
        for rec in records:
            kind = rec[_TYPE_LO] | rec[_TYPE_HI] << 8
            if kind == _FORK_TYPE and len(rec) == _FORK_SIZE:
                values = _FORK.unpack_from(rec)
            elif kind == _EXIT_TYPE and len(rec) == _EXIT_SIZE:
                values = _EXIT.unpack_from(rec)
            elif kind == _EXEC_TYPE and len(rec) >= _EXEC_SIZE:
                values = _EXEC.unpack_from(rec)
            else:  # the general path
                ev = decode_record(rec)
                ev.container = attribute(ev)
                counts[ev.type] += 1
                append(line(ev))
                continue
            raw = rec[_IDENT]
            comm, ns, cgroup, cgroup_name, mnt = idents.get(raw) or ident(raw)
            flags, pid = values[_FLAGS], values[_PID]
            # the order of ContainerResolver.attribute: lineage, decision, exit
            if kind == _FORK_TYPE:
                if not flags & _THREAD:
                    on_fork(pid, values[_PARENT_PID], values[_PPID], values[_START],
                            values[_PARENT_START])
            elif kind == _EXEC_TYPE:
                old_pid, ret, filename_len, args_len = values[_OLD_PID:_OLD_PID + 4]
                key = rec[_EXEC_STRINGS_AT:_EXEC_SIZE + filename_len + args_len]
                filename, argv, shim = execs.get(key) or exec_strings(key, filename_len, args_len)
                if shim is not None and ret == 0:
                    on_shim_exec(pid, shim, values[_START])
            found = attribute_process(cgroup_name, mnt, pid, values[_START])
            ktime = values[_KTIME]
            sec, frac = divmod(ktime + offset, 1_000_000_000)
            ns_change, optional = _TASK_JSON[flags & _TASK_MASK]
            common = (seconds.get(sec) or second(sec), frac, ktime, values[_CPU], pid,
                      values[_TID], values[_PPID], values[_VPID], comm, values[_UID],
                      values[_GID], values[_START], values[_PARENT_START],
                      ns, values[_CGROUP_ID], cgroup, ns_change,
                      NULL_JSON if found is None else container(found), optional)
            if kind == _FORK_TYPE:
                append(FORK_LINE % (common + (
                    values[_PARENT_PID], values[_PARENT_TID],
                    b"%d" % values[_CLONE_FLAGS] if flags & _CLONE_FLAGS_KNOWN else NULL_JSON,
                    THREAD_JSON[(flags & _THREAD) != 0])))
                n_fork += 1
            elif kind == _EXIT_TYPE:
                on_exit(pid, values[_VPID], mnt, found, values[_START])
                status, reaper = values[_STATUS], values[_REAPER]
                append(EXIT_LINE % (common + (
                    (status >> 8) & 0xFF, status & 0x7F, status,
                    b"%d" % reaper if flags & _HAD_CHILDREN else NULL_JSON,
                    CORE_JSON[status >> 7 & 1])))
                n_exit += 1
            else:
                append(EXEC_LINE % (common + (
                    filename, argv, BOOL_JSON[(flags & _ARGS_TRUNCATED) != 0], ret,
                    FILENAME_TRUNCATED_JSON[(flags & _FILENAME_TRUNCATED) != 0],
                    b"" if old_pid == values[_TID] else b',"old_pid":%d' % old_pid)))
                n_exec += 1
        counts["exec"] += n_exec
        counts["fork"] += n_fork
        counts["exit"] += n_exit
        return out
