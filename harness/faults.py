"""Failpoints for the fault-injection test: with HARNESS_FAULT=<name> or <name>@<stage> the process
kills itself (SIGKILL, no cleanup) on reaching that point. Unset, a point costs one lookup.
With HARNESS_FAULT_ONCE=<file> as well, only the first process to get there dies (it creates the
file): in a sweep, one trial is killed and its retry runs through. HARNESS_FAULT_SIGNAL=SIGINT sends a Ctrl-C
instead (tests/test_output.py: what an interrupted run prints)."""

from __future__ import annotations

import os
import signal

ENV = "HARNESS_FAULT"
ONCE = "HARNESS_FAULT_ONCE"
SIGNAL = "HARNESS_FAULT_SIGNAL"
POINTS = ("teacher", "train", "save", "eval", "record", "mlflow")
stage = 0  # the stage the runner is working on


def point(name: str) -> None:
    if os.environ.get(ENV) in (name, f"{name}@{stage}") and _first():
        os.kill(os.getpid(), signal.Signals[os.environ.get(SIGNAL, "SIGKILL")])


def _first() -> bool:
    marker = os.environ.get(ONCE)
    if not marker:
        return True
    try:
        fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return False
    os.write(fd, f"{os.getpid()}\n".encode())
    os.close(fd)
    return True
