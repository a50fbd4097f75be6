"""Continual-learning metrics from an accuracy matrix (pure Python, JSON-safe output).

R[i][j]: score after training stage i (row 0 = base model, rows 1..T) on task
column j (0-based), where column j is the task trained at stage j + 1. So task j
is "just learned" at row j + 1, and the "row before its stage" is row j.
PAPERS.md writes the same definitions with 1-based tasks, R[j][j] = just learned.
Undefined metrics (e.g. BWT with a single task) are None, never NaN. An undefined score (None or NaN: the
evaluation could not produce it) is excluded from every mean and every difference it enters; a number outside
[0, 1] is refused (harness.results leaves such cells out of the metrics before calling in).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

Matrix = Sequence[Sequence[float]]


def _mean(values: Sequence[float | None]) -> float | None:
    """Mean of the defined values (None: a score the evaluation could not produce, excluded)."""
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else None


def _diff(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a - b


def _max(values) -> float | None:
    values = [v for v in values if v is not None]
    return max(values) if values else None


def _validate(matrix: Matrix, name: str, columns: int | None) -> list[list[float | None]]:
    """Rectangular, at least two rows, every value a number in [0, 1] or undefined (None or NaN, read as None)."""
    rows = [list(row) for row in matrix]
    if len(rows) < 2:
        raise ValueError(f"{name} needs a base row and at least one training stage, got {len(rows)} row(s)")
    width = len(rows[0]) if columns is None else columns
    if width < 1:
        raise ValueError(f"{name} has no columns")
    for i, row in enumerate(rows):
        if len(row) != width:
            raise ValueError(f"{name} row {i} has {len(row)} values, expected {width}")
        for j, value in enumerate(row):
            if value is None or (isinstance(value, float) and math.isnan(value)):
                row[j] = None
                continue
            # numbers.Real admits numpy scalars, not bools.
            if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 <= value <= 1:
                raise ValueError(f"{name}[{i}][{j}] = {value!r} is not a score in [0, 1]")
            row[j] = float(value)
        rows[i] = row
    return rows


def acc_seen(R: Matrix) -> list[float | None]:
    """Per stage i = 1..T, mean over the tasks learned so far (TRACE "OP")."""
    return [_mean(R[i][:i]) for i in range(1, len(R))]


def acc_all(R: Matrix) -> list[float | None]:
    """Per row i = 0..T, mean over all task columns."""
    return [_mean(row) for row in R]


def bwt(R: Matrix) -> float | None:
    """Backward transfer: mean over tasks but the last of final minus just-learned score."""
    T = len(R) - 1
    return _mean([_diff(R[T][j], R[j + 1][j]) for j in range(T - 1)])


def forgetting(R: Matrix) -> float | None:
    """Chaudhry: mean over tasks but the last of (best from learning to stage T-1) minus final."""
    T = len(R) - 1
    return _mean([_diff(_max(R[row][j] for row in range(j + 1, T)), R[T][j]) for j in range(T - 1)])


def forgetting_first_final(R: Matrix) -> float | None:
    """Avalanche variant: just-learned minus final, mean over tasks but the last (equals -BWT)."""
    T = len(R) - 1
    return _mean([_diff(R[j + 1][j], R[T][j]) for j in range(T - 1)])


def fwt(R: Matrix) -> float | None:
    """Forward transfer: mean over tasks 2..T of (score before its own stage) minus base."""
    T = len(R) - 1
    return _mean([_diff(R[j][j], R[0][j]) for j in range(1, T)])


def new_task_gain(R: Matrix) -> float | None:
    """Plasticity: mean over tasks of just-learned minus base."""
    T = len(R) - 1
    return _mean([_diff(R[j + 1][j], R[0][j]) for j in range(T)])


def normalized(R: Matrix) -> list[list[float | None]]:
    """SDFT sequential plot: 0 = base, 1 = best row for that task; None where no row beats base (or a score is undefined)."""
    result = [[None] * len(R[0]) for _ in R]
    for j in range(len(R[0])):
        base, best = R[0][j], _max(row[j] for row in R)
        if base is not None and best is not None and best - base > 0:
            for i, row in enumerate(R):
                result[i][j] = None if row[j] is None else (row[j] - base) / (best - base)
    return result


def continual_metrics(matrix: Matrix, probes: Matrix | None = None) -> dict:
    """All metrics for one run; `probes` has the same rows and K prior-capability columns."""
    R = _validate(matrix, "matrix", len(matrix) - 1)  # T + 1 rows x T task columns
    # Validated values lie in [0, 1] or are None, so every metric is finite or None: the dict is JSON-safe.
    out = {
        "acc_seen": acc_seen(R),
        "acc_all": acc_all(R),
        "acc": _mean(R[-1]),
        "bwt": bwt(R),
        "forgetting": forgetting(R),
        "forgetting_first_final": forgetting_first_final(R),
        "fwt": fwt(R),
        "new_task_gain": new_task_gain(R),
        "normalized": normalized(R),
        "probe_avg": None,
        "probe_delta": None,
        "probe_delta_per_row": None,
    }
    if probes is not None:
        if len(probes) != len(R):
            raise ValueError(f"probes has {len(probes)} rows, the matrix {len(R)}")
        averages = acc_all(_validate(probes, "probes", None))
        out["probe_avg"] = averages
        out["probe_delta_per_row"] = [_diff(a, averages[0]) for a in averages]
        out["probe_delta"] = _diff(averages[-1], averages[0])
    return out
