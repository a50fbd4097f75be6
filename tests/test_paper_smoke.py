"""The papers' suite end to end on a CPU (`make paper-smoke`): `harness run --suite paper-sequential` through
all three stages with every method, on a tiny random Qwen2 model with a ChatML template, over the real
evaluation data (../shared/data/sdft-paper beside the checkout, or $HARNESS_PAPER_DATA; train rows made from it).

The model learns nothing; the checks are on what reaches it. Every prompt lm-eval rendered must be the
raw item's messages through the chat template (the card's prompt field, the system turn, the protocol);
every teacher prompt the paper's teacher template around the item's demonstration; every card's gold
answer must score 1 through the scorer its documents name, and each recorded score must be that scorer's.
The toy suite's probe cards stand in for the hub-hosted lm-eval probes, half of them without the chat
template as the paper's log-likelihood probes are.
"""

import json
import os
import shutil
import time
from pathlib import Path

import pytest
import yaml

from .conftest import REPO
from .tinymodel import build

pytestmark = pytest.mark.slow
PAPER_DATA = Path(os.environ.get("HARNESS_PAPER_DATA") or REPO.parent / "shared/data/sdft-paper")
FIXTURES = Path(__file__).parent / "fixtures" / "paper"
TASKS = ("tooluse", "science", "medical")
REFERENCE_PROBES = ("tooluse_ref", "science_ref")
LIMIT = 4
# The scorer each column's documents must name (the cards' wiring, stated independently here).
SCORERS = {"tooluse": "tool_call", "tooluse_ref": "tool_call_reference", "science": "answer_letter",
           "science_ref": "answer_letter_reference", "medical": "judge"}


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def strings(value) -> list[str]:
    """Every string inside a record (the tokenizer is trained on them)."""
    if isinstance(value, str):
        return [value]
    items = value.values() if isinstance(value, dict) else value if isinstance(value, list) else []
    return [s for item in items for s in strings(item)]


def make_data(data: Path) -> None:
    """The real test sets, and train sets in the authors' train schema made from them (medical: the fixtures)."""
    data.mkdir()
    for name in ("tooluse_eval.jsonl", "science_eval.jsonl"):
        shutil.copy(PAPER_DATA / name, data / name)
    tooluse = read_jsonl(PAPER_DATA / "tooluse_eval.jsonl")[-8:]
    for row in tooluse:  # a ReAct step per gold call, as the authors' golden_response
        row["golden_response"] = [f" I call {c['Action']}.\nAction: {c['Action']}\nAction Input: {c['Action_Input']}" for c in row["golden_answer"]]
    write_jsonl(data / "tooluse_train.jsonl", tooluse)
    science = read_jsonl(PAPER_DATA / "science_eval.jsonl")[-8:]
    write_jsonl(data / "science_train.jsonl", [
        {"messages": r["prompt"], "output_text": f"<reasoning>\nBy elimination.\n</reasoning>\n<answer>\n{r['answer']}\n</answer>"} for r in science
    ])
    shutil.copy(FIXTURES / "medical_eval.jsonl", data / "medical_eval.jsonl")
    write_jsonl(data / "medical_train.jsonl", read_jsonl(FIXTURES / "medical_train.jsonl") + read_jsonl(FIXTURES / "medical_eval.jsonl"))


def make_tasks(root: Path) -> list[str]:
    """tasks/paper as it is, plus the toy suite's probe cards as stand-ins (half without the chat template)."""
    from harness.registry import load_suite

    shutil.copytree(REPO / "tasks" / "paper", root / "paper")
    standins = root / "paper" / "standins"
    standins.mkdir()
    names = []
    for i, probe in enumerate(load_suite("toy", REPO / "tasks").probes):
        card = probe.card
        config = yaml.safe_load(card.path.read_text())
        if i % 2 == 0:
            config["metadata"]["harness"]["protocol"] = {"chat_template": False}
        (standins / card.path.name).write_text(yaml.safe_dump(config, sort_keys=False))
        shutil.copy(card.path.parent / config["include"], standins / config["include"])
        test = standins / card.data["test"]
        test.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(card.path.parent / card.data["test"], test)
        names.append(card.name)
    return names


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    if not PAPER_DATA.is_dir():
        pytest.skip(f"no paper data at {PAPER_DATA}")
    from baselines import METHODS
    from harness import registry
    from harness.cli import main
    from harness.taskdata import get_scorer

    tmp = tmp_path_factory.mktemp("paper-smoke")
    make_data(tmp / "data")
    mp = pytest.MonkeyPatch()
    mp.setattr(registry, "TASKS_DIR", tmp / "tasks")
    mp.delenv("HARNESS_JUDGE_URL", raising=False)  # the medical judge's labelled fallback
    get_scorer.cache_clear()
    standins = make_tasks(tmp / "tasks")
    model = build(tmp / "model", [text for f in sorted((tmp / "data").glob("*.jsonl")) for r in read_jsonl(f) for text in strings(r)])
    started, runs = time.monotonic(), {}
    try:
        for method in METHODS:
            out = tmp / "runs" / method
            args = ["run", "--suite", "paper-sequential", "--method", method, "--model", str(model), "--data-dir", str(tmp / "data"),
                    "--probes", ",".join([*standins, *REFERENCE_PROBES]), "--limit", str(LIMIT), "--batch-size", "4",
                    "--output", str(out), "--tracking-uri", f"sqlite:///{tmp / 'mlflow.db'}",
                    "--set", "max_steps=1", "--set", "gradient_accumulation_steps=1", "--set", "bf16=false",
                    "--set", "activation_checkpointing=false", "--set", "sdft.max_completion_length=16", "--set", "sdpo.max_completion_length=16",
                    "--set", "sdpo.num_generations=2", "--set", "sdpo.per_device_train_batch_size=2",
                    "--set", "grpo.max_completion_length=16", "--set", "grpo.num_generations=2", "--set", "grpo.per_device_train_batch_size=2",
                    "--set", "sft_reinvoke.reinvoke_max_tokens=16", "--set", "sft_reinvoke.reinvoke_steps=1",
                    "--set", f"sft_reinvoke.reinvoke_prompts={FIXTURES / 'general_prompts.jsonl'}"]
            assert main(args) == 0, method
            runs[method] = out
    finally:
        mp.undo()
        get_scorer.cache_clear()
    print(f"\npaper-smoke: {len(runs)} methods x 3 stages in {time.monotonic() - started:.0f} s")
    return tmp, model, standins, runs


def raw_messages(data: Path) -> dict[str, list[list[dict]]]:
    """Each task's test items as chat messages, straight from the data files."""
    return {
        "tooluse": [[{"role": "user", "content": r["prompt"]}] for r in read_jsonl(data / "tooluse_eval.jsonl")],
        "science": [r["prompt"] for r in read_jsonl(data / "science_eval.jsonl")],
        "medical": [[{"role": "user", "content": r["Question"]}] for r in read_jsonl(data / "medical_eval.jsonl")],
    }


def demonstrations(data: Path) -> dict[str, list[str]]:
    """What each task's teacher is shown for its test items (the cards' demonstration fields)."""
    from harness.scoring import format_tool_calls

    return {
        "tooluse": [format_tool_calls(r["golden_answer"]) for r in read_jsonl(data / "tooluse_eval.jsonl")],
        "science": [f"<answer>\n{r['answer']}\n</answer>" for r in read_jsonl(data / "science_eval.jsonl")],
        "medical": [r["Response"] for r in read_jsonl(data / "medical_eval.jsonl")],
    }


def samples(eval_dir: Path, column: str) -> list[dict]:
    return read_jsonl(eval_dir / f"samples_paper_{column}.jsonl")


def test_every_method_runs_the_three_stages_into_the_matrix_and_mlflow(smoke):
    import csv

    from mlflow import MlflowClient

    tmp, _, standins, runs = smoke
    columns = [*TASKS, *standins, *REFERENCE_PROBES]
    client = MlflowClient(f"sqlite:///{tmp / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("paper-sequential")
    for method, out in runs.items():
        with open(out / "matrix.csv") as f:
            rows = list(csv.DictReader(f))
        assert [(r["stage"], r["method"], r["trained_on"]) for r in rows] == [("0", "base", ""), *((str(k), method, t) for k, t in enumerate(TASKS, 1))]
        assert all(0.0 <= float(r[c]) <= 1.0 for r in rows for c in columns)
        run = json.loads((out / "run.json").read_text())
        assert [run["protocol"][c]["chat_template"] for c in standins] == [i % 2 == 1 for i in range(len(standins))]
        assert all(run["protocol"][c]["chat_template"] for c in [*TASKS, *REFERENCE_PROBES])
        parent = client.search_runs([experiment.experiment_id], f"tags.`harness.run_dir` = '{out.resolve()}'")[0]
        assert parent.info.status == "FINISHED" and parent.data.params["protocol_fingerprint"] == json.loads((out / "metrics.json").read_text())["protocol_fingerprint"]
        children = client.search_runs([experiment.experiment_id], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
        assert sorted(c.data.tags["harness.stage"] for c in children) == ["0", "1", "2", "3"]


def test_every_prompt_is_the_raw_item_through_the_chat_template(smoke):
    """The card's prompt field, the system turn (science) and the chat-template protocol, at every stage."""
    from transformers import AutoTokenizer

    tmp, model, _, runs = smoke
    tokenizer = AutoTokenizer.from_pretrained(model)
    items = raw_messages(tmp / "data")
    for out in runs.values():
        for k in range(4):
            for column in [*TASKS, *REFERENCE_PROBES]:
                logged = samples(out / "stages" / str(k) / "eval", column)
                assert len(logged) == min(LIMIT, len(items[column.removesuffix("_ref")]))
                for s in logged:
                    expected = tokenizer.apply_chat_template(items[column.removesuffix("_ref")][s["doc_id"]], tokenize=False, add_generation_prompt=True)
                    assert s["arguments"][0][0] == expected, (out.name, k, column, s["doc_id"])
    science = samples(next(iter(runs.values())) / "stages" / "0" / "eval", "science")[0]["arguments"][0][0]
    assert science.startswith("<|im_start|>system\n\nGiven a question and four options")  # the authors' system turn


def test_every_teacher_prompt_is_the_papers_template_around_the_demonstration(smoke):
    from transformers import AutoTokenizer

    from harness.templates import TEACHER_TEMPLATE

    tmp, model, _, runs = smoke
    tokenizer = AutoTokenizer.from_pretrained(model)
    items, demos = raw_messages(tmp / "data"), demonstrations(tmp / "data")
    for k, task in enumerate(TASKS, 1):  # SDFT measures its teacher before every stage
        logged = read_jsonl(runs["sdft"] / "stages" / str(k) / "teacher_eval" / f"samples_paper_{task}_teacher.jsonl")
        assert logged
        for s in logged:
            *head, user = items[task][s["doc_id"]]
            teacher = {**user, "content": TEACHER_TEMPLATE.format(prompt=user["content"], privileged_context=demos[task][s["doc_id"]])}
            assert s["arguments"][0][0] == tokenizer.apply_chat_template([*head, teacher], tokenize=False, add_generation_prompt=True)


def test_every_card_scores_its_gold_answer_through_its_own_scorer(smoke, monkeypatch):
    from harness.scoring import SCORERS as RULES
    from harness.taskdata import get_scorer, process_results

    _, _, _, runs = smoke
    monkeypatch.delenv("HARNESS_JUDGE_URL", raising=False)  # medical: the labelled fallback, as in the runs
    get_scorer.cache_clear()
    eval_dir = runs["sft"] / "stages" / "0" / "eval"
    for column, scorer in SCORERS.items():
        for s in samples(eval_dir, column):
            doc = s["doc"]
            assert doc["scorer"] == scorer, column
            assert process_results(doc, [s["target"]])["acc"] == 1.0, (column, s["doc_id"])  # the gold, in the response format
            rule = RULES["reference_overlap" if scorer == "judge" else scorer]  # no judge configured: the labelled fallback
            assert s["acc"] == rule(s["filtered_resps"][0], json.loads(doc["reference"])), (column, s["doc_id"])
