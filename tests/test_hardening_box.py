"""vagrant/local-box takes its Debian mirrors from the host's own apt sources
(sources.list, sources.list.d/*.list one-line entries and *.sources deb822
paragraphs), unless CTRTRACE_BOX_MIRROR / CTRTRACE_BOX_SECURITY_MIRROR say
otherwise, and fails with one line when it finds none.  `local-box
--print-mirror --apt-dir DIR` prints what it would use and needs no root.

The mirrors here are made-up names under .invalid: no archive's host name
belongs in the repository.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

LOCAL_BOX = Path(__file__).resolve().parent.parent / "vagrant" / "local-box"
M = "http://mirror.example.invalid/debian"
S = "http://mirror.example.invalid/debian-security"
OTHER = "http://elsewhere.example.invalid/debian"


def print_mirror(apt_dir, **env) -> subprocess.CompletedProcess:
    e = {k: v for k, v in os.environ.items() if not k.startswith("CTRTRACE_BOX_")}
    e.update(env)
    return subprocess.run([str(LOCAL_BOX), "--print-mirror", "--apt-dir", str(apt_dir)],
                          env=e, capture_output=True, text=True, timeout=60)


def mirrors(apt_dir, **env):
    r = print_mirror(apt_dir, **env)
    assert r.returncode == 0, r.stderr
    out = dict(line.split(" ", 1) for line in r.stdout.splitlines())
    return out["mirror"], out["security"]


def apt(tmp_path, sources_list: str = "", **parts: str) -> Path:
    """An /etc/apt: sources.list, and sources.list.d files named by the keywords
    (with _ for the dot: debian_sources="..." is sources.list.d/debian.sources)."""
    d = tmp_path / "apt"
    (d / "sources.list.d").mkdir(parents=True)
    if sources_list:
        (d / "sources.list").write_text(sources_list)
    for name, text in parts.items():
        (d / "sources.list.d" / name.replace("_", ".", 1)).write_text(text)
    return d


def test_one_line_sources(tmp_path):
    d = apt(tmp_path, f"""\
# a comment, then what is not the box's: source packages, other suites and components
deb-src {OTHER} bookworm main
deb https://vendor.example.invalid/apt cloud-sdk-bookworm main
deb {OTHER} bookworm contrib non-free
deb [arch=amd64 signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] {M}/ bookworm main contrib
deb {OTHER} bookworm main
  deb {S} bookworm-security main    # indented, with a comment
deb {OTHER}-security bookworm-security main
""")
    assert mirrors(d) == (M, S)


def test_deb822_sources(tmp_path):
    d = apt(tmp_path, debian_sources=f"""\
Types: deb
URIs: {OTHER}
Suites: bookworm
Components: main
Enabled: no

# what this machine's debian.sources looks like
types: deb deb-src
# http://snapshot.example.invalid/archive/debian/20250520T000000Z
URIs: {M}
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs:
 {S}
 {OTHER}-security
Suites: bookworm-security
Components: contrib
 main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
""")
    assert mirrors(d) == (M, S)


def test_sources_list_first_then_the_directory_in_order(tmp_path):
    d = apt(tmp_path, f"deb {M} bookworm main\n",
            a_list=f"deb {OTHER} bookworm main\ndeb {S} bookworm-security main\n",
            b_sources=f"Types: deb\nURIs: {OTHER}-security\nSuites: bookworm-security\n"
                      "Components: main\n",
            # apt reads only *.list and *.sources
            **{"0_list.disabled": f"deb {OTHER}/0 bookworm main\n",
               "0_list.save": f"deb {OTHER}/0 bookworm-security main\n"})
    assert mirrors(d) == (M, S)


def test_security_only_in_a_deb822_file(tmp_path):
    d = apt(tmp_path, f"deb {M} bookworm main\n",
            security_sources=f"Types: deb\nURIs: {S}\nSuites: bookworm-security\n"
                             "Components: main\n")
    assert mirrors(d) == (M, S)


def test_a_host_of_another_debian_release_gives_its_archive(tmp_path):
    # a trixie host: the same archive serves bookworm
    d = apt(tmp_path, debian_sources=f"""\
Types: deb
URIs: https://vendor.example.invalid/apt
Suites: stable
Components: main

Types: deb
URIs: {M}
Suites: trixie trixie-updates
Components: main

Types: deb
URIs: {S}
Suites: trixie-security
Components: main
""")
    assert mirrors(d) == (M, S)


def test_the_environment_overrides(tmp_path):
    d = apt(tmp_path, f"deb {M} bookworm main\ndeb {S} bookworm-security main\n")
    assert mirrors(d, CTRTRACE_BOX_MIRROR=OTHER) == (OTHER, S)
    assert mirrors(d, CTRTRACE_BOX_SECURITY_MIRROR=OTHER + "-security") == (M, OTHER + "-security")
    empty = apt(tmp_path / "empty")
    assert mirrors(empty, CTRTRACE_BOX_MIRROR=M, CTRTRACE_BOX_SECURITY_MIRROR=S) == (M, S)


@pytest.mark.parametrize("sources,missing", [
    ("", "CTRTRACE_BOX_MIRROR"),
    # an Ubuntu host: nothing that serves Debian's bookworm
    ("deb http://ubuntu-mirror.example.invalid/ubuntu noble main universe\n"
     "deb http://ubuntu-mirror.example.invalid/ubuntu noble-security main\n",
     "CTRTRACE_BOX_MIRROR"),
    (f"deb {M} bookworm main\n", "CTRTRACE_BOX_SECURITY_MIRROR"),
    ("deb cdrom:[Debian GNU/Linux 12]/ bookworm main\n", "CTRTRACE_BOX_MIRROR"),
])
def test_nothing_found_is_one_clear_line(tmp_path, sources, missing):
    d = apt(tmp_path, sources)
    r = print_mirror(d)
    assert r.returncode != 0
    lines = r.stderr.splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("local-box: error:") and missing in lines[0]
    assert "Traceback" not in r.stderr and r.stdout == ""


def test_this_hosts_sources(tmp_path):
    """Whatever /etc/apt holds: mirrors named there, or the one line."""
    r = print_mirror("/etc/apt")
    if r.returncode != 0:
        assert len(r.stderr.splitlines()) == 1 and "CTRTRACE_BOX_" in r.stderr
        return
    text = ""
    for p in [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*"))]:
        if p.is_file() and p.suffix in (".list", ".sources"):
            text += p.read_text(errors="replace")
    for line in r.stdout.splitlines():
        uri = line.split(" ", 1)[1]
        assert uri in text or uri + "/" in text, (uri, text)


def test_no_archive_host_names_in_local_box():
    text = LOCAL_BOX.read_text()
    names = re.findall(r"[a-z0-9.-]+\.(?:debian\.org|ubuntu\.com|debian\.net)", text)
    assert not names, names
