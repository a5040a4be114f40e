"""The live command's options: click reads them into one LiveOptions, from
which the load, the trace's options and the filters are derived."""

from __future__ import annotations

import dataclasses

from tracer.cli import main
from tracer.commands.filters import FilterSpec
from tracer.commands.live import App, LiveOptions
from tracer.kernel.host import KernelFilters, LoadConfig


def parsed(*args: str) -> LiveOptions:
    ctx = main.make_context("ctrtrace", list(args))
    return LiveOptions(**ctx.params)


def test_click_reads_the_command_line_into_the_options():
    assert parsed() == LiveOptions()
    o = parsed("--json", "-d", "2.5", "-c", "runc", "--container=web", "--buffer-size", "8",
               "--color", "never", "--no-docker")
    assert (o.as_json, o.duration, o.comm, o.container, o.buffer_size, o.color, o.no_docker) == \
        (True, 2.5, "runc", "web", 8, "never", True)


def test_every_option_has_one_home():
    """The click parameters and the options' fields are the same names (what
    follows "--" is the one field no option sets)."""
    fields = {f.name for f in dataclasses.fields(LiveOptions)} - {"command"}
    params = {p.name for p in main.params if not p.is_eager}  # not --help, --version
    assert params == fields


def test_the_kernel_runs_the_filters_unless_recording():
    o = parsed("-p", "5", "--comm", "sh", "--ns-changes", "--threads", "--buffer-size", "8")
    assert o.load_config() == LoadConfig(KernelFilters(pid=5, comm="sh", ns_changes=True),
                                         threads=True, ringbuf_bytes=8 << 20)
    spec = FilterSpec.of(pid=5, comm="sh", ns_changes=True)
    assert o.filter_spec() == spec
    recording = parsed("-p", "5", "--comm", "sh", "--ns-changes", "-w", "t.jsonl")
    assert recording.load_config() == LoadConfig()  # the recording gets every event
    assert recording.filter_spec() == spec          # the view still shows only these


def test_trace_options_follow_the_options():
    o = parsed("--tree", "--docker-socket", "/run/d.sock", "--no-docker")
    t = o.trace_options(["ctrtrace", "--tree"])
    assert (t.argv, t.docker_socket, t.docker, t.keep_exited, t.process_table) == \
        (["ctrtrace", "--tree"], "/run/d.sock", False, True, True)
    assert parsed("--container", "web", "--containers-only").filter_spec() == \
        FilterSpec.of(container="web", containers_only=True)


class _Preloaded:
    def __init__(self, options: LoadConfig) -> None:
        self.options, self.closed = options, False

    def close(self) -> None:
        self.closed = True


def test_the_preload_is_taken_only_for_the_same_load():
    pre = _Preloaded(LoadConfig())
    assert App(preloaded=pre).loader_for(parsed("--json", "-w", "t.jsonl").load_config()) is pre
    assert not pre.closed

