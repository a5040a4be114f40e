"""Reads a task's fields at offsets from the running kernel's BTF, in a bcc
program on sched_process_exec, and prints what it read as JSON.

Run by tests/test_bcc.py in a child process (bcc compiles with LLVM in
process, and a compiler abort must not take the test run with it):

    python3 bcc_offsets.py COMMAND...
"""

from __future__ import annotations

import ctypes
import json
import os
import subprocess
import sys

from bcc import BPF

from tracer.kernel import kheaders
from tracer.kernel.btf import Btf

FIELDS = {"TGID": "task_struct.tgid", "REAL_PARENT": "task_struct.real_parent",
          "NSPROXY": "task_struct.nsproxy", "NSPROXY_MNT": "nsproxy.mnt_ns",
          "MNT_INUM": "mnt_namespace.ns.inum", "NSPROXY_UTS": "nsproxy.uts_ns",
          "UTS_INUM": "uts_namespace.ns.inum"}

PROGRAM = r"""
BPF_ARRAY(out, u64, 8);

static u64 read_u32(void *at) { u32 v = 0; bpf_probe_read_kernel(&v, 4, at); return v; }
static void *read_ptr(void *at) { void *v = 0; bpf_probe_read_kernel(&v, 8, at); return v; }

TRACEPOINT_PROBE(sched, sched_process_exec) {
    char *task = (char *)bpf_get_current_task();
    char *nsproxy = read_ptr(task + OFF_NSPROXY);
    u64 values[6] = {
        read_u32(task + OFF_TGID),
        bpf_get_current_pid_tgid() >> 32,
        read_u32((char *)read_ptr(task + OFF_REAL_PARENT) + OFF_TGID),
        read_u32((char *)read_ptr(nsproxy + OFF_NSPROXY_MNT) + OFF_MNT_INUM),
        read_u32((char *)read_ptr(nsproxy + OFF_NSPROXY_UTS) + OFF_UTS_INUM),
        args->pid,
    };
    if (values[1] != WANTED_PID)
        return 0;
    for (int i = 0; i < 6; i++) {
        int k = i;
        out.update(&k, &values[i]);
    }
    return 0;
}
"""


def main() -> None:
    headers = kheaders.find()
    if headers is None:
        sys.exit("no kernel headers")
    os.environ.update(headers.env)
    btf = Btf.of_kernel()
    offsets = {name: btf.offset(path) for name, path in FIELDS.items()}
    # the command waits on a pipe until the program is attached, then execs
    r, w = os.pipe()
    child = subprocess.Popen(["sh", "-c", 'read x; exec "$@"', "sh", *sys.argv[1:]],
                             stdin=r)
    os.close(r)
    cflags = [*headers.cflags, *(f"-DOFF_{k}={v}" for k, v in offsets.items()),
              f"-DWANTED_PID={child.pid}"]
    bpf = BPF(text=PROGRAM, cflags=cflags)
    os.write(w, b"go\n")
    os.close(w)
    child.wait()
    values = [bpf["out"][ctypes.c_int(i)].value for i in range(6)]
    print(json.dumps({"pid": child.pid, "parent": os.getpid(), "offsets": offsets,
                      "headers": headers.version, "tgid": values[0], "helper_tgid": values[1],
                      "parent_tgid": values[2], "mnt": values[3], "uts": values[4],
                      "tracepoint_pid": values[5]}))


if __name__ == "__main__":
    main()
