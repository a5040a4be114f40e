"""The ctrtrace command: a thin click layer over tracer.session and tracer.replay."""

from __future__ import annotations

import gc
import os
import sys
from dataclasses import dataclass, field
from typing import IO, TYPE_CHECKING, Callable, List, Optional

import click

from .errors import CtrtraceError, ExitStatus
# Only what it takes to start loading the BPF programs is imported here; the
# rest is imported while they load (see main).
from .loader import DEFAULT_RINGBUF_BYTES, LoadConfig, ProgramLoader
from .options import TraceOptions, kernel_filtered

if TYPE_CHECKING:
    from .events import Header, ProcessEvent, Summary
    from .render import TextSink


@dataclass
class App:
    """What the commands share: the output streams (injectable for tests)."""

    out: IO[str] = field(default_factory=lambda: sys.stdout)
    err: IO[str] = field(default_factory=lambda: sys.stderr)
    stdin: Optional[IO[bytes]] = None
    preloaded: Optional[ProgramLoader] = None  # started by tracer.entry before parsing

    def loader_for(self, config: LoadConfig) -> ProgramLoader:
        """The preloaded programs if they were loaded for config, else a new load."""
        pre, self.preloaded = self.preloaded, None
        if pre is not None:
            if pre.options == config:
                return pre
            pre.close()
        return ProgramLoader(config)

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
        if h.docker_socket and not h.docker_reachable:
            self.message(f"Docker is not reachable at {h.docker_socket}: containers are shown by id")

    def message(self, text: str) -> None:
        self.err.write(f"ctrtrace: {text}\n")
        self.err.flush()

    def lines(self, lines: List[str]) -> None:
        for line in lines:
            self.out.write(line + "\n")
        self.out.flush()


class _Group(click.Group):
    """Everything after '--' is a command to run under the trace, not a subcommand."""

    def parse_args(self, ctx: click.Context, args: List[str]) -> List[str]:
        if "--" in args:
            i = args.index("--")
            ctx.meta["ctrtrace.command"] = args[i + 1:]
            args = args[:i]
        return super().parse_args(ctx, args)


def collect_garbage() -> None:
    """Garbage collection back on after start-up (tracer.entry turns it off);
    what start-up made is frozen out of later collections, which then walk
    only what the trace itself makes."""
    if not gc.isenabled():
        gc.freeze()
        gc.enable()


def _fail(e: CtrtraceError) -> None:
    click.echo(f"ctrtrace: error: {e.message}", err=True)
    sys.exit(int(e.status))


def _quiet_broken_pipe() -> None:
    # the reader went away (e.g. '| head'): stop quietly
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    sys.exit(int(ExitStatus.OK))


def filter_options(f: Callable) -> Callable:
    """The filters, the same for the live view and for replay."""
    opts = [
        click.option("-p", "--pid", type=click.IntRange(min=1),
                     help="Only this process and its descendants."),
        click.option("-c", "--comm", metavar="NAME", help="Only tasks whose command name is NAME."),
        click.option("--ns-changes", is_flag=True,
                     help="Only events that create or enter namespaces, or differ from the parent's."),
        click.option("--container", metavar="ID|NAME",
                     help="Only processes of this container (an id prefix or a name)."),
        click.option("--containers-only", is_flag=True, help="Only processes in containers."),
        click.option("--tree", is_flag=True, help="Show the process tree (like ps --forest)."),
        click.option("--ns", "ns_table", is_flag=True, help="Show the namespace table (like lsns)."),
    ]
    for o in reversed(opts):
        f = o(f)
    return f


@click.group(cls=_Group, invoke_without_command=True,
             context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--json", "as_json", is_flag=True, help="Print JSON Lines instead of text.")
@click.option("-d", "--duration", type=click.FloatRange(min=0), metavar="SECONDS",
              help="Stop after this many seconds.")
@filter_options
@click.option("-w", "--write", "write", metavar="FILE", type=click.Path(dir_okay=False),
              help="Record every event to FILE (JSON Lines; .gz compresses), as the view prints.")
@click.option("--threads", is_flag=True, help="Also show the creation of threads.")
@click.option("--docker-socket", metavar="PATH",
              help="Docker Engine API socket for names and images "
                   "[default: $DOCKER_HOST or /var/run/docker.sock].")
@click.option("--no-docker", is_flag=True, help="Do not ask Docker; show container ids only.")
@click.option("--buffer-size", type=click.IntRange(min=1), default=DEFAULT_RINGBUF_BYTES >> 20,
              show_default=True, metavar="MiB", help="Size of the kernel's event buffer.")
@click.option("--linger", type=click.FloatRange(min=0), default=0.5, show_default=True,
              metavar="SECONDS", help="With a command: keep tracing this long after it exits.")
@click.pass_context
def main(ctx: click.Context, as_json: bool, duration: Optional[float], pid: Optional[int],
         comm: Optional[str], ns_changes: bool, container: Optional[str], containers_only: bool,
         tree: bool, ns_table: bool, write: Optional[str], threads: bool,
         docker_socket: Optional[str], no_docker: bool, buffer_size: int, linger: float) -> None:
    """Trace process creation, exec, exit and namespace changes, live.

    \b
      sudo ctrtrace                       trace until Ctrl-C
      sudo ctrtrace --ns-changes          only what creates or enters namespaces
      sudo ctrtrace -w trace.jsonl.gz     record (and still print) everything
      sudo ctrtrace -- docker run --rm alpine true
      ctrtrace replay trace.jsonl.gz --tree

    Each line shows the namespaces that are not the host's (PID 1's), e.g.
    [+mnt +uts +ipc +pid +net], and @the-container the process belongs to.
    A traced command's own output goes to stderr so that stdout carries events only.
    """
    if ctx.obj is None:
        ctx.obj = App()
    if ctx.invoked_subcommand is not None:
        collect_garbage()
        return
    app: App = ctx.obj
    command = ctx.meta.get("ctrtrace.command") or None
    recorder = None
    try:
        if as_json and (tree or ns_table):
            raise CtrtraceError("--tree and --ns print text: record with -w and replay with "
                                "--tree instead of --json", ExitStatus.USAGE)
        if command:
            import shutil

            if shutil.which(command[0]) is None:
                raise CtrtraceError(f"cannot run {command[0]}: command not found",
                                    ExitStatus.USAGE)
        opts = kernel_filtered(
            TraceOptions(threads=threads, ringbuf_bytes=buffer_size << 20, argv=list(sys.argv),
                         docker_socket=docker_socket, docker=not no_docker,
                         keep_exited=tree or ns_table, process_table=tree or ns_table),
            pid, comm, ns_changes, recording=bool(write))
        loader = app.loader_for(opts.load_config())  # loads on its own thread
        try:
            from .filters import FilterSpec
            from .render import JsonSink
            from .session import trace

            spec = FilterSpec(pid=pid, comm=comm, ns_changes=ns_changes, container=container,
                              containers_only=containers_only)
            if write:
                from .record import Recorder

                recorder = Recorder(write)
            view = JsonSink(app.out) if as_json else _LazyTextSink(app)
            result = trace(opts, view, spec=spec, recorder=recorder, duration=duration,
                           command=command, linger=linger, command_stdout=app.command_stdout(),
                           on_ready=app.ready, loader=loader)
        finally:
            loader.close()  # a no-op once the session has the programs
        if tree or ns_table:
            from . import views

            shown = views.selection(result.table, result.filter, result.shown_pids)
            app.lines(views.render(tree, ns_table, result.table, result.header.host_ns, shown))
    except CtrtraceError as e:
        _fail(e)
    except BrokenPipeError:
        _quiet_broken_pipe()
    except KeyboardInterrupt:  # before the trace began: nothing to summarise
        sys.exit(130)
    finally:
        if recorder is not None:
            recorder.close()
    if write:
        app.message(f"recorded to {write}")
    if result.command_status is not None:
        status = result.command_status
        sys.exit(status if status >= 0 else 128 - status)


class _LazyTextSink:
    """A TextSink whose renderer is made once the header (host namespaces) is known."""

    def __init__(self, app: App) -> None:
        self.app = app
        self.sink: Optional[TextSink] = None

    def header(self, h: Header) -> None:
        from .render import TextRenderer, TextSink

        self.sink = TextSink(TextRenderer(h.host_ns, h.start_ktime_ns), self.app.out, self.app.err)
        self.sink.header(h)

    def event(self, ev: ProcessEvent) -> None:
        assert self.sink is not None
        self.sink.event(ev)

    def flush(self) -> None:
        if self.sink:
            self.sink.flush()

    def summary(self, s: Summary) -> None:
        assert self.sink is not None
        self.sink.summary(s)


@main.command()
@click.argument("file", metavar="FILE")
@click.option("--json", "as_json", is_flag=True, help="Re-emit the (filtered) JSON Lines.")
@filter_options
@click.option("--since", metavar="TIME", help="From TIME: seconds from the start, or an ISO time.")
@click.option("--until", metavar="TIME", help="Up to TIME: seconds from the start, or an ISO time.")
@click.option("--skip-bad", is_flag=True, help="Go on past bad lines (they are counted).")
@click.pass_obj
def replay(app: App, file: str, as_json: bool, pid: Optional[int], comm: Optional[str],
           ns_changes: bool, container: Optional[str], containers_only: bool, tree: bool,
           ns_table: bool, since: Optional[str], until: Optional[str], skip_bad: bool) -> None:
    """Print a recording (FILE, or - for stdin) as the live view printed it.

    Needs no root and no BPF. The filters are the live command's; --tree and
    --ns show the process tree and the namespace table instead of events.
    """
    from .filters import FilterSpec
    from .replay import run_replay

    spec = FilterSpec(pid=pid, comm=comm, ns_changes=ns_changes, container=container,
                      containers_only=containers_only, since=since, until=until)
    try:
        run_replay(file, spec, app, as_json=as_json, tree=tree, ns_table=ns_table,
                   skip_bad=skip_bad)
    except CtrtraceError as e:
        _fail(e)
    except BrokenPipeError:
        _quiet_broken_pipe()


if __name__ == "__main__":
    main()
