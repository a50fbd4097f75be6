"""Evaluation protocol per column: declared as data, applied per lm-eval call, recorded with the run,
checked against published base rows (--check-base), and bad declarations refused at once."""

import json
import logging
import shutil
from pathlib import Path

import pytest
import yaml

from harness import reference, registry
from harness.cli import main
from harness.errors import HarnessError
from harness.protocol import Protocol, differences, fingerprint
from harness.registry import load_suite

from .conftest import TOY

# A log-likelihood probe (lm-eval multiple_choice) evaluated without the chat template.
CHOICE_CARD = """task: test_choice
custom_dataset: !function harness.taskdata.lm_eval_dataset
test_split: test
output_type: multiple_choice
doc_to_text: user
doc_to_choice: "{{[demonstration, 'zzz']}}"
doc_to_target: 0
metric_list: [{metric: acc, aggregation: mean, higher_is_better: true}]
metadata:
  version: 1
  harness:
    name: choice
    role: probe
    scorer: exact_match
    protocol: {chat_template: false}
    fields: {prompt: prompt, demonstration: demonstration, answer: answer}
    data: {test: choice_test.jsonl}
"""


def copy_toy_with_choice(root: Path) -> Path:
    """A writable copy of tasks/toy (sharing the shipped base by a link) plus the log-likelihood probe card."""
    shutil.copytree(TOY, root / "toy", ignore=shutil.ignore_patterns("base"))
    (root / "toy" / "base").symlink_to(TOY / "base")
    (root / "toy" / "choice.yaml").write_text(CHOICE_CARD)
    rows = [{"prompt": f"What is {i} plus {i}?", "demonstration": str(2 * i), "answer": str(2 * i)} for i in range(3)]
    (root / "toy" / "choice_test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root / "toy"


@pytest.fixture
def tasks_root(tmp_path, monkeypatch):
    monkeypatch.setattr(registry, "TASKS_DIR", tmp_path / "tasks")
    return copy_toy_with_choice(tmp_path / "tasks")


def fake_reference(path: Path, model: str, values: dict, **extra) -> Path:
    path.write_text(yaml.safe_dump({"fake": {"title": "a fake paper", "model": model, "rows": [{"method": "base", "values": values}], **extra}}))
    return path


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


# --------------------------------------------------------------- one run, two protocols
@pytest.fixture(scope="module")
def two_protocol_run(tmp_path_factory):
    """A real run whose probes are a chat (generation) card of the toy suite and the log-likelihood card."""
    mp = pytest.MonkeyPatch()
    tmp = tmp_path_factory.mktemp("protocol")
    copy_toy_with_choice(tmp / "tasks")
    mp.setattr(registry, "TASKS_DIR", tmp / "tasks")
    suite = load_suite("toy")
    task, chat_probe = suite.sequence[0], suite.probes[0].name
    # A published base row for this model, one column far off: the run warns after row 0.
    mp.setattr(reference, "REFERENCE", fake_reference(tmp / "published.yaml", suite.model_path(), {"choice": -500.0}))
    logs = []
    handler = logging.Handler()
    handler.emit = lambda record: logs.append(record.getMessage())
    logging.getLogger("harness").addHandler(handler)
    args = ["run", "--tasks", task, "--probes", f"{chat_probe},choice", "--limit", "2", "--output", str(tmp / "run"),
            "--tracking-uri", f"sqlite:///{tmp / 'mlflow.db'}", "--set", "max_steps=1", "--set", "per_device_train_batch_size=2"]
    try:
        assert main(args) == 0
    finally:
        logging.getLogger("harness").removeHandler(handler)
        mp.undo()
    return tmp, suite, task, chat_probe, logs


def test_a_log_likelihood_probe_and_a_chat_probe_get_their_own_chat_template_setting(two_protocol_run):
    from transformers import AutoTokenizer

    tmp, suite, task, chat_probe, _ = two_protocol_run
    tokenizer = AutoTokenizer.from_pretrained(suite.model_path())
    eval_dir = tmp / "run" / "stages" / "0" / "eval"
    choice = read_jsonl(eval_dir / "samples_test_choice.jsonl")
    chat = read_jsonl(eval_dir / f"samples_{suite.card(chat_probe).lm_eval_task}.jsonl")
    assert len(choice) == len(chat) == 2
    for sample in choice:  # the bare question, scored by log-likelihood of each choice
        assert [context for context, _ in sample["arguments"]] == [sample["doc"]["user"]] * 2
    for sample in chat:  # the question through the tokenizer's chat template, then generated
        doc = sample["doc"]
        messages = [{"role": "system", "content": doc["system"]}] * bool(doc["system"]) + [{"role": "user", "content": doc["user"]}]
        rendered = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        assert sample["arguments"][0][0] == rendered != doc["user"]
    recorded = json.loads((eval_dir / "results.json").read_text())["protocol"]
    assert (recorded["choice"]["chat_template"], recorded[chat_probe]["chat_template"], recorded[task]["chat_template"]) == (False, True, True)


def test_run_json_metrics_and_mlflow_record_each_columns_protocol(two_protocol_run):
    from mlflow import MlflowClient

    tmp, suite, task, chat_probe, _ = two_protocol_run
    run = json.loads((tmp / "run" / "run.json").read_text())
    assert set(run["protocol"]) == {task, chat_probe, "choice"}
    assert run["protocol"]["choice"] == {**Protocol(chat_template=False, num_fewshot=0, scorer="exact_match").as_dict()}
    assert run["protocol"][task] == suite.card(task).protocol.as_dict()
    metrics = json.loads((tmp / "run" / "metrics.json").read_text())
    assert metrics["protocol_fingerprint"] == fingerprint(run["protocol"])
    client = MlflowClient(f"sqlite:///{tmp / 'mlflow.db'}")
    parent = client.search_runs([client.get_experiment_by_name("toy").experiment_id], "tags.`harness.kind` = 'sequence'")[0]
    assert parent.data.params["protocol_fingerprint"] == metrics["protocol_fingerprint"]
    assert parent.data.params["protocol/choice"].startswith("no chat template, 0-shot, metric acc,none")
    assert parent.data.params[f"protocol/{chat_probe}"].startswith("chat template, 0-shot")


def test_row_0_off_the_published_base_row_warns_with_column_numbers_and_protocol(two_protocol_run):
    tmp, _, _, _, logs = two_protocol_run
    scores = json.loads((tmp / "run" / "stages" / "0" / "scores.json").read_text())["scores"]
    warned = [m for m in logs if m.startswith("base row differs from the published one")]
    assert len(warned) == 1
    assert f"choice: {100 * scores['choice']:.1f} here vs -500.0 published" in warned[0]
    assert "no chat template, 0-shot, metric acc,none" in warned[0]


# --------------------------------------------------------------- --check-base against a fake published row
def test_check_base_prints_each_column_and_fails_outside_the_tolerance(tmp_path, monkeypatch, capsys):
    suite = load_suite("toy")
    columns = [suite.sequence[0], suite.probes[0].name]
    published = tmp_path / "published.yaml"
    monkeypatch.setattr(reference, "REFERENCE", published)
    args = ["run", "--tasks", columns[0], "--probes", columns[1], "--limit", "3", "--check-base", "--output", str(tmp_path / "check")]

    fake_reference(published, suite.model_path(), {c: -500.0 for c in columns})
    assert main(args) == 1
    out, err = capsys.readouterr()
    scores = json.loads((tmp_path / "check" / "stages" / "0" / "scores.json").read_text())["scores"]
    assert not (tmp_path / "check" / "stages" / "1").exists()  # row 0 only: nothing trained
    for c in columns:  # each column beside the published value, with the protocol
        line = next(line for line in out.splitlines() if line.strip().startswith(c + " "))
        assert f"{100 * scores[c]:6.1f}" in line and "-500.0" in line and "OUT" in line and "chat template, 0-shot" in line
    head, _, named = err.strip().splitlines()[-1].partition(" points: ")
    assert head == "error: 2 of 2 base-row column(s) differ from the published ones by more than 3" and set(named.split(", ")) == set(columns)

    near = {columns[0]: 100 * scores[columns[0]], columns[1]: 100 * scores[columns[1]] + 2.9}
    fake_reference(published, suite.model_path(), near)
    assert main(args) == 0  # row 0 is reused, not evaluated again
    assert "within 3 points of the published base row" in capsys.readouterr().out

    fake_reference(published, suite.model_path(), {**near, columns[1]: 100 * scores[columns[1]] - 3.5})
    assert main(args) == 1
    assert capsys.readouterr().err.strip().splitlines()[-1].endswith(f"more than 3 points: {columns[1]}")

    fake_reference(published, suite.model_path(), {"mmlu": 71.7})  # a pass that compared nothing would confirm nothing
    assert main(args) == 1
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "error: no column of this run has a published base value (a fake paper publishes mmlu): add them with --tasks or --probes")

    run = tmp_path / "check" / "run.json"  # marked, for the report; a folder from before the mark is the same run
    assert json.loads(run.read_text())["check_base"] is True
    run.write_text(json.dumps({k: v for k, v in json.loads(run.read_text()).items() if k != "check_base"}))
    fake_reference(published, suite.model_path(), near)
    assert main(args) == 0 and json.loads(run.read_text())["check_base"] is True


def test_check_base_needs_a_published_base_row_for_the_model(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(reference, "REFERENCE", fake_reference(tmp_path / "published.yaml", "Qwen/Qwen2.5-7B-Instruct", {"mmlu": 71.7}))
    assert main(["run", "--check-base", "--output", str(tmp_path / "check")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --check-base: no published base row for model ") and "published: Qwen/Qwen2.5-7B-Instruct" in err
    assert not (tmp_path / "check").exists()


def test_the_published_column_is_measured_by_the_papers_rule_when_the_run_has_it():
    publication = reference.Publication("p", "p", "m", [{"method": "base", "trained_on": None, "values": {"science": 32.1}}],
                                        measured_by={"science": "science_ref"})
    protocols = {"science": Protocol(scorer="answer_letter").as_dict(), "science_ref": Protocol(scorer="answer_letter_reference").as_dict()}
    [check] = reference.compare(publication, {"science": 0.20, "science_ref": 0.31}, protocols)
    assert (check.measured_by, check.run, check.ok) == ("science_ref", 31.0, True)
    assert "scorer answer_letter_reference" in check.protocol
    [check] = reference.compare(publication, {"science": 0.20}, protocols)
    assert (check.measured_by, check.ok) == ("science", False) and "paper's scoring rule is column science_ref" in check.line()


def test_published_sdft_rows_average_to_their_published_prior_average():
    """A transcription check: each row's six probes average to the paper's prior average (its one known slip aside)."""
    [sdft] = [p for p in reference.load() if p.name == "sdft"]
    probes = [p.name for p in load_suite("paper-sequential").probes]
    for row in sdft.rows:
        values = row["values"]
        mean = sum(values[p] for p in probes) / len(probes)
        slip = (row["method"], row["trained_on"]) == ("sft", "tooluse")  # 56.3 by its probes, 56.0 as published
        assert abs(mean - values[reference.PRIOR_AVG]) <= (0.35 if slip else 0.05 + 1e-9), row  # 63.65 published as 63.7
    assert sdft.base == {"tooluse": 42.9, "science": 32.1, "medical": 30.1, "hellaswag": 62.0, "humaneval": 65.8, "ifeval": 74.3,
                         "mmlu": 71.7, "truthfulqa_mc1": 47.9, "winogrande": 71.1, "prior_avg": 65.5}
    assert sdft.matches("Qwen/Qwen2.5-7B-Instruct") and sdft.matches("/models/qwen2.5-7b-instruct") and not sdft.matches("Qwen/Qwen2.5-3B-Instruct")


# --------------------------------------------------------------- bad protocols fail at once, naming file and field
def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, old
    path.write_text(text.replace(old, new))


@pytest.mark.parametrize(
    "file, old, new, message",
    [
        ("choice.yaml", "protocol: {chat_template: false}", "protocol: {chat_templat: false}",
         "choice.yaml: `metadata.harness.protocol.chat_templat`: unknown protocol key (did you mean 'chat_template'?)"),
        ("choice.yaml", "protocol: {chat_template: false}", "protocol: {chat_template: 'no'}",
         "choice.yaml: `metadata.harness.protocol.chat_template`: expected true or false, got 'no'"),
        ("choice.yaml", "protocol: {chat_template: false}", "protocol: {num_fewshot: 2}",
         "choice.yaml: `metadata.harness.protocol.num_fewshot`: not set here (a card sets it as its lm-eval key `num_fewshot`)"),
        ("choice.yaml", "protocol: {chat_template: false}", "protocol: [chat_template]",
         "choice.yaml: `metadata.harness.protocol`: expected a mapping of protocol settings"),
    ],
)
def test_a_bad_card_protocol_names_file_and_field(tasks_root, capsys, file, old, new, message):
    edit(tasks_root / file, old, new)
    assert main(["run", "--probes", "choice", "--output", str(tasks_root.parent / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
    assert not (tasks_root.parent / "out").exists()


def test_a_card_probe_protocol_set_in_the_suite_names_file_and_field(tasks_root, capsys):
    suite = tasks_root / "suite.yaml"
    config = yaml.safe_load(suite.read_text())
    config["probes"][0]["chat_template"] = False  # a card's chat template belongs to the card
    suite.write_text(yaml.safe_dump(config))
    assert main(["run", "--output", str(tasks_root.parent / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: {suite}: `probes[0].chat_template`: not set here (a card sets it in its own `metadata.harness.protocol`); allowed here: metric, filter"]


@pytest.mark.parametrize(
    "entry, message",
    [
        ("{task: hellaswag, metric: acc, chat_template: 'yes'}", "`probes[0].chat_template`: expected true or false, got 'yes'"),
        ("{task: hellaswag, metric: acc, num_fewshot: '0'}", "`probes[0].num_fewshot`: expected a whole number >= 0, got '0'"),
        ("{task: hellaswag, metric: acc, num_fewshot: -1}", "`probes[0].num_fewshot`: expected a whole number >= 0, got -1"),
        ("{task: hellaswag, metric: acc, num_fewshot: true}", "`probes[0].num_fewshot`: expected a whole number >= 0, got True"),
        ("{task: hellaswag, metric: acc, gen_kwargs: 1024}", "`probes[0].gen_kwargs`: expected a mapping of generation settings"),
        ("{task: hellaswag, metrc: acc}", "`probes[0].metrc`: unknown protocol key (did you mean 'metric'?)"),
        ("{task: humaneval, metric: 'pass@1,create_test'}", "`probes[0].metric`: 'pass@1,create_test' holds a filter; write them apart: metric: pass@1, filter: create_test"),
    ],
)
def test_a_bad_builtin_probe_protocol_names_file_and_field(tmp_path, entry, message):
    suite = tmp_path / "suite.yaml"
    suite.write_text(f"suite: s\nmodel: m\npreset: toy\nsequence: [x]\nprobes:\n  - {entry}\n")
    with pytest.raises(HarnessError) as err:
        load_suite("s", tmp_path)
    assert str(err.value).startswith(f"{suite}: {message}")


def test_differences_name_each_column_and_setting():
    a = {"hellaswag": Protocol(chat_template=False, num_fewshot=0).as_dict(), "ifeval": Protocol().as_dict()}
    b = {"hellaswag": Protocol(num_fewshot=0).as_dict(), "ifeval": Protocol().as_dict(), "mmlu": Protocol().as_dict()}
    assert differences(a, b) == ["hellaswag (chat_template False vs True)", "mmlu (only in one run)"]
    assert fingerprint(a) != fingerprint(b) and fingerprint(a) == fingerprint(json.loads(json.dumps(a)))


def test_a_protocol_sets_few_shot_and_generation_on_every_task_of_a_group(tmp_path):
    """A group such as mmlu is one column: its protocol reaches each subtask (a real lm-eval group of toy cards)."""
    from lm_eval.tasks import TaskManager

    from harness.evaluation import apply_protocol, task_name

    names = [p.task for p in load_suite("toy").probes[:2]]
    (tmp_path / "group.yaml").write_text(yaml.safe_dump({"group": "toy_group", "task": names,
                                                         "aggregate_metric_list": [{"metric": "acc", "aggregation": "mean"}]}))
    group = TaskManager(include_defaults=False, include_path=[str(TOY), str(tmp_path)]).load(["toy_group"])["groups"]["toy_group"]
    assert task_name(group) == "toy_group"
    apply_protocol(group, Protocol(num_fewshot=0, gen_kwargs={"max_gen_toks": 3}))
    leaves = group.get_all_tasks()
    assert sorted(task_name(t) for t in leaves) == sorted(names)
    for leaf in leaves:
        assert leaf.get_config("num_fewshot") == 0 and leaf.get_config("generation_kwargs")["max_gen_toks"] == 3
        assert "until" in leaf.get_config("generation_kwargs")  # the task's own settings stay, overridden key by key
