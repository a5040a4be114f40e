"""The live command, below its parser: what `ctrtrace [OPTIONS] [-- CMD]` does.

cli.py parses the command line with click into one LiveOptions and calls
run(); the library's options (TraceOptions, its LoadConfig, FilterSpec) are
derived from that one object here.  Nothing here imports click.
"""

from __future__ import annotations

import gc
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import IO, TYPE_CHECKING, Any

from ..kernel.host import DEFAULT_RINGBUF_BYTES, LoadConfig
from ..kernel.loader import Loader, start
from ..model.errors import CtrtraceError, ExitStatus
from ..model.escape import escape, escape_lines
from .options import TraceOptions, kernel_filtered

if TYPE_CHECKING:
    from ..model.events import Header, ProcessEvent, Summary
    from ..output.text import TextSink
    from .filters import FilterSpec

COLOR_MODES = ("auto", "always", "never")


def use_color(mode: str, stream: IO[str], environ: Mapping[str, str] = os.environ) -> bool:
    """Whether text written to stream is coloured, for --color MODE: always,
    never, or auto -- when stream is a terminal and NO_COLOR is unset or
    empty (https://no-color.org)."""
    if mode == "always":
        return True
    if mode != "auto" or environ.get("NO_COLOR"):
        return False
    try:
        return stream.isatty()
    except (AttributeError, OSError, ValueError):
        return False


@dataclass(frozen=True)
class LiveOptions:
    """The live command's options, by the names of the click parameters: the
    one object the command line is read into.  What the library is asked for
    (trace_options(), load_config(), filter_spec()) is derived from it."""

    as_json: bool = False
    duration: float | None = None
    pid: int | None = None
    comm: str | None = None
    ns_changes: bool = False
    container: str | None = None
    containers_only: bool = False
    tree: bool = False
    ns_table: bool = False
    explain: bool = False
    dot: str | None = None  # the process tree as Graphviz, written at the end
    html: str | None = None  # the trace as a page, written at the end
    write: str | None = None
    threads: bool = False
    docker_socket: str | None = None
    no_docker: bool = False
    buffer_size: int = DEFAULT_RINGBUF_BYTES >> 20  # MiB
    backend: str = "auto"  # host.BACKENDS
    linger: float = 0.5
    color: str = "auto"  # COLOR_MODES: colour in the text view
    command: list[str] | None = None  # what follows "--"

    @property
    def views(self) -> bool:
        """A whole-trace view (--tree, --ns, --dot) is made at the end."""
        return bool(self.tree or self.ns_table or self.dot)

    def trace_options(self, argv: Sequence[str] = ()) -> TraceOptions:
        """The library's options for this trace; argv goes into the header."""
        load = LoadConfig(threads=self.threads, ringbuf_bytes=self.buffer_size << 20,
                          backend=self.backend)
        return kernel_filtered(
            TraceOptions(load=load, argv=list(argv), docker_socket=self.docker_socket,
                         docker=not self.no_docker, keep_exited=self.views,
                         process_table=self.views),
            self.filter_spec().kernel,
            recording=bool(self.write) or self.explain or bool(self.html))

    def load_config(self) -> LoadConfig:
        """What decides the loaded BPF programs (what a preload must match)."""
        return self.trace_options().load

    def filter_spec(self) -> FilterSpec:
        """The view's filters (the kernel runs those it can: trace_options())."""
        from .filters import FilterSpec

        return FilterSpec.of(pid=self.pid, comm=self.comm, ns_changes=self.ns_changes,
                             container=self.container, containers_only=self.containers_only)


@dataclass
class App:
    """What the commands share: the output streams (injectable for tests)."""

    out: IO[str] = field(default_factory=lambda: sys.stdout)
    err: IO[str] = field(default_factory=lambda: sys.stderr)
    stdin: IO[bytes] | None = None
    preloaded: Loader | None = None  # started by tracer.entry before parsing

    def loader_for(self, config: LoadConfig) -> Loader:
        """The preloaded programs if they were loaded for config, else a new load."""
        pre, self.preloaded = self.preloaded, None
        if pre is not None:
            if pre.options == config:
                return pre
            pre.close()
        return start(config)

    def color(self, mode: str, stream: IO[str] | None = None) -> bool:
        """Whether to colour the text written to stream (default: out) for --color MODE."""
        return use_color(mode, self.out if stream is None else stream)

    def command_stdout(self) -> int:
        """Where a traced command's output goes: stderr, so that stdout carries events only."""
        try:
            return self.err.fileno()
        except (AttributeError, OSError, ValueError):
            import subprocess

            return subprocess.DEVNULL

    def ready(self, h: Header) -> None:
        collect_garbage()
        where = "PID 1" if h.host_ns_pid == 1 else f"PID {h.host_ns_pid} (PID 1 unreadable)"
        self.message(f"tracing on {h.hostname} ({h.kernel}); host namespaces from {where}; "
                     "Ctrl-C to stop")
        if h.processes_omitted:
            self.message(f"{h.processes_omitted} of the processes alive at start are not listed "
                         "in the header (more than its line holds): their events still are")
        if h.docker_socket and not h.docker_reachable:
            self.message(f"Docker is not reachable at {h.docker_socket}: "
                         "containers are shown by id")

    def message(self, text: str) -> None:
        try:
            self.err.write(f"ctrtrace: {escape_lines(text)}\n")
            self.err.flush()
        except OSError:  # stderr itself fails: there is nowhere to say anything
            _silence(self.err)

    def lines(self, lines: list[str]) -> None:
        for line in lines:
            self.out.write(escape(line) + "\n")
        self.out.flush()

    def fail(self, e: CtrtraceError) -> None:
        """One line on stderr, and the error's exit status."""
        self.message(f"error: {e.message}")
        sys.exit(int(e.status))


def collect_garbage() -> None:
    """Garbage collection back on after start-up (tracer.entry turns it off);
    what start-up made is frozen out of later collections, which then walk
    only what the trace itself makes."""
    if not gc.isenabled():
        gc.freeze()
        gc.enable()


def _silence(stream: IO[str]) -> None:
    """The stream's descriptor on /dev/null: what is left in its buffers goes
    there at exit, instead of failing again (and again) on the way out."""
    try:
        fd = stream.fileno()
    except (AttributeError, OSError, ValueError):
        return  # not a file (tests): nothing is written at exit
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, fd)
    os.close(devnull)


def quiet_broken_pipe() -> None:
    """The reader went away (e.g. '| head'): stop quietly."""
    _silence(sys.stdout)
    sys.exit(int(ExitStatus.OK))


def _out_fd(app: App) -> int | None:
    try:
        return app.out.fileno()
    except (AttributeError, OSError, ValueError):
        return None


def stdout_failed(app: App, e: OSError) -> CtrtraceError:
    """The error for a standard output that cannot be written; it is put on
    /dev/null, so that nothing fails again on the way out."""
    _silence(app.out)
    return CtrtraceError(f"cannot write standard output: {e.strerror or e}", ExitStatus.ERROR)


def run(app: App, options: LiveOptions) -> None:
    """Trace until Ctrl-C, the duration or the command's end; exits with the
    command's status when there is one.

    Outputs that fail end the trace (session.trace): a recording that cannot
    be written, or a standard output that fails otherwise than by its reader
    going away, with the summary on stderr and one error line (status 1); a
    reader that went away ('| head'), quietly, with the command's status (or
    0 without a command), 141 (128 + SIGPIPE) if the command had to be ended.
    """
    recorder: Any = None  # the Recorder, --explain's Collector, or both
    collector = None
    failure = None
    try:
        if options.as_json and (options.tree or options.ns_table or options.explain):
            raise CtrtraceError("--tree, --ns and --explain print text: record with -w and "
                                "replay with --tree instead of --json", ExitStatus.USAGE)
        if options.write == "-":
            raise CtrtraceError("-w takes a file name; for the recording's lines on standard "
                                "output, use --json", ExitStatus.USAGE)
        if options.command:
            import shutil

            if shutil.which(options.command[0]) is None:
                raise CtrtraceError(f"cannot run {options.command[0]}: command not found",
                                    ExitStatus.USAGE)
        views = options.views
        trace_options = options.trace_options(sys.argv)
        loader = app.loader_for(trace_options.load)  # loads on its own thread
        try:
            from ..output.text import JsonSink
            from .session import OutputError, trace

            spec = options.filter_spec()
            from ..model.codec import EventLines

            lines = EventLines()  # one renderer for the JSON view and the recording
            if options.write:
                from ..output.recording import Recorder

                recorder = Recorder(options.write, lines)
            if options.explain or options.html:
                from ..output.collect import Collector

                collector = Collector()
                recorder = collector if recorder is None else _Both(recorder, collector)
            view = (JsonSink(app.out, lines) if options.as_json
                    else _LazyTextSink(app, options.color))
            try:
                result = trace(trace_options, view, spec=spec, recorder=recorder,
                               duration=options.duration, command=options.command,
                               linger=options.linger,
                               command_stdout=app.command_stdout(), on_ready=app.ready,
                               loader=loader, out_fd=_out_fd(app))
            except OutputError as e:
                failure, result = e, e.result
        finally:
            loader.close()  # a no-op once the session has the programs
        if collector is not None and failure is None:
            try:
                from ..output.collect import whole_trace_views

                told = whole_trace_views(collector, options.html, options.explain)
                if told:
                    app.lines(told)
            except BrokenPipeError:
                raise
            except OSError as e:
                raise stdout_failed(app, e) from None
        if views and failure is None:
            from ..output.views import render, selection

            shown = selection(result.table, result.filter, result.shown)
            if options.dot:
                from ..output.dot import dot_text, write_dot

                write_dot(options.dot, dot_text(result.table, result.header.host_ns, shown))
            try:
                if options.tree or options.ns_table:
                    app.lines(render(options.tree, options.ns_table, result.table,
                                     result.header.host_ns, shown))
            except BrokenPipeError:
                raise
            except OSError as e:
                raise stdout_failed(app, e) from None
    except CtrtraceError as e:
        app.fail(e)
    except BrokenPipeError:
        quiet_broken_pipe()
    except KeyboardInterrupt:  # before the trace began: nothing to summarise
        sys.exit(130)
    finally:
        if recorder is not None:
            recorder.close()
    status = result.command_status
    if failure is not None:
        if failure.recording:
            app.fail(failure)
        if not failure.broken_pipe:
            from ..output.text import TextRenderer

            err = stdout_failed(app, failure.cause)  # type: ignore[arg-type]
            app.message(TextRenderer.summary(result.summary))
            app.fail(err)
        _silence(app.out)
        if options.command and (status is None or result.command_stopped):
            import signal

            status = 128 + signal.SIGPIPE  # as if '| head' had ended ctrtrace and the command
    if options.write:
        app.message(f"recorded to {options.write}")
    if status is not None:
        sys.exit(status if status >= 0 else 128 - status)


class _Both:
    """The recording and --explain's collector: every event to each."""

    def __init__(self, first, second) -> None:
        self.sinks = (first, second)

    def header(self, h) -> None:
        for s in self.sinks:
            s.header(h)

    def events(self, batch) -> None:
        for s in self.sinks:
            s.events(batch)

    def flush(self) -> None:
        for s in self.sinks:
            s.flush()

    def summary(self, s) -> None:
        for sink in self.sinks:
            sink.summary(s)

    def close(self) -> None:
        for s in self.sinks:
            s.close()


class _LazyTextSink:
    """A TextSink whose renderer is made once the header (host namespaces) is known."""

    def __init__(self, app: App, color: str) -> None:
        self.app = app
        self.color = color  # --color: decided for stdout (the lines), stderr (the summary)
        self.sink: TextSink | None = None

    def header(self, h: Header) -> None:
        from ..output.text import TextRenderer, TextSink

        app = self.app
        renderer = TextRenderer(h.host_ns, h.start_ktime_ns, color=app.color(self.color))
        self.sink = TextSink(renderer, app.out, app.err,
                             summary_color=app.color(self.color, app.err))
        self.sink.header(h)

    def events(self, batch: list[ProcessEvent]) -> None:
        assert self.sink is not None
        self.sink.events(batch)

    def flush(self) -> None:
        if self.sink:
            self.sink.flush()

    def summary(self, s: Summary) -> None:
        assert self.sink is not None
        self.sink.summary(s)
