"""The one error type users see: a clear line, exit code 2, never a bare traceback."""

from __future__ import annotations

import difflib


class HarnessError(Exception):
    """Bad input or a failed precondition, explained in one line."""

    exit_code = 2


class Terminated(HarnessError):
    """SIGTERM (a cluster's wall-time limit, a preemption) stopped training after saving a checkpoint."""

    exit_code = 143  # 128 + SIGTERM, as a shell reports a process the signal ended


def distinct(flag: str, values: list) -> None:
    """Each value once: a repeated seed or grid value would be the same run, in the same folder, twice."""
    if not values:
        raise HarnessError(f"{flag}: give at least one value")
    repeated = [v for i, v in enumerate(values) if v in values[:i]]
    if repeated:
        raise HarnessError(f"{flag} lists {repeated[0]} twice; each value once")


def first_line(error: BaseException, limit: int = 200) -> str:
    """An exception as one line of a message: its first line, cut at `limit`; its type where it says nothing."""
    text = str(error).strip()
    return text.splitlines()[0][:limit] if text else type(error).__name__


def did_you_mean(name: str, known) -> str:
    close = difflib.get_close_matches(name, list(known), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def unknown(kind: str, name: str, known, prefer=()) -> HarnessError:
    """`prefer`: the names most likely meant (e.g. the suite's own), suggested before the rest."""
    known, prefer = sorted(set(known)), sorted(set(prefer))
    hint = did_you_mean(name, prefer) or did_you_mean(name, known)
    shown = prefer or known
    listing = ", ".join(shown[:12]) + (f" and {len(known) - 12} more" if len(shown) > 12 else "")
    return HarnessError(f"unknown {kind} {name!r}{hint}; known: {listing or 'none'}")
