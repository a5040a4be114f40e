"""Typed events: what the kernel reported at each event, as light records.

An event is a tuple of its fields, in the order its class declares them
(ProcessEvent's, then its type's): made in one step by the decoder and by
the recording reader, read by name (ev.pid) at the cost of an index.  The
JSON form is generated from the contract (codec.py); a test keeps each
class's fields and the contract's in step.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass, field
from typing import Any, ClassVar, NamedTuple

from .contract import (
    FORMAT_NAME,
    FORMAT_VERSION,
    NS_NAMES,
    iso_ts,
    parse_iso_ts,
    texts_of,
    with_raw_text,
)

try:  # the C descriptor namedtuple's fields are read through
    from _collections import _tuplegetter
except ImportError:  # pragma: no cover - other Pythons
    def _tuplegetter(index: int, doc: str | None) -> Any:
        return property(operator.itemgetter(index), doc=doc)


class Namespaces(NamedTuple):
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
        return dict(zip(NS_NAMES, self, strict=True))

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Namespaces:
        return cls(*(int(d.get(name, 0)) for name in NS_NAMES))

    def changed(self, other: Namespaces) -> list[str]:
        """Names whose inode differs from other's (both known)."""
        return [name for name, mine, theirs in zip(NS_NAMES, self, other, strict=True)
                if mine and theirs and mine != theirs]


class Container(NamedTuple):
    """The container a process belongs to, and how that was decided."""

    id: str
    name: str | None = None     # without docker's leading '/'
    image: str | None = None
    runtime: str = "docker"
    source: str = "cgroup"         # cgroup | namespace | shim: what tied the process to it
    pod: str | None = None         # a Kubernetes pod's uid, from its cgroup

    def to_json(self) -> dict[str, Any]:
        d = self._asdict()
        if self.pod is None:
            del d["pod"]
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any] | None) -> Container | None:
        if not d:
            return None
        return cls(id=str(d["id"]), name=d.get("name"), image=d.get("image"),
                   runtime=str(d.get("runtime", "docker")), source=str(d.get("source", "cgroup")),
                   pod=d.get("pod"))

    @property
    def label(self) -> str:
        """How the views name it: its name (else its id's first 12 characters),
        after its runtime when that is not Docker ("podman:web")."""
        name = self.name or self.id[:12]
        return name if self.runtime == "docker" else f"{self.runtime}:{name}"


_new = tuple.__new__


class Record(tuple):
    """A tuple whose fields are its class's annotations, base classes' first.

    Each field is read by name through namedtuple's C getter; a class is
    made with keywords (defaults from the annotations' values), or by the
    decoder and the reader in one step: record_of(cls, values)."""

    __slots__ = ()
    FIELDS: ClassVar[tuple[str, ...]] = ()
    DEFAULTS: ClassVar[dict[str, Any]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        names, defaults = list(cls.FIELDS), dict(cls.DEFAULTS)
        for name, annotation in cls.__dict__.get("__annotations__", {}).items():
            if str(annotation).startswith("ClassVar"):
                continue
            if name in names:
                raise TypeError(f"{cls.__name__}.{name} is declared twice")
            names.append(name)
            if name in cls.__dict__:
                defaults[name] = cls.__dict__[name]
        cls.FIELDS, cls.DEFAULTS = tuple(names), defaults
        for i, name in enumerate(names):
            setattr(cls, name, _tuplegetter(i, name))
        params = ", ".join(f"{n}=_defaults[{n!r}]" if n in defaults else n for n in names)
        env: dict[str, Any] = {"_new": _new, "_defaults": defaults}
        source = (f"def __new__(_cls, *, {params}):\n"
                  f"    return _new(_cls, ({', '.join(names)},))\n")
        exec(source, env)  # noqa: S102 - the source is made here, from the annotations
        cls.__new__ = env["__new__"]  # type: ignore[method-assign]

    def __repr__(self) -> str:
        inner = ", ".join(f"{n}={v!r}" for n, v in zip(self.FIELDS, self, strict=True))
        return f"{type(self).__name__}({inner})"

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other) and tuple.__eq__(self, other)

    def __ne__(self, other: object) -> bool:
        return not self == other

    __hash__ = tuple.__hash__

    def replace(self, **changes: Any) -> Any:
        """A copy with some fields changed (tests, and the rare rewrite)."""
        values = dict(zip(self.FIELDS, self, strict=True))
        values.update(changes)
        return type(self)(**values)


def record_of(cls: type, values: tuple) -> Any:
    """An instance of a Record class from its fields' values, in order."""
    return _new(cls, values)


class ProcessEvent(Record):
    """Fields every process event has, read from the task at the event."""

    __slots__ = ()
    type: ClassVar[str] = ""

    wall_ns: int       # wall clock of the event (ktime_ns + the boot time)
    ktime_ns: int      # CLOCK_MONOTONIC
    cpu: int
    pid: int
    tid: int
    ppid: int
    vpid: int
    vpids: tuple[int, ...]  # the pid at every level, the host's first: (pid, ..., vpid)
    comm: str
    uid: int
    gid: int
    ns_uid: int   # uid as its own user namespace maps it (what it sees of itself)
    ns_gid: int
    start_ns: int
    parent_start_ns: int
    ns: Namespaces
    no_nsproxy: bool = False     # the task had no namespaces left (exiting)
    cgroup_id: int = 0
    cgroup: str = ""             # "parent/leaf" directory names of the task's cgroup
    cgroup_v1: bool = False
    ns_change: bool = False      # created/entered a namespace, or differs from the parent's
    container: Container | None = None


CONTAINER_AT = ProcessEvent.FIELDS.index("container")


def with_container(ev: ProcessEvent, container: Container | None) -> Any:
    """ev attributed to container (what the kernel reported, and what was concluded)."""
    return _new(type(ev), (*ev[:CONTAINER_AT], container, *ev[CONTAINER_AT + 1:]))


class ExecEvent(ProcessEvent):
    """A program replaced the task's image (execve/execveat; failed ones too, with ret)."""

    __slots__ = ()
    type: ClassVar[str] = "exec"

    filename: str
    argv: tuple[str, ...]
    argv_truncated: bool = False
    filename_truncated: bool = False
    old_pid: int       # the thread that called exec (its tid, unless not the leader)
    ret: int = 0       # 0, or -errno when the exec failed


class ForkEvent(ProcessEvent):
    """A task was created (fork, vfork, clone, clone3; threads only with --threads)."""

    __slots__ = ()
    type: ClassVar[str] = "fork"

    parent_pid: int
    parent_tid: int
    clone_flags: int | None  # None: not created by a syscall we saw (kernel thread)
    thread: bool = False


class ExitEvent(ProcessEvent):
    """A process ended (its last thread exited)."""

    __slots__ = ()
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


class SetnsEvent(ProcessEvent):
    """setns(2): the task entered another namespace (ns_before: where it was)."""

    __slots__ = ()
    type: ClassVar[str] = "setns"

    fd: int
    nstype: int
    ret: int
    ns_before: Namespaces


class UnshareEvent(ProcessEvent):
    """unshare(2): the task moved into new namespaces (ns_before: where it was)."""

    __slots__ = ()
    type: ClassVar[str] = "unshare"

    flags: int
    ret: int
    ns_before: Namespaces


EVENT_CLASSES: dict[str, type[ProcessEvent]] = {
    c.type: c for c in (ExecEvent, ForkEvent, ExitEvent, SetnsEvent, UnshareEvent)}
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
    backend: str = ""        # "core" (libbpf CO-RE) or "bcc"; "" in older recordings
    core_btf: str = ""       # core: what CO-RE relocated against: "subset" (cached) or "kernel"
    offsets: str = ""        # bcc: where the kernel's struct offsets came from
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
        # recordings made before these were recorded lack them
        for name in ("backend", "core_btf", "offsets"):
            if getattr(self, name):
                d[name] = getattr(self, name)
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
            backend=str(d.get("backend", "")),
            core_btf=str(d.get("core_btf", "")),
            offsets=str(d.get("offsets", "")),
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


