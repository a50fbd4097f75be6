"""A run's summary files, rebuilt from its finished stages: matrix.csv, metrics.json, heatmap.png.

Each finished stage leaves `stages/<k>/scores.json`; everything here is derived
from those files alone, so a resumed run rewrites earlier rows byte for byte.
"""

from __future__ import annotations

import io
import math
from pathlib import Path

from harness import storage
from harness.errors import HarnessError
from harness.metrics import continual_metrics
from harness.rundir import Matrix, RunDir, finished_stages, matrix_of, protocol_fingerprint, read_run


def write_summary(run_dir: Path) -> dict | None:
    run = read_run(run_dir)
    stages = finished_stages(run_dir)
    if not stages:
        return None
    folder, matrix = RunDir(run_dir), matrix_of(run, stages)
    storage.write_text(folder.matrix, matrix.text())
    summary = {
        "run_id": run["run_id"],
        "stages_done": len(stages) - 1,
        "stages_total": len(run["methods"]),
        "protocol_fingerprint": protocol_fingerprint(run),
        "teacher_acc": [r.get("teacher_acc") for r in stages],
        "seconds": [r.get("seconds", {}) for r in stages],
    }
    if len(stages) >= 2:
        summary.update(metrics_of(run, matrix))
    storage.write_json(folder.metrics, summary)
    storage.write_bytes(folder.heatmap, heatmap_png(matrix, title=run["run_id"]))
    return summary


SUMMARY_KEYS = ("acc", "bwt", "forgetting", "forgetting_first_final", "fwt", "new_task_gain", "probe_delta")  # one number each


def check_summary(run_dir: Path, run: dict, metrics: dict, matrix: Matrix, source: str) -> None:
    """metrics.json must be what `matrix` (read from `source`) gives: the runner writes both from stages/*/scores.json
    after every stage, and an edited, truncated or stale one would be reported or logged as if it were the run's."""
    path, done = RunDir(run_dir).metrics, metrics["stages_done"]
    redo = "rerun the run (the same `harness run`) to rewrite its summary from stages/*/scores.json"
    stages = [row.stage for row in matrix.rows]
    if stages != list(range(done + 1)):
        raise HarnessError(f"{path}: stages 0-{done} done, but {source} has rows for stages {stages}; {redo}")
    if len(stages) < 2:
        return
    recomputed = metrics_of(run, matrix)
    for key in SUMMARY_KEYS:
        mine, theirs = recomputed.get(key), metrics.get(key)
        if (mine is None) != (theirs is None) or (theirs is not None and not math.isclose(mine, theirs, abs_tol=1e-5)):
            raise HarnessError(f"{path} disagrees with {source} on {key} ({theirs} recorded, {mine} from {source}); {redo}")


def metrics_of(run: dict, matrix: Matrix) -> dict:
    """The continual-learning metrics of a matrix of one row per finished stage (two or more): until the run is
    complete they cover the tasks trained so far."""
    seen = run["tasks"][: len(matrix.rows) - 1]
    probes = [p["name"] for p in run["probes"]]
    scores = [[_score(row.scores[c]) for c in seen] for row in matrix.rows]
    probe_scores = [[_score(row.scores[c]) for c in probes] for row in matrix.rows] if probes else None
    return continual_metrics(scores, probe_scores)


def _score(value) -> float | None:
    """A cell as the metrics take it: a score in [0, 1], else undefined (recorded in matrix.csv, left out of the metrics:
    a NaN, or a probe metric on another scale such as perplexity)."""
    if isinstance(value, int | float) and not isinstance(value, bool) and 0 <= value <= 1:
        return value
    return None


def pyplot():
    """pyplot drawing to files; a character its font lacks (a CJK run name) is drawn as a box, without a warning each."""
    import warnings

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    warnings.filterwarnings("ignore", message=r"Glyph \d+ .* missing from font", category=UserWarning)
    return plt


def heatmap_png(matrix: Matrix, title: str) -> bytes:
    plt = pyplot()

    columns, rows = matrix.columns, matrix.rows
    values = [[v if v is not None else float("nan") for v in (row.scores[c] for c in columns)] for row in rows]
    fig, ax = plt.subplots(figsize=(1.1 * len(columns) + 2.5, 0.55 * len(rows) + 1.6))
    ax.imshow(values, cmap="viridis", vmin=0, vmax=1, aspect="auto")
    ax.set_xticks(range(len(columns)), columns, rotation=30, ha="right")
    ax.set_yticks(range(len(rows)), [r.label() for r in rows])
    for i, row in enumerate(values):
        for j, v in enumerate(row):
            if not math.isnan(v):
                ax.text(j, i, f"{v:.2f}", ha="center", va="center", color="white" if v < 0.6 else "black", fontsize=9)
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, metadata={"Software": None})
    plt.close(fig)
    return buffer.getvalue()
