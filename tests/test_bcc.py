"""bcc reads the running kernel's structs right at offsets from its BTF
(kernel/btf.py), with whatever headers are installed serving bcc's own
prelude (kernel/kheaders.py): what a bcc program reads of an exec'ing task
is what the kernel's helpers and /proc say."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tracer.kernel import kheaders

pytestmark = pytest.mark.bpf
PROG = os.path.join(os.path.dirname(os.path.abspath(__file__)), "progs", "bcc_offsets.py")


def test_headers_are_found():
    headers = kheaders.find()
    assert headers is not None, "no kernel headers: ./run setup installs the nearest"
    if not headers.running:
        source = headers.env["BCC_KERNEL_SOURCE"]
        assert os.path.isdir(os.path.join(source, "include", "linux"))
        assert all(os.path.isdir(flag[2:]) for flag in headers.cflags)


def test_a_task_read_at_btf_offsets_is_the_kernels():
    # the command moves into a new uts namespace and says where it is
    r = subprocess.run([sys.executable, PROG, "unshare", "--uts", "sh", "-c",
                        "readlink /proc/self/ns/uts /proc/self/ns/mnt"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    *said, last = r.stdout.splitlines()
    got = json.loads(last)
    uts, mnt = said
    # the task's own pid, by the program's read and by the helper and the tracepoint
    assert got["tgid"] == got["helper_tgid"] == got["tracepoint_pid"] == got["pid"]
    assert got["parent_tgid"] == got["parent"]  # task->real_parent->tgid
    assert f"uts:[{got['uts']}]" == uts and f"mnt:[{got['mnt']}]" == mnt
    assert uts != os.readlink("/proc/self/ns/uts")  # the new one, not the host's
