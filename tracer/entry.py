"""The ctrtrace command's entry point: it starts loading the BPF programs first.

Loading is libbpf and verifier time on a thread (C code, the GIL
released), and importing click and the rest of ctrtrace takes longer
(bench/README.md, "Where the code's choices come from").  So
when the command line might be a live trace with the default load settings
-- `sudo ctrtrace`, `--json`, `-w FILE`, `--tree`, `-- CMD`, ... -- loading
starts here, before anything else is imported, and click (tracer.cli, the
one parser) reads the command line meanwhile.

speculative() is a guess, not a parser: it only looks for words that rule
the default load out.  The command takes the preloaded programs only if the
options click parsed ask for exactly the same LoadConfig (live.App.loader_for);
otherwise it discards them and loads anew.  A wrong guess costs time, never
a wrong trace.
"""

from __future__ import annotations

import gc
import io
import os
import sys

# Options that change what is loaded (host.LoadConfig), as they begin on the
# command line ("--pid=1", "-p1" and "-cbash" included), and words that mean
# no live trace at all.  Anything after "--" is the traced command's.
_LOAD_OPTIONS = ("-p", "--pid", "-c", "--comm", "--ns-changes", "--threads", "--buffer-size",
                 "--backend")
_NO_TRACE = ("replay", "-h", "--help", "--version")
_COMPLETE_VAR = "_CTRTRACE_COMPLETE"  # click's shell completion: no trace either

PROG_NAME = "ctrtrace"


def speculative(args: list[str]) -> bool:
    """Whether args might be a live trace with the default LoadConfig."""
    if os.geteuid() != 0 or os.environ.get(_COMPLETE_VAR):
        return False
    head = args[:args.index("--")] if "--" in args else args
    return not any(arg in _NO_TRACE or arg.startswith(_LOAD_OPTIONS) for arg in head)


def _preload(args: list[str]):  # -> Optional[loader.Loader]
    if not speculative(args):
        return None
    from .kernel.host import LoadConfig
    from .kernel.loader import start
    from .model.errors import CtrtraceError

    try:
        return start(LoadConfig())
    except CtrtraceError:
        return None  # the command checks again and says what is wrong


def main(argv: list[str] | None = None) -> None:
    # No cyclic garbage collection during start-up: imports make next to no
    # garbage, and collecting only slows them down (bench/README.md).  The
    # command turns it back on (live.collect_garbage) once tracing has begun,
    # or for replay.
    gc.disable()
    # What a traced process chose is escaped to printable characters, which a
    # terminal of another encoding than UTF-8 (a Latin-1 locale, or C without
    # Python's UTF-8 mode) may not have: those are written as \u escapes,
    # not an error.
    for stream in (sys.stdout, sys.stderr):
        if isinstance(stream, io.TextIOWrapper):
            stream.reconfigure(errors="backslashreplace")
    args = sys.argv[1:] if argv is None else argv
    loader = _preload(args)
    try:
        from .cli import main as command
        from .commands.live import App

        command.main(args=args, prog_name=PROG_NAME, obj=App(preloaded=loader))
    finally:
        if loader is not None:
            loader.close()  # joins the thread; unloads it unless the session took it
