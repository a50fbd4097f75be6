"""The one error type users see: a clear line, exit code 2, never a bare traceback."""

from __future__ import annotations

import difflib


class HarnessError(Exception):
    """Bad input or a failed precondition, explained in one line."""

    exit_code = 2


def did_you_mean(name: str, known) -> str:
    close = difflib.get_close_matches(name, list(known), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def unknown(kind: str, name: str, known) -> HarnessError:
    known = sorted(known)
    return HarnessError(f"unknown {kind} {name!r}{did_you_mean(name, known)}; known: {', '.join(known) or 'none'}")
