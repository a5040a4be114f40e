"""bcc's compiler, in a process of its own (tracer/kernel/bcc.py starts it).

bcc compiles with LLVM inside the calling process, and LLVM aborts the
process on some errors: here that ends this child, and ctrtrace says what
failed.  The child only compiles: it reads a JSON request on standard input
(source, cflags, programs, env) and writes each program's instructions,
hex-encoded, as one JSON object on standard output; the compiler's messages
go to standard error.  Nothing is loaded into the kernel here.
"""

from __future__ import annotations

import json
import os
import sys


def main() -> int:
    request = json.load(sys.stdin)
    os.environ.update(request["env"])
    try:
        from bcc import BPF
    except ImportError as e:
        print(f"cannot import bcc: {e}", file=sys.stderr)
        return 3
    try:
        bpf = BPF(src_file=request["source"].encode(), cflags=request["cflags"])
        out = {name: bpf.dump_func(name.encode()).hex() for name in request["programs"]}
    except Exception as e:  # bcc raises Exception for a failed compile
        print(f"{e}", file=sys.stderr)
        return 1
    json.dump(out, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
