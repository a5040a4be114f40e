"""What a trace is asked to do: the library's options, and the command's.

Separate from session.py so that the command can build them, and start
loading the BPF programs, before the rest of ctrtrace is imported.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from ..kernel.host import KernelFilters, LoadConfig
from ..kernel.schedule import reader_slice_ns


@dataclass
class TraceOptions:
    """What a Session loads and how it interprets the events (the library's options).

    TraceOptions.of(pid=1234, threads=True, docker=False) spells any of the
    fields, the load's and its filters' included, by name."""

    load: LoadConfig = LoadConfig()  # the programs: their filters, threads, buffer, object
    argv: list[str] = field(default_factory=list)
    docker_socket: str | None = None  # default: $DOCKER_HOST or /var/run/docker.sock
    docker: bool = True                # ask the Docker engine for names and images
    keep_exited: bool = False          # the process table remembers exited processes (views)
    # keep the process table up to date at every event (the tree and namespace
    # views read it at the end); off, it holds the processes seen at start-up
    process_table: bool = True
    # the reader's scheduler slice, long so that the traced workload preempts
    # it (schedule.py); 0 leaves the kernel's default
    reader_slice_ns: int = field(default_factory=reader_slice_ns)

    @classmethod
    def of(cls, **names: object) -> TraceOptions:
        """Options from the names of any of their fields, nested ones included."""
        filters = {k: names.pop(k) for k in KernelFilters._fields if k in names}
        load = {k: names.pop(k) for k in LoadConfig._fields if k in names}
        return cls(load=LoadConfig(**load)._replace(filters=KernelFilters(**filters)),  # type: ignore[arg-type]
                   **names)  # type: ignore[arg-type]

    @property
    def filters(self) -> KernelFilters:
        return self.load.filters


def kernel_filtered(options: TraceOptions, filters: KernelFilters,
                    recording: bool) -> TraceOptions:
    """The view's pid/comm/ns-changes filters run in the kernel, so that what is
    not shown is not even sent -- unless a recording needs every event."""
    load = options.load._replace(filters=KernelFilters() if recording else filters)
    return dataclasses.replace(options, load=load)
