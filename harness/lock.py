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
    for _ in range(3):
        if _create(path, me):
            break
        holder = _read(path)
        if holder is None:  # released between our two steps
            continue
        if holder.get("host") == me["host"] and holder.get("pid") and not alive(holder["pid"]):
            _take_over(path, holder)  # a dead process's lock
            continue
        if not holder:
            raise HarnessError(f"{run_dir} is locked by an unreadable {path}; delete it if no run is writing there")
        hint = "" if holder.get("host") == me["host"] else f" (if that process is gone, delete {path})"
        raise HarnessError(f"{run_dir} is being written by another run: {_describe(holder)}{hint}")
    else:
        raise HarnessError(f"{run_dir}: another run is taking over its lock at this moment; rerun in a moment")
    try:
        yield
    finally:
        path.unlink(missing_ok=True)


def _create(path: Path, me: dict) -> bool:
    """The lock with its holder written in, or False if one exists: the file appears whole (link is atomic and fails
    on an existing name), so a second starter never reads a half-written lock as unreadable."""
    draft = path.with_name(f"{path.name}.{me['host']}.{me['pid']}")
    draft.write_text(json.dumps(me))
    try:
        os.link(draft, path)
        return True
    except FileExistsError:
        return False
    except OSError:  # no hard links here (vfat, exFAT, some network and bucket mounts): create, then fill
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w") as f:
            json.dump(me, f)
        return True
    finally:
        draft.unlink(missing_ok=True)


def _read(path: Path) -> dict | None:
    """The holder ({} if unreadable or not one the harness wrote), or None if the lock is gone."""
    try:
        holder = json.loads(path.read_text() or "{}")
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {}
    if not (isinstance(holder, dict) and isinstance(holder.get("pid"), int) and 0 < holder["pid"] < 2**31
            and isinstance(holder.get("host"), str) and isinstance(holder.get("started", 0), int | float)):
        return {}
    return holder


def _take_over(path: Path, dead: dict) -> None:
    """Remove the dead holder's lock, and only it: moved aside first (one mover wins), and put back if another
    starter's fresh lock stood there by then (two starters that both saw the dead one must not both hold it)."""
    aside = path.with_name(f"{path.name}.stale.{os.getpid()}")
    try:
        os.rename(path, aside)
    except FileNotFoundError:
        return
    if _read(aside) != dead:
        try:
            os.link(aside, path)  # a live lock: back where it was
        except FileExistsError:
            pass
    aside.unlink(missing_ok=True)
