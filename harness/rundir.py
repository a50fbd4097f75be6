"""The run folder: the one place that knows its layout, its file names and the columns of its matrix.

```
results/<run>/
  run.json        the resolved plan (harness.plan.Plan.record) and library versions
  matrix.csv      one row per finished stage: stage, method, trained_on, the tasks, the probes, teacher_acc
  metrics.json    the continual-learning metrics, stage times, the protocol fingerprint
  heatmap.png     the matrix
  .lock           the writing process (harness.lock)
  trial.log       a sweep trial's output, one block per attempt
  stages/<k>/     scores.json (written last: the stage is done), model/, train_log.json, eval/, trainer/ (only
                  while training: save_steps checkpoints, removed once model/ is written),
                  curve.json (--eval-every), pass_k/ (--pass-k), teacher.json and teacher_eval/ (SDFT)
results/.cache/base-eval/<key>/   row 0 (eval/, scores.json), shared by every run with the same inputs
```

Everything else reads and writes these paths through `RunDir` and `StageDir`, and reads the
matrix by column name through `Matrix`.
"""

from __future__ import annotations

import csv
import io
import math
import os
from dataclasses import dataclass
from pathlib import Path

from harness import storage
from harness.errors import HarnessError
from harness.protocol import fingerprint

RESULTS_DIR = Path("results")  # where runs go when --output is not given
TRIAL_LOG = "trial.log"


@dataclass(frozen=True)
class StageDir:
    path: Path

    @property
    def scores(self) -> Path:
        """The stage's record, written last: the stage is done once it exists."""
        return self.path / "scores.json"

    @property
    def model(self) -> Path:
        return self.path / "model"

    @property
    def train_log(self) -> Path:
        return self.path / "train_log.json"

    @property
    def eval(self) -> Path:
        return self.path / "eval"

    @property
    def trainer(self) -> Path:
        return self.path / "trainer"

    @property
    def curve(self) -> Path:
        return self.path / "curve.json"

    @property
    def pass_k(self) -> Path:
        return self.path / "pass_k"

    @property
    def teacher(self) -> Path:
        return self.path / "teacher.json"

    @property
    def teacher_eval(self) -> Path:
        return self.path / "teacher_eval"

    def done(self) -> bool:
        return self.scores.exists()


@dataclass(frozen=True)
class RunDir:
    path: Path

    def __post_init__(self):
        object.__setattr__(self, "path", Path(self.path))

    @property
    def run(self) -> Path:
        return self.path / "run.json"

    @property
    def matrix(self) -> Path:
        return self.path / "matrix.csv"

    @property
    def metrics(self) -> Path:
        return self.path / "metrics.json"

    @property
    def heatmap(self) -> Path:
        return self.path / "heatmap.png"

    @property
    def lock(self) -> Path:
        return self.path / ".lock"

    @property
    def trial_log(self) -> Path:
        return self.path / TRIAL_LOG

    @property
    def stages(self) -> Path:
        return self.path / "stages"

    def stage(self, k: int) -> StageDir:
        return StageDir(self.stages / str(k))

    def finished(self) -> list[str]:
        """The names of the stage folders whose record exists."""
        return sorted(p.parent.name for p in self.stages.glob("*/scores.json"))

    def base_cache(self, key: str) -> StageDir:
        """Row 0 kept for every run beside this one with the same model, tasks, probes and evaluation."""
        return StageDir(Path(os.path.abspath(self.path)).parent / ".cache" / "base-eval" / key)  # (a folder given as "." too)


# ---------------------------------------------------------------- reading the run's files

# What run.json gains when a command claims the folder, beside the run itself: the library versions, and a token of this
# claim, which tells this run's MLflow parent from one an earlier run in a since-deleted folder of that path left.
RUN_STAMPS = ("versions", "claim")
RUN_FIELDS = {"run_id": str, "suite": str, "tasks": list, "methods": list, "probes": list, "seed": int, "model": str}


def read_run(run_dir: Path, fields: dict | None = None) -> dict:
    """run.json, checked for the fields the summary, the report and tracking read (and `fields`)."""
    return storage.read_record(RunDir(run_dir).run, {**RUN_FIELDS, **(fields or {})})


def read_metrics(run_dir: Path) -> dict:
    return storage.read_record(RunDir(run_dir).metrics, {"stages_done": int, "stages_total": int})


STAGE_RECORD = {"stage": int, "method": str, "task": (str, type(None)), "scores": dict}  # the fields of a stage's scores.json every reader needs


def finished_stages(run_dir: Path) -> list[dict]:
    """Stage records in order, up to the first unfinished one."""
    folder, records = RunDir(run_dir), []
    stages = len(read_run(run_dir)["methods"]) + 1
    for k in range(stages):
        path = folder.stage(k).scores
        if not path.exists():
            later = [j for j in range(k + 1, stages) if folder.stage(j).scores.exists()]
            if later:  # each stage starts from the one before: a retrained stage k would leave them on the old one
                raise HarnessError(f"{run_dir}: stage {k} is unfinished, but stage(s) {', '.join(map(str, later))} after it are "
                                   f"finished, trained from the stage {k} that was there: delete stages/{k} and every later stage's folder "
                                   f"to train them again, or restore stage {k}'s scores.json")
            break
        record = storage.read_record(path, STAGE_RECORD)
        odd = next(((c, v) for c, v in record["scores"].items() if v is not None and (isinstance(v, bool) or not isinstance(v, int | float))), None)
        if odd:
            raise HarnessError(f"{path}: field 'scores': {odd[0]!r} should be a number or null, got {odd[1]!r}; delete the file to evaluate the stage again")
        records.append(record)
    return records


def read_curve(path: Path) -> list[dict]:
    """The points of a stage's curve.json (--eval-every): [{"step", "scores"}], in step order."""
    return storage.read_json(path)["points"] if path.exists() else []


def protocol_fingerprint(run: dict) -> str | None:
    """The fingerprint of every column's evaluation protocol; None for a run from before protocols were recorded."""
    return fingerprint(run["protocol"]) if "protocol" in run else None


def run_folders(root: Path) -> list[Path]:
    """The folders directly under root that hold a run.json, finished or not."""
    return sorted(p.parent for p in Path(root).glob(f"*/{RunDir(root).run.name}"))


def base_model(run: dict, digits: int = 12) -> str:
    """The model a run started from, as runs are labelled (`Qwen/Qwen3-8B@9c925d64d727`, as `--model` takes it) and,
    with every digit of the commit, compared: two commits under one id are two bases."""
    revision = run.get("model_revision")
    return f"{run['model']}@{revision[:digits]}" if revision else run["model"]


# ---------------------------------------------------------------- matrix.csv

KEYS = ("stage", "method", "trained_on")
TEACHER_COLUMN = "teacher_acc"


@dataclass(frozen=True)
class MatrixRow:
    stage: int
    method: str
    trained_on: str  # "" for row 0, the base model
    scores: dict  # score column -> value (None where undefined)
    teacher_acc: float | None = None

    def label(self) -> str:
        return "base" if self.stage == 0 else f"{self.stage}: {self.method} on {self.trained_on}"


@dataclass(frozen=True)
class Matrix:
    """One row per finished stage; the score columns are the run's tasks, then its probes."""

    columns: tuple[str, ...]
    rows: tuple[MatrixRow, ...]

    @property
    def header(self) -> list[str]:
        return [*KEYS, *self.columns, TEACHER_COLUMN]

    def cells(self) -> list[list]:
        """The rows in the header's order."""
        return [[r.stage, r.method, r.trained_on, *(r.scores.get(c) for c in self.columns), r.teacher_acc] for r in self.rows]

    def text(self) -> str:
        return "\n".join(",".join(_cell(v) for v in row) for row in [self.header, *self.cells()]) + "\n"


def matrix_of(run: dict, stages: list[dict]) -> Matrix:
    """The matrix of a run's finished stage records."""
    columns = (*run["tasks"], *(p["name"] for p in run["probes"]))
    rows = tuple(MatrixRow(r["stage"], r["method"], r.get("task") or "", {c: r["scores"].get(c) for c in columns}, r.get("teacher_acc"))
                 for r in stages)
    return Matrix(columns, rows)


def _cell(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return f"{value:.6g}" if isinstance(value, float) else str(value)


def read_matrix(path: Path) -> Matrix:
    """matrix.csv, by column name; empty cells are None."""
    try:
        header, *lines = list(csv.reader(io.StringIO(path.read_text(encoding="utf-8"))))
    except (UnicodeDecodeError, ValueError, csv.Error) as e:
        raise HarnessError(f"{path}: not a matrix the harness wrote ({e})") from None
    if header[: len(KEYS)] != list(KEYS):
        raise HarnessError(f"{path}: not a matrix the harness wrote (its header starts {','.join(header[:3])!r}, expected {','.join(KEYS)!r})")
    columns = tuple(c for c in header if c not in (*KEYS, TEACHER_COLUMN))
    rows = []
    for i, line in enumerate(lines, start=2):
        if len(line) != len(header):
            raise HarnessError(f"{path}, line {i}: {len(line)} cells, the header has {len(header)}")
        cell = dict(zip(header, line))
        try:
            number = {c: float(cell[c]) if cell[c] else None for c in (*columns, TEACHER_COLUMN) if c in cell}
            rows.append(MatrixRow(int(cell["stage"]), cell["method"], cell["trained_on"], {c: number[c] for c in columns}, number.get(TEACHER_COLUMN)))
        except ValueError as e:
            raise HarnessError(f"{path}, line {i}: {e}") from None
    return Matrix(columns, tuple(rows))
