"""The ctrtrace command's entry point: it starts loading the BPF programs first.

Loading takes ~20 ms of libbpf and verifier time on a thread (C code, the
GIL released); importing click and the rest of ctrtrace takes longer.  When
the command line can only ask for a live trace with the default load
settings -- `sudo ctrtrace`, `--json`, `-w FILE`, `--tree`, `-- CMD`, ... --
loading starts here, before anything else is imported.  The command then
takes that load only if the options it parsed ask for exactly the same
LoadConfig; otherwise it discards it and loads anew.  A wrong guess costs
time, never a wrong trace.

The simplest of those command lines -- only the options in _FLAGS and
_VALUES, and "-- CMD" -- are parsed here and run without importing click,
which is a fifth of the start-up time.  Anything else, or anything these
few rules are unsure of, goes to click; tests/test_entry.py checks that both
read each such command line alike and that the tables match the click options.
"""

from __future__ import annotations

import gc
import os
import sys
from typing import Any, Dict, List, Optional

# Options that change what is loaded (loader.LoadConfig), and words that mean
# no live trace at all.  Anything after "--" is the traced command's.
_LOAD_OPTIONS = ("-p", "--pid", "-c", "--comm", "--ns-changes", "--threads", "--buffer-size")
_NO_TRACE = ("replay", "-h", "--help")


# The live command's options that parse_simple() reads, to their LiveArgs
# names: flags, then options that take a value.
_FLAGS = {"--json": "as_json", "--tree": "tree", "--ns": "ns_table",
          "--containers-only": "containers_only", "--no-docker": "no_docker"}
_VALUES = {"-w": "write", "--write": "write", "-d": "duration", "--duration": "duration",
           "--container": "container"}


def parse_simple(args: List[str]) -> Optional[Dict[str, Any]]:
    """LiveArgs' fields for a command line of _FLAGS, _VALUES and "-- CMD" only;
    None for anything else, and for any value click might read otherwise."""
    if os.environ.get("_CTRTRACE_COMPLETE"):  # click's shell completion
        return None
    head, command = args, None
    if "--" in args:
        i = args.index("--")
        head, command = args[:i], args[i + 1:]
        if not command:
            return None
    parsed: Dict[str, Any] = {"command": command}
    words = iter(head)
    for word in words:
        if word in _FLAGS:
            parsed[_FLAGS[word]] = True
            continue
        name, eq, value = word.partition("=")
        if name not in _VALUES or (eq and not name.startswith("--")):
            return None
        if not eq:
            value = next(words, "")
        if not value or value.startswith("-"):
            return None
        dest = _VALUES[name]
        if dest == "duration":
            try:
                seconds = float(value)
            except ValueError:
                return None
            if not 0 <= seconds < float("inf"):
                return None
            parsed[dest] = seconds
        elif dest == "write" and os.path.isdir(value):
            return None  # click says why
        else:
            parsed[dest] = value
    return parsed


def speculative(args: List[str]) -> bool:
    """Whether args can only mean a live trace with the default LoadConfig."""
    if os.geteuid() != 0:
        return False
    head = args[:args.index("--")] if "--" in args else args
    return not any(a in _NO_TRACE or a.startswith(_LOAD_OPTIONS) for a in head)


def _preload(args: List[str]):  # -> Optional[ProgramLoader]
    if not speculative(args):
        return None
    from .errors import CtrtraceError
    from .loader import LoadConfig, ProgramLoader

    try:
        return ProgramLoader(LoadConfig())
    except CtrtraceError:
        return None  # the command checks again and says what is wrong


def main(argv: Optional[List[str]] = None) -> None:
    # No cyclic garbage collection during start-up: imports make next to no
    # garbage, and collecting costs ~8% of their time.  The command turns it
    # back on (live.collect_garbage) once tracing has begun, or for replay.
    gc.disable()
    args = sys.argv[1:] if argv is None else argv
    loader = _preload(args)
    try:
        from .live import App

        simple = parse_simple(args) if loader is not None else None
        if simple is not None:
            from .live import LiveArgs, run

            try:
                run(App(preloaded=loader), LiveArgs(**simple))
            except KeyboardInterrupt:  # after the trace (click's path: its "Aborted!")
                sys.exit(130)
        else:
            from .cli import main as command

            command.main(args=args, obj=App(preloaded=loader))
    finally:
        if loader is not None:
            loader.close()  # joins the thread; unloads it unless the session took it
