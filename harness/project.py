"""Where the project's shipped files are, in a checkout and in an installed wheel.

The cards, suites, task data and toy base (tasks/), the presets (baselines/presets/) and the
published numbers (results/reference/) sit at the repository root of a checkout. A wheel has no
repository root, so setup.py packs the same tree into harness/_project/ (package data); both
layouts are found from this file, never from the current folder, so `harness` works from anywhere.
"""

from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent
BUNDLED = _PACKAGE / "_project"  # only an installed wheel has it


def root() -> Path:
    """The folder holding tasks/, baselines/presets/ and results/reference/."""
    return BUNDLED if BUNDLED.is_dir() else _PACKAGE.parent


def path(*parts: str) -> Path:
    """A shipped file or folder, e.g. path("tasks") or path("results", "reference", "published.yaml")."""
    return root().joinpath(*parts)
