"""The ctrtrace command: a thin click layer over tracer.live and tracer.replay.

The one parser of the command line: the live command's parameters become one
live.LiveOptions (same names) and go to live.run(); replay's go to
replay.run_replay().  Shell completion is click's (_CTRTRACE_COMPLETE).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from . import __version__
from .commands.live import (
    COLOR_MODES,
    App,
    LiveOptions,
    collect_garbage,
    quiet_broken_pipe,
    run,
    stdout_failed,
)
from .kernel.host import BACKENDS, DEFAULT_RINGBUF_BYTES
from .model.errors import CtrtraceError

__all__ = ["App", "main"]


class _Group(click.Group):
    """Everything after '--' is a command to run under the trace, not a subcommand."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if "--" in args:
            i = args.index("--")
            ctx.meta["ctrtrace.command"] = args[i + 1:]
            args = args[:i]
        return super().parse_args(ctx, args)


def filter_options(f: Callable) -> Callable:
    """The filters, the same for the live view and for replay."""
    opts = [
        click.option("-p", "--pid", type=click.IntRange(min=1),
                     help="Only this process and its descendants."),
        click.option("-c", "--comm", metavar="NAME", help="Only tasks whose command name is NAME."),
        click.option("--ns-changes", is_flag=True,
                     help="Only events that create or enter namespaces, "
                          "or differ from the parent's."),
        click.option("--container", metavar="ID|NAME",
                     help="Only processes of this container (an id prefix or a name)."),
        click.option("--containers-only", is_flag=True, help="Only processes in containers."),
        click.option("--tree", is_flag=True, help="Show the process tree (like ps --forest)."),
        click.option("--ns", "ns_table", is_flag=True,
                     help="Show the namespace table (like lsns)."),
        click.option("--explain", is_flag=True,
                     help="Tell how each container (or new pid namespace) started, step by step."),
        click.option("--dot", metavar="FILE", type=click.Path(dir_okay=False, readable=False),
                     help="Write the process tree as a Graphviz diagram (FILE.svg: drawn by dot)."),
        click.option("--html", metavar="FILE", type=click.Path(dir_okay=False, readable=False),
                     help="Write the trace as a page to look at: a timeline, offline."),
    ]
    for o in reversed(opts):
        f = o(f)
    return f


def color_option(f: Callable) -> Callable:
    """--color, the same for the live view and for replay."""
    return click.option(
        "--color", type=click.Choice(COLOR_MODES), default="auto", show_default=True,
        help="Colour new namespaces, failed execs, deaths by signal and lost events "
             "in the text view; auto: on a terminal, unless NO_COLOR is set. "
             "JSON and recordings are never coloured.")(f)


@click.group(cls=_Group, invoke_without_command=True,
             context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="ctrtrace",
                      message="%(prog)s %(version)s")
@click.option("--json", "as_json", is_flag=True, help="Print JSON Lines instead of text.")
@click.option("-d", "--duration", type=click.FloatRange(min=0), metavar="SECONDS",
              help="Stop after this many seconds.")
@filter_options
@click.option("-w", "--write", "write", metavar="FILE",
              type=click.Path(dir_okay=False, readable=False),
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
@click.option("--backend", type=click.Choice(BACKENDS), default="auto", show_default=True,
              help="BPF toolchain: core (libbpf CO-RE), bcc, or auto (core where it can load).")
@color_option
@click.pass_context
def main(ctx: click.Context, **params: Any) -> None:
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
    run(ctx.obj, LiveOptions(command=ctx.meta.get("ctrtrace.command") or None, **params))


@main.command()
@click.argument("file", metavar="FILE")
@click.option("--json", "as_json", is_flag=True, help="Re-emit the (filtered) JSON Lines.")
@filter_options
@click.option("--since", metavar="TIME", help="From TIME: seconds from the start, or an ISO time.")
@click.option("--until", metavar="TIME", help="Up to TIME: seconds from the start, or an ISO time.")
@click.option("--skip-bad", is_flag=True, help="Go on past bad lines (they are counted).")
@color_option
@click.pass_obj
def replay(app: App, file: str, as_json: bool, pid: int | None, comm: str | None,
           ns_changes: bool, container: str | None, containers_only: bool, tree: bool,
           ns_table: bool, explain: bool, dot: str | None, html: str | None, since: str | None,
           until: str | None, skip_bad: bool, color: str) -> None:
    """Print a recording (FILE, or - for stdin) as the live view printed it.

    Needs no root and no BPF. The filters are the live command's; --tree and
    --ns show the process tree and the namespace table instead of events;
    --explain tells each container start's story (from the whole recording).
    """
    from .commands.filters import FilterSpec
    from .commands.replay import run_replay

    spec = FilterSpec.of(pid=pid, comm=comm, ns_changes=ns_changes, container=container,
                         containers_only=containers_only, since=since, until=until)
    try:
        run_replay(file, spec, app, as_json=as_json, tree=tree, ns_table=ns_table,
                   explain=explain, dot=dot, html=html, skip_bad=skip_bad,
                   color=app.color(color))
    except CtrtraceError as e:
        app.fail(e)
    except BrokenPipeError:
        quiet_broken_pipe()
    except OSError as e:  # standard output fails (a full disk, /dev/full)
        app.fail(stdout_failed(app, e))


if __name__ == "__main__":
    main()
