"""Fault injection: kill a real toy run (SIGKILL) at six points, resume it, and check nothing was lost.

Slow (a dozen short real runs): `make fault-test` runs it; `make test` leaves it out.
"""

import csv
import json
import os
import subprocess
import sys

import pytest

from harness.faults import POINTS

pytestmark = pytest.mark.slow

# A two-stage run small enough to repeat: SDFT first (so the teacher is measured), then SFT.
ARGS = [
    "run", "--tasks", "cipher,facts", "--method", "sdft,sft", "--probes", "addition",
    "--limit", "2", "--set", "max_steps=2", "--set", "per_device_train_batch_size=2", "--set", "save_steps=1",
    "--set", "max_completion_length=12", "--set", "logging_steps=1",
]
# Where each kill lands: a point and the stage it interrupts.
KILLS = {"teacher": "teacher@1", "train": "train@2", "save": "save@1", "eval": "eval@2", "record": "record@1", "mlflow": "mlflow@2"}


def harness(tmp_path, name, fault=None):
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false"}
    env.pop("HARNESS_FAULT", None)
    if fault:
        env["HARNESS_FAULT"] = fault
    out, db = tmp_path / name, f"sqlite:///{tmp_path / (name + '.db')}"
    result = subprocess.run([sys.executable, "-m", "harness", *ARGS, "--output", str(out), "--tracking-uri", db], env=env, capture_output=True, text=True)
    return result, out, db


def usage(run_dir, stage):
    counts = json.loads((run_dir / "stages" / str(stage) / "train_log.json").read_text())["usage"]
    return {k: counts[k] for k in ("trained_tokens", "prompt_tokens", "generated_tokens")}


def rows(run_dir):
    with open(run_dir / "matrix.csv") as f:
        return list(csv.reader(f))


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("faults")
    result, out, _ = harness(tmp, "reference")
    assert result.returncode == 0, result.stderr[-2000:]
    return tmp, rows(out)


def test_every_point_is_covered():
    assert set(KILLS) == set(POINTS)


@pytest.mark.parametrize("point", list(KILLS))
def test_killed_run_resumes_to_the_same_result(reference, point):
    tmp, expected = reference
    killed, out, db = harness(tmp, point, KILLS[point])
    assert killed.returncode == -9, f"expected SIGKILL at {KILLS[point]}: {killed.stderr[-2000:]}"
    stage = int(KILLS[point].split("@")[1])
    kept = stage + 1 if point == "mlflow" else stage  # every kill lands after stage 0, so matrix.csv exists
    assert rows(out)[:kept] == expected[:kept]

    resumed, out, db = harness(tmp, point)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert rows(out) == expected  # complete, and the same numbers as an uninterrupted run
    for k in (1, 2):  # and the whole stage's token counts, not only those after the resume
        assert usage(out, k) == usage(tmp / "reference", k)
    assert not (out / ".lock").exists()

    from mlflow import MlflowClient

    client = MlflowClient(db)
    experiment = client.get_experiment_by_name("toy")
    parents = client.search_runs([experiment.experiment_id], "tags.`harness.kind` = 'sequence'")
    assert len(parents) == 1  # the same parent run continued
    children = client.search_runs([experiment.experiment_id], f"tags.`mlflow.parentRunId` = '{parents[0].info.run_id}'")
    assert sorted(c.data.tags["harness.stage"] for c in children) == ["0", "1", "2"]
    assert all(c.data.tags.get("harness.complete") == "true" for c in children)
