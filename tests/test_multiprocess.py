"""Two processes on the CPU through `accelerate launch`: every process trains, only the main one
evaluates and logs. Slow (two interpreters, gloo): `make multiprocess-test` runs it."""

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def test_two_process_run_gives_one_parent_run_and_a_complete_matrix(tmp_path):
    accelerate = Path(sys.executable).with_name("accelerate")
    db = f"sqlite:///{tmp_path / 'mlflow.db'}"
    args = [
        str(accelerate), "launch", "--num_processes", "2", "--cpu", "--num_machines", "1", "--mixed_precision", "no",
        "--dynamo_backend", "no", "-m", "harness", "run", "--tasks", "cipher,facts", "--method", "sft,sdft",
        "--probes", "addition", "--limit", "4", "--set", "max_steps=2", "--set", "per_device_train_batch_size=2",
        "--set", "max_completion_length=12", "--output", str(tmp_path / "run"), "--tracking-uri", db,
    ]
    result = subprocess.run(args, capture_output=True, text=True, env={**os.environ, "TOKENIZERS_PARALLELISM": "false"})
    assert result.returncode == 0, result.stderr[-3000:]
    with open(tmp_path / "run" / "matrix.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["stage"] for r in rows] == ["0", "1", "2"]
    assert all(0 <= float(r[c]) <= 1 for r in rows for c in ("cipher", "facts", "addition"))
    assert result.stdout.count("stage 1/2 sft on cipher: training") == 1  # only the main process reports

    from mlflow import MlflowClient

    client = MlflowClient(db)
    experiment = client.get_experiment_by_name("toy")
    assert len(client.search_runs([experiment.experiment_id], "tags.`harness.kind` = 'sequence'")) == 1
    assert len(client.search_runs([experiment.experiment_id], "tags.`harness.kind` = 'stage'")) == 3
