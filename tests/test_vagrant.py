"""The Vagrantfile stays valid for every provider setting users can choose.
(The VM itself is exercised by vagrant/vm-smoke, which takes minutes.)"""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

VAGRANT_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "vagrant")

def validate(tmp_path, **env) -> subprocess.CompletedProcess:
    assert shutil.which("vagrant"), "vagrant is not installed: apt-get install vagrant vagrant-libvirt"
    # its state beside the test, not in the checkout (which the user may not own)
    e = dict(os.environ, VAGRANT_HOME=str(tmp_path / "home"),
             VAGRANT_DOTFILE_PATH=str(tmp_path / "dot"), **env)
    return subprocess.run(["vagrant", "validate"], cwd=VAGRANT_DIR, env=e,
                          capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("env", [
    {},
    {"VAGRANT_DEFAULT_PROVIDER": "libvirt", "CTRTRACE_LIBVIRT_DRIVER": "qemu",
     "CTRTRACE_VM_CONSOLE": "/tmp/ctrtrace-console.log", "CTRTRACE_BOX": "local/ctrtrace-bookworm"},
    {"CTRTRACE_VM_CPUS": "4", "CTRTRACE_VM_MEMORY": "8192"},
])
def test_vagrantfile_validates(tmp_path, env):
    r = validate(tmp_path, **env)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "validated successfully" in r.stdout


def test_a_bad_setting_is_caught(tmp_path):
    r = validate(tmp_path, CTRTRACE_VM_CPUS="many")
    assert r.returncode != 0
