"""Tracing as an unprivileged user with capabilities: the one error line says
what is really missing.

With CAP_BPF and CAP_PERFMON the programs load (measured on 6.18), but the
syscall tracepoints are attached through tracefs, whose root is mode 0700
root by default: libbpf cannot read their ids there (EACCES).  Reading it
takes CAP_DAC_READ_SEARCH (or CAP_DAC_OVERRIDE), or a tracefs mounted with a
mode or gid that lets the user in.
"""

from __future__ import annotations

import json
import os

import pytest
from conftest import NOBODY

TRACEFS = "/sys/kernel/tracing"


def test_tracefs_is_roots_only_here():
    # the premise of the next test: the default mode of tracefs's root
    st = os.stat(TRACEFS)
    assert st.st_mode & 0o005 == 0 and st.st_uid == 0, oct(st.st_mode)


@pytest.mark.bpf
def test_bpf_and_perfmon_without_tracefs_access_says_so(ctrtrace_as_nobody):
    r = ctrtrace_as_nobody("+bpf,+perfmon", "-d", "1")
    assert r.returncode == 3, (r.returncode, r.stderr)
    lines = r.stderr.splitlines()
    assert len(lines) == 1, r.stderr
    line = lines[0]
    assert "Traceback" not in r.stderr
    assert "not mounted" not in line and "superuser" not in line
    assert TRACEFS in line and "0700" in line
    assert "CAP_DAC_READ_SEARCH" in line
    assert r.stdout == ""


@pytest.mark.bpf
def test_bpf_perfmon_and_dac_read_search_are_enough(ctrtrace_as_nobody):
    r = ctrtrace_as_nobody("+bpf,+perfmon,+dac_read_search", "--json", "--no-docker",
                           "--", "/bin/true", "as-nobody")
    assert r.returncode == 0, r.stderr
    events = [json.loads(line) for line in r.stdout.splitlines()][1:-1]
    assert any(e["type"] == "exec" and e["argv"] == ["/bin/true", "as-nobody"]
               and e["uid"] == NOBODY for e in events), r.stdout[-2000:]


@pytest.mark.root
def test_no_capabilities_is_the_privileges_message(ctrtrace_as_nobody):
    r = ctrtrace_as_nobody("-all", "-d", "1")
    assert r.returncode == 3
    assert len(r.stderr.splitlines()) == 1 and "CAP_BPF" in r.stderr, r.stderr


# ctrtrace with its tracefs check passed (as where tracefs's directories can be
# searched but a tracepoint's id file is closed): libbpf's attach is refused
PAST_THE_CHECK = """
import sys
import tracer.kernel.host as host
host.ensure_tracefs = lambda: host.TRACEFS_PATHS[0]
from tracer.entry import main
sys.argv[0] = "ctrtrace"
main()
"""


@pytest.mark.bpf
def test_a_refused_attach_says_what_libbpf_could_not_do(ctrtrace_as_nobody):
    r = ctrtrace_as_nobody("+bpf,+perfmon", "-d", "1", code=PAST_THE_CHECK)
    assert r.returncode == 3, (r.returncode, r.stderr)
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    assert "cannot attach BPF program" in lines[0]
    assert "perf event ID: Permission denied" in lines[0]  # libbpf's reason
    assert "read access to tracefs" in lines[0]
