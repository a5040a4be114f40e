"""What a trace is asked to do: the library's options, and the command's.

Separate from session.py so that the command can build them, and start
loading the BPF programs, before the rest of ctrtrace is imported.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from ..kernel.loader import DEFAULT_RINGBUF_BYTES, LoadConfig
from ..kernel.schedule import reader_slice_ns


@dataclass
class TraceOptions:
    """What a Session loads and how it interprets the events (the library's options)."""

    pid: int | None = None          # that process and its descendants
    comm: str | None = None         # tasks whose comm is exactly this
    ns_changes: bool = False           # only namespace creation, entry, or difference
    threads: bool = False              # also emit CLONE_THREAD children
    ringbuf_bytes: int = DEFAULT_RINGBUF_BYTES
    bpf_object: str | None = None   # default: the one installed with the package
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

    def load_config(self) -> LoadConfig:
        """The part that decides the loaded programs (same names as here)."""
        return LoadConfig(**{name: getattr(self, name) for name in LoadConfig._fields})


def kernel_filtered(options: TraceOptions, pid: int | None, comm: str | None,
                    ns_changes: bool, recording: bool) -> TraceOptions:
    """The view's pid/comm/ns-changes filters run in the kernel, so that what is
    not shown is not even sent -- unless a recording needs every event."""
    if recording:
        return options
    return dataclasses.replace(options, pid=pid, comm=comm, ns_changes=ns_changes)
