"""Failpoints for the fault-injection test: with HARNESS_FAULT=<name> or <name>@<stage> the process
kills itself (SIGKILL, no cleanup) on reaching that point. Unset, a point costs one lookup."""

from __future__ import annotations

import os
import signal

ENV = "HARNESS_FAULT"
POINTS = ("teacher", "train", "save", "eval", "record", "mlflow")
stage = 0  # the stage the runner is working on


def point(name: str) -> None:
    if os.environ.get(ENV) in (name, f"{name}@{stage}"):
        os.kill(os.getpid(), signal.SIGKILL)
