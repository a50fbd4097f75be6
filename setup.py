"""Packs what a checkout keeps at its root into the wheel as harness/_project/ (harness/project.py finds it).

A copy at build time rather than package-data: the folders hold no Python, and setuptools would treat
each one as an undeclared package. An editable install reads the checkout itself and copies nothing.
"""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
SHIPPED = ("tasks", "baselines/presets", "results/reference/published.yaml")  # MANIFEST.in lists them for the sdist


class BuildPy(build_py):
    def run(self):
        super().run()
        if self.editable_mode:
            return
        for name in SHIPPED:
            src, dest = ROOT / name, Path(self.build_lib) / "harness" / "_project" / name
            if src.is_dir():
                shutil.copytree(src, dest, dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
            else:
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, dest)


setup(cmdclass={"build_py": BuildPy})
