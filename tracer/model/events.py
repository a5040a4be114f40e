"""Typed events: what the kernel reported, decoded, with its JSON form.

The JSON form is a public contract (one object per line): fields may be
added, the ones here are never renamed.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any, ClassVar

from .contract import (
    EVENT_TEXT_FIELDS,
    FORMAT_NAME,
    FORMAT_VERSION,
    NS_NAMES,
    iso_ts,
    parse_iso_ts,
    text_of,
    texts_of,
    with_raw_text,
)


@dataclass(frozen=True, slots=True)
class Namespaces:
    """Namespace inode numbers, as /proc/PID/ns/* shows them (0 = unknown)."""

    mnt: int = 0
    uts: int = 0
    ipc: int = 0
    pid: int = 0
    pid_for_children: int = 0
    net: int = 0
    cgroup: int = 0
    user: int = 0
    time: int = 0
    time_for_children: int = 0

    def to_dict(self) -> dict[str, int]:
        """Shared between calls (the same few sets repeat on every event): do not mutate."""
        return _ns_dict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Namespaces:
        return cls(**{name: int(d.get(name, 0)) for name in NS_NAMES})

    def changed(self, other: Namespaces) -> list[str]:
        """Names whose inode differs from other's (both known)."""
        out = []
        for name in NS_NAMES:
            mine, theirs = getattr(self, name), getattr(other, name)
            if mine and theirs and mine != theirs:
                out.append(name)
        return out


@functools.lru_cache(maxsize=4096)
def _ns_dict(ns: Namespaces) -> dict[str, int]:
    return {name: getattr(ns, name) for name in NS_NAMES}


@dataclass(frozen=True, slots=True)
class Container:
    """The container a process belongs to, and how that was decided."""

    id: str
    name: str | None = None     # without docker's leading '/'
    image: str | None = None
    runtime: str = "docker"
    source: str = "cgroup"         # cgroup | namespace | shim: what tied the process to it

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "image": self.image,
                "runtime": self.runtime, "source": self.source}

    @classmethod
    def from_json(cls, d: dict[str, Any] | None) -> Container | None:
        if not d:
            return None
        return cls(id=str(d["id"]), name=d.get("name"), image=d.get("image"),
                   runtime=str(d.get("runtime", "docker")), source=str(d.get("source", "cgroup")))

    @property
    def label(self) -> str:
        return self.name or self.id[:12]


# Only the subclasses are made, and each generates __init__, __repr__ and
# __eq__ over all the fields: the base's own would be compiled for nothing.
@dataclass(slots=True, kw_only=True, init=False, repr=False, eq=False)
class ProcessEvent:
    """Fields every process event has, read from the task at the event."""

    type: ClassVar[str] = ""

    ktime_ns: int
    wall_ns: int
    cpu: int
    pid: int
    tid: int
    ppid: int
    vpid: int
    comm: str
    uid: int
    gid: int
    start_ns: int
    parent_start_ns: int
    ns: Namespaces
    no_nsproxy: bool
    cgroup_id: int = 0
    cgroup: str = ""             # "parent/leaf" directory names of the task's cgroup
    cgroup_v1: bool = False
    ns_change: bool = False      # created/entered a namespace, or differs from the parent's
    container: Container | None = None

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "type": self.type,
            "ts": iso_ts(self.wall_ns),
            "ktime_ns": self.ktime_ns,
            "cpu": self.cpu,
            "pid": self.pid,
            "tid": self.tid,
            "ppid": self.ppid,
            "vpid": self.vpid,
            "comm": self.comm,
            "uid": self.uid,
            "gid": self.gid,
            "start_ns": self.start_ns,
            "parent_start_ns": self.parent_start_ns,
            "ns": self.ns.to_dict(),
            "cgroup_id": self.cgroup_id,
            "cgroup": self.cgroup,
            "ns_change": self.ns_change,
            "container": self.container.to_json() if self.container else None,
        }
        if self.cgroup_v1:
            d["cgroup_v1"] = True
        if self.no_nsproxy:
            d["no_nsproxy"] = True
        d.update(self._extra_json())
        return with_raw_text(d, EVENT_TEXT_FIELDS)

    def _extra_json(self) -> dict[str, Any]:
        return {}

    @staticmethod
    def _common_from_json(d: dict[str, Any]) -> dict[str, Any]:
        return dict(
            ktime_ns=int(d["ktime_ns"]),
            wall_ns=parse_iso_ts(d["ts"]),
            cpu=int(d.get("cpu", 0)),
            pid=int(d["pid"]),
            tid=int(d["tid"]),
            ppid=int(d["ppid"]),
            vpid=int(d["vpid"]),
            comm=text_of(d, "comm"),
            uid=int(d["uid"]),
            gid=int(d["gid"]),
            start_ns=int(d.get("start_ns", 0)),
            parent_start_ns=int(d.get("parent_start_ns", 0)),
            ns=Namespaces.from_dict(d["ns"]),
            no_nsproxy=bool(d.get("no_nsproxy", False)),
            cgroup_id=int(d.get("cgroup_id", 0)),
            cgroup=text_of(d, "cgroup"),
            cgroup_v1=bool(d.get("cgroup_v1", False)),
            ns_change=bool(d.get("ns_change", False)),
            container=Container.from_json(d.get("container")),
        )


@dataclass(slots=True, kw_only=True)
class ExecEvent(ProcessEvent):
    """A program replaced the task's image (execve/execveat; failed ones too, with ret)."""

    type: ClassVar[str] = "exec"

    filename: str
    argv: list[str]
    argv_truncated: bool
    filename_truncated: bool
    old_pid: int
    ret: int  # 0, or -errno when the exec failed

    def _extra_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "filename": self.filename,
            "argv": self.argv,
            "argv_truncated": self.argv_truncated,
            "ret": self.ret,
        }
        if self.filename_truncated:
            d["filename_truncated"] = True
        if self.old_pid != self.tid:
            d["old_pid"] = self.old_pid
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> ExecEvent:
        return cls(
            **cls._common_from_json(d),
            filename=text_of(d, "filename"),
            argv=texts_of(d, "argv"),
            argv_truncated=bool(d["argv_truncated"]),
            filename_truncated=bool(d.get("filename_truncated", False)),
            old_pid=int(d.get("old_pid", d["tid"])),
            ret=int(d.get("ret", 0)),
        )


@dataclass(slots=True, kw_only=True)
class ForkEvent(ProcessEvent):
    """A task was created (fork, vfork, clone, clone3; threads only with --threads)."""

    type: ClassVar[str] = "fork"

    parent_pid: int
    parent_tid: int
    clone_flags: int | None  # None: not created by a syscall we saw (kernel thread)
    thread: bool

    def _extra_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "parent_pid": self.parent_pid,
            "parent_tid": self.parent_tid,
            "clone_flags": self.clone_flags,
        }
        if self.thread:
            d["thread"] = True
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> ForkEvent:
        flags = d.get("clone_flags")
        return cls(
            **cls._common_from_json(d),
            parent_pid=int(d["parent_pid"]),
            parent_tid=int(d.get("parent_tid", d["parent_pid"])),
            clone_flags=None if flags is None else int(flags),
            thread=bool(d.get("thread", False)),
        )


@dataclass(slots=True, kw_only=True)
class ExitEvent(ProcessEvent):
    """A process ended (its last thread exited)."""

    type: ClassVar[str] = "exit"

    status: int  # the wait(2) status word
    reaper: int | None = None  # who adopts its children (None: it had none; 0: unknown)

    @property
    def exit_code(self) -> int:
        return (self.status >> 8) & 0xFF

    @property
    def signal(self) -> int:
        return self.status & 0x7F

    @property
    def core_dumped(self) -> bool:
        return bool(self.status & 0x80)

    def _extra_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {"exit_code": self.exit_code, "signal": self.signal,
                             "status": self.status, "reaper": self.reaper}
        if self.core_dumped:
            d["core_dumped"] = True
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> ExitEvent:
        status = d.get("status")
        if status is None:
            status = (int(d["exit_code"]) << 8) | int(d["signal"])
        reaper = d.get("reaper")
        return cls(**cls._common_from_json(d), status=int(status),
                   reaper=None if reaper is None else int(reaper))


@dataclass(slots=True, kw_only=True)
class SetnsEvent(ProcessEvent):
    """setns(2): the task entered another namespace (ns_before: where it was)."""

    type: ClassVar[str] = "setns"

    fd: int
    nstype: int
    ret: int
    ns_before: Namespaces

    def _extra_json(self) -> dict[str, Any]:
        return {"fd": self.fd, "nstype": self.nstype, "ret": self.ret,
                "ns_before": self.ns_before.to_dict()}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> SetnsEvent:
        return cls(**cls._common_from_json(d), fd=int(d["fd"]), nstype=int(d["nstype"]),
                   ret=int(d["ret"]), ns_before=Namespaces.from_dict(d["ns_before"]))


@dataclass(slots=True, kw_only=True)
class UnshareEvent(ProcessEvent):
    """unshare(2): the task moved into new namespaces (ns_before: where it was)."""

    type: ClassVar[str] = "unshare"

    flags: int
    ret: int
    ns_before: Namespaces

    def _extra_json(self) -> dict[str, Any]:
        return {"flags": self.flags, "ret": self.ret, "ns_before": self.ns_before.to_dict()}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> UnshareEvent:
        return cls(**cls._common_from_json(d), flags=int(d["flags"]), ret=int(d["ret"]),
                   ns_before=Namespaces.from_dict(d["ns_before"]))


EVENT_CLASSES = {c.type: c for c in (ExecEvent, ForkEvent, ExitEvent, SetnsEvent, UnshareEvent)}
EVENT_TYPES: tuple[str, ...] = tuple(EVENT_CLASSES)


@dataclass(slots=True)
class Header:
    """First line of a JSON stream: what produced it, where, and the host's namespaces."""

    hostname: str
    kernel: str
    boot_time_ns: int        # wall clock of boot: ktime_ns + boot_time_ns = wall time
    start_wall_ns: int
    start_ktime_ns: int
    host_ns: Namespaces      # PID 1's
    tracer_pid: int
    host_ns_pid: int = 1     # where host_ns was read (2 if PID 1 was not readable)
    docker_socket: str | None = None
    docker_reachable: bool = False
    core_btf: str = ""       # what CO-RE relocated against: "subset" (cached) or "kernel"
    # the processes alive at start, from /proc: replay can name every parent
    processes: list[dict[str, Any]] = field(default_factory=list)
    processes_omitted: int = 0  # more than the header line holds (proctable.snapshot)
    argv: list[str] = field(default_factory=list)
    format: str = FORMAT_NAME
    version: int = FORMAT_VERSION

    def to_json(self) -> dict[str, Any]:
        d = {
            "type": "header",
            "format": self.format,
            "version": self.version,
            "hostname": self.hostname,
            "kernel": self.kernel,
            "boot_time": iso_ts(self.boot_time_ns),
            "boot_time_ns": self.boot_time_ns,
            "ts": iso_ts(self.start_wall_ns),
            "start_ktime_ns": self.start_ktime_ns,
            "host_ns": self.host_ns.to_dict(),
            "host_ns_pid": self.host_ns_pid,
            "tracer_pid": self.tracer_pid,
            "argv": self.argv,
            "docker_socket": self.docker_socket,
            "docker_reachable": self.docker_reachable,
            "processes": self.processes,
        }
        if self.core_btf:  # recordings made before it was recorded lack it
            d["core_btf"] = self.core_btf
        if self.processes_omitted:
            d["processes_omitted"] = self.processes_omitted
        return with_raw_text(d, ("argv",))

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Header:
        return cls(
            hostname=str(d["hostname"]),
            kernel=str(d["kernel"]),
            boot_time_ns=int(d["boot_time_ns"]),
            start_wall_ns=parse_iso_ts(d["ts"]),
            start_ktime_ns=int(d["start_ktime_ns"]),
            host_ns=Namespaces.from_dict(d["host_ns"]),
            tracer_pid=int(d.get("tracer_pid", 0)),
            host_ns_pid=int(d.get("host_ns_pid", 1)),
            docker_socket=d.get("docker_socket"),
            docker_reachable=bool(d.get("docker_reachable", False)),
            core_btf=str(d.get("core_btf", "")),
            processes=list(d.get("processes", [])),
            processes_omitted=int(d.get("processes_omitted", 0)),
            argv=texts_of(d, "argv"),
            format=str(d["format"]),
            version=int(d["version"]),
        )


@dataclass(slots=True)
class Summary:
    """Last line of a JSON stream: what was seen and what was lost."""

    counts: dict[str, int]
    lost: int
    threads: int
    filtered_in_kernel: int
    duration_s: float
    end_wall_ns: int
    filtered_in_userspace: int = 0

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def to_json(self) -> dict[str, Any]:
        return {
            "type": "summary",
            "ts": iso_ts(self.end_wall_ns),
            "events": self.total,
            "counts": dict(self.counts),
            "lost": self.lost,
            "threads": self.threads,
            "filtered_in_kernel": self.filtered_in_kernel,
            "filtered_in_userspace": self.filtered_in_userspace,
            "duration_s": round(self.duration_s, 6),
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Summary:
        return cls(
            counts={str(k): int(v) for k, v in d["counts"].items()},
            lost=int(d["lost"]),
            threads=int(d.get("threads", 0)),
            filtered_in_kernel=int(d.get("filtered_in_kernel", 0)),
            filtered_in_userspace=int(d.get("filtered_in_userspace", 0)),
            duration_s=float(d.get("duration_s", 0.0)),
            end_wall_ns=parse_iso_ts(d["ts"]),
        )


def event_from_json(d: dict[str, Any]) -> ProcessEvent:
    cls = EVENT_CLASSES[d["type"]]
    return cls.from_json(d)
