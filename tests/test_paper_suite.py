"""The papers' suite (it needs a GPU to run): cards, preset, data loading and scoring, checked offline.

Hand-made fixtures in the real schemas stand in for the authors' data; the real test sets are
used when ../shared/data/sdft-paper beside the checkout (or $HARNESS_PAPER_DATA) exists.
"""

import json
import os
import shutil
import time
from pathlib import Path

import pytest

from harness.errors import HarnessError
from harness.registry import load_card, load_suite
from harness.taskdata import document, get_scorer, lm_eval_dataset, load_rows, process_results

from .conftest import REPO

FIXTURES = Path(__file__).parent / "fixtures" / "paper"
PAPER_DATA = Path(os.environ.get("HARNESS_PAPER_DATA") or REPO.parent / "shared/data/sdft-paper")
needs_paper_data = pytest.mark.skipif(not PAPER_DATA.is_dir(), reason=f"no paper data at {PAPER_DATA}")
METHODS = ("sft", "sdft", "sdpo")
MEDICAL_HUB = "FreedomIntelligence/medical-o1-reasoning-SFT (config en)"


@pytest.fixture(scope="module")
def suite():
    return load_suite("paper-sequential")


@pytest.fixture
def fixture_data(monkeypatch):
    monkeypatch.setenv("HARNESS_DATA_DIR", str(FIXTURES))


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """No network and no cached copy: a hub download fails at once instead of hanging."""
    import datasets
    import huggingface_hub.constants

    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf-cache")
    monkeypatch.delenv("HARNESS_DATA_DIR", raising=False)


@pytest.fixture
def no_judge(monkeypatch):
    monkeypatch.delenv("HARNESS_JUDGE_URL", raising=False)
    get_scorer.cache_clear()
    yield
    get_scorer.cache_clear()


def records(name: str) -> list[dict]:
    return [json.loads(line) for line in (FIXTURES / name).read_text().splitlines()]


# --------------------------------------------------------------- suite, cards, preset
def test_suite_loads_with_sequence_probes_model_and_preset(suite):
    assert suite.sequence == ("tooluse", "science", "medical")
    assert suite.model == "Qwen/Qwen2.5-7B-Instruct" and suite.model_path() == "Qwen/Qwen2.5-7B-Instruct"
    assert suite.preset == "paper"
    # The paper's protocol: 0-shot; the chat template for IFEval only (sources in suite.yaml).
    assert [(p.task, p.protocol.result_key, p.protocol.chat_template, p.protocol.num_fewshot) for p in suite.probes] == [
        ("hellaswag", "acc,none", False, 0),
        ("humaneval", "pass@1,create_test", False, 0),
        ("ifeval", "inst_level_loose_acc,none", True, 0),
        ("mmlu", "acc,none", False, 0),
        ("truthfulqa_mc1", "acc,none", False, 0),
        ("winogrande", "acc,none", False, 0),
    ]
    cards = {name: (c.lm_eval_task, c.role, c.scorer) for name, c in suite.cards.items()}
    assert cards == {
        "science": ("paper_science", "task", "answer_letter"),
        "science_ref": ("paper_science_ref", "probe", "answer_letter_reference"),
        "tooluse": ("paper_tooluse", "task", "tool_call"),
        "tooluse_ref": ("paper_tooluse_ref", "probe", "tool_call_reference"),
        "medical": ("paper_medical", "task", "judge"),
    }
    # The new tasks: the chat template, 0-shot, greedy up to the authors' scripts' lengths (2048 for science).
    for name, card in suite.cards.items():
        p = card.protocol
        assert (p.chat_template, p.num_fewshot, p.gen_kwargs["do_sample"], p.scorer) == (True, 0, False, card.scorer)
        assert p.gen_kwargs["max_gen_toks"] == (2048 if name.startswith("science") else 1024)
    # The reference-rule cards are probes on demand, outside the prior-capability average.
    assert suite.probe("tooluse_ref").card is suite.cards["tooluse_ref"]
    assert suite.probe("science_ref").card is suite.cards["science_ref"]


def test_probe_metrics_exist_in_the_installed_lm_eval_tasks():
    import lm_eval

    tasks = Path(lm_eval.__file__).parent / "tasks"
    assert "metric: acc_norm" in (tasks / "hellaswag/hellaswag.yaml").read_text()  # acc is a choice, not a default
    assert "metric: inst_level_loose_acc" in (tasks / "ifeval/ifeval.yaml").read_text()
    humaneval = (tasks / "humaneval/humaneval.yaml").read_text()
    assert 'name: "create_test"' in humaneval and "k: [1]" in humaneval  # pass_at_k reports "pass@1" under that filter


def test_cards_keep_the_system_turn_and_stop_only_at_end_of_turn(suite, fixture_data):
    from harness.evaluation import card_task

    task = card_task(suite.card("science"))
    assert task.config.generation_kwargs["until"] == []  # lm-eval adds the tokenizer's EOS; no string cuts an answer
    assert task.config.generation_kwargs["max_gen_toks"] == 2048  # the authors' eval_science.py
    doc = list(task.test_docs())[0]
    messages = task.fewshot_context(doc, 0, apply_chat_template=True, chat_template=lambda m, **_: m)
    raw = records("science_eval.jsonl")[0]["prompt"]
    assert [m["role"] for m in messages] == ["system", "user"]
    assert [m["content"] for m in messages] == [raw[0]["content"], raw[1]["content"]]


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("task", ["tooluse", "science", "medical"])
def test_preset_configures_every_stage(suite, method, task, tmp_path):
    from baselines import METHODS as ALL_METHODS
    from baselines.common import configure
    from harness.config import load_preset, method_options

    options = method_options(load_preset("paper"), {}, method, task, set(METHODS))
    config, ours = configure(ALL_METHODS[method], options, suite.card(task), tmp_path, seed=0)
    fast = task in ("tooluse", "science") and method != "sdpo"
    assert config.learning_rate == {"sdpo": 1e-5}.get(method, 5e-5 if fast else 2e-5)
    assert config.num_train_epochs == (2 if fast else 1)
    assert config.bf16 and config.activation_checkpointing
    if method == "sdpo":
        assert (config.warmup_steps, config.num_generations) == (10, 8)
        assert config.generation_batch_size // config.num_generations == 32  # 32 questions x 8 rollouts
        assert (config.distillation_mode, config.distillation_topk, config.distillation_add_tail) == ("topk_logits", 100, True)
        assert (config.distillation_alpha, config.teacher_update_rate, config.distillation_is_clip) == (0.5, 0.05, 2.0)
    else:
        assert config.warmup_steps == 0.1 and config.lr_scheduler_type == "cosine"
        assert config.per_device_train_batch_size * config.gradient_accumulation_steps == 32
    if method == "sdft":
        assert ours["teacher"] == "ema" and config.teacher_model_kind == "ema"
        assert (config.distillation_mode, config.distillation_alpha) == ("full_logits", 0.0)
        assert (config.teacher_update_rate, config.num_loss_tokens_to_skip, config.num_generations) == (0.01, 3, 1)
        assert (config.max_prompt_length, config.max_completion_length, config.temperature) == (1024, 1024, 1.0)


# --------------------------------------------------------------- rows from the fixtures
TOOLUSE_TRAIN_DEMOS = [
    ' I need a one-day forecast for Lima.\nAction: getForecast\nAction Input: {"city": "Lima", "days": 1}',
    ' First I read the profile.\nAction: getProfile\nAction Input: {"userId": "u-7"}\n'
    ' Now I change the theme.\nAction: updateProfile\nAction Input: {"userId": "u-7", "profile": {"theme": "dark"}}',
]
TOOLUSE_TEST_DEMOS = [
    'Action: getForecast\nAction Input: {"city": "Oslo", "days": 3}',
    'Action: updateProfile\nAction Input: {"userId": "u-42", "profile": {"nickname": "Kit"}}',
]


def test_science_rows(suite, fixture_data):
    card = suite.card("science")
    train, test = load_rows(card, "train"), load_rows(card, "test")
    assert [r["prompt"] for r in train] == [r["messages"] for r in records("science_train.jsonl")]
    assert [r["demonstration"] for r in train] == [r["output_text"] for r in records("science_train.jsonl")]
    assert [r["answer"] for r in train] == ["C", "D"]  # read from the demonstration's <answer> tag
    assert [r["prompt"] for r in test] == [r["prompt"] for r in records("science_eval.jsonl")]
    assert [r["demonstration"] for r in test] == ["<answer>\nB\n</answer>", "<answer>\nA\n</answer>"]
    assert [r["answer"] for r in test] == ["B", "A"]
    assert all([m["role"] for m in r["prompt"]] == ["system", "user"] for r in train + test)


def test_tooluse_rows(suite, fixture_data):
    card = suite.card("tooluse")
    train, test = load_rows(card, "train"), load_rows(card, "test")
    for rows, name in ((train, "tooluse_train.jsonl"), (test, "tooluse_eval.jsonl")):
        assert [r["prompt"] for r in rows] == [[{"role": "user", "content": r["prompt"]}] for r in records(name)]
        assert [r["answer"] for r in rows] == [r["golden_answer"] for r in records(name)]
    assert [r["demonstration"] for r in train] == TOOLUSE_TRAIN_DEMOS  # the authors' golden_response, joined
    assert [r["demonstration"] for r in test] == TOOLUSE_TEST_DEMOS  # the gold calls, formatted
    assert load_rows(suite.card("tooluse_ref"), "test") == test


def test_medical_rows(suite, fixture_data):
    card = suite.card("medical")
    train, test = load_rows(card, "train"), load_rows(card, "test")
    assert train == [
        {
            "prompt": [{"role": "user", "content": records("medical_train.jsonl")[0]["Question"]}],
            "demonstration": "The most likely diagnosis is croup (laryngotracheobronchitis).",
            "answer": "The most likely diagnosis is croup (laryngotracheobronchitis).",
        }
    ]
    assert [(r["demonstration"], r["answer"]) for r in test] == [("Vitamin C deficiency",) * 2, ("Intramuscular epinephrine",) * 2]


def test_the_authors_save_to_disk_folders_load_too(suite, tmp_path):
    """--data-dir may point at the authors' data/ folder; some datasets versions decode the
    tool-call column as a dict of parallel lists, which must give the same rows."""
    import datasets

    calls = datasets.Sequence({"Action": datasets.Value("string"), "Action_Input": datasets.Value("string")})
    train = records("tooluse_train.jsonl")
    features = datasets.Dataset.from_list(train).features.copy()
    features["golden_answer"] = calls
    as_columns = {k: [r[k] for r in train] for k in train[0]}
    as_columns["golden_answer"] = [{k: [c[k] for c in r["golden_answer"]] for k in ("Action", "Action_Input")} for r in train]
    datasets.Dataset.from_dict(as_columns, features=features).save_to_disk(str(tmp_path / "tooluse_data/train_data"))
    datasets.Dataset.from_list(records("science_train.jsonl")).save_to_disk(str(tmp_path / "science_data/train_data"))

    assert load_rows(suite.card("tooluse"), "train", tmp_path) == load_rows(suite.card("tooluse"), "train", FIXTURES)
    assert load_rows(suite.card("science"), "train", tmp_path) == load_rows(suite.card("science"), "train", FIXTURES)


# --------------------------------------------------------------- scoring through lm-eval's documents
def score(card, row, completion: str) -> float:
    return process_results(document(row, card.scorer), [completion])["acc"]


def test_science_gold_scores_one_and_a_wrong_letter_zero(suite, fixture_data):
    card = suite.card("science")
    for row in load_rows(card, "test"):
        wrong = "ABCD"["ABCD".index(row["answer"]) - 1]
        assert score(card, row, f"<reasoning>\nBy elimination.\n</reasoning>\n<answer>\n{row['answer']}\n</answer>") == 1.0
        assert score(card, row, f"<reasoning>\nBy elimination.\n</reasoning>\n<answer>\n{wrong}\n</answer>") == 0.0


def test_tooluse_gold_scores_one_and_a_wrong_call_zero_under_both_rules(suite, fixture_data):
    card, ref = suite.card("tooluse"), suite.card("tooluse_ref")
    flat, nested = load_rows(card, "test")
    for row in (flat, nested):
        assert score(card, row, "Thought: call the tool.\n" + row["demonstration"]) == 1.0
        assert score(card, row, row["demonstration"].replace("Oslo", "Bergen").replace("Kit", "Kat")) == 0.0
    assert score(ref, flat, flat["demonstration"]) == 1.0
    assert score(ref, flat, flat["demonstration"].replace("Oslo", "Bergen")) == 0.0
    # The reference rule's quirk: the nested input is cut at its first "}" and skipped, so gold fails.
    assert score(ref, nested, nested["demonstration"]) == 0.0


def test_medical_judge_falls_back_to_labelled_overlap(suite, fixture_data, no_judge, caplog):
    card = suite.card("medical")
    row = load_rows(card, "test")[0]
    assert score(card, row, "This is scurvy, caused by vitamin C deficiency.") == 1.0
    assert score(card, row, "Give oral iron supplements.") == 0.0
    assert "not the paper's judge" in caplog.text


def test_medical_judge_comes_from_the_environment(monkeypatch, no_judge):
    monkeypatch.setenv("HARNESS_JUDGE_URL", "http://127.0.0.1:9/v1")
    monkeypatch.setenv("HARNESS_JUDGE_MODEL", "grader")
    assert get_scorer("judge").__name__ == "llm_judge[grader]"


def test_lm_eval_reads_the_test_split_from_the_data_dir_option(suite, offline):
    """--data-dir, not only $HARNESS_DATA_DIR, reaches lm-eval's documents (no variable set here)."""
    from harness.evaluation import card_task

    docs = list(card_task(suite.card("science"), data_dir=FIXTURES).test_docs())
    assert [json.loads(d["reference"]) for d in docs] == ["B", "A"]


def test_lm_eval_dataset_serves_the_cards_test_split(suite, fixture_data):
    from harness import cardfile

    card = suite.card("science")
    meta = cardfile.read(card.path)["metadata"]["harness"]
    docs = list(lm_eval_dataset(harness=meta, config_source=str(card.path))["test"])
    assert len(docs) == 2 and docs[0]["system"] == records("science_eval.jsonl")[0]["prompt"][0]["content"]
    assert [json.loads(d["reference"]) for d in docs] == ["B", "A"] and docs[0]["scorer"] == "answer_letter"


# --------------------------------------------------------------- the real test sets
@needs_paper_data
def test_real_science_eval_gold_scores_all_and_a_wrong_letter_none_under_both_rules(suite):
    swapped = {"A": "B", "B": "C", "C": "D", "D": "A"}
    for name in ("science", "science_ref"):  # the strict rule and the authors'
        card = suite.card(name)
        rows = load_rows(card, "test", PAPER_DATA)
        assert len(rows) == 507
        assert sum(score(card, r, f"<reasoning>\n-\n</reasoning>\n{r['demonstration']}") for r in rows) == 507
        assert sum(score(card, r, f"<reasoning>\n-\n</reasoning>\n<answer>\n{swapped[r['answer']]}\n</answer>") for r in rows) == 0
    # A bare letter: the authors' rule takes it, the strict one does not.
    assert sum(score(suite.card("science_ref"), r, r["answer"]) for r in rows) == 507
    assert sum(score(suite.card("science"), r, r["answer"]) for r in rows) == 0


@needs_paper_data
def test_real_tooluse_eval_loads_and_gold_scores_all_and_95_by_the_reference_rule(suite):
    card, ref = suite.card("tooluse"), suite.card("tooluse_ref")
    rows = load_rows(card, "test", PAPER_DATA)
    assert len(rows) == 97
    assert sum(score(card, r, r["demonstration"]) for r in rows) == 97
    assert [i for i, r in enumerate(rows) if not score(ref, r, r["demonstration"])] == [26, 33]


# --------------------------------------------------------------- no local copy
def test_offline_train_split_fails_at_once_naming_the_hub_dataset(suite, offline):
    started = time.monotonic()
    with pytest.raises(HarnessError) as err:
        load_rows(suite.card("medical"), "train")
    message = str(err.value)
    assert time.monotonic() - started < 30
    assert "\n" not in message
    assert f"cannot download the 'train' data of task 'medical' from the hub dataset {MEDICAL_HUB}" in message
    assert "Provide it locally as 'medical_train.jsonl' or 'medical_data/train_data'" in message and "--data-dir" in message


@pytest.mark.parametrize("task", ["tooluse", "science"])
def test_authors_only_data_missing_names_the_files_and_their_origin(suite, offline, task):
    with pytest.raises(HarnessError, match=rf"no local copy of the 'train' data of task '{task}' \(origin: the SDFT authors' data/{task}_data"
                       rf".*\): put '{task}_train.jsonl' or '{task}_data/train_data' in a folder and pass --data-dir"):
        load_rows(suite.card(task), "train")


def test_run_stops_before_training_on_the_train_set_download(tmp_path, offline, capsys):
    from harness.cli import main

    model = tmp_path / "model"  # a local model folder: a config, weights and a tokenizer with a chat template
    model.mkdir()
    (model / "config.json").write_text('{"model_type": "qwen2"}')
    toy_base = Path(__file__).resolve().parents[1] / "tasks" / "toy" / "base"
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "model.safetensors"):
        shutil.copy(toy_base / name, model / name)
    data = tmp_path / "data"  # tool use and science present: the medical train set is the one to download
    data.mkdir()
    for name in ("tooluse_train.jsonl", "tooluse_eval.jsonl", "science_train.jsonl", "science_eval.jsonl"):
        shutil.copy(FIXTURES / name, data / name)
    out = tmp_path / "run"
    argv = ["run", "--suite", "paper-sequential", "--method", "sdft", "--model", str(model), "--data-dir", str(data)]
    argv += ["--output", str(out), "--confirm-unsafe-code"]  # humaneval, a probe, runs generated code
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err
    assert err.startswith(f"error: cannot download the 'train' data of task 'medical' from the hub dataset {MEDICAL_HUB}")
    assert not out.exists()  # nothing trained, no run folder


# --------------------------------------------------------------- per-split field overrides are checked
@pytest.mark.parametrize(
    "old, new, message",
    [
        ("fields: {demonstration: golden_response|lines}", "fields: {reply: golden_response}",
         r"tooluse.yaml: `metadata.harness.data.train.fields` may only override prompt, demonstration, answer"),
        ("golden_response|lines", "golden_response|line",
         r"tooluse.yaml: `metadata.harness.data.train.fields.demonstration`: unknown formatter 'line' \(did you mean 'lines'\?\)"),
        ("answer: golden_answer|calls}", "answer: golden_answer|cals}",
         r"tooluse.yaml: `metadata.harness.fields.answer`: unknown formatter 'cals' \(did you mean 'calls'\?\)"),
    ],
)
def test_bad_field_overrides_name_file_and_field(tmp_path, old, new, message):
    shutil.copytree(REPO / "tasks" / "paper", tmp_path / "paper")
    card = tmp_path / "paper" / "tooluse.yaml"
    text = card.read_text()
    assert old in text
    card.write_text(text.replace(old, new))
    with pytest.raises(HarnessError, match=message):
        load_card(card)
