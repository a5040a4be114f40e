"""The library API: load the BPF programs, stream typed events, end with a summary.

    opts = TraceOptions.of(ns_changes=True)
    with Session(opts) as s:
        header = s.header
        while ...:
            for event in s.poll(timeout_ms=100): ...
        summary = s.summary()

trace() runs the whole loop for the command line: duration, a command to
run under the trace, Ctrl-C and SIGTERM.
"""

from __future__ import annotations

import collections
import contextlib
import ctypes
import dataclasses
import errno
import os
import select
import signal
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import (
    TYPE_CHECKING,
    Protocol,
)

from ..kernel import layout
from ..kernel.decode import Decoder
from ..kernel.host import DEFAULT_RINGBUF_BYTES
from ..kernel.loader import Loader, Programs, default_object_path, start
from ..kernel.ringbuf import RecordReader, open_reader
from ..kernel.schedule import giving_way
from ..model.errors import CtrtraceError, ExitStatus
from ..model.events import EVENT_TYPES, Header, ProcessEvent, Summary, with_container
from ..state import system
from ..state.containers import ContainerResolver
from ..state.dockerapi import DockerClient
from ..state.proctable import ProcessTable, snapshot
from .filters import EventFilter, FilterSpec
from .options import TraceOptions, kernel_filtered

if TYPE_CHECKING:
    import subprocess

__all__ = ["DEFAULT_RINGBUF_BYTES", "POLL_MS", "OutputError", "RunResult", "Session",
           "TraceOptions", "default_object_path", "kernel_filtered", "trace"]

POLL_MS = 25  # the longest wait for events: the loop checks signals, the deadline, a command
# The kernel wakes the reader for the first record after a drain (rb_flags in
# the BPF program).  Before it waits again, the reader lets records gather for
# BATCH_MS_PER_RECORD per record it has just read, up to BATCH_MS: a lone
# event is read within a few ms, and under load (more than one record per
# BATCH_MS_PER_RECORD) the batches grow until drains are BATCH_MS apart,
# instead of a wake-up per record.  Big batches are cheap batches: between
# drains an exec storm evicts the reader's code and data from the CPU caches,
# and each drain pays to bring them back, so bigger batches cost less CPU per
# event (bench/README.md, "Where the code's choices come from").
BATCH_MS_PER_RECORD = 2
BATCH_MS = 50


def _release_freed_memory() -> None:
    try:
        ctypes.CDLL(None).malloc_trim(0)  # glibc: hand freed heap back to the system
    except (AttributeError, OSError):
        pass


class Sink(Protocol):
    """An output: the header, then batches of events (one per poll), each
    followed by a flush, then the summary."""

    def header(self, h: Header) -> None: ...
    def events(self, batch: list[ProcessEvent]) -> None: ...
    def flush(self) -> None: ...
    def summary(self, s: Summary) -> None: ...


class Session:
    """One loaded set of BPF programs and the state that interprets their events."""

    def __init__(self, options: TraceOptions, loader: Loader | None = None) -> None:
        """loader: one already started with options.load (see loader.py)."""
        self.options = options
        self._loader = loader
        self.backend = ""  # "core" or "bcc", once loaded
        self.layout = ""   # where that backend's struct offsets came from
        self.table = ProcessTable(keep_exited=options.keep_exited)
        self.counts: collections.Counter[str] = collections.Counter({t: 0 for t in EVENT_TYPES})
        self._obj: Programs | None = None
        self._rb: RecordReader | None = None
        self.header: Header | None = None
        self.decoder: Decoder | None = None
        self._start_mono = 0.0
        self._next_poll = 0.0
        self.resolver: ContainerResolver | None = None

    # -- set-up -------------------------------------------------------------

    def open(self) -> Header:
        opts = self.options
        loader = self._loader or start(opts.load)
        try:
            obj = self._obj = loader.result()
        finally:
            loader.close()  # unloads nothing once the object is taken
        self.backend, self.layout = loader.backend, loader.layout
        _release_freed_memory()  # libbpf parsed the kernel's BTF (megabytes) and freed it
        self._rb = open_reader(obj.map_fd("events"), obj.max_entries("events"))
        offset = system.wall_offset_ns()
        self.decoder = Decoder(offset)
        start_ktime = loader.start_ktime_ns  # the programs are attached: events wait for us
        self._start_mono = start_ktime / 1e9  # time.monotonic() reads the same clock

        # Processes that already existed: from /proc, once, after attaching so
        # that none falls between the snapshot and the first event.
        self.table.seed_from_proc()
        if opts.filters.pid is not None:
            for pid in self.table.descendants(opts.filters.pid):
                obj.update("tracked", ctypes.c_uint32(pid), ctypes.c_uint8(1))

        host_ns, host_ns_pid = system.host_namespaces()
        client = DockerClient(opts.docker_socket) if opts.docker else None
        self.resolver = ContainerResolver(client, host_ns)
        self.resolver.seed(self.table, system.read_ns)
        for proc in self.table:
            proc.container = self.resolver.attribute_process(proc.cgroup, proc.ns.mnt, proc.pid,
                                                             proc.start_ns, vpid=proc.vpid)
        processes, omitted = snapshot(self.table)
        self.header = Header(
            hostname=system.hostname(),
            kernel=system.kernel_release(),
            boot_time_ns=offset,
            start_wall_ns=start_ktime + offset,
            start_ktime_ns=start_ktime,
            host_ns=host_ns,
            host_ns_pid=host_ns_pid,
            tracer_pid=os.getpid(),
            argv=list(opts.argv),
            docker_socket=client.path if client else None,
            docker_reachable=bool(client and client.reachable),
            backend=self.backend,
            core_btf=self.layout if self.backend == "core" else "",
            offsets=self.layout if self.backend == "bcc" else "",
            processes=processes,
            processes_omitted=omitted,
        )
        return self.header

    # -- events -------------------------------------------------------------

    def _decode(self, records: list[bytes]) -> list[ProcessEvent]:
        """The one path of every record: decoded, attributed to its container,
        applied to the process table (when a view reads it), counted."""
        assert self.decoder is not None and self.resolver is not None
        attribute = self.resolver.attribute
        events = [ev if (container := attribute(ev)) is None else with_container(ev, container)
                  for ev in self.decoder.events(records)]
        if self.options.process_table:
            for ev in events:
                self.table.apply(ev)
        self.counts.update([ev.type for ev in events])
        return events

    def poll(self, timeout_ms: int) -> list[ProcessEvent]:
        """The events that come within timeout_ms (after the batching pause)."""
        assert self._rb is not None
        pause = self._next_poll - time.monotonic()
        if pause > 0:
            time.sleep(pause)
        records = self._rb.poll(timeout_ms)
        pause_ms = min(BATCH_MS, BATCH_MS_PER_RECORD * len(records))
        self._next_poll = time.monotonic() + pause_ms / 1000
        return self._decode(records)

    def drain(self) -> list[ProcessEvent]:
        """The events waiting now."""
        assert self._rb is not None
        return self._decode(self._rb.drain())

    def summary(self) -> Summary:
        assert self._obj is not None
        return Summary(
            counts=dict(self.counts),
            lost=self._obj.percpu_sum("counters", layout.CT_CNT_LOST),
            threads=self._obj.percpu_sum("counters", layout.CT_CNT_THREADS),
            filtered_in_kernel=self._obj.percpu_sum("counters", layout.CT_CNT_FILTERED),
            duration_s=time.monotonic() - self._start_mono,
            end_wall_ns=time.time_ns(),
        )

    # -- tear-down ----------------------------------------------------------

    def close(self) -> None:
        if self.resolver is not None:
            self.resolver.close()
        if self._rb is not None:
            self._rb.close()
            self._rb = None
        if self._obj is not None:
            self._obj.close()
            self._obj = None

    def __enter__(self) -> Session:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@contextlib.contextmanager
def _stop_on_signals() -> Iterator[list[int]]:
    """SIGINT and SIGTERM end the loop cleanly (the summary is still written)."""
    received: list[int] = []

    def handler(signum: int, _frame: object) -> None:
        received.append(signum)

    previous = {signum: signal.signal(signum, handler)
                for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield received
    finally:
        for signum, previous_handler in previous.items():
            signal.signal(signum, previous_handler)


@dataclass
class RunResult:
    """What trace() returns once the trace has ended."""

    summary: Summary                      # of what the view showed
    header: Header
    table: ProcessTable                   # kept up to date with TraceOptions.process_table
    shown: set[tuple[int, int]]           # (pid, start_ns) of the shown events' processes
    filter: EventFilter | None
    command_status: int | None = None  # exit status of the command run under the trace
    signal: int | None = None          # the signal that ended the trace
    command_stopped: bool = False         # the command still ran at the end: the trace ended it


class OutputError(CtrtraceError):
    """The view's stream or the recording could not be written: the trace
    stopped there and ended as it would have (the command ended, the summary
    written where it still could be).  .result says how it ended; .recording
    tells which output failed; .cause is the error itself."""

    def __init__(self, cause: BaseException, recording: bool, result: RunResult) -> None:
        if isinstance(cause, CtrtraceError):
            message = cause.message
        else:
            what = "the recording" if recording else "the output"
            message = f"cannot write {what}: {getattr(cause, 'strerror', None) or cause}"
        super().__init__(message, ExitStatus.ERROR)
        self.cause = cause
        self.recording = recording
        self.result = result

    @property
    def broken_pipe(self) -> bool:
        """The view's reader went away (EPIPE): not an error for a command line."""
        return not self.recording and getattr(self.cause, "errno", None) == errno.EPIPE


class _Discard:
    """Where a failed sink's calls go for the rest of the trace."""

    def header(self, h: Header) -> None: ...
    def events(self, batch: list[ProcessEvent]) -> None: ...
    def flush(self) -> None: ...
    def summary(self, s: Summary) -> None: ...


# A command still running when the trace ends gets SIGTERM, and SIGKILL after
# this long (or at once at a second Ctrl-C or SIGTERM).
TERM_GRACE_S = 5.0
PR_SET_CHILD_SUBREAPER, PR_GET_CHILD_SUBREAPER = 36, 37


def _processes() -> Iterator[tuple[int, int, int]]:
    """(pid, ppid, process group) of every process, from /proc."""
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                stat = f.read()
            ppid, pgrp = stat[stat.rindex(b")") + 2:].split(b" ", 3)[1:3]
        except (OSError, ValueError):
            continue  # gone meanwhile
        yield int(name), int(ppid), int(pgrp)


def _job(child: int, pgid: int, own: set[int]) -> tuple[list[int], list[int]]:
    """The command's processes in its process group pgid (what Ctrl-C in a
    terminal would reach, less what detached itself): child, the orphans that
    came to us (our children but child and those in own, which were ours
    before), and their descendants; and the orphans alone."""
    children: dict[int, list[int]] = collections.defaultdict(list)
    for pid, ppid, pgrp in _processes():
        if pgrp == pgid:
            children[ppid].append(pid)
    orphans = [pid for pid in children.get(os.getpid(), []) if pid != child and pid not in own]
    job, todo = [child, *orphans], [child, *orphans]
    while todo:
        kids = children.get(todo.pop(), [])
        job += kids
        todo += kids
    return job, orphans


def _child_subreaper(on: int) -> int:
    """Sets whether this process adopts its descendants' orphans; what it was."""
    libc = ctypes.CDLL(None)
    was = ctypes.c_int(0)
    libc.prctl(PR_GET_CHILD_SUBREAPER, ctypes.byref(was), 0, 0, 0)
    libc.prctl(PR_SET_CHILD_SUBREAPER, on, 0, 0, 0)
    return was.value


def _end_command(child: subprocess.Popen, signals: list[int]) -> bool:
    """Ends the command if it still runs, and reaps it; whether it had to be ended.

    SIGTERM goes to the command and to its descendants in its process group:
    ending only a shell would leave its children running, orphaned.  A
    process the scan of /proc missed (forked meanwhile) and orphaned by the
    end of its parent comes to us (a child subreaper from now on: the trace
    has ended, so no event shows it), is ended in turn and reaped.  SIGKILL
    after TERM_GRACE_S, or at once when another signal asks the trace to stop."""
    import subprocess

    if child.poll() is not None:
        return False
    try:
        pgid = os.getpgid(child.pid)
    except OSError:
        pgid = -1
    own = {pid for pid, ppid, _ in _processes() if ppid == os.getpid()}
    was = _child_subreaper(1)
    try:
        sig, signalled = signal.SIGTERM, set()
        seen = len(signals)
        deadline = time.monotonic() + TERM_GRACE_S
        while True:
            # Scanned afresh each turn, and once more after the command is gone:
            # a child it forked just before it died comes to us after a scan.
            job, orphans = _job(child.pid, pgid, own)
            if child.returncode is not None and (
                    not orphans or time.monotonic() >= deadline + TERM_GRACE_S):
                return True  # orphans may be stuck (in D state): not beyond the grace period
            for pid in job:
                if pid not in signalled and (pid != child.pid or child.returncode is None):
                    with contextlib.suppress(OSError):
                        os.kill(pid, sig)
                    signalled.add(pid)
            for pid in orphans:
                with contextlib.suppress(OSError):
                    os.waitpid(pid, os.WNOHANG)
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.wait(timeout=0.02)
            if sig == signal.SIGTERM and (time.monotonic() >= deadline or len(signals) > seen):
                sig, signalled = signal.SIGKILL, set()
    finally:
        if not was:
            _child_subreaper(0)


def trace(
    options: TraceOptions,
    view: Sink,
    spec: FilterSpec | None = None,
    recorder: Sink | None = None,
    duration: float | None = None,
    command: Sequence[str] | None = None,
    linger: float = 0.5,
    poll_ms: int = POLL_MS,
    command_stdout: int | None = None,
    on_ready: Callable[[Header], None] | None = None,
    loader: Loader | None = None,
    out_fd: int | None = None,
) -> RunResult:
    """Trace until Ctrl-C/SIGTERM, the duration, or the command's exit (plus linger).

    The view gets the events the filters keep.  A recorder gets every event,
    so that replay can filter anything: with one, the filters run here rather
    than in the kernel (the same rules, from the same kernel facts).
    loader: one started early with options = kernel_filtered(options, spec.kernel,
    recording) (the command does, to load while it imports the rest).
    out_fd: the view's file descriptor: a pipe whose reader went away ends the
    trace at once, as a write to it would, even when no event comes to write.

    A write that fails (OSError from the view, CtrtraceError or OSError from
    the recorder) stops the trace: the other output still gets the last
    events and its summary, a command still running is ended, and
    OutputError is raised with the RunResult.
    """
    spec = spec or FilterSpec()
    if loader is None:
        options = kernel_filtered(options, spec.kernel, recording=recorder is not None)
    # From here on this thread is the reader: it gives way to the traced workload.
    with Session(options, loader) as session, _stop_on_signals() as signals, \
            giving_way(session.options.reader_slice_ns):
        header = session.header
        assert header is not None
        event_filter = (EventFilter(spec, header, views=session.options.process_table)
                        if spec.active else None)
        outputs = _Outputs(view, recorder, event_filter, session.options.process_table, out_fd)
        outputs.header(header)
        if on_ready is not None and not outputs.failed:
            on_ready(header)
        t0 = time.monotonic()
        child: subprocess.Popen | None = None
        stopped = False
        try:
            if command and not outputs.failed:
                import subprocess  # only with a command to run

                try:
                    child = subprocess.Popen(list(command), stdout=command_stdout)
                except OSError as e:
                    raise CtrtraceError(f"cannot run {command[0]}: {e.strerror}",
                                        ExitStatus.USAGE) from None
            deliver = outputs.deliver
            deliver(session.drain())  # what came while the session was set up, at once
            deadline = t0 + duration if duration is not None else None
            child_done_at: float | None = None
            while not signals and not outputs.failed:
                now = time.monotonic()
                if deadline is not None and now >= deadline:
                    break
                if child is not None and child_done_at is None and child.poll() is not None:
                    child_done_at = now
                if child_done_at is not None and now - child_done_at >= linger:
                    break
                if outputs.reader_gone():
                    break
                timeout = poll_ms
                if deadline is not None:
                    timeout = max(0, min(timeout, int((deadline - now) * 1000)))
                deliver(session.poll(timeout))
            deliver(session.drain())  # to the outputs that still work
            summary = outputs.summary(session.summary())
        finally:  # whatever ended the trace, the command does not outlive it
            if child is not None:
                stopped = _end_command(child, signals)
        result = RunResult(summary, header, session.table, outputs.shown_procs, event_filter,
                           child.returncode if child is not None else None,
                           signals[0] if signals else None, stopped)
        if outputs.failed:
            raise OutputError(outputs.failed[0][0], outputs.failed[0][1], result)
        return result


class _Outputs:
    """The view and the recorder of one trace.  Each batch goes to both, the
    recorder all of it, the view what the filters keep; the first failure of
    either is kept, and the output that failed gets nothing more."""

    def __init__(self, view: Sink, recorder: Sink | None, event_filter: EventFilter | None,
                 keep_shown: bool, out_fd: int | None) -> None:
        self.view: Sink = view
        self.recorder = recorder
        self.filter = event_filter
        self.failed: list[tuple[BaseException, bool]] = []  # (error, from the recording)
        self.shown = collections.Counter({t: 0 for t in EVENT_TYPES})  # with a filter
        # the processes of the shown events: what the views select from the
        # process table (kept only when they read it)
        self.shown_procs: set[tuple[int, int]] = set()
        self.keep_shown = keep_shown
        self.watch: select.poll | None = None  # the view's descriptor, when it has one
        if out_fd is not None:
            self.watch = select.poll()
            self.watch.register(out_fd, 0)  # POLLERR comes unasked: a pipe without a reader

    def _recorder_failed(self, e: BaseException) -> None:
        self.failed.append((e, True))
        self.recorder = None

    def _view_failed(self, e: BaseException) -> None:
        self.failed.append((e, False))
        self.view, self.watch = _Discard(), None

    def header(self, header: Header) -> None:
        if self.recorder is not None:
            try:
                self.recorder.header(header)
            except (OSError, CtrtraceError) as e:
                self._recorder_failed(e)
        try:
            self.view.header(header)
        except OSError as e:
            self._view_failed(e)
        self.flush()

    def deliver(self, events: list[ProcessEvent]) -> None:
        """One batch.  Given the same batch, two JSON outputs share its lines
        (codec.EventLines.lines)."""
        if self.recorder is not None:
            self.recorder.events(events)
        if self.filter is not None:
            wants = self.filter.wants
            events = [ev for ev in events if wants(ev)]
            self.shown.update([ev.type for ev in events])
        self.view.events(events)
        if self.keep_shown:
            self.shown_procs.update([(ev.pid, ev.start_ns) for ev in events])
        self.flush()

    def flush(self) -> None:
        if self.recorder is not None:
            try:
                self.recorder.flush()
            except (OSError, CtrtraceError) as e:
                self._recorder_failed(e)
        try:
            self.view.flush()
        except OSError as e:
            self._view_failed(e)

    def reader_gone(self) -> bool:
        """The view's pipe has no reader: the trace ends, as a write to it would."""
        if self.watch is not None and any(ev & select.POLLERR for _, ev in self.watch.poll(0)):
            self._view_failed(BrokenPipeError(errno.EPIPE, os.strerror(errno.EPIPE)))
            return True
        return False

    def summary(self, full: Summary) -> Summary:
        """The recording gets the session's summary; the view, with a filter,
        the counts of what it showed.  Returns the view's."""
        if self.recorder is not None:
            try:
                self.recorder.summary(full)
            except (OSError, CtrtraceError) as e:
                self._recorder_failed(e)
        counts, dropped = ((dict(self.shown), self.filter.dropped) if self.filter is not None
                           else (dict(full.counts), 0))
        summary = dataclasses.replace(full, counts=counts, filtered_in_userspace=dropped)
        try:
            self.view.summary(summary)
        except OSError as e:
            self._view_failed(e)
        return summary
