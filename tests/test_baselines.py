"""The methods and options of the method contract, each through a tiny real `harness run` on the toy suite:
DFT, SFT + re-invoke, GRPO, replay, the WiSE-FT merge, curves inside a stage (--eval-every) and pass@k."""

import csv
import json
import random
import re

import pytest
import torch
from safetensors.torch import load_file

from baselines import METHODS
from baselines.common import interpolate, load_model, replay_rows
from baselines.contract import Stage
from harness.cli import main
from harness.registry import load_suite
from harness.taskdata import load_rows

SUITE = load_suite("toy")
FIRST, SECOND = SUITE.sequence[:2]
TINY = ["--limit", "3", "--set", "max_steps=2", "--set", "per_device_train_batch_size=4", "--set", "logging_steps=1",
        "--set", "grpo.max_completion_length=16", "--set", "sft_reinvoke.reinvoke_max_tokens=8",
        "--set", "sft_reinvoke.reinvoke_steps=2"]


def read_matrix(run):
    with open(run / "matrix.csv") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def contract_run(tmp_path_factory):
    """DFT (its weights merged all the way back: merge_alpha=0), then SFT with replay; curves and pass@k throughout."""
    root = tmp_path_factory.mktemp("baselines")
    args = ["run", "--tasks", f"{FIRST},{SECOND}", "--method", "dft,sft", "--output", str(root / "run"),
            "--tracking-uri", f"sqlite:///{root / 'mlflow.db'}", "--set", "dft.merge_alpha=0", "--set", "sft.replay=0.5",
            "--eval-every", "1", "--pass-k", "1,2", "--pass-temperature", "0.7", *TINY]
    assert main(args) == 0
    return root


def test_dft_and_replay_run_under_their_own_names(contract_run):
    rows = read_matrix(contract_run / "run")
    assert [r["method"] for r in rows] == ["base", "dft", "sft"]
    run = json.loads((contract_run / "run" / "run.json").read_text())
    assert run["options"][1]["replay"] == 0.5 and run["curves"] == {"every": 1, "probes": False} and run["pass_k"] == [1, 2]
    assert run["pass_temperature"] == 0.7
    usage = [json.loads((contract_run / "run" / "stages" / str(k) / "train_log.json").read_text())["usage"] for k in (1, 2)]
    n = len(load_rows(SUITE.card(SECOND), "train"))
    assert usage[0]["replayed_rows"] == 0 and usage[1]["replayed_rows"] == n  # replay 0.5: as many earlier rows as the task's own


def test_merge_alpha_zero_leaves_the_stage_start_weights(contract_run):
    base = load_file(SUITE.path.parent / "base" / "model.safetensors")
    merged = load_file(contract_run / "run" / "stages" / "1" / "model" / "model.safetensors")
    trained = load_file(contract_run / "run" / "stages" / "2" / "model" / "model.safetensors")
    assert merged.keys() == base.keys()
    assert all(torch.equal(merged[k], base[k]) for k in base)
    assert not all(torch.equal(trained[k], base[k]) for k in base)  # the unmerged stage did train


def test_curves_and_pass_k_reach_the_files_mlflow_and_the_report(contract_run, tmp_path):
    from mlflow import MlflowClient

    run = contract_run / "run"
    for k, task in ((1, FIRST), (2, SECOND)):
        points = json.loads((run / "stages" / str(k) / "curve.json").read_text())["points"]
        assert [p["step"] for p in points] == [1, 2] and set(points[0]["scores"]) == {task}
        record = json.loads((run / "stages" / str(k) / "scores.json").read_text())
        assert set(record["pass_k"][FIRST]) == {"pass@1", "pass@2", "temperature", "top_k"}
        assert record["pass_k"][FIRST]["temperature"] == 0.7  # --pass-temperature over the card's greedy decoding
        assert 0 <= record["pass_k"][task]["pass@1"] <= record["pass_k"][task]["pass@2"] <= 1
    client = MlflowClient(f"sqlite:///{contract_run / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("toy")
    stage1 = client.search_runs([experiment.experiment_id], "tags.`harness.stage` = '1'")[0]
    history = client.get_metric_history(stage1.info.run_id, f"curve/{FIRST}")
    assert [m.step for m in history] == [1, 2]
    assert f"pass_1/{FIRST}" in stage1.data.metrics
    report = main(["report", str(run), "--out", str(tmp_path / "cmp")])
    assert report == 0
    text = (tmp_path / "cmp" / "comparison.md").read_text()
    assert "Accuracy inside each stage" in text and "pass@k" in text and "dft,sft replay=0/0.5 merge_alpha=0/1" in text and "T 0.7, top_k 0" in text
    assert list((tmp_path / "cmp").glob("curves-*.png"))


def test_sft_reinvoke_is_sft_then_distillation_from_the_stage_start_model(tmp_path):
    out = tmp_path / "run"
    assert main(["run", "--tasks", FIRST, "--method", "sft_reinvoke", "--output", str(out),
                 "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}", "--eval-every", "1", *TINY]) == 0
    history = json.loads((out / "stages" / "1" / "train_log.json").read_text())["history"]
    curve = json.loads((out / "stages" / "1" / "curve.json").read_text())["points"]
    assert [p["step"] for p in curve] == [1, 2, 3, 4]  # the curve goes on through the re-invoke phase
    sft = [h for h in history if "loss" in h and "phase" not in h]
    reinvoke = [h for h in history if h.get("phase") == "reinvoke"]
    assert [h["step"] for h in sft] == [1, 2] and "mean_token_accuracy" in sft[0]  # phase 1: SFT on the demonstrations
    assert [h["step"] for h in reinvoke if "loss" in h] == [3, 4] and "sdft/distillation_loss" in reinvoke[0]  # phase 2: sampled, distilled
    assert read_matrix(out)[1]["method"] == "sft_reinvoke"


def test_sft_reinvoke_distils_towards_the_stage_start_model(tmp_path):
    """Phase 2's loss is zero when the student is still the stage-start model and not once it has moved:
    the teacher is the stage start, shown the same prompt (not the live student, not a demonstration)."""
    from baselines.contract import TrainResult

    method, base = METHODS["sft_reinvoke"], SUITE.model_path()
    opts = {"reinvoke_prompts": "data/general_prompts.jsonl", "reinvoke_steps": 1, "reinvoke_max_tokens": 8, "reinvoke_alpha": 1.0,
            "reinvoke_temperature": 1.0}
    losses = []
    for moved in (False, True):
        model, tokenizer = load_model(base)
        if moved:
            with torch.no_grad():
                model.get_output_embeddings().weight.mul_(0.5)
        stage = Stage(index=1, method="sft_reinvoke", card=SUITE.card(FIRST), rows=[], start_model=base, initial_model=base,
                      work_dir=tmp_path / str(moved), options={"per_device_train_batch_size": 4, "learning_rate": 1e-5, "logging_steps": 1})
        out = method.after_stage(stage, opts, TrainResult(model, tokenizer, [], {}))
        losses.append(next(h["sdft/distillation_loss"] for h in out.history if h.get("phase") == "reinvoke"))
    assert losses[0] == pytest.approx(0.0, abs=1e-5) and losses[1] > 0.01


def test_sft_reinvoke_refuses_missing_or_broken_general_prompts_before_training(tmp_path, capsys):
    broken = tmp_path / "prompts.jsonl"
    broken.write_text('{"prompt": "What is 2 + 2?"}\n{"prompt": 7}\n')
    for value, message in [(str(tmp_path / "none.jsonl"), "none.jsonl: prompt file not found"),
                           (str(broken), "prompts.jsonl, line 2: field 'prompt' must be a non-empty string or non-empty chat messages")]:
        code = main(["run", "--tasks", FIRST, "--method", "sft_reinvoke", "--output", str(tmp_path / "run"),
                     "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}", "--set", f"sft_reinvoke.reinvoke_prompts={value}", *TINY])
        err = capsys.readouterr().err
        assert code == 2 and message in err
        assert not (tmp_path / "run" / "stages" / "1" / "model").exists()


def test_grpo_trains_with_the_card_scorer_as_reward(tmp_path):
    out = tmp_path / "run"
    assert main(["run", "--tasks", FIRST, "--method", "grpo", "--output", str(out), "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}",
                 "--set", "num_generations=2", *TINY]) == 0
    history = json.loads((out / "stages" / "1" / "train_log.json").read_text())["history"]
    card = SUITE.card(FIRST)
    assert any(f"rewards/{card.scorer}_reward/mean" in h for h in history)
    assert read_matrix(out)[1]["method"] == "grpo"


def test_every_method_is_listed(capsys):
    assert main(["list"]) == 0
    listed = capsys.readouterr().out.split("methods:")[1]
    for name in METHODS:
        assert f"  {name} " in listed
    assert {"sft", "dft", "sft_reinvoke", "sdft", "grpo", "sdpo"} <= set(METHODS)


@pytest.mark.parametrize(("option", "message"), [
    ("sft.replay=lots", "option replay='lots' for method 'sft': expected a number"),
    ("grpo.replay=0.2", "unknown option 'replay' for method 'grpo'"),
    ("merge_alpha=2", r"option merge_alpha=2 for method 'dft': expected a number in \[0.0, 1.0\]"),
    ("sft_reinvoke.reinvoke_alpha=2", r"expected a number in \[0.0, 1.0\]"),
    ("sft_reinvoke.reinvoke_prompts=", "method 'sft_reinvoke' needs general-purpose prompts"),
    ("sft_reinvoke.reinvoke_max_tokens=0", "option reinvoke_max_tokens=0 for method 'sft_reinvoke': expected an integer >= 1"),
    ("sft_reinvoke.reinvoke_temperature=0", "option reinvoke_temperature=0 for method 'sft_reinvoke': expected a number >= 0.01"),
    ("sft_reinvoke.reinvoke_temperature=hot", "option reinvoke_temperature='hot' for method 'sft_reinvoke': expected a number"),
    ("sft_reinvoke.reinvoke_temperature=", "option reinvoke_temperature=None for method 'sft_reinvoke': expected a number"),
    ("sft_reinvoke.reinvoke_temperature=.nan", "option reinvoke_temperature=nan for method 'sft_reinvoke': expected a finite number"),
    ("sft_reinvoke.reinvoke_alpha=.inf", "option reinvoke_alpha=inf for method 'sft_reinvoke': expected a finite number"),
])
def test_bad_options_stop_before_training_in_one_line(tmp_path, capsys, option, message):
    method = option.split(".")[0] if "." in option else "dft"
    code = main(["run", "--tasks", FIRST, "--method", method, "--output", str(tmp_path / "run"), "--set", option])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert re.search(message, err)
    assert not (tmp_path / "run").exists()


# ------------------------------------------------------------------ replay and the merge, exactly
def _rows(task, n):
    return [{"prompt": [{"role": "user", "content": f"{task} {i}"}], "demonstration": f"{task}-{i}", "answer": i} for i in range(n)]


def _stage(index, seed, current, earlier):
    return Stage(index, "sft", SUITE.card(FIRST), current, "m", "m", None, seed=seed, earlier_rows=earlier)


def test_replay_draws_only_from_earlier_tasks_at_the_requested_fraction():
    earlier = {"a": _rows("a", 30), "b": _rows("b", 25)}
    current = _rows("c", 40)
    drawn = replay_rows(_stage(3, 0, current, earlier), 0.2)
    assert len(drawn) == 10 and len(drawn) / (len(drawn) + len(current)) == 0.2
    pool = earlier["a"] + earlier["b"]
    assert all(any(row is p for p in pool) for row in drawn)
    assert len({id(r) for r in drawn}) == len(drawn)  # without replacement while the pool lasts
    assert replay_rows(_stage(3, 0, current, earlier), 0.2) == drawn  # same seed, same rows
    assert replay_rows(_stage(3, 1, current, earlier), 0.2) != drawn
    assert replay_rows(_stage(1, 0, current, {}), 0.2) == []  # the first task has nothing to replay
    assert replay_rows(_stage(3, 0, current, earlier), 0.0) == []
    assert len(replay_rows(_stage(3, 0, current, earlier), 0.75)) == 120  # more than the pool: drawn with replacement


def test_interpolation_is_exact_at_both_ends():
    model, _ = load_model(SUITE.path.parent / "base")
    start = {k: v.clone() for k, v in model.state_dict().items()}
    rng = random.Random(0)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(rng.random())
    trained = {k: v.clone() for k, v in model.state_dict().items()}
    interpolate(model, start, 1.0)
    assert all(torch.equal(model.state_dict()[k], trained[k]) for k in trained)
    interpolate(model, start, 0.5)
    assert all(torch.allclose(model.state_dict()[k], (trained[k] + start[k]) / 2) for k in trained if trained[k].is_floating_point())
    model.load_state_dict(trained)
    interpolate(model, start, 0.0)
    assert all(torch.equal(model.state_dict()[k], start[k]) for k in start)


def test_a_checkpoint_cut_short_by_a_kill_is_skipped_and_removed(tmp_path):
    from baselines.common import last_checkpoint

    for step, whole in ((5, True), (10, True), (15, False)):
        folder = tmp_path / f"checkpoint-{step}"
        folder.mkdir()
        if whole:
            (folder / "trainer_state.json").write_text("{}")
    assert last_checkpoint(tmp_path) == tmp_path / "checkpoint-10"
    assert not (tmp_path / "checkpoint-15").exists()
    assert last_checkpoint(tmp_path / "none") is None


def test_a_stage_killed_after_its_final_checkpoint_resumes_without_training_past_max_steps(tmp_path):
    import os
    import subprocess
    import sys

    out = tmp_path / "run"
    argv = [sys.executable, "-m", "harness", "run", "--tasks", FIRST, "--method", "sft", "--output", str(out),
            "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}", "--set", "save_steps=2", *TINY]
    env = {**os.environ, "HARNESS_FAULT": "train", "HARNESS_FAULT_ONCE": str(tmp_path / "killed"), "OMP_NUM_THREADS": "1"}
    assert subprocess.run(argv, env=env, capture_output=True).returncode == -9  # SIGKILL right after checkpoint-2 was saved
    assert subprocess.run(argv, env=env, capture_output=True).returncode == 0
    log = json.loads((out / "stages" / "1" / "train_log.json").read_text())
    assert max(h["step"] for h in log["history"]) == 2 and log["usage"]["resumed_from_step"] == 2
    assert (out / "stages" / "1" / "model").is_dir() and not (out / "stages" / "1" / "trainer").exists()  # spent checkpoints go


def test_sigterm_saves_a_checkpoint_after_the_step_and_the_rerun_resumes_there(tmp_path):
    """A cluster's wall-time limit sends SIGTERM, then SIGKILL seconds later: the work since the last save_steps
    checkpoint is kept. The failpoint sends SIGTERM as checkpoint-2 is saved; training stops after step 3."""
    import os
    import subprocess
    import sys

    out = tmp_path / "run"
    argv = [sys.executable, "-m", "harness", "run", "--tasks", FIRST, "--method", "sft", "--output", str(out),
            "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}", *TINY, "--set", "save_steps=2", "--set", "max_steps=6"]
    env = {**os.environ, "HARNESS_FAULT": "train", "HARNESS_FAULT_SIGNAL": "SIGTERM", "HARNESS_FAULT_ONCE": str(tmp_path / "sent"),
           "OMP_NUM_THREADS": "1"}
    stopped = subprocess.run(argv, env=env, capture_output=True, text=True)
    assert stopped.returncode == 143, stopped.stderr[-2000:]
    assert "error: stopped by SIGTERM at step 3 of stage 1 (sft on cipher)" in stopped.stderr
    assert (out / "stages" / "1" / "trainer" / "checkpoint-3").is_dir() and not (out / "stages" / "1" / "scores.json").exists()
    assert not (out / ".lock").exists()
    check_damaged_checkpoints(out / "stages" / "1" / "trainer" / "checkpoint-3", tmp_path / "damaged")
    before = json.loads((out / "stages" / "1" / "trainer" / "checkpoint-3" / "harness_usage.json").read_text())
    assert subprocess.run(argv, env=env, capture_output=True).returncode == 0
    log = json.loads((out / "stages" / "1" / "train_log.json").read_text())
    assert log["usage"]["resumed_from_step"] == 3 and max(h["step"] for h in log["history"]) == 6
    # the stage's costs count its first three steps too (make fault-test checks them equal to an unbroken run's)
    assert log["usage"]["trained_tokens"] > before["trained_tokens"] > 0 and log["seconds"] >= before["seconds"]


def test_a_resumed_stage_adds_the_costs_its_checkpoint_recorded(tmp_path, caplog):
    from baselines.common import USAGE_FILE, _keep_usage

    class Trainer:  # what _keep_usage touches before training: the save hook it wraps
        def _save_checkpoint(self, *args):
            pass

    fresh = {"generation_seconds": 0.0, "generated_tokens": 0, "trained_tokens": 5, "prompt_tokens": 1}
    good = {"generation_seconds": 1.5, "generated_tokens": 7, "trained_tokens": 100, "prompt_tokens": 40, "seconds": 12.0}
    (tmp_path / USAGE_FILE).write_text(json.dumps(good))
    usage = dict(fresh)
    _keep_usage(Trainer(), usage, tmp_path)
    assert usage == {"generation_seconds": 1.5, "generated_tokens": 7, "trained_tokens": 105, "prompt_tokens": 41,
                     "seconds_before_resume": 12.0}
    damaged = ["{not json", "[]", json.dumps({**good, "trained_tokens": "many"}), json.dumps({**good, "trained_tokens": -3}),
               json.dumps({**good, "trained_tokens": 1.5}), json.dumps({**good, "trained_tokens": True}),
               json.dumps({**good, "trained_tokens": 10**30}), json.dumps({**good, "seconds": -98.0}),
               json.dumps({**good, "seconds": float("nan")}), json.dumps({**good, "generation_seconds": float("inf")})]
    for text in damaged:  # each would have been a traceback at the next save, or a negative count in train_log.json
        (tmp_path / USAGE_FILE).write_text(text)
        usage = dict(fresh)
        with caplog.at_level("WARNING", logger="harness"):
            _keep_usage(Trainer(), usage, tmp_path)
        assert usage == fresh and "start at the resume" in caplog.text, text
    usage = dict(fresh)
    _keep_usage(Trainer(), usage, None)  # a stage that starts fresh
    assert usage == fresh


def check_damaged_checkpoints(checkpoint, tmp_path):
    """Each way a checkpoint can be damaged is named before resuming (they were tracebacks, or a silent fresh optimizer)."""
    import shutil

    from baselines.common import check_checkpoint
    from harness.errors import HarnessError

    check_checkpoint(checkpoint)  # whole
    for name, damage, expected in [
        ("trainer_state.json", lambda f: f.write_text(""), "trainer_state.json: "),
        ("optimizer.pt", lambda f: f.unlink(), "no optimizer state"),
        ("scheduler.pt", lambda f: f.unlink(), "no scheduler state"),
        ("optimizer.pt", lambda f: f.write_bytes(f.read_bytes()[:1000]), "optimizer.pt is not a whole torch file"),
        ("model.safetensors", lambda f: f.write_bytes(f.read_bytes()[:-100]), "model.safetensors: cut short"),
        ("model.safetensors", lambda f: f.unlink(), "no weights"),
        ("trainer_state.json", lambda f: f.write_text("[]"), "no integer global_step"),
        ("trainer_state.json", lambda f: f.write_text('{"global_step": "2"}'), "no integer global_step"),
    ]:
        copy = tmp_path / f"{name}-{len(list(tmp_path.iterdir())) if tmp_path.exists() else 0}"
        shutil.copytree(checkpoint, copy)
        damage(copy / name)
        with pytest.raises(HarnessError, match="damaged checkpoint .*" + re.escape(expected) + ".*delete it to resume"):
            check_checkpoint(copy)


def test_a_prompt_file_nested_too_deeply_is_named_not_a_traceback(tmp_path):
    from harness.errors import HarnessError
    from harness.taskdata import read_prompts

    deep = tmp_path / "deep.jsonl"
    deep.write_text('{"prompt": ' + "[" * 100_000 + "]" * 100_000 + "}\n")
    with pytest.raises(HarnessError, match="deep.jsonl, line 1: not valid JSON"):
        read_prompts(deep)
