"""Files that are either complete or absent: write to a temporary name, fsync, rename."""

from __future__ import annotations

import glob
import json
import os
import shutil
import socket
from collections.abc import Callable
from pathlib import Path

from harness import faults
from harness.errors import HarnessError, first_line


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def writable_folder(path: Path, flag: str = "--out") -> Path:
    """Make `path` and prove a file can be written in it, now, before long work that would end by writing there."""
    import tempfile

    try:
        path.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=path).close()
    except OSError as e:
        raise HarnessError(f"{flag} {path}: cannot write there ({e.strerror or e})") from None
    return path


def write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def write_text(path: Path, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def write_json(path: Path, data) -> None:
    write_text(path, json.dumps(data, indent=2, sort_keys=True, allow_nan=False) + "\n")


def read_json(path: Path):
    """A file the harness wrote; a corrupt or foreign one is a one-line error naming it (a missing one an OSError)."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise HarnessError(f"{path}: not a JSON file the harness wrote ({first_line(e, 120)}); move it aside or delete it") from None


def weights_problem(path: Path) -> str | None:
    """Why a .safetensors file cannot be loaded whole (an unreadable header, data cut short), or None; reads the header only."""
    try:
        actual = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(8)
            if head == b"version ":  # the text file Git LFS leaves in a checkout that did not fetch the weights
                return "it is a Git LFS pointer, not the weights: fetch them (`git lfs pull` in its repository)"
            if len(head) < 8:
                return f"it holds {actual} bytes, no weights: an interrupted download or copy? Fetch it again"
            size = int.from_bytes(head, "little")
            if size > actual - 8:  # not safetensors (a Git LFS pointer, say): reading `size` bytes would fill the memory
                return f"its header does not read (it gives a header of {size} bytes; the file has {actual})"
            header = json.loads(f.read(size))
        end = max((t["data_offsets"][1] for k, t in header.items() if k != "__metadata__"), default=0)
    except (OSError, ValueError, KeyError, TypeError, IndexError) as e:
        return f"its header does not read ({first_line(e, 120)})"
    if actual < 8 + size + end:
        return f"cut short: {actual} bytes of the {8 + size + end} its header lists"
    return None


def read_record(path: Path, fields: dict[str, type | tuple]):
    """A JSON object with the given fields of the given types; anything else names the file and the field."""
    data = read_json(path)
    if not isinstance(data, dict):
        raise HarnessError(f"{path}: expected a JSON object, got {type(data).__name__}")
    for key, kind in fields.items():
        if key not in data:
            raise HarnessError(f"{path}: missing field {key!r}")
        value = data[key]
        if not isinstance(value, kind) or (isinstance(value, bool) and kind is int):
            names = " or ".join(k.__name__ for k in (kind if isinstance(kind, tuple) else (kind,)))
            raise HarnessError(f"{path}: field {key!r} should be {names}, got {type(value).__name__}")
    return data


def alive(pid: int) -> bool:
    """Whether a process of this host with that id still runs."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_dir(path: Path, fill: Callable[[Path], None]) -> None:
    """Fill a temporary folder, fsync its files, then rename it into place. The temporary name is
    per process (runs of a sweep write the shared base-evaluation cache at once); a killed writer's
    leftover is removed by the next. If another writer renames its copy in first, its copy stays."""
    mine = f".{path.name}.{socket.gethostname()}."
    for stale in path.parent.glob(f"{glob.escape(mine)}*.tmp"):
        pid = stale.name[len(mine) : -len(".tmp")]
        if not pid.isdigit() or not alive(int(pid)):
            shutil.rmtree(stale, ignore_errors=True)
    tmp = path.with_name(f"{mine}{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    fill(tmp)
    faults.point("save")
    mode = 0o666 & ~_umask()
    for file in tmp.rglob("*"):
        if file.is_file():
            with open(file, "rb") as f:
                os.fsync(f.fileno())
            os.chmod(file, mode)  # as the umask has it: safetensors writes its file 0600, unreadable to a shared project's group
    shutil.rmtree(path, ignore_errors=True)
    try:
        os.replace(tmp, path)
    except OSError:
        if not path.is_dir():
            raise
        shutil.rmtree(tmp, ignore_errors=True)  # a concurrent writer's copy landed between our two steps
    _fsync_dir(path.parent)
