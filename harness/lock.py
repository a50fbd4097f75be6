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


_HELD: set[Path] = set()  # the locks this process holds: a lock naming our pid is stale only if it is none of them


@contextmanager
def run_lock(run_dir: Path):
    path = RunDir(run_dir).lock
    me = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time(), "pidns": _pid_namespace()}
    for _ in range(3):
        if _create(path, me):
            break
        holder = _read(path)
        if holder is None:  # released between our two steps
            continue
        if holder.get("host") == me["host"] and holder.get("pid") and path not in _HELD and _gone(holder, me):
            _take_over(path, holder)  # a dead process's lock
            continue
        if not holder:
            raise HarnessError(f"{run_dir} is locked by an unreadable {path}; delete it if no run is writing there")
        raise HarnessError(f"{run_dir} is being written by another run: {_describe(holder)} (if that process is gone, delete {path})")
    else:
        raise HarnessError(f"{run_dir}: another run is taking over its lock at this moment; rerun in a moment")
    _HELD.add(path)
    try:
        yield
    finally:
        _HELD.discard(path)
        path.unlink(missing_ok=True)


def _gone(holder: dict, me: dict) -> bool:
    """Whether the holder (of this host) has ended. A pid names a process only within its pid namespace: containers
    sharing a host name and a folder each have a pid 1, so a lock from another namespace (or one that does not say)
    is gone only if no process has its pid here. Within ours, a pid may have been given again since the lock was
    taken: it holds the lock only if it is not ours and its process began before the lock."""
    pid = holder["pid"]
    if not alive(pid):
        return True
    if not me["pidns"] or holder.get("pidns") != me["pidns"]:
        return False
    if pid == me["pid"]:  # ours, and not held (checked by the caller): an earlier process's
        return True
    began = process_start(pid)
    return began is not None and began > holder.get("started", 0) + 1  # + 1 s: the clock's and the kernel's rounding


def _pid_namespace() -> str | None:
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return None


def process_start(pid: int) -> float | None:
    """When a process began (seconds since the epoch), where the system says (Linux's /proc), else None."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        ticks = int(stat.rsplit(")", 1)[1].split()[19])  # field 22, after the name (which may hold spaces)
        boot = next(float(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines() if line.startswith("btime"))
        return boot + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return None


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
            and isinstance(holder.get("host"), str) and isinstance(holder.get("started", 0), int | float)
            and isinstance(holder.get("pidns"), str | None)):
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
