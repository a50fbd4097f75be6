"""The bad-input corpus: each mistake ends with one clear line on stderr and exit code 2, before any work."""

import json
import shutil

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


def fails(capsys, args, *expected, tmp_path=None):
    earlier = tmp_path / "earlier" if tmp_path else None
    if earlier:
        earlier.mkdir()
        (earlier / "matrix.csv").write_text("stage,cipher\n0,0.5\n")
    code = main(["run", "--output", str(tmp_path / "out") if tmp_path else "/nonexistent/out", *args])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and err[0].startswith("error: "), err
    for text in expected:
        assert text in err[0], err[0]
    if earlier:
        assert (earlier / "matrix.csv").read_text() == "stage,cipher\n0,0.5\n"
        assert not (tmp_path / "out" / "stages").exists()
    return err[0]


CASES = {
    "unknown task": (["--tasks", "cipher,fcts"], ["unknown task in suite 'toy' 'fcts'", "did you mean 'facts'"]),
    "unknown method": (["--method", "sdtf"], ["unknown method 'sdtf'", "did you mean 'sdft'"]),
    "unknown suite": (["--suite", "tooy"], ["unknown suite 'tooy'", "did you mean 'toy'"]),
    "unknown probe": (["--probes", "adition"], ["unknown probe", "'adition'", "did you mean 'addition'"]),
    "unknown option": (["--set", "learnin_rate=1e-5"], ["unknown option", "'learnin_rate'", "did you mean 'learning_rate'"]),
    "invalid option value": (["--set", "learning_rate=fast"], ["option learning_rate='fast' for method 'sft': expected a number"]),
    "invalid choice": (["--method", "sdft", "--set", "teacher=oracle"], ["option teacher='oracle' for method 'sdft': expected one of"]),
    "method count": (["--method", "sft,sdft"], ["--method lists 2 methods for 3 tasks"]),
    "repeated task": (["--tasks", "cipher,cipher"], ["each task may appear once"]),
    "probe as task": (["--tasks", "addition"], ["'addition' is a probe, not a trainable task"]),
    "missing model": (["--model", "/no/such/model"], ["--model /no/such/model: not a model folder"]),
    "bad --set syntax": (["--set", "learning_rate"], ["expected KEY=VALUE"]),
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
    fails(capsys, [], "cipher_train.jsonl, row 5: missing or empty field 'demonstration'", tmp_path=tmp_path)


def test_row_with_empty_prompt(tasks_root, capsys, tmp_path):
    path = tasks_root / "data" / "facts_test.jsonl"
    rows = path.read_text().splitlines()
    rows[0] = json.dumps({"prompt": "", "demonstration": "Zolu", "answer": "Zolu"})
    path.write_text("\n".join(rows) + "\n")
    fails(capsys, [], "facts_test.jsonl, row 1: missing or empty field 'prompt'", tmp_path=tmp_path)


def test_non_utf8_data(tasks_root, capsys, tmp_path):
    (tasks_root / "data" / "cipher_test.jsonl").write_bytes(b'{"prompt": "\xff\xfe"}\n')
    fails(capsys, [], "cipher_test.jsonl: not UTF-8 text", tmp_path=tmp_path)


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
