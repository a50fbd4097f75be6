"""One tiny real run through the CLI: shipped base, real TRL trainers, real lm-eval, a real MLflow store."""

import csv
import json

import pytest

from harness.cli import main

TASKS = ["cipher", "facts", "tooluse"]
PROBES = ["addition", "capitals", "format", "incontext"]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("e2e")
    args = [
        "run", "--tasks", ",".join(TASKS), "--method", "sft,sdft,sdpo",
        "--output", str(root / "run"), "--tracking-uri", f"sqlite:///{root / 'mlflow.db'}",
        "--limit", "3", "--set", "max_steps=1", "--set", "per_device_train_batch_size=4",
        "--set", "sdpo.num_generations=2", "--set", "max_completion_length=24", "--set", "logging_steps=1",
    ]
    assert main(args) == 0
    return root, args


def test_matrix_has_a_row_per_stage_and_scores_in_range(tiny_run):
    root, _ = tiny_run
    with open(root / "run" / "matrix.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["stage"] for r in rows] == ["0", "1", "2", "3"]
    assert [r["method"] for r in rows] == ["base", "sft", "sdft", "sdpo"]
    assert [r["trained_on"] for r in rows] == ["", *TASKS]
    for row in rows:
        for column in TASKS + PROBES:
            assert 0.0 <= float(row[column]) <= 1.0
    assert rows[2]["teacher_acc"] != "" and rows[1]["teacher_acc"] == rows[3]["teacher_acc"] == ""


def test_run_files(tiny_run):
    run = tiny_run[0] / "run"
    config = json.loads((run / "run.json").read_text())
    assert config["methods"] == ["sft", "sdft", "sdpo"] and config["versions"]["trl"]
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["stages_done"] == 3
    for key in ("acc", "bwt", "forgetting", "forgetting_first_final", "fwt", "new_task_gain", "probe_delta"):
        assert isinstance(metrics[key], float)
    assert (run / "heatmap.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for k in range(4):
        results = json.loads((run / "stages" / str(k) / "eval" / "results.json").read_text())
        assert set(results["scores"]) == set(TASKS + PROBES)
    assert (run / "stages" / "3" / "model" / "model.safetensors").exists()
    history = json.loads((run / "stages" / "1" / "train_log.json").read_text())["history"]
    assert any("loss" in h for h in history)


def test_mlflow_holds_one_parent_and_a_child_per_stage(tiny_run):
    from mlflow import MlflowClient

    root, _ = tiny_run
    client = MlflowClient(f"sqlite:///{root / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("toy")
    parents = client.search_runs([experiment.experiment_id], "tags.`harness.kind` = 'sequence'")
    assert len(parents) == 1
    parent = parents[0]
    assert parent.data.params["methods"] == "sft,sdft,sdpo" and parent.data.params["seed"] == "0"
    metrics = json.loads((root / "run" / "metrics.json").read_text())
    assert parent.data.metrics["acc"] == pytest.approx(metrics["acc"])
    assert parent.data.metrics["bwt"] == pytest.approx(metrics["bwt"])
    assert "score/cipher" in parent.data.metrics and "teacher_acc" in parent.data.metrics
    children = client.search_runs([experiment.experiment_id], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    assert sorted(c.data.tags["harness.stage"] for c in children) == ["0", "1", "2", "3"]
    assert {"score/incontext", "seconds/eval"} <= set(children[0].data.metrics)
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"heatmap.png", "matrix.csv", "metrics.json", "run.json"} <= artifacts
    # beside the database, not in ./mlruns of the folder the run happened to start in
    assert experiment.artifact_location == (root / "mlruns" / "toy").as_uri()
    assert (root / "mlruns" / "toy" / parent.info.run_id / "artifacts" / "matrix.csv").is_file()


def test_rerunning_resumes_without_training_or_duplicating_runs(tiny_run, capsys):
    from mlflow import MlflowClient

    root, args = tiny_run
    before = (root / "run" / "matrix.csv").read_bytes()
    claim = json.loads((root / "run" / "run.json").read_text())["claim"]
    assert main(args) == 0
    assert (root / "run" / "matrix.csv").read_bytes() == before
    assert json.loads((root / "run" / "run.json").read_text())["claim"] == claim  # the MLflow parent stays this run's
    assert "training" not in capsys.readouterr().out
    client = MlflowClient(f"sqlite:///{root / 'mlflow.db'}")
    assert len(client.search_runs([client.get_experiment_by_name("toy").experiment_id])) == 5
