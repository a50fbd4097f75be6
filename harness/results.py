"""A run's summary files, rebuilt from its finished stages: matrix.csv, metrics.json, heatmap.png.

Each finished stage leaves `stages/<k>/scores.json`; everything here is derived
from those files alone, so a resumed run rewrites earlier rows byte for byte.
"""

from __future__ import annotations

import io
import math
from pathlib import Path

from harness import storage
from harness.metrics import continual_metrics
from harness.protocol import fingerprint

TEACHER_COLUMN = "teacher_acc"


def finished_stages(run_dir: Path) -> list[dict]:
    """Stage records in order, up to the first unfinished one."""
    records = []
    for k in range(len(read_run(run_dir)["methods"]) + 1):
        path = run_dir / "stages" / str(k) / "scores.json"
        if not path.exists():
            break
        records.append(storage.read_record(path, {"stage": int, "method": str, "scores": dict}))
    return records


def read_curve(path: Path) -> list[dict]:
    """The points of a stage's curve.json (--eval-every): [{"step", "scores"}], in step order."""
    return storage.read_json(path)["points"] if path.exists() else []


def read_run(run_dir: Path) -> dict:
    """run.json, checked for the fields the summary, the report and tracking read."""
    return storage.read_record(run_dir / "run.json", RUN_FIELDS)


def read_metrics(run_dir: Path) -> dict:
    return storage.read_record(run_dir / "metrics.json", {"stages_done": int, "stages_total": int})


RUN_FIELDS = {"run_id": str, "suite": str, "tasks": list, "methods": list, "probes": list, "seed": int, "model": str}


def matrix_rows(run: dict, stages: list[dict]) -> tuple[list[str], list[list]]:
    """Header and rows of matrix.csv: one row per finished stage, tasks then probes then the teacher."""
    tasks, probes = run["tasks"], [p["name"] for p in run["probes"]]
    header = ["stage", "method", "trained_on", *tasks, *probes, TEACHER_COLUMN]
    rows = []
    for record in stages:
        scores = record["scores"]
        rows.append([record["stage"], record["method"], record.get("task") or "", *(scores.get(c) for c in [*tasks, *probes]), record.get("teacher_acc")])
    return header, rows


def _cell(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return f"{value:.6g}" if isinstance(value, float) else str(value)


def write_summary(run_dir: Path) -> dict | None:
    run = read_run(run_dir)
    stages = finished_stages(run_dir)
    if not stages:
        return None
    header, rows = matrix_rows(run, stages)
    storage.write_text(run_dir / "matrix.csv", "\n".join(",".join(_cell(v) for v in row) for row in [header, *rows]) + "\n")
    n_tasks = len(run["tasks"])
    summary = {
        "run_id": run["run_id"],
        "stages_done": len(stages) - 1,
        "stages_total": len(run["methods"]),
        "protocol_fingerprint": protocol_fingerprint(run),
        "teacher_acc": [r.get("teacher_acc") for r in stages],
        "seconds": [r.get("seconds", {}) for r in stages],
    }
    if len(stages) >= 2:
        # Until the run is complete the metrics cover the tasks trained so far.
        seen = len(stages) - 1
        matrix = [[_score(v) for v in row[3 : 3 + seen]] for row in rows]
        probes = [[_score(v) for v in row[3 + n_tasks : -1]] for row in rows] if run["probes"] else None
        summary.update(continual_metrics(matrix, probes))
    storage.write_json(run_dir / "metrics.json", summary)
    storage.write_bytes(run_dir / "heatmap.png", heatmap_png(header[3:-1], rows, title=run["run_id"]))
    return summary


def _score(value) -> float | None:
    """A cell as the metrics take it: a score in [0, 1], else undefined (recorded in matrix.csv, left out of the metrics:
    a NaN, or a probe metric on another scale such as perplexity)."""
    if isinstance(value, int | float) and not isinstance(value, bool) and 0 <= value <= 1:
        return value
    return None


def protocol_fingerprint(run: dict) -> str | None:
    """The fingerprint of every column's evaluation protocol; None for a run from before protocols were recorded."""
    return fingerprint(run["protocol"]) if "protocol" in run else None


def stage_label(row: list) -> str:
    return "base" if row[0] == 0 else f"{row[0]}: {row[1]} on {row[2]}"


def heatmap_png(columns: list[str], rows: list[list], title: str) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    values = [[v if v is not None else float("nan") for v in row[3 : 3 + len(columns)]] for row in rows]
    fig, ax = plt.subplots(figsize=(1.1 * len(columns) + 2.5, 0.55 * len(rows) + 1.6))
    ax.imshow(values, cmap="viridis", vmin=0, vmax=1, aspect="auto")
    ax.set_xticks(range(len(columns)), columns, rotation=30, ha="right")
    ax.set_yticks(range(len(rows)), [stage_label(r) for r in rows])
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
