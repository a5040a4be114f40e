#!/usr/bin/python3
"""bcc's execsnoop on tracepoints: a benchmark peer for bench/compare.py.

    sudo /usr/bin/python3 bench/bcc_execsnoop.py [-x] [--max-args N]

Why it exists: the execsnoop that Debian's bpfcc-tools ships (execsnoop-bpfcc,
bcc's tools/execsnoop.py) attaches a kprobe and a kretprobe to the execve
syscall, and our kernel is built without kprobes, so that tool cannot attach.
This is the same tool on the two syscall tracepoints instead, written here (not
copied) to the same design, so that it costs what bcc's execsnoop costs:

- BPF C compiled by bcc at start-up against kernel headers (that compile is
  most of its start-up time and memory);
- at syscalls:sys_enter_execve, one perf-buffer event per argument: the
  filename first, then argv[1..], up to --max-args (20), then "..." if there
  are more; up to 128 bytes of each;
- at syscalls:sys_exit_execve, one event with the return value and the
  (new) comm; the parent PID is read from task->real_parent->tgid;
- Python collects the argument events per PID and, on the return event, prints
  one line, flushed: PCOMM PID PPID RET ARGS. Failed execs are left out unless
  -x. When BPF reads a parent PID of 0 (headers of another kernel give wrong
  task_struct offsets), it is looked up in /proc, as upstream does, or "?".

The design's flaw is kept too: the perf buffer is per CPU, and an exec that
moves to another CPU between the two tracepoints can have its return event
read before its arguments, so its line has no ARGS (and the arguments wait for
that PID's next exec). Under bench/compare.py's 2-worker storm this is about
one exec in 2,000.

Only the output options a benchmark needs are kept (-x, --max-args). It stops
cleanly, with status 0, on SIGINT or SIGTERM, after printing what the buffers
still hold. Lost perf samples are reported on stderr by libbcc ("Possibly lost
N samples"), as for the upstream tool.

Kernel headers: the running kernel's, or the newest Debian pair installed or
unpacked by `./run setup`, as ctrtrace finds them for bcc
(tracer/kernel/kheaders.py).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from tracer.kernel import kheaders  # noqa: E402 - the repository's, beside this script

BPF_TEXT = r"""
#include <linux/sched.h>

#define ARG_LEN 128

enum kind { ARG_EVENT, RET_EVENT };

struct event {
    u32 pid;            /* tgid */
    u32 ppid;           /* real_parent's tgid */
    u32 kind;
    int ret;
    char comm[TASK_COMM_LEN];
    char arg[ARG_LEN];
};

BPF_PERF_OUTPUT(events);

static void send_arg(void *ctx, struct event *e, const void *str)
{
    bpf_probe_read_user_str(e->arg, sizeof(e->arg), str);
    events.perf_submit(ctx, e, sizeof(*e));
}

static void fill(struct event *e, u32 kind)
{
    struct task_struct *task = (struct task_struct *)bpf_get_current_task();

    e->pid = bpf_get_current_pid_tgid() >> 32;
    e->ppid = task->real_parent->tgid;
    e->kind = kind;
    bpf_get_current_comm(&e->comm, sizeof(e->comm));
}

TRACEPOINT_PROBE(syscalls, sys_enter_execve)
{
    struct event e = {};
    const char *const *argv = (const char *const *)args->argv;
    const char *p;

    fill(&e, ARG_EVENT);
    send_arg(args, &e, args->filename);
    #pragma unroll
    for (int i = 1; i < MAX_ARGS; i++) {
        p = NULL;
        bpf_probe_read_user(&p, sizeof(p), &argv[i]);
        if (!p)
            return 0;
        send_arg(args, &e, p);
    }
    /* more arguments than we send */
    __builtin_memcpy(e.arg, "...", 4);
    events.perf_submit(args, &e, sizeof(e));
    return 0;
}

TRACEPOINT_PROBE(syscalls, sys_exit_execve)
{
    struct event e = {};

    fill(&e, RET_EVENT);
    e.ret = args->ret;
    events.perf_submit(args, &e, sizeof(e));
    return 0;
}
"""

ARG_EVENT, RET_EVENT = 0, 1


def proc_ppid(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("PPid:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def main() -> None:
    ap = argparse.ArgumentParser(description="Trace exec() syscalls (bcc, tracepoints)")
    ap.add_argument("-x", "--fails", action="store_true", help="include failed exec()s")
    ap.add_argument("--max-args", type=int, default=20,
                    help="arguments sent per exec, the filename included (default 20)")
    args = ap.parse_args()

    # Before the import and the compile (a second or more): a stop then is a clean stop too.
    stopping = False

    def stop(signum, frame):
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)

    try:
        from bcc import BPF
    except ImportError:
        raise SystemExit("bcc_execsnoop: no bcc module: apt install python3-bpfcc, "
                         "and run it with /usr/bin/python3") from None

    if stopping:
        return
    cflags = [f"-DMAX_ARGS={args.max_args}"]
    headers = kheaders.find()
    if headers is None:
        raise SystemExit("bcc_execsnoop: no kernel headers: sudo ./run setup unpacks the nearest")
    os.environ.update(headers.env)
    cflags += headers.cflags
    b = BPF(text=BPF_TEXT, cflags=cflags)  # TRACEPOINT_PROBEs attach themselves

    out = sys.stdout.buffer
    out.write(b"%-16s %-7s %-7s %3s %s\n" % (b"PCOMM", b"PID", b"PPID", b"RET", b"ARGS"))
    out.flush()

    pending: dict[int, list[bytes]] = {}

    def on_event(cpu, data, size):
        e = b["events"].event(data)  # no reference of our own: bcc's teardown wants the last
        if e.kind == ARG_EVENT:
            pending.setdefault(e.pid, []).append(e.arg)
            return
        argv = pending.pop(e.pid, [])
        if e.ret != 0 and not args.fails:
            return
        ppid = e.ppid or proc_ppid(e.pid)
        line = b"%-16s %-7d %-7s %3d %s\n" % (e.comm, e.pid, b"%d" % ppid if ppid else b"?",
                                               e.ret, b" ".join(argv).replace(b"\n", b"\\n"))
        out.write(line)
        out.flush()

    b["events"].open_perf_buffer(on_event)
    while not stopping:
        b.perf_buffer_poll(200)  # a signal ends the wait; the timeout covers one just before it
    b.perf_buffer_poll(0)  # what the buffers still hold
    out.flush()


if __name__ == "__main__":
    try:
        main()
    except BrokenPipeError:
        sys.exit(0)
