"""The bad-input corpus: each mistake ends with one clear line on stderr and exit code 2, before any work."""

import json
import re
import shutil
from pathlib import Path

import pytest

from harness import registry
from harness.cli import main

from .conftest import TOY


@pytest.fixture
def tasks_root(tmp_path, monkeypatch):
    """A writable copy of tasks/toy (sharing the shipped base by a link) that the CLI reads instead of tasks/."""
    root = tmp_path / "tasks"
    shutil.copytree(TOY, root / "toy", ignore=shutil.ignore_patterns("base"))
    (root / "toy" / "base").symlink_to(TOY / "base")
    monkeypatch.setattr(registry, "TASKS_DIR", root)
    return root / "toy"


def edit(path, old, new):
    text = path.read_text()
    assert old in text, old
    path.write_text(text.replace(old, new))


def snapshot(folder):
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def fails(capsys, args, *expected, tmp_path=None):
    """The command, aimed at a folder holding an earlier run's results, fails in one line and leaves them as they were."""
    out = tmp_path / "out" if tmp_path else None
    if out:
        (out / "stages" / "0").mkdir(parents=True)
        (out / "run.json").write_text('{"run_id": "earlier"}\n')
        (out / "matrix.csv").write_text("stage,cipher\n0,0.5\n")
        (out / "stages" / "0" / "scores.json").write_text('{"stage": 0}\n')
        before = snapshot(out)
    code = main(["run", "--output", str(out) if out else "/nonexistent/out", *args])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and err[0].startswith("error: "), err
    for text in expected:
        assert text in err[0], err[0]
    if out:
        assert snapshot(out) == before  # earlier results untouched, nothing added
    return err[0]


CASES = {
    "unknown task": (["--tasks", "cipher,fcts"], ["unknown task in suite 'toy' 'fcts'", "did you mean 'facts'"]),
    "unknown method": (["--method", "sdtf"], ["unknown method 'sdtf'", "did you mean 'sdft'"]),
    "unknown suite": (["--suite", "tooy"], ["unknown suite 'tooy'", "did you mean 'toy'"]),
    "unknown probe": (["--probes", "adition"], ["unknown probe", "'adition'", "did you mean 'addition'"]),
    "output is a file": (["--tasks", "cipher", "--output", "/etc/hostname"], ["--output /etc/hostname: a file is there; give a folder"]),
    "probe named twice": (["--tasks", "cipher", "--probes", "addition,toy_addition"], ["--probes names addition twice"]),
    "probe that is a task": (["--tasks", "cipher,facts", "--probes", "facts,addition"], ["--probes facts: a task of this sequence"]),
    "unknown option": (["--set", "learnin_rate=1e-5"], ["unknown option", "'learnin_rate'", "did you mean 'learning_rate'"]),
    "trailing comma in --method": (["--tasks", "facts,cipher", "--method", "sft,"], ["argument --method: empty entry in 'sft,'"]),
    "misspelled method in --set": (["--set", "sdtf.teacher=initial"], ["unknown method", "'sdtf'", "did you mean 'sdft'"]),
    "another method's option": (["--method", "sft", "--set", "teacher=initial"], ["option 'teacher' is for sdft, sdpo, not for sft"]),
    "another method's option, scoped": (["--method", "sft", "--set", "sft.teacher=initial"], ["unknown option 'teacher' for method 'sft' (it is an option of sdft, sdpo)"]),
    "invalid option value": (["--set", "learning_rate=fast"], ["option learning_rate='fast' for method 'sft': expected a number"]),
    "invalid choice": (["--method", "sdft", "--set", "teacher=oracle"], ["option teacher='oracle' for method 'sdft': expected one of"]),
    "method count": (["--method", "sft,sdft"], ["--method lists 2 methods for 3 tasks"]),
    "repeated task": (["--tasks", "cipher,cipher"], ["each task may appear once"]),
    "probe as task": (["--tasks", "addition"], ["'addition' is a probe, not a trainable task"]),
    "missing model": (["--model", "/no/such/model"], ["--model /no/such/model: not a model folder"]),
    "bad --set syntax": (["--set", "learning_rate"], ["expected KEY=VALUE"]),
    # Values checked by domain, not only by type: each of these passed the type check and crashed mid-run.
    "zero train batch": (["--set", "per_device_train_batch_size=0"], ["per_device_train_batch_size=0", "expected a value > 0"]),
    "negative learning rate": (["--set", "learning_rate=-1e-5"], ["learning_rate=-1e-05", "expected a value > 0"]),
    "max_steps below -1": (["--set", "max_steps=-3"], ["max_steps=-3", "or -1"]),
    "max_steps zero": (["--set", "max_steps=0"], ["max_steps=0", "or -1"]),
    "negative save_steps": (["--set", "save_steps=-1"], ["save_steps=-1", "expected an integer >= 0"]),
    "zero limit": (["--limit", "0"], ["--limit 0", "expected an integer >= 1"]),
    "zero eval batch": (["--batch-size", "0"], ["--batch-size 0", "expected an integer >= 1"]),
    "threshold above 1": (["--teacher-warn", "1.5"], ["--teacher-warn 1.5", "in [0, 1]"]),
    "negative seed": (["--seed", "-1"], ["--seed -1", "expected an integer in"]),
    "empty task list": (["--tasks", ""], ["--tasks is empty"]),
    "lora not a mapping": (["--set", "lora=8"], ["option lora=8", "expected a mapping"]),
    "method section not a mapping": (["--set", "sft=3"], ["options for method 'sft'", "expected a mapping, got 3"]),
    # A scoped option of a method the schedule leaves out is checked too, so its typo fails now, not in a later run.
    "bad choice, method not run": (["--set", "sdpo.reprompt=bogus"], ["option reprompt='bogus' for method 'sdpo': expected one of"]),
    "unknown option, method not run": (["--set", "sdft.nosuch=1"], ["unknown option 'nosuch' for method 'sdft'"]),
    "NaN option": (["--set", "replay=.nan"], ["option replay=nan for method 'sft': expected a finite number"]),
    "infinite TRL option": (["--set", "max_grad_norm=.inf"], ["option max_grad_norm=inf", "expected a finite number"]),
    "--config a folder": (["--config", "/tmp"], ["--config file is a folder", "/tmp"]),
    "by_task names a task not run": (["--tasks", "cipher", "--set", "sdft.by_task.toolsue.max_steps=9"],
                                     ["unknown task in sdft.by_task (not in this run's --tasks) 'toolsue'", "known: cipher"]),
    "by_task unknown option": (["--set", "by_task.facts.max_stepz=9"], ["unknown option in by_task.facts", "did you mean 'max_steps'"]),
    "by_task bad value": (["--set", "sft.by_task.facts.max_steps=0"], ["sft.by_task.facts: option max_steps=0", "or -1"]),
    "flat by_task bad value": (["--method", "sdft", "--set", "by_task.facts.temperature=hot"],
                               ["by_task.facts: option temperature='hot' for method 'sdft': expected a number"]),
    "by_task not a mapping": (["--set", "by_task=3"], ["options by_task: expected a mapping of task to options, got 3"]),
    "by_task task not a mapping": (["--set", "sft.by_task.facts=3"], ["options sft.by_task.facts: expected a mapping of options, got 3"]),
    "both checkpointing names, method not run": (["--set", "sdpo.gradient_checkpointing=true", "--set", "sdpo.activation_checkpointing=false"],
                                                 ["options sdpo.gradient_checkpointing and sdpo.activation_checkpointing are one option"]),
    "checkpointing not a boolean": (["--set", "gradient_checkpointing=notabool"], ["option activation_checkpointing='notabool'", "expected true or false"]),
    "checkpointing kwargs not a mapping": (["--set", "gradient_checkpointing_kwargs=foo"], ["activation_checkpointing_kwargs='foo'", "expected a mapping"]),
    "by_task option the task's method lacks": (["--tasks", "cipher,facts", "--method", "sdft,sft", "--set", "by_task.facts.teacher=ema"],
                                               ["option by_task.facts.teacher: method 'sft' trains facts in this run and has no option 'teacher'"]),
    "by_task of a method not training that task": (["--tasks", "cipher,facts", "--method", "sft,sdft", "--set", "sdft.by_task.cipher.max_steps=2"],
                                                   ["options sdft.by_task.cipher: cipher is trained by sft in this run, not by sdft"]),
    "fractional max_steps": (["--set", "max_steps=2.5"], ["option max_steps=2.5 for method 'sft': expected an integer"]),
    "fractional by_task max_steps": (["--set", "by_task.facts.max_steps=2.5"], ["by_task.facts: option max_steps=2.5", "expected an integer"]),
    "zero temperature": (["--method", "sdft", "--set", "temperature=0"], ["option temperature=0 for method 'sdft': expected a value > 0"]),
    "zero reprompt length": (["--method", "sdpo", "--set", "max_reprompt_len=0"], ["option max_reprompt_len=0 for method 'sdpo': expected a value > 0"]),
    "--set value then section": (["--set", "sft=3", "--set", "sft.teacher=x"], ["'sft' was set to a value"]),
    "lora rank zero": (["--set", "lora={r: 0}"], ["option lora for method 'sft': r=0: expected a positive integer"]),
    "lora fractional rank": (["--set", "by_task.facts.lora={r: 2.5}"], ["by_task.facts: option lora for method 'sft': r=2.5"]),
    # peft's own check on the model's architecture (meta device), before stage 1 trains, not when stage 3 starts
    "lora target the model lacks": (["--set", "by_task.tooluse.lora={target_modules: [nope]}"],
                                    ["stage 3 (sft on tooluse): option lora=", "Target modules {'nope'} not found in the base model"]),
    "eval-every-probes without --eval-every": (["--eval-every-probes"], ["--eval-every-probes", "give --eval-every too"]),
    "pass temperature without --pass-k": (["--pass-temperature", "0.6"], ["--pass-temperature", "give --pass-k too"]),
    "zero pass temperature": (["--pass-k", "1", "--pass-temperature", "0"], ["--pass-temperature 0: expected a finite temperature > 0"]),
    "negative pass temperature": (["--pass-k", "1", "--pass-temperature", "-0.5"], ["--pass-temperature -0.5: expected a finite temperature > 0"]),
    "infinite pass temperature": (["--pass-k", "1", "--pass-temperature", "inf"], ["--pass-temperature inf: expected a finite temperature > 0"]),
    "pass temperature a word": (["--pass-k", "1", "--pass-temperature", "hot"], ["argument --pass-temperature: invalid float value: 'hot'"]),
    "empty pass temperature": (["--pass-k", "1", "--pass-temperature", ""], ["argument --pass-temperature: invalid float value: ''"]),
    "NaN pass temperature": (["--pass-k", "1", "--pass-temperature", "nan"], ["--pass-temperature nan: expected a finite temperature > 0"]),
    "huge --pass-k": (["--pass-k", "1,1000000000000000000000"], ["--pass-k", "at most 10000 samples per item"]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_command_lines(case, capsys, tmp_path):
    args, expected = CASES[case]
    fails(capsys, args, *expected, tmp_path=tmp_path)


def test_malformed_card_yaml(tasks_root, capsys, tmp_path):
    edit(tasks_root / "facts.yaml", "metadata:\n", "metadata: [\n")
    fails(capsys, [], "facts.yaml, line", "malformed YAML", tmp_path=tmp_path)


def test_missing_data_file(tasks_root, capsys, tmp_path):
    (tasks_root / "data" / "facts_train.jsonl").unlink()
    fails(capsys, [], "data file for split 'train' not found", "facts_train.jsonl", tmp_path=tmp_path)


def test_empty_data_file(tasks_root, capsys, tmp_path):
    (tasks_root / "data" / "tooluse_test.jsonl").write_text("")
    fails(capsys, [], "the 'test' data of task 'tooluse' is empty", tmp_path=tmp_path)


def test_row_without_demonstration(tasks_root, capsys, tmp_path):
    path = tasks_root / "data" / "cipher_train.jsonl"
    rows = path.read_text().splitlines()
    rows[4] = json.dumps({"prompt": "Shift each digit up by one: 12", "answer": "23"})
    path.write_text("\n".join(rows) + "\n")
    fails(capsys, [], "cipher_train.jsonl, line 5: missing or empty field 'demonstration'", tmp_path=tmp_path)


def test_row_with_empty_prompt(tasks_root, capsys, tmp_path):
    path = tasks_root / "data" / "facts_test.jsonl"
    rows = path.read_text().splitlines()
    rows[0] = json.dumps({"prompt": "", "demonstration": "Zolu", "answer": "Zolu"})
    path.write_text("\n".join(rows) + "\n")
    fails(capsys, [], "facts_test.jsonl, line 1: missing or empty field 'prompt'", tmp_path=tmp_path)


def test_non_utf8_data(tasks_root, capsys, tmp_path):
    (tasks_root / "data" / "cipher_test.jsonl").write_bytes(b'{"prompt": "\xff\xfe"}\n')
    fails(capsys, [], "cipher_test.jsonl, line 1: not UTF-8 text", tmp_path=tmp_path)


def test_unknown_scorer_in_card(tasks_root, capsys, tmp_path):
    edit(tasks_root / "tooluse.yaml", "scorer: tool_call", "scorer: toolcall")
    fails(capsys, [], "tooluse.yaml", "unknown scorer 'toolcall'", "did you mean 'tool_call'", tmp_path=tmp_path)


def test_tokenizer_without_chat_template(capsys, tmp_path):
    model = tmp_path / "model"
    shutil.copytree(TOY / "base", model)
    (model / "chat_template.jinja").unlink()
    config = json.loads((model / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    (model / "tokenizer_config.json").write_text(json.dumps(config))
    fails(capsys, ["--model", str(model)], "its tokenizer has no chat template", tmp_path=tmp_path)


def test_humaneval_needs_explicit_consent(capsys, tmp_path):
    fails(capsys, ["--probes", "humaneval"], "probe humaneval executes model-generated code", "--confirm-unsafe-code", tmp_path=tmp_path)


def test_unknown_report_and_sync_folders(capsys, tmp_path):
    assert main(["report", str(tmp_path)]) == 2
    assert "not a finished run folder" in capsys.readouterr().err
    assert main(["sync", str(tmp_path)]) == 2
    assert "not a run folder" in capsys.readouterr().err
    assert main(["report", str(tmp_path / "nowhere")]) == 2
    assert "nowhere: no such folder" in capsys.readouterr().err
    (tmp_path / "mlflow.db").write_text("")
    assert main(["report", str(tmp_path / "mlflow.db")]) == 2
    assert "mlflow.db: not a folder" in capsys.readouterr().err


def test_an_unknown_name_lists_each_known_one_once():
    from harness.errors import unknown

    error = unknown("probe", "adition", ["addition", "cipher", "addition"], prefer=["cipher", "addition", "addition"])
    assert str(error) == "unknown probe 'adition' (did you mean 'addition'?); known: addition, cipher"


# ---------------------------------------------------------------- a crashed run does not poison its folder


def test_folder_without_finished_stage_belongs_to_the_next_command(tmp_path, caplog):
    from harness import runner

    out = tmp_path / "out"
    (out / "stages" / "1" / "trainer").mkdir(parents=True)  # a crash mid-training left a checkpoint of the bad run
    (out / "run.json").write_text(json.dumps({"run_id": "bad", "options": [{"learning_rate": 5}]}))
    with caplog.at_level("INFO", logger="harness"):
        runner.claim(out, {"run_id": "corrected"})
    assert json.loads((out / "run.json").read_text())["run_id"] == "corrected"
    assert not (out / "stages").exists()  # the other run's checkpoint must not be resumed as this one's
    assert "replacing it" in caplog.text


def test_folder_with_finished_stages_stays_protected(tmp_path):
    from harness import runner
    from harness.errors import HarnessError

    out = tmp_path / "out"
    (out / "stages" / "0").mkdir(parents=True)
    (out / "stages" / "0" / "scores.json").write_text('{"stage": 0}')
    (out / "run.json").write_text(json.dumps({"run_id": "earlier", "seed": 0}))
    with pytest.raises(HarnessError, match="finished stage\\(s\\) 0.*rerun that run's own command"):
        runner.claim(out, {"run_id": "other", "seed": 1})
    assert json.loads((out / "run.json").read_text())["run_id"] == "earlier"


@pytest.mark.parametrize("damage", ["delete", "truncate"])
def test_finished_stages_whose_run_json_is_gone_or_damaged_are_adopted_by_no_run(tmp_path, damage):
    from harness import runner
    from harness.errors import HarnessError

    out = tmp_path / "out"
    (out / "stages" / "1").mkdir(parents=True)
    (out / "stages" / "1" / "scores.json").write_text('{"stage": 1}')
    if damage == "truncate":
        (out / "run.json").write_text("{trunc")
    with pytest.raises(HarnessError, match="finished stage\\(s\\) 1.*restore .*run.json|finished stage\\(s\\) 1.*restore it, or delete the folder"):
        runner.claim(out, {"run_id": "other"})
    assert not (out / "run.json").exists() or (out / "run.json").read_text() == "{trunc"


def test_corrupt_run_json_of_a_crashed_run_is_replaced(tmp_path):
    from harness import runner

    out = tmp_path / "out"
    out.mkdir()
    (out / "run.json").write_text("{trunc")
    runner.claim(out, {"run_id": "new"})
    assert json.loads((out / "run.json").read_text())["run_id"] == "new"


# ---------------------------------------------------------------- files the harness reads back

RUN = {"run_id": "r", "suite": "toy", "tasks": ["cipher"], "methods": ["sft"], "model": "m", "seed": 0, "preset": "toy", "options": [{}],
       "probes": [{"name": "addition", "task": "toy_addition"}, {"name": "ppl", "task": "wikitext"}]}


@pytest.fixture
def finished_run(tmp_path):
    from harness import results, storage

    run_dir = tmp_path / "run"
    storage.write_json(run_dir / "run.json", RUN)
    # The NaN contract: lm-eval's NaN is stored as null; a probe on another scale (perplexity 3.5) is recorded as is.
    for k, scores in enumerate([{"cipher": 0.25, "addition": None, "ppl": 3.5}, {"cipher": 0.75, "addition": 0.5, "ppl": 3.0}]):
        storage.write_json(run_dir / "stages" / str(k) / "scores.json",
                           {"stage": k, "method": "sft" if k else "base", "task": "cipher" if k else None, "scores": scores})
    results.write_summary(run_dir)
    return run_dir


def test_undefined_and_out_of_range_scores_are_recorded_and_left_out(finished_run, tmp_path, capsys):
    metrics = json.loads((finished_run / "metrics.json").read_text())
    assert metrics["acc"] == 0.75 and metrics["new_task_gain"] == 0.5
    assert metrics["probe_avg"] == [None, 0.5] and metrics["probe_delta"] is None  # base row: nothing defined
    assert (finished_run / "matrix.csv").read_text().splitlines()[1:] == ["0,base,,0.25,,3.5,", "1,sft,cipher,0.75,0.5,3,"]
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert main(["sync", str(finished_run), "--tracking-uri", uri]) == 0
    assert main(["report", str(finished_run), "--out", str(tmp_path / "cmp")]) == 0
    assert "probe_delta" in (tmp_path / "cmp" / "comparison.csv").read_text()


CORRUPT = {
    "metrics.json": ("metrics.json", "{", "metrics.json: not a JSON file the harness wrote"),
    "metrics.json field": ("metrics.json", '{"stages_done": "1", "stages_total": 1}', "metrics.json: field 'stages_done' should be int, got str"),
    "run.json list": ("run.json", "[1, 2]", "run.json: expected a JSON object, got list"),
    "run.json field": ("run.json", '{"run_id": "r"}', "run.json: missing field 'suite'"),
    "scores.json": ("stages/1/scores.json", '{"stage": 1, "method": "sft", "task": "cipher", "scores": 0.5}', "scores.json: field 'scores' should be dict"),
    "scores.json task": ("stages/1/scores.json", '{"stage": 1, "method": "sft", "scores": {}}', "scores.json: missing field 'task'"),
    "matrix.csv not UTF-8": ("matrix.csv", b"\xff\xfe", "matrix.csv: not a matrix the harness wrote"),
    "heatmap.png missing": ("heatmap.png", None, "heatmap.png: missing; rerun the run"),
    "matrix.csv foreign": ("matrix.csv", "a,b\n1,2\n", "matrix.csv: not a matrix the harness wrote"),
    "matrix.csv cell": ("matrix.csv", "stage,method,trained_on,cipher,addition,ppl,teacher_acc\n0,base,,high,,,\n", "matrix.csv, line 2: could not convert"),
    "matrix.csv short row": ("matrix.csv", "stage,method,trained_on,cipher,addition,ppl,teacher_acc\n0,base\n", "matrix.csv, line 2: 2 cells"),
}


@pytest.mark.parametrize("case", list(CORRUPT))
@pytest.mark.parametrize("command", ["report", "sync"])
def test_corrupt_run_files_name_the_file_and_field(case, command, finished_run, tmp_path, capsys):
    name, text, expected = CORRUPT[case]
    if (command, name) in {("report", "stages/1/scores.json"), ("report", "heatmap.png")}:
        pytest.skip("not a file this command reads (report reads the matrix, draws its own figures)")
    path = finished_run / name
    if text is None:
        path.unlink()
    elif isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    extra = ["--out", str(tmp_path / "cmp")] if command == "report" else ["--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}"]
    assert main([command, str(finished_run), *extra]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and expected in err[0], err


def test_card_with_a_scalar_data_split(tasks_root, capsys, tmp_path):
    path = tasks_root / "facts.yaml"
    path.write_text(re.sub(r"test: [^,}\n]+", "test: 5", path.read_text(), count=1))
    fails(capsys, [], "facts.yaml: `metadata.harness.data.test` must be a file name or a mapping", tmp_path=tmp_path)


def test_suite_whose_sequence_is_a_string(tasks_root, capsys, tmp_path):
    suite = next(p for p in tasks_root.glob("*.yaml") if p.read_text().startswith("suite:") or "\nsuite:" in p.read_text())
    suite.write_text(re.sub(r"\nsequence:[^\n]*", "\nsequence: cipher", suite.read_text(), count=1))
    registry._suite_index.cache_clear()
    fails(capsys, [], "field `sequence` must be a non-empty list of task names", tmp_path=tmp_path)


def test_a_suite_whose_model_is_nowhere_names_the_suite_file(tasks_root, capsys, tmp_path, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # not beside the suite, so a hub id: unreachable here
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    edit(tasks_root / "suite.yaml", "model: base", "model: bse")
    registry._suite_index.cache_clear()
    fails(capsys, [], f"{tasks_root / 'suite.yaml'}: `model: bse`: not a local folder, and the Hugging Face hub", tmp_path=tmp_path)


def test_a_misspelled_suite_probe_names_the_suite_file_and_the_card_meant(tasks_root, capsys, tmp_path):
    edit(tasks_root / "suite.yaml", "{task: toy_addition,", "{task: toy_additon,")
    registry._suite_index.cache_clear()
    error = fails(capsys, [], f"{tasks_root / 'suite.yaml'}: `probes`: unknown probe", "did you mean 'toy_addition'?", tmp_path=tmp_path)
    assert "toy_additon," not in error.split("known:")[1]  # the typo is not offered as a known name


def test_a_bad_suite_eval_setting_names_the_suite_file_not_a_flag(tasks_root, capsys, tmp_path):
    edit(tasks_root / "suite.yaml", "preset: toy", "preset: toy\neval: {batch_size: 0}")
    registry._suite_index.cache_clear()
    fails(capsys, [], f"{tasks_root / 'suite.yaml'}: eval.batch_size 0: expected an integer >= 1", tmp_path=tmp_path)


# ---------------------------------------------------------------- an unreachable tracking server


DEAD = "http://127.0.0.1:9"  # the discard port: nothing listens


def test_unreachable_tracking_server_warns_once_with_the_replay_command(finished_run, caplog):
    from harness import tracking

    assert tracking.sync(finished_run, DEAD) is False
    assert f"harness sync {finished_run} --tracking-uri {DEAD}" in caplog.text
    assert "cannot connect to 127.0.0.1:9" in caplog.text


def test_sync_against_an_unreachable_server_fails_in_one_line(finished_run, capsys):
    assert main(["sync", str(finished_run), "--tracking-uri", DEAD]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"MLflow store {DEAD} failed (Unreachable: cannot connect" in err[0], err


def test_a_bug_in_sync_is_not_taken_for_an_outage(finished_run, monkeypatch):
    from harness import tracking

    monkeypatch.setattr(tracking, "read_metrics", lambda run_dir: None)  # a programming error inside sync
    with pytest.raises(TypeError):
        tracking.sync(finished_run, f"sqlite:///{finished_run.parent / 'mlflow.db'}")


# ---------------------------------------------------------------- hooks into TRL's private methods


def test_generation_timing_hooks_exist_and_fail_loudly_when_moved():
    import inspect

    from trl.experimental.sdft import SDFTTrainer
    from trl.experimental.sdpo import SDPOTrainer

    from baselines.common import _meter

    for trainer in (SDFTTrainer, SDPOTrainer):  # the hook points baselines.common._meter wraps
        assert list(inspect.signature(trainer._generate).parameters)[:2] == ["self", "prompt_ids"], trainer
        assert "inputs" in inspect.signature(trainer.compute_loss).parameters, trainer

    class Moved(SDFTTrainer):
        _generate = None  # as if TRL renamed it

    with pytest.raises(RuntimeError, match="TRL moved the hook"):
        _meter(object.__new__(Moved))


def test_config_file_with_a_list_section(capsys, tmp_path):
    config = tmp_path / "options.yaml"
    config.write_text("sft: [1, 2]\n")
    fails(capsys, ["--config", str(config)], "options for method 'sft'", "expected a mapping, got [1, 2]", tmp_path=tmp_path)


def test_config_file_that_is_a_list(capsys, tmp_path):
    config = tmp_path / "options.yaml"
    config.write_text("- a\n- b\n")
    fails(capsys, ["--config", str(config)], "options.yaml: expected a mapping of options, got list", tmp_path=tmp_path)


@pytest.mark.parametrize(("text", "expected"), [
    ("learning_rate: -1\n", "option learning_rate=-1 for method 'sft': expected a value > 0"),
    ("sdft: {teacher: bogus}\n", "option teacher='bogus' for method 'sdft': expected one of"),
    ("sft: {by_task: {facts: {max_steps: 0}}}\n", "sft.by_task.facts: option max_steps=0"),
    ("learnin_rate: 1e-5\n", "did you mean 'learning_rate'"),
    ("by_task: {cipher: {max_steps: x}}\n", "by_task.cipher: option max_steps='x' for method 'sft'"),
    ("by_task: {cipher: {teacher: ema}}\n", "option by_task.cipher.teacher: method 'sft' trains cipher in this run and has no option 'teacher'"),
    ("by_task: {cipher: {max_stepz: 3}}\n", "unknown option in by_task.cipher (for sft) 'max_stepz' (did you mean 'max_steps'?)"),
])
def test_a_mistake_in_the_config_file_names_the_file(text, expected, capsys, tmp_path):
    config = tmp_path / "mine.yaml"
    config.write_text(text)
    err = fails(capsys, ["--config", str(config)], expected, tmp_path=tmp_path)
    assert err.startswith(f"error: --config {config}: ")


def test_a_folder_holding_another_run_says_what_differs(capsys, tmp_path):
    fails(capsys, ["--tasks", "cipher"], "holds a different run with finished stage(s) 0",
          "its run.json differs in run_id ('earlier' there, 'out' here), suite ('unset' there, 'toy' here)", tmp_path=tmp_path)


@pytest.mark.parametrize(("args", "expected"), [
    (["--seeds", "0,99999999999"], "--seeds: expected comma-separated integers in [0, 2**32 - 1], got '0,99999999999'"),
    (["--seeds", "0,1", "--seed", "1"], "--seed and --seeds: give one"),
    (["--seeds", ","], "--seeds: expected comma-separated integers"),
    (["--seeds=-1,0"], "--seeds: expected comma-separated integers in [0, 2**32 - 1], got '-1,0'"),
    (["--seeds", "0,0"], "--seeds lists 0 twice; each value once"),
])
def test_every_seed_is_checked_before_any_trains(args, expected, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # runs without --output go to results/ here
    assert main(["run", "--tasks", "cipher", *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and expected in err[0], err
    assert not (tmp_path / "results").exists()


def test_a_later_seeds_folder_holding_another_run_stops_the_first_seed_too(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    held = tmp_path / "results" / "toy-sft-cipher-seed1"
    (held / "stages" / "0").mkdir(parents=True)
    (held / "run.json").write_text('{"run_id": "earlier"}\n')
    (held / "stages" / "0" / "scores.json").write_text('{"stage": 0}\n')
    assert main(["run", "--tasks", "cipher", "--seeds", "0,1", "--set", "grpo.temperature=0.7"]) == 2
    out, err = capsys.readouterr()
    assert "toy-sft-cipher-seed1 holds a different run" in err
    assert out.count("options for grpo (--config/--set) unused") == 1, out  # one note for the command, not one per seed
    assert sorted(p.name for p in (tmp_path / "results").iterdir()) == ["toy-sft-cipher-seed1"]


def test_a_rerun_with_another_limit_names_the_limit(capsys, tmp_path):
    out = tmp_path / "out"
    args = ["run", "--tasks", "cipher", "--limit", "2", "--set", "max_steps=1", "--output", str(out),
            "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}"]
    assert main(args) == 0
    assert main([*args[:4], "3", *args[5:]]) == 2
    assert "its run.json differs in eval.limit (2 there, 3 here))" in capsys.readouterr().err


def test_a_model_folder_or_data_folder_typed_another_way_is_the_same_folder(tmp_path, monkeypatch):
    from harness.plan import RunRequest, resolve

    base = TOY / "base"
    monkeypatch.chdir(base.parent)
    assert resolve(RunRequest(tasks=["cipher"], model="base/")).model == resolve(RunRequest(tasks=["cipher"], model=str(base))).model == str(base.resolve())
    assert resolve(RunRequest(tasks=["cipher"], data_dir="data")).data_dir == str((base.parent / "data").resolve())  # not 'data', which
    # read from another folder would name other data under the same record
    link = tmp_path / "Qwen2.5-7B-Instruct"  # a link keeps its name: a published base row is matched by it (--check-base)
    link.symlink_to(base)
    assert resolve(RunRequest(tasks=["cipher"], model=str(link))).model == str(link)
    (tmp_path / "data-link").symlink_to(base.parent / "data")  # `..` after a link goes where the file system goes
    assert resolve(RunRequest(tasks=["cipher"], model=str(tmp_path / "data-link" / ".." / "base"))).model == str(base.resolve())


def test_a_data_folder_given_with_a_tilde_is_read(tasks_root, tmp_path, monkeypatch):
    """`--data-dir=~/mydata` reaches the harness unexpanded (no shell expands it after `=`): it was told to pass --data-dir."""
    from harness.plan import RunRequest, resolve

    edit(tasks_root / "cipher.yaml", "test: data/cipher_test.jsonl", "test: {file: ciphertest.jsonl}")
    (tmp_path / "mydata").mkdir()
    shutil.copy(tasks_root / "data" / "cipher_test.jsonl", tmp_path / "mydata" / "ciphertest.jsonl")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert resolve(RunRequest(tasks=["cipher"], data_dir="~/mydata")).data_dir == str(tmp_path / "mydata")
    monkeypatch.setenv("HARNESS_DATA_DIR", "~/mydata")  # quoted in a shell profile, say
    resolve(RunRequest(tasks=["cipher"]))


def test_a_data_folder_that_is_not_there_is_named_before_any_work(capsys, tmp_path, monkeypatch):
    """It was passed over in silence: each card looked elsewhere (the toy cards need none) or asked for --data-dir."""
    fails(capsys, ["--data-dir", str(tmp_path / "nowhere")], f"--data-dir {tmp_path / 'nowhere'}: no such folder", tmp_path=tmp_path)
    (tmp_path / "data.jsonl").write_text("")
    fails(capsys, ["--data-dir", str(tmp_path / "data.jsonl")], f"--data-dir {tmp_path / 'data.jsonl'}: not a folder")
    fails(capsys, ["--data-dir", ""], "--data-dir is empty")  # was read as not given


def test_a_stale_data_dir_variable_is_a_warning(tmp_path, monkeypatch, caplog):
    """Set for other work in a shell profile: a run on shipped data goes on, told why a card finds no copy there."""
    from harness.plan import RunRequest, resolve

    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("HARNESS_DATA_DIR", "~/nowhere")
    with caplog.at_level("WARNING", logger="harness"):
        resolve(RunRequest(tasks=["cipher"]))
    assert f"$HARNESS_DATA_DIR ~/nowhere: no such folder ({tmp_path / 'nowhere'})" in caplog.text


def test_a_model_folder_with_an_unknown_architecture_is_one_line(capsys, tmp_path):
    model = tmp_path / "model"
    shutil.copytree(TOY / "base", model)
    (model / "config.json").write_text('{"model_type": "nonsense"}')
    fails(capsys, ["--model", str(model)], f"--model {model}: cannot read its config.json", tmp_path=tmp_path)


def test_a_stage_that_makes_no_optimizer_step_is_an_error_not_a_trained_stage(capsys, tmp_path):
    """SDFT's rollout batch is per-device batch x accumulation: 16 x 8 = 128 > the 90 facts rows, so no step is made."""
    out = tmp_path / "out"
    args = ["run", "--tasks", "facts", "--method", "sdft", "--probes", "addition", "--limit", "2", "--set", "max_steps=1",
            "--set", "gradient_accumulation_steps=8", "--output", str(out), "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}"]
    assert main(args) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "error: stage 1 (sdft on facts) made no optimizer step: its 90 rows fill no batch of per_device_train_batch_size 16 x "
        "gradient_accumulation_steps 8 x 1 process(es); lower gradient_accumulation_steps or give more rows")
    assert not (out / "stages" / "1" / "scores.json").exists()


def _toy_model_copy(folder: Path) -> Path:
    shutil.copytree(Path(__file__).resolve().parents[1] / "tasks" / "toy" / "base", folder)
    return folder


@pytest.mark.parametrize("damage, expected", [
    ("adapter", "a PEFT adapter (adapter_config.json), not a model: merge it into its base model first"),
    ("no tokenizer", "no tokenizer files there (tokenizer.json, tokenizer_config.json, tokenizer.model, vocab.json)"),
    ("small vocabulary", "its tokenizer has 752 tokens, but the model embeds 100 (vocab_size)"),
    ("truncated weights", "cannot read model.safetensors ("),
    ("corrupt weights", "cannot read model.safetensors ("),
    ("lfs pointer", "cannot read model.safetensors (it is a Git LFS pointer, not the weights: fetch them (`git lfs pull`"),  # was a MemoryError
    ("empty weights", "cannot read model.safetensors (it holds 0 bytes, no weights: an interrupted download or copy? Fetch it again)"),
    ("no weights", "no weights there (model.safetensors, pytorch_model.bin or a sharded index)"),
    ("missing shard", "model.safetensors.index.json lists 2 shard(s), 1 missing: model-00002-of-00002.safetensors"),
])
def test_a_model_folder_that_cannot_work_is_named_before_any_work(capsys, tmp_path, damage, expected):
    model = _toy_model_copy(tmp_path / "model")
    weights = model / "model.safetensors"
    if damage == "adapter":
        (model / "config.json").rename(model / "adapter_config.json")
    elif damage == "no tokenizer":
        for name in ("tokenizer.json", "tokenizer_config.json"):
            (model / name).unlink()
    elif damage == "small vocabulary":
        config = json.loads((model / "config.json").read_text())
        (model / "config.json").write_text(json.dumps({**config, "vocab_size": 100}))
    elif damage == "no weights":
        weights.unlink()
    elif damage == "missing shard":  # an index naming two shards, one of them gone
        weights.rename(model / "model-00001-of-00002.safetensors")
        index = {"metadata": {}, "weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}}
        (model / "model.safetensors.index.json").write_text(json.dumps(index))
    elif damage == "lfs pointer":  # a clone without `git lfs pull`
        weights.write_text("version https://git-lfs.github.com/spec/v1\noid sha256:4d7a2146\nsize 8251360\n")
    elif damage == "truncated weights":
        weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    elif damage == "empty weights":
        weights.write_bytes(b"")
    else:
        weights.write_bytes(b"\0" * 64 + weights.read_bytes()[64:])
    assert main(["run", "--tasks", "cipher", "--model", str(model), "--output", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.startswith(f"error: --model {model}: ") and expected in err, err
    assert not (tmp_path / "out").exists()


def test_a_hub_id_that_does_not_resolve_is_one_line_before_any_work(capsys, tmp_path, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    assert main(["run", "--tasks", "cipher", "--model", "nobody/no-such-model", "--output", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --model nobody/no-such-model: not a local folder, and the Hugging Face hub (or its cache) has no such model"), err
    assert "\n" not in err and not (tmp_path / "out").exists()


def test_a_model_with_a_context_shorter_than_the_suites_evaluation_is_refused(capsys, tmp_path):
    model = _toy_model_copy(tmp_path / "model")  # 256 positions; the papers' suite evaluates prompts up to 4096 tokens
    assert main(["run", "--suite", "paper-sequential", "--model", str(model), "--confirm-unsafe-code", "--output", str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err.strip() == (f"error: --model {model}: its context is 256 positions (max_position_embeddings), "
                                               "shorter than the suite's evaluation max_length 4096")


@pytest.mark.parametrize("max_length, expected", [
    (16, "error: stage 1 (sft on tooluse): none of its 1000 rows fits max_length 16 (the prompt fills it, leaving no completion to learn)"),
    (36, "stage 1 (sft on tooluse): 167 of 1000 rows dropped: their prompts fill max_length 36"),  # a warning
])
def test_rows_whose_prompt_fills_max_length_are_counted(capsys, caplog, tmp_path, max_length, expected):
    """TRL drops them silently; with none left the trainer failed on an empty sampler, deep in torch. Planning counts
    them as TRL does, so a stage that could train nothing stops before the base is evaluated."""
    args = ["run", "--tasks", "tooluse", "--method", "sft", "--probes", "addition", "--limit", "2", "--set", "max_steps=1",
            "--set", f"max_length={max_length}", "--output", str(tmp_path / "out"), "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}"]
    assert main(args) == (2 if max_length == 16 else 0)
    out, err = capsys.readouterr()
    said = out + err + caplog.text
    assert expected in said
    if max_length == 16:
        assert not (tmp_path / "out").exists()  # refused at planning
    else:
        assert "stage 1 (sft on tooluse): 167 of 1000 rows will be dropped: their prompts fill max_length 36" in said  # as TRL counts


def test_sdft_prompts_are_measured_against_the_cut_and_the_context_before_any_work(capsys, tmp_path):
    """TRL keeps the last max_prompt_length tokens of the student's and the teacher's prompt, silently."""
    from harness.plan import RunRequest, resolve

    args = ["run", "--tasks", "cipher", "--method", "sdft", "--set", "max_prompt_length=300", "--set", "max_completion_length=220",
            "--output", str(tmp_path / "out")]
    assert main(args) == 2 and not (tmp_path / "out").exists()
    assert capsys.readouterr().err.strip() == (
        "error: stage 1 (sdft on cipher): its longest train teacher prompt (52 tokens) plus max_completion_length 220 is more than "
        "the model's 256 positions: it would read positions it was never trained on; lower max_prompt_length or max_completion_length")
    request = RunRequest(tasks=["cipher"], methods=["sdft"], set=["max_prompt_length=30"], tracking_uri=f"sqlite:///{tmp_path / 'm.db'}")
    assert resolve(request).notes == (
        "stage 1 (sdft on cipher): 1000 of 1000 train teacher prompts are longer than max_prompt_length 30 (the longest 52 tokens): "
        "TRL keeps only their last 30 tokens, so the model reads them without their start",)


def test_sdpo_teacher_prompts_are_measured_with_the_longest_rollout_before_any_work(capsys, tmp_path):
    """SDPO's teacher reads the prompt re-prompted with a successful rollout (up to max_completion_length tokens) and
    then the completion: both count against the model's positions. TRL cuts it at max_reprompt_len, not max_prompt_length."""
    from harness.errors import HarnessError
    from harness.plan import RunRequest, resolve

    def planned(*sets: str):
        return resolve(RunRequest(tasks=["tooluse"], methods=["sdpo"], set=list(sets), tracking_uri=f"sqlite:///{tmp_path / 'm.db'}"))

    args = ["run", "--tasks", "tooluse", "--method", "sdpo", "--set", "max_completion_length=110", "--output", str(tmp_path / "out")]
    assert main(args) == 2 and not (tmp_path / "out").exists()
    # 58 tokens of the longest re-prompt (the card's teacher template, the rollout's place empty) + 110 for the rollout
    assert capsys.readouterr().err.strip() == (
        "error: stage 1 (sdpo on tooluse): its longest train teacher prompt (168 tokens, with a successful rollout of max_completion_length "
        "110 in it) plus max_completion_length 110 is more than the model's 256 positions: it would read positions it was never "
        "trained on; lower max_reprompt_len or max_completion_length")
    assert planned("max_reprompt_len=60").notes == (
        "stage 1 (sdpo on tooluse): 1000 of 1000 train teacher prompts can be longer than max_reprompt_len 60 (the longest 98 tokens, "
        "with a successful rollout of max_completion_length 40 in it): TRL keeps only their last 60 tokens, so the model reads them "
        "without their start",)
    planned("max_completion_length=70")  # 58 + 70 + 70 fits
    with pytest.raises(HarnessError, match=r"\(194 tokens, with a successful rollout"):  # shown twice: 54 + 2 x 70
        planned("max_completion_length=70", "solution_template=' {successful_previous_attempt} / {successful_previous_attempt}'")


@pytest.mark.parametrize("option, said", [
    ("reprompt_template={solution}", "option reprompt_template={'solution': None} for method 'sdpo': expected a string (quote it: YAML reads {x} as a mapping"),
    ("reprompt_template='{prompt} {x}'", "option reprompt_template='{prompt} {x}' for method 'sdpo': unknown placeholder {x}; its placeholders are "
                                         "{prompt}, {solution}, {feedback}, and a literal brace is written twice, {{ or }}"),
    ("solution_template='{successful_previous_attempt'", "option solution_template='{successful_previous_attempt' for method 'sdpo': "
                                                         "expected '}' before end of string; its placeholders are {successful_previous_attempt}"),
    ("feedback_template='{0}'", "option feedback_template='{0}' for method 'sdpo': unknown placeholder {0}"),
    ("reprompt_template=123", "option reprompt_template=123 for method 'sdpo': expected a string (quote it)"),
    ("reprompt_template='{prompt!x}{solution}'", "option reprompt_template='{prompt!x}{solution}' for method 'sdpo': "
                                                 "ValueError: Unknown conversion specifier x (formatted with 'text' for each placeholder); its placeholders are"),
    ("reprompt_template='{prompt:{bogus}}'", "option reprompt_template='{prompt:{bogus}}' for method 'sdpo': KeyError: 'bogus'"),
    ("reprompt_template='{prompt:d}'", "Unknown format code 'd' for object of type 'str' (formatted with 'text' for each placeholder)"),
    ("sdpo.by_task.tooluse.feedback_template='{oops}'", "sdpo.by_task.tooluse: option feedback_template='{oops}' for method 'sdpo': "
                                                        "unknown placeholder {oops}"),
    ("feedback_template=[a, b]", "option feedback_template=['a', 'b'] for method 'sdpo': expected a string (quote it: YAML reads {x} "
                                 "as a mapping and [x] as a list)"),
    ("dataset_text_field={x}", "option dataset_text_field={'x': None}: a mapping, not a method's section (quote the value"),
    # what the harness sets from the run, and SDFT's teacher (the card's template, which the teacher check reads too)
    ("sdft.teacher_prompt_template='{{prompt}} {privileged_context}'",
     "option 'teacher_prompt_template' for method 'sdft' is the harness's to set: a task card's `teacher_template` (or its suite's)"),
    ("sdft.teacher_model_kind=base", "option 'teacher_model_kind' for method 'sdft' is the harness's to set: the `teacher` option"),
    ("output_dir=/tmp/elsewhere", "option 'output_dir' for method 'sdpo' is the harness's to set: each stage trains in its run's folder "
                                  "(`harness run --output`, `harness sweep --out`)"),
    ("sdpo.seed=3", "option 'seed' for method 'sdpo' is the harness's to set: the run's seed (`harness run --seed`, a sweep's `seeds`)"),
    ("teacher_prompt_template=x", "option 'teacher_prompt_template' is the harness's to set: a task card's"),  # no sdft in this run
])
def test_a_template_trl_formats_mid_run_is_checked_at_planning(capsys, tmp_path, option, said):
    """TRL calls str.format on these templates during training, after the base evaluation: a bad one stops the run first.
    Fields the harness sets itself are refused with where to set them."""
    method = "sdft" if option.startswith("sdft.") else "sdpo"
    args = ["run", "--tasks", "tooluse", "--method", method, "--set", option, "--output", str(tmp_path / "out")]
    assert main(args) == 2 and not (tmp_path / "out").exists()
    err = capsys.readouterr().err
    assert said in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_a_rope_scaled_context_counts_its_scaling():
    from transformers import LlamaConfig

    from harness.errors import HarnessError
    from harness.evaluation import EvalSettings
    from harness.plan import check_context

    yarn = LlamaConfig(max_position_embeddings=256, rope_scaling={"rope_type": "yarn", "factor": 32.0, "original_max_position_embeddings": 256})
    check_context("m", yarn, EvalSettings(max_length=4096))  # 256 x 32 = 8192 positions
    with pytest.raises(HarnessError, match="m: its context is 256 positions"):
        check_context("m", LlamaConfig(max_position_embeddings=256), EvalSettings(max_length=4096))


ROOM = "plus the longest prompt of its test split"
CIPHER = ("cipher.yaml", "max_gen_toks: 16}")


@pytest.mark.parametrize("edits, max_length, expected", [
    # lm-eval kept the prompt's last 4 tokens and finished with other scores; the second stopped mid-run on an assertion
    ([(*CIPHER, "max_gen_toks: 2044}")], None, f"cipher.yaml: `generation_kwargs.max_gen_toks` 2044 {ROOM} (24 tokens) is 2068 tokens, "
     "more than the model's 256 positions (max_position_embeddings): lm-eval would keep only the last 4 tokens of the prompt "
     "(max_length 2048 - max_gen_toks); lower it to at most 232"),
    ([(*CIPHER, "max_gen_toks: 100000000000}")], None, "lm-eval would stop mid-run (max_gen_toks must be below max_length 2048)"),
    ([(*CIPHER, "max_gen_toks: 17}")], 40, f"cipher.yaml: `generation_kwargs.max_gen_toks` 17 {ROOM} (24 tokens) is 41 tokens, more than "
     "the evaluation's max_length 40: lm-eval would keep only the last 23 tokens of the prompt"),
    ([(*CIPHER, "}"), ("_toy.yaml", "max_gen_toks: 16", "")], None,  # neither the card nor the file it includes sets it
     f"cipher.yaml: max_gen_toks 256 (lm-eval's default: no `generation_kwargs.max_gen_toks`) {ROOM} (24 tokens) is 280"),
    ([], 128, f"incontext.yaml: `generation_kwargs.max_gen_toks` 48 {ROOM} (84 tokens) is 132 tokens"),  # a probe's
])
def test_a_prompt_and_its_generation_must_fit_the_evaluations_context(tasks_root, capsys, edits, max_length, expected):
    """Measured as lm-eval renders and encodes the prompts: the cipher's longest, 24 tokens, and 16 fill max_length 40 exactly."""
    for name, old, new in edits:
        edit(tasks_root / name, old, new)
    if max_length:
        (tasks_root / "suite.yaml").write_text((tasks_root / "suite.yaml").read_text() + f"eval: {{max_length: {max_length}}}\n")
    fails(capsys, ["--tasks", "cipher"], expected)


def test_the_room_check_measures_what_the_evaluation_builds(tasks_root, capsys, tmp_path):
    """SDFT's teacher prompts (with the demonstration; a cut one scored 0 and the model was blamed), only the items
    --limit evaluates, few-shot prompts drawn as the evaluation draws them, and a template that refuses a system turn."""
    from harness.evaluation import EvalSettings
    from harness.plan import RunRequest, resolve

    (tasks_root / "suite.yaml").write_text((tasks_root / "suite.yaml").read_text() + "eval: {max_length: 40}\n")
    resolve(RunRequest(tasks=["cipher"], probes=["addition"], methods=["sft"]))  # 24 + 16: the student's prompts fit
    fails(capsys, ["--tasks", "cipher", "--probes", "addition", "--method", "sdft"],
          "cipher.yaml: `generation_kwargs.max_gen_toks` 16 plus the longest teacher prompt (with the demonstration) of its test split")
    resolve(RunRequest(tasks=["cipher"], probes=["addition"], methods=["sdft"], check_base=True))  # no stage, no teacher scored
    data = tasks_root / "data" / "cipher_test.jsonl"
    rows = data.read_text().splitlines()
    long = json.loads(rows[-1])
    long["prompt"] = " ".join([long["prompt"]] * 3)
    data.write_text("\n".join([*rows[:-1], json.dumps(long)]) + "\n")
    error = fails(capsys, ["--tasks", "cipher", "--probes", "addition"], "(48 tokens) is 64 tokens", "the prompt alone fills it")
    assert f"(the longest is test row {len(rows)}, counted from 1)" in error
    resolve(RunRequest(tasks=["cipher"], probes=["addition"], methods=["sft"], eval=EvalSettings(limit=5)))  # never evaluated


def test_few_shot_prompts_are_measured_as_the_evaluation_draws_them(tasks_root):
    from transformers import AutoTokenizer

    from harness.evaluation import longest_prompt
    from harness.registry import load_suite

    edit(tasks_root / "addition.yaml", "task: toy_addition", "task: toy_addition\nnum_fewshot: 3")
    registry._suite_index.cache_clear()
    card = load_suite("toy").card("addition")
    tokenizer = AutoTokenizer.from_pretrained(TOY / "base")
    lengths = {longest_prompt(card, card.protocol, tokenizer).prompt for _ in range(4)}
    assert len(lengths) == 1  # was drawn unseeded: a command passed or failed at random


def test_a_chat_template_that_refuses_a_system_turn_is_measured_without_it(tasks_root):
    """lm-eval drops the system turn such a template (Gemma's) refuses; measuring must too (it was a jinja2 traceback)."""
    from transformers import AutoTokenizer

    from harness.evaluation import longest_prompt
    from harness.registry import load_suite

    tokenizer = AutoTokenizer.from_pretrained(TOY / "base")
    tokenizer.chat_template = ("{% for m in messages %}{% if m['role'] == 'system' %}{{ raise_exception('System role not supported') }}"
                               "{% endif %}<|user|>{{ m['content'] }}<|end|>{% endfor %}<|assistant|>")
    card = load_suite("toy").card("cipher")
    before = longest_prompt(card, card.protocol, tokenizer).prompt
    data = tasks_root / "data" / "cipher_test.jsonl"
    rows = [json.loads(line) for line in data.read_text().splitlines()]
    rows[0]["prompt"] = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": rows[0]["prompt"]}]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert longest_prompt(card, card.protocol, tokenizer).prompt == before


def test_a_prompt_and_its_generation_that_fill_the_context_exactly_pass(tasks_root):
    from harness.plan import RunRequest, resolve

    (tasks_root / "suite.yaml").write_text((tasks_root / "suite.yaml").read_text() + "eval: {max_length: 40}\n")
    resolve(RunRequest(tasks=["cipher"], probes=["addition"]))  # 24 + 16 tokens: the cut starts one further


def test_demonstrations_with_words_the_vocabulary_lacks_are_noted(tasks_root):
    """The toy base's closed vocabulary reads an unknown word as <|unk|>: a new task written with one can never be learned."""
    from harness.plan import RunRequest, resolve

    data = tasks_root / "data" / "facts_train.jsonl"
    data.write_text(data.read_text().replace('"demonstration": "', '"demonstration": "Zürich: ', 2))
    assert resolve(RunRequest(tasks=["facts"])).notes == (
        "facts: 2 of 90 demonstrations hold text the model's vocabulary lacks (e.g. 'Zürich:', read as <|unk|>): "
        "no method can teach it to write that",)
    assert resolve(RunRequest(tasks=["cipher"])).notes == ()


def test_an_unreachable_network_is_said_as_such(capsys, monkeypatch):
    """lm-eval's built-in probes load their datasets at evaluation: offline and uncached, the datasets library raises
    ConnectionError, an OSError the generic handler called "cannot write or read"."""
    from harness import cli

    def offline(args):
        raise ConnectionError("Couldn't reach 'allenai/ai2_arc' on the Hub (OfflineModeIsEnabled)")

    monkeypatch.setitem(cli.COMMANDS, "list", offline)
    assert main(["list"]) == 2
    assert capsys.readouterr().err == ("error: cannot reach the network: Couldn't reach 'allenai/ai2_arc' on the Hub (OfflineModeIsEnabled) "
                                       "(offline, every model and dataset must be in the local cache)\n")


def test_ctrl_c_speaks_of_stages_only_where_there_are_any(capsys, monkeypatch):
    from harness import cli

    def pressed(args):
        raise KeyboardInterrupt

    monkeypatch.setitem(cli.COMMANDS, "list", pressed)
    assert main(["list"]) == 130 and capsys.readouterr().err == "interrupted\n"


def test_a_mistake_in_the_preset_names_the_preset(capsys, tmp_path, monkeypatch):
    """The user never typed it: the message says which file holds it."""
    from harness import config

    presets = tmp_path / "presets"
    presets.mkdir()
    toy = (config.PRESETS_DIR / "toy.yaml").read_text()
    (presets / "toy.yaml").write_text(toy.replace("common:\n", "common:\n  seed: 7\n", 1))
    monkeypatch.setattr(config, "PRESETS_DIR", presets)
    assert main(["run", "--tasks", "cipher", "--method", "sft", "--output", str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err.strip() == (
        f"error: preset toy ({presets / 'toy.yaml'}): option 'seed' for method 'sft' is the harness's to set: the run's seed "
        "(`harness run --seed`, a sweep's `seeds`)")
    assert not (tmp_path / "out").exists()
