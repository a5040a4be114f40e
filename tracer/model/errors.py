"""Exit statuses and the one exception type that reaches the user."""

from __future__ import annotations

import enum


class ExitStatus(enum.IntEnum):
    OK = 0
    ERROR = 1           # generic failure
    USAGE = 2           # bad command line (click's own code)
    PERMISSION = 3      # not root / missing capabilities
    ENVIRONMENT = 4     # no BTF, no tracefs, no libbpf, no BPF object
    BPF = 5             # the kernel refused or a BPF call failed
    BAD_INPUT = 6       # a trace file that cannot be read
    INTERRUPTED = 130


class CtrtraceError(Exception):
    """An error with a message meant for the user and an exit status."""

    def __init__(self, message: str, status: ExitStatus = ExitStatus.ERROR) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
