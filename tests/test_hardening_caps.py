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
import shutil
import subprocess
import sys
import tempfile

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOBODY = 65534
TRACEFS = "/sys/kernel/tracing"


def _as_nobody(caps: str) -> list:
    return ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups",
            f"--inh-caps={caps}", f"--ambient-caps={caps}"]


@pytest.fixture(scope="module")
def ctrtrace_as_nobody():
    """run(caps, *args) -> ctrtrace run as uid 65534 with those capabilities.

    From the tree when that user can read it; else from a copy of the package
    and of click (not root, the command parses its options with click) in a
    directory it can read, with the base interpreter."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONDONTWRITEBYTECODE": "1",
           "CTRTRACE_CACHE_DIR": ""}
    probe = subprocess.run(_as_nobody("-all") + [sys.executable, "-c", "import tracer.cli"],
                           cwd=REPO, env=dict(env, PYTHONPATH=REPO), capture_output=True)
    copy = None
    if probe.returncode == 0:
        python, path = sys.executable, REPO
    else:
        copy = tempfile.mkdtemp(prefix="ctrtrace-nobody-")
        import click

        for pkg in (os.path.join(REPO, "tracer"), os.path.dirname(click.__file__)):
            shutil.copytree(pkg, os.path.join(copy, os.path.basename(pkg)),
                            ignore=shutil.ignore_patterns("__pycache__"))
        for root, dirs, files in os.walk(copy):
            for name in dirs + ["."]:
                os.chmod(os.path.join(root, name), 0o755)
            for name in files:
                os.chmod(os.path.join(root, name), 0o644)
        python, path = os.path.realpath(sys.executable), copy

    def run(caps: str, *args: str, code: str = "") -> subprocess.CompletedProcess:
        """ctrtrace ARGS; with code, python -c CODE ARGS."""
        how = ["-c", code] if code else ["-m", "tracer"]
        return subprocess.run(_as_nobody(caps) + [python, *how, *args],
                              cwd=path, env=dict(env, PYTHONPATH=path),
                              capture_output=True, text=True, timeout=60)

    yield run
    if copy:
        shutil.rmtree(copy)


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
import tracer.kernel.loader as loader
loader.ensure_tracefs = lambda: loader.TRACEFS_PATHS[0]
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
