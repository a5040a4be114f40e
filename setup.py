"""Builds the CO-RE BPF object as part of the package build.

The object is compiled once, here, with clang and bpftool; an installed
ctrtrace only loads it (through libbpf) and needs no compiler at run time.
"""

import os
import subprocess

from setuptools import setup
from setuptools.command.build_py import build_py


class BuildPyWithBpf(build_py):
    def run(self) -> None:
        super().run()
        out = os.path.abspath(os.path.join(self.build_lib, "tracer", "bpf"))
        here = os.path.dirname(os.path.abspath(__file__))
        subprocess.check_call(["make", "-C", os.path.join(here, "bpf"), f"OUT={out}"])


setup(cmdclass={"build_py": BuildPyWithBpf})
