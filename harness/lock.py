"""One writer per run folder: a lock file naming its holder, taken over when the holder is dead."""

from __future__ import annotations

import json
import os
import socket
import time
from contextlib import contextmanager
from pathlib import Path

from harness.errors import HarnessError
from harness.rundir import RunDir
from harness.storage import alive


def _describe(holder: dict) -> str:
    started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(holder.get("started", 0)))
    return f"pid {holder.get('pid')} on host {holder.get('host')}, started {started}"


@contextmanager
def run_lock(run_dir: Path):
    path = RunDir(run_dir).lock
    me = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()}
    for _ in range(2):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            try:
                holder = json.loads(path.read_text() or "{}")
            except (OSError, ValueError):
                holder = {}
            if holder.get("host") == me["host"] and holder.get("pid") and not alive(holder["pid"]):
                path.unlink(missing_ok=True)  # a dead process's lock: take it over
                continue
            if not holder:
                raise HarnessError(f"{run_dir} is locked by an unreadable {path}; delete it if no run is writing there") from None
            hint = "" if holder.get("host") == me["host"] else f" (if that process is gone, delete {path})"
            raise HarnessError(f"{run_dir} is being written by another run: {_describe(holder)}{hint}") from None
        with os.fdopen(fd, "w") as f:
            json.dump(me, f)
        break
    try:
        yield
    finally:
        path.unlink(missing_ok=True)
