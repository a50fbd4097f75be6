"""Task cards and suites: the toy suite loads, and every kind of bad card fails with the file and field named."""

import json
import re
import shutil
from pathlib import Path

import pytest

from harness import registry
from harness.errors import HarnessError
from harness.registry import load_card, load_suite
from harness.taskdata import load_rows

from .conftest import TOY


def test_toy_suite_loads_with_its_sequence_probes_and_model():
    suite = load_suite("toy")
    assert suite.sequence == ("cipher", "facts", "tooluse")
    assert [p.name for p in suite.probes] == ["addition", "capitals", "format", "incontext"]
    assert all(p.card is not None and p.protocol == p.card.protocol and p.protocol.result_key == "acc,none" for p in suite.probes)
    assert suite.model_path() == str(TOY / "base")
    assert suite.card("tooluse").scorer == "tool_call"


def test_unknown_task_suggests_the_closest_name():
    with pytest.raises(HarnessError, match=r"unknown task in suite 'toy' 'cyphr' \(did you mean 'cipher'\?\)"):
        load_suite("toy").card("cyphr")


def test_unknown_suite_is_named():
    with pytest.raises(HarnessError, match="unknown suite 'tyo'.*did you mean 'toy'"):
        load_suite("tyo")


def edit(path, old, new):
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new))


@pytest.mark.parametrize(
    "old, new, message",
    [
        ("    scorer: exact_match\n", "", r"cipher.yaml: task card is missing field `metadata.harness.scorer`"),
        ("scorer: exact_match", "scorer: exact_mtch", r"cipher.yaml: `metadata.harness.scorer`: unknown scorer 'exact_mtch' \(did you mean 'exact_match'\?\)"),
        ("demonstration: demonstration, ", "", r"cipher.yaml: `metadata.harness.fields` must map each of prompt, demonstration, answer"),
        ("train: data/cipher_train.jsonl, ", "", r"cipher.yaml: `metadata.harness.data` must give the train and test split"),
        ("role: task", "role: teacher", r"cipher.yaml: `metadata.harness.role` must be 'task' or 'probe'"),
        # a misspelled key would be ignored with its setting: named instead
        ("role: task", "rol: probe", r"cipher.yaml: `metadata.harness`: unknown key 'rol' \(did you mean 'role'\?\)"),
        ("    scorer: exact_match\n", "    scorer: exact_match\n    teacher_templete: '{prompt} {privileged_context}'\n",
         r"`metadata.harness`: unknown key 'teacher_templete' \(did you mean 'teacher_template'\?\)"),
        ("answer: answer}", "answer: answer, answr: answer}", r"`metadata.harness.fields`: unknown key 'answr' \(did you mean 'answer'\?\)"),
        ("data: {train: data/cipher_train.jsonl, ", "data: {tset: x.jsonl, train: data/cipher_train.jsonl, ",
         r"`metadata.harness.data`: unknown key 'tset' \(did you mean 'test'\?\)"),
        ("train: data/cipher_train.jsonl", "train: {file: data/cipher_train.jsonl, fiels: {}}", r"`metadata.harness.data.train`: unknown key 'fiels'"),
        ("train: data/cipher_train.jsonl", "train: {hub: org/cipher}", r"`metadata.harness.data.train.hub` must be a mapping \{path, name, split\}"),
        ("train: data/cipher_train.jsonl", "train: {hub: {path: org/cipher, splt: train}}", r"`metadata.harness.data.train.hub`: unknown key 'splt'"),
        ("train: data/cipher_train.jsonl", "train: {hub: {path: org/cipher, split: no}}",
         r"`metadata.harness.data.train.hub.split` must be text \(quote it\), not False"),
        ("train: data/cipher_train.jsonl", "train: {hub: {path: ' '}}", r"`metadata.harness.data.train.hub` must be a mapping \{path, name, split\}"),
        # wrong types: one line, not a TypeError from deep inside
        ("prompt: prompt,", "prompt: 5,", r"`metadata.harness.fields.prompt` must name a data field \(a string\), not 5"),
        ("prompt: prompt,", "prompt: null,", r"`metadata.harness.fields.prompt` must name a data field \(a string\), not None"),
        ("scorer: exact_match", "scorer: [exact_match]", r"`metadata.harness.scorer` must be a string, not \['exact_match'\]"),
        ("name: cipher", "name: 7", r"`metadata.harness.name` must be a string, not 7"),
        ("task: toy_cipher\n", "", r"cipher.yaml: missing field `task`"),
        ("metadata:\n", "metadata: [\n", r"cipher.yaml, line \d+: malformed YAML"),
        # generation settings fail here, not mid-run inside lm-eval or transformers (or, for inf, writing run.json)
        ("do_sample: false", "do_sample: false, temperature: hot", r"cipher.yaml: `generation_kwargs`.temperature: expected a number >= 0"),
        ("do_sample: false", "do_sample: false, temperature: -1", r"`generation_kwargs`.temperature: expected a number >= 0 \(0: greedy\), got -1"),
        ("do_sample: false", "do_sample: false, temperature: .inf", r"`generation_kwargs`.temperature: expected a number >= 0 \(0: greedy\), got inf"),
        ("do_sample: false", "do_sample: false, temperature: true", r"`generation_kwargs`.temperature: expected a number >= 0"),
        ("do_sample: false", "do_sample: false, top_k: 2.5", r"`generation_kwargs`.top_k: expected a whole number >= 0"),
        ("do_sample: false", "do_sample: false, top_p: 0", r"`generation_kwargs`.top_p: expected a number in \(0, 1\]"),
        ("max_gen_toks: 16", "max_gen_toks: 0", r"`generation_kwargs`.max_gen_toks: expected a whole number >= 1, got 0"),
        ('generation_kwargs: {until: ["<|end|>"], do_sample: false, max_gen_toks: 16}', "generation_kwargs: 16",
         r"`generation_kwargs`: expected a mapping of generation settings, got 16"),
        ('until: ["<|end|>"]', "until: 5", r"`generation_kwargs`.until: expected a stop text or a list of them, got 5"),
        ("do_sample: false", 'do_sample: "false"', r"`generation_kwargs`.do_sample: expected true or false \(unquoted\), got 'false'"),
        # the lm-eval part of the card: lm-eval itself would fail mid-evaluation with a TypeError naming no file
        ("generation_kwargs:", "generaton_kwargs:", r"cipher.yaml: unknown lm-eval task key 'generaton_kwargs' \(did you mean 'generation_kwargs'\?\)"),
        ("task: toy_cipher\n", "task: toy_cipher\nnum_fewshot: '2'\n", r"cipher.yaml: `num_fewshot` must be a whole number >= 0, not '2'"),
        ("task: toy_cipher\n", "task: 5\n", r"cipher.yaml: `task` must be a name without spaces or commas \(lm-eval.s task name\), not 5"),
        ("task: toy_cipher\n", "task: toy_cipher\noutput_type: generate\n", r"cipher.yaml: `output_type` must be one of generate_until"),
        # a name is a folder and a column: `a/../x` put a default run folder outside results/
        ("name: cipher", "name: a/../rev", r"`metadata.harness.name` must be ASCII letters, digits, '_' or '-'"),
        ("name: cipher", "name: 'ci,pher'", r"`metadata.harness.name` must be ASCII letters"),
        ("train: data/cipher_train.jsonl", "train: {file: 5}", r"`metadata.harness.data.train.file` must be a file name \(or a list of them\), not 5"),
        ("train: data/cipher_train.jsonl", "train: ''", r"`metadata.harness.data.train` must be a file name"),
        # YAML keeps the last of two equal keys: the first scorer would be dropped without a word
        ("    scorer: exact_match\n", "    scorer: exact_match\n    scorer: answer_letter\n", r"cipher.yaml, line \d+: .*key 'scorer' appears twice"),
        ("    scorer: exact_match\n", "    scorer: exact_match\n    teacher_template: '{prompt} {privileged_context} as {\"a\": 1}'\n",
         r"`metadata.harness.teacher_template`: a brace other than \{prompt\} and \{privileged_context\}.*write a literal brace twice"),
        # Jinja's habit: the teacher would read the literal text {prompt}, neither the question nor the demonstration
        ("    scorer: exact_match\n", "    scorer: exact_match\n    teacher_template: '{{prompt}} Example: {{privileged_context}}'\n",
         r"`metadata.harness.teacher_template` must use \{prompt\} and \{privileged_context\} once each, in single braces"),
        ("name: cipher", "name: cipher.v2", r"`metadata.harness.name` must be ASCII letters, digits, '_' or '-'"),  # --set by_task.cipher.v2.x
    ],
)
def test_bad_cards_name_file_and_field(toy_copy, old, new, message):
    card = toy_copy / "cipher.yaml"
    edit(card, old, new)
    with pytest.raises(HarnessError, match=message):
        load_card(card)


def test_lm_eval_task_names_and_hub_splits_without_a_local_file_load(toy_copy):
    edit(toy_copy / "cipher.yaml", "task: toy_cipher", "task: toy_cipher_(general)")  # lm-eval ships names like it
    edit(toy_copy / "cipher.yaml", "test: data/cipher_test.jsonl", "test: {file: null, hub: {path: someone/cipher, split: test}}")
    card = load_card(toy_copy / "cipher.yaml")
    assert card.lm_eval_task == "toy_cipher_(general)" and card.data["test"]["hub"]["path"] == "someone/cipher"


def test_the_lm_eval_keys_a_card_may_use_are_lm_evals():
    import dataclasses

    from lm_eval.api.task import TaskConfig

    assert sorted(registry.TASK_CONFIG_KEYS) == sorted(f.name for f in dataclasses.fields(TaskConfig))


def test_missing_data_file_is_named(toy_copy):
    (toy_copy / "data" / "cipher_train.jsonl").unlink()
    card = load_card(toy_copy / "cipher.yaml")
    with pytest.raises(HarnessError, match=r"data file for split 'train' not found: .*cipher_train.jsonl"):
        load_rows(card, "train")


@pytest.mark.parametrize(
    "line, message",
    [
        ('{"prompt": "Shift each digit up by one: 12", "answer": "bc"}', r"cipher_train.jsonl, line 2: missing or empty field 'demonstration'"),
        ('{"prompt": "", "demonstration": "bc", "answer": "bc"}', r"cipher_train.jsonl, line 2: missing or empty field 'prompt'"),
        ('{"prompt": "Shift each digit up by one: 12", "demonstration": "bc"', r"cipher_train.jsonl, line 2: not valid JSON"),
        ('["not", "an", "object"]', r"cipher_train.jsonl, line 2: expected a JSON object"),
        ('', r"never raised"),  # a blank line: skipped, and the lines after it keep their numbers
        ('{"prompt": [{"role": "user", "content": 12}], "demonstration": "bc", "answer": "bc"}',
         r"cipher_train.jsonl, line 2: field 'prompt' must be a string or a list of chat messages \(each with a string `content`\)"),
        ('{"prompt": "12", "demonstration": "23", "answer": 23.0}', r"line 2: field 'answer': 23.0 is not text, and exact_match compares text"),
        ('{"prompt": "12", "demonstration": "23", "answer": ["23", true]}', r"line 2: field 'answer': True is not text"),
        ('{"prompt": "  ", "demonstration": "23", "answer": "23"}', r"line 2: field 'prompt': the user message is blank"),
        ('{"prompt": [{"content": "Be nice."}, {"role": "user", "content": "12"}], "demonstration": "23", "answer": "23"}',
         r"line 2: a prompt message has role None; chat roles are system, user, assistant"),  # no role: was trained as an assistant turn
        ('{"prompt": [{"role": "sys", "content": "Be brief."}, {"role": "user", "content": "12"}], "demonstration": "23", "answer": "23"}',
         r"line 2: a prompt message has role 'sys'; chat roles are system, user, assistant"),  # was trained as an assistant turn
        ('{"prompt": [{"role": "user", "content": "12"}, {"role": "assistant", "content": "23"}], "demonstration": "23", "answer": "23"}',
         r"line 2: the prompt must end with a user message \(its last is 'assistant'\)"),
    ],
)
def test_bad_rows_are_named_by_file_and_row(toy_copy, line, message):
    data = toy_copy / "data" / "cipher_train.jsonl"
    lines = data.read_text().splitlines()
    data.write_text("\n".join([lines[0], line, *lines[1:]]) + "\n")
    if not line:
        data.write_text(data.read_text().replace(lines[2], '{"prompt": "x"}', 1))
        message = r"cipher_train.jsonl, line 4: missing or empty field 'demonstration'"  # the third row, below the blank line
    with pytest.raises(HarnessError, match=message):
        load_rows(load_card(toy_copy / "cipher.yaml"), "train")


def test_a_line_separator_inside_a_json_string_is_text(toy_copy):
    data = toy_copy / "data" / "cipher_train.jsonl"
    row = json.dumps({"prompt": "12\u2028and 3", "demonstration": "23", "answer": "23"}, ensure_ascii=False)  # JSON allows it raw
    data.write_text(row + "\r\n" + data.read_text())  # and a Windows line end
    assert load_rows(load_card(toy_copy / "cipher.yaml"), "train")[0]["prompt"][0]["content"] == "12\u2028and 3"


def test_a_test_prompt_of_several_turns_is_refused_and_a_train_prompt_of_several_is_trained(toy_copy):
    """lm-eval reads a system message and one user message: a test prompt with earlier turns would be scored as another prompt."""
    turns = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Apply the shift rule to 1."},
             {"role": "assistant", "content": "2"}, {"role": "user", "content": "Apply the shift rule to 12."}]
    row = json.dumps({"prompt": turns, "demonstration": "12 becomes 23.", "answer": "23"}) + "\n"
    card = load_card(toy_copy / "cipher.yaml")
    for split in ("train", "test"):
        data = toy_copy / "data" / f"cipher_{split}.jsonl"
        data.write_text(row + data.read_text())
    assert load_rows(card, "train")[0]["prompt"] == turns
    with pytest.raises(HarnessError, match=r"cipher_test.jsonl, line 1: a prompt of several turns; evaluation \(lm-eval\) reads only"):
        load_rows(card, "test")
    system_only = json.dumps({"prompt": [turns[0], turns[3]], "demonstration": "12 becomes 23.", "answer": "23"}) + "\n"
    data.write_text(system_only + data.read_text().split("\n", 1)[1])
    assert load_rows(card, "test")[0]["prompt"] == [turns[0], turns[3]]


def test_non_utf8_and_empty_files_are_refused(toy_copy):
    data = toy_copy / "data" / "cipher_train.jsonl"
    card = load_card(toy_copy / "cipher.yaml")
    good = data.read_bytes()
    data.write_bytes(good + b'{"prompt": "caf\xe9"}\n')
    with pytest.raises(HarnessError, match=r"cipher_train.jsonl, line 1001: not UTF-8 text \(invalid continuation byte at byte \d+\); save it as UTF-8"):
        load_rows(card, "train")
    data.write_bytes(b"\xef\xbb\xbf" + good)  # a byte-order mark, as Windows editors write: no part of the JSON
    assert len(load_rows(card, "train")) == 1000
    data.write_text(json.dumps([json.loads(line) for line in good.decode().splitlines()[:2]]))
    with pytest.raises(HarnessError, match=r"line 1: expected a JSON object, got list \(JSON Lines holds one object a line, not one array of them\)"):
        load_rows(card, "train")
    data.write_text("[\n" + good.decode().splitlines()[0] + "\n]\n")
    with pytest.raises(HarnessError, match=r"line 1: not valid JSON \(Expecting value\); JSON Lines holds one object a line"):
        load_rows(card, "train")
    data.unlink()
    data.mkdir()  # a folder in the file's place: read as a saved dataset, which it is not
    with pytest.raises(HarnessError, match=r"cipher.yaml: data for split 'train' is the folder .*cipher_train.jsonl, which is no saved dataset"):
        load_rows(card, "train")
    data.rmdir()
    data.write_text("")
    with pytest.raises(HarnessError, match="the 'train' data of task 'cipher' is empty"):
        load_rows(card, "train")


def test_rows_are_normalized_to_chat_prompts():
    rows = load_rows(load_suite("toy").card("cipher"), "test")
    assert len(rows) == 100
    first = rows[0]
    assert first["prompt"] == [{"role": "user", "content": first["prompt"][0]["content"]}]
    assert first["prompt"][0]["content"].endswith("shift rule.") or "shift form" in first["prompt"][0]["content"]
    assert first["demonstration"] in first["answer"]  # the cipher accepts the code alone or the demonstration's sentence


@pytest.mark.parametrize("old, new, message", [
    ("preset: toy", "preset: toy\npresett: paper", r"suite.yaml: `suite`: unknown key 'presett' \(did you mean 'preset'\?\)"),
    ("sequence: [cipher, facts, tooluse]", "sequence: [cipher, facts, cipher]", r"suite.yaml: field `sequence` lists a task twice"),
    ("  - {task: toy_addition, metric: acc}", "  - {task: toy_cipher, metric: acc}",
     r"suite.yaml: probes\[0\] is 'cipher', a task of the sequence: a probe measures a prior capability"),
])
def test_bad_suites_name_file_and_field(toy_copy, old, new, message):
    edit(toy_copy / "suite.yaml", old, new)
    with pytest.raises(HarnessError, match=message):
        load_suite("toy", toy_copy.parent)


@pytest.mark.parametrize("text", ["", "- suite: toy\n", "suit: toy\n"])
def test_a_suite_file_that_defines_no_suite_is_named(toy_copy, text):
    (toy_copy / "suite.yaml").write_text(text)
    registry._suite_index.cache_clear()
    with pytest.raises(HarnessError, match=r"unknown suite 'toy'.*suite.yaml: no top-level `suite: NAME` there"):
        load_suite("toy", toy_copy.parent)


def test_two_cards_of_one_lm_eval_task_and_two_suites_of_one_name_are_refused(toy_copy):
    edit(toy_copy / "facts.yaml", "task: toy_facts", "task: toy_cipher")  # lm-eval reports by this name: one column's scores twice
    with pytest.raises(HarnessError, match=r"lm-eval task name 'toy_cipher' \(`task`\) is already used by .*cipher.yaml"):
        load_suite("toy", toy_copy.parent)
    edit(toy_copy / "facts.yaml", "task: toy_cipher", "task: toy_facts")
    shutil.copytree(toy_copy, toy_copy.parent / "toy2")
    registry._suite_index.cache_clear()  # the folder's suites are read once a process
    with pytest.raises(HarnessError, match=r"suite .toy. is defined by .*suite.yaml and by .*suite.yaml: give one of them another name"):
        load_suite("toy", toy_copy.parent)


@pytest.mark.parametrize("name", ["stage", "method", "trained_on", "teacher_acc"])
def test_a_task_named_like_a_column_of_the_matrix_is_refused(toy_copy, name):
    edit(toy_copy / "addition.yaml", "name: addition", f"name: {name}")  # its column beside the matrix's own: report crashed
    with pytest.raises(HarnessError, match=rf"addition.yaml: `metadata.harness.name` '{name}' names a column matrix.csv keeps for itself"):
        load_card(toy_copy / "addition.yaml")


def test_a_card_saved_as_yml_is_named_where_its_task_is_missed(toy_copy):
    (toy_copy / "facts.yaml").rename(toy_copy / "facts.yml")
    with pytest.raises(HarnessError, match=r"field `sequence`: unknown task 'facts'.*; .*facts.yml is not read \(cards end in .yaml\)$"):
        load_suite("toy", toy_copy.parent)


def test_a_data_path_at_an_unknown_users_home_is_one_line(toy_copy):
    edit(toy_copy / "cipher.yaml", "test: data/cipher_test.jsonl", "test: ~nosuchuser/c.jsonl")
    with pytest.raises(HarnessError, match=r"cipher.yaml: `data.test` '~nosuchuser/c.jsonl': Could not determine home directory"):
        load_rows(load_card(toy_copy / "cipher.yaml"), "test")


def test_a_data_path_may_start_at_home(toy_copy, monkeypatch, tmp_path):
    home = tmp_path / "home"
    (home / "d").mkdir(parents=True)
    shutil.copy(toy_copy / "data" / "cipher_test.jsonl", home / "d" / "c.jsonl")
    monkeypatch.setenv("HOME", str(home))
    edit(toy_copy / "cipher.yaml", "test: data/cipher_test.jsonl", "test: ~/d/c.jsonl")
    assert len(load_rows(load_card(toy_copy / "cipher.yaml"), "test")) == 100


def test_every_broken_card_of_a_suite_is_named_at_once(toy_copy):
    edit(toy_copy / "cipher.yaml", "scorer: exact_match", "scorer: exact_mtch")
    edit(toy_copy / "facts.yaml", "role: task", "role: teacher")
    edit(toy_copy / "addition.yaml", "task: toy_addition", "task: toy_tooluse")
    with pytest.raises(HarnessError) as e:
        load_suite("toy", toy_copy.parent)
    lines = str(e.value).splitlines()
    assert lines[0] == "3 task cards of suite 'toy' are broken:" and len(lines) == 4
    assert any("cipher.yaml: `metadata.harness.scorer`: unknown scorer 'exact_mtch'" in line for line in lines)
    assert any("facts.yaml: `metadata.harness.role` must be 'task' or 'probe'" in line for line in lines)
    assert any(re.search(r"lm-eval task name 'toy_tooluse' \(`task`\) is already used by .*(addition|tooluse).yaml", line) for line in lines)


def test_a_broken_suite_file_hides_no_other_suite(toy_copy, monkeypatch, capsys):
    from harness.cli import main

    mine = toy_copy.parent / "mine"
    mine.mkdir()
    (mine / "suite.yaml").write_text("suite: mine\nsequence: [a\n")  # a user's suite in progress: malformed YAML
    monkeypatch.setattr(registry, "TASKS_DIR", toy_copy.parent)
    registry._suite_index.cache_clear()
    assert load_suite("toy").sequence == ("cipher", "facts", "tooluse")  # was the other file's YAML error
    with pytest.raises(HarnessError, match=r"unknown suite 'mine'; known: toy; unreadable suite files: .*mine/suite.yaml, line 3: malformed YAML"):
        load_suite("mine")
    assert main(["list"]) == 2  # everything listed, and the broken file is still an error a script sees
    out, err = capsys.readouterr()
    assert "suite toy: " in out and f"unreadable suite file: {mine / 'suite.yaml'}, line 3: malformed YAML" in out
    assert "presets: " in out and err == "error: 1 suite(s), suite file(s) or folder(s) above cannot be read or loaded\n"


def _broken(root: Path) -> dict[Path, str]:
    """Files a user's tasks folder may hold beside a good suite, each with what `harness list` says of it."""
    (root / "junk").mkdir()
    (root / "junk" / "suite.yaml").mkdir()  # a folder with a suite file's name
    (root / "gone").mkdir()
    (root / "gone" / "suite.yaml").symlink_to(root / "nowhere.yaml")
    (root / "toy" / ".#cipher.yaml").symlink_to("root@host.1234:0")  # Emacs's lock file while a card is edited
    (root / "toy" / "extra").mkdir()
    (root / "toy" / "extra" / "suite.yaml").write_text("suite: [oops]\n")  # inside the toy folder: no card of it
    (root / "nul.yaml").write_bytes(b"suite: a\x00b\n")
    (root / "number.yaml").write_text("suite: 1.10\n")
    (root / "bom").mkdir()  # in a folder of its own: a suite's folder holds its cards
    (root / "bom" / "bom.yaml").write_bytes("\ufeffsuite: bom\nsequence: [x]\n".encode())
    (root / "toy" / ".ipynb_checkpoints").mkdir()  # Jupyter's copy of the suite: hidden, not a second `toy`
    shutil.copy(root / "toy" / "suite.yaml", root / "toy" / ".ipynb_checkpoints" / "suite-checkpoint.yaml")
    (root / "evil.yaml").write_text("suite: ../../x\n")  # it would name a run folder outside results/
    (root / "yml").mkdir()
    (root / "yml" / "suite.yml").write_text("suite: yml\n")
    return {root / "yml" / "suite.yml": "suite files end in .yaml (rename it suite.yaml)",
            root / "evil.yaml": "`suite` must be a name of letters, digits, - and _, not '../../x'", root / "junk" / "suite.yaml": "not a readable file", root / "gone" / "suite.yaml": "not a readable file",
            root / "toy" / "extra" / "suite.yaml": "`suite` must be a name in text (quote it), not ['oops']",
            root / "nul.yaml": "malformed YAML (unacceptable character",
            root / "number.yaml": "`suite` must be a name in text (quote it), not 1.1"}


def test_unreadable_and_misplaced_suite_files_are_named_and_hide_nothing(toy_copy, monkeypatch, capsys):
    from harness.cli import main

    root = toy_copy.parent
    named = _broken(root)
    monkeypatch.setattr(registry, "TASKS_DIR", root)
    registry._suite_index.cache_clear()
    assert load_suite("toy").sequence == ("cipher", "facts", "tooluse")
    assert "bom" in registry.suite_index().files  # a byte-order mark hides no `suite:` key
    assert main(["list"]) == 2
    lines = capsys.readouterr().out.splitlines()
    for path, why in named.items():
        assert any(line.startswith(f"unreadable suite file: {path}: {why}") for line in lines), (path, lines)
    assert not any(".#cipher" in line for line in lines)


def _list(root: Path, monkeypatch, capsys) -> tuple[int, list[str], str]:
    """`harness list` over a tasks folder: exit code, stdout lines, stderr."""
    from harness.cli import main

    monkeypatch.setattr(registry, "TASKS_DIR", root)
    registry._suite_index.cache_clear()
    code = main(["list"])
    out, err = capsys.readouterr()
    return code, out.splitlines(), err


def test_a_card_or_suite_file_nested_too_deep_is_one_line_and_hides_no_other_suite(toy_copy, monkeypatch, capsys):
    root = toy_copy.parent
    (root / "deep").mkdir()
    (root / "deep" / "suite.yaml").write_text("suite: deep\nx: " + "[" * 600 + "]" * 600 + "\n")
    code, lines, err = _list(root, monkeypatch, capsys)
    assert code == 2 and any(line.startswith("suite toy: ") for line in lines)  # was: no suite listed at all
    assert f"unreadable suite file: {root / 'deep' / 'suite.yaml'}: nested too deep to read" in lines
    with (toy_copy / "cipher.yaml").open("a") as f:  # a card: a RecursionError traceback
        f.write("x: " + "{a: " * 500 + "1" + "}" * 500 + "\n")
    registry._suite_index.cache_clear()
    with pytest.raises(HarnessError, match=rf"^{toy_copy / 'cipher.yaml'}: nested too deep to read$"):
        load_suite("toy", root)


def test_a_folder_that_cannot_be_read_is_named_not_skipped(toy_copy, monkeypatch, capsys):
    import os

    scandir = os.scandir

    def denied(path="."):  # as for a user without read permission (tests may run as root, whom chmod does not stop)
        if Path(path) == toy_copy:
            raise PermissionError(13, "Permission denied", str(path))
        return scandir(path)

    monkeypatch.setattr(os, "scandir", denied)
    code, lines, err = _list(toy_copy.parent, monkeypatch, capsys)
    assert code == 2 and f"folder not searched for suites: {toy_copy}: Permission denied" in lines  # was: toy gone, exit 0
    with pytest.raises(HarnessError, match=rf"unknown suite 'toy'; known: none; folders not searched: {toy_copy}: Permission denied"):
        load_suite("toy")


def test_a_broken_file_in_a_suite_folder_is_reported_once(toy_copy, monkeypatch, capsys):
    variant = toy_copy / "variant.yaml"
    variant.write_text((toy_copy / "suite.yaml").read_text().replace("suite: toy", "suite: 1.10"))
    code, lines, err = _list(toy_copy.parent, monkeypatch, capsys)  # a suite file by its key: not a card of toy
    assert any(line.startswith("suite toy: The embedded default") for line in lines)
    assert [line for line in lines if "variant.yaml" in line] == [f"unreadable suite file: {variant}: `suite` must be a name in text (quote it), not 1.1"]
    assert (code, err) == (2, "error: 1 suite(s), suite file(s) or folder(s) above cannot be read or loaded\n")
    variant.write_text("suite: toy2\nsequence: [a\n")  # unparsed: a suite file or a broken card, named by its suite once
    code, lines, err = _list(toy_copy.parent, monkeypatch, capsys)
    assert [line for line in lines if "variant.yaml" in line] == [f"suite toy: cannot be loaded: {variant}, line 3: malformed YAML "
                                                                  "(did not find expected ',' or ']', while parsing a flow sequence at line 2)"]
    assert (code, err) == (2, "error: 1 suite(s), suite file(s) or folder(s) above cannot be read or loaded\n")


@pytest.mark.parametrize("edit_from, edit_to, message", [
    ("sequence: [cipher, facts, tooluse]", "sequence: [cipher, fcts]", "field `sequence`: unknown task 'fcts' (did you mean 'facts'?); known: cipher, facts, tooluse"),
    ("preset: toy", "preset: tyo", "field `preset`: unknown preset 'tyo' (did you mean 'toy'?); known: paper, toy"),
    ("preset: toy", "preset: [toy]", "field `preset` must be a preset's name (paper, toy), not ['toy']"),  # was a TypeError traceback
    ("{task: toy_capitals, metric: acc}", "{task: addition}",  # one column scored twice: a crash after training
     "probes[1] is probe 'addition' again (probes[0]); each probe may appear once"),
    ("{task: toy_addition, metric: acc}", "{task: null}", "probes[0] must be a mapping with `task` and its protocol (chat_template, fewshot_as_multiturn, num_fewshot, gen_kwargs, metric, filter)"),
    ("model: base", "model:", "field `model` must be a model id or a folder beside the suite, not None"),
])
def test_a_suite_naming_what_does_not_exist_fails_when_loaded_naming_its_field(toy_copy, edit_from, edit_to, message):
    edit(toy_copy / "suite.yaml", edit_from, edit_to)
    with pytest.raises(HarnessError) as e:
        load_suite("toy", toy_copy.parent)
    assert str(e.value) == f"{toy_copy / 'suite.yaml'}: {message}"


def test_a_suite_about_that_is_not_text_is_named(toy_copy):
    import re

    suite = toy_copy / "suite.yaml"
    suite.write_text(re.sub(r"about: >-\n(?:  .*\n)+", "about: [1, 2]\n", suite.read_text()))  # was listed as "suite toy: [1, 2]"
    with pytest.raises(HarnessError, match=rf"^{suite}: field `about` must be text, not \[1, 2\]$"):
        load_suite("toy", toy_copy.parent)


def test_another_suites_file_reached_through_a_linked_folder_is_no_card(toy_copy):
    other = toy_copy.parent / "other"
    other.mkdir()
    (other / "suite.yaml").write_text((toy_copy / "suite.yaml").read_text().replace("suite: toy", "suite: other"))
    shutil.copytree(toy_copy, other / "nested", ignore=shutil.ignore_patterns("suite.yaml"))  # its cards: the same task names
    (toy_copy / "shared").symlink_to(other)  # was: "shared/suite.yaml: missing field `task`", then "task name 'tooluse' is already used"
    registry._suite_index.cache_clear()
    assert load_suite("toy", toy_copy.parent).sequence == ("cipher", "facts", "tooluse")
    assert all(c.path.parent == toy_copy for c in load_suite("toy", toy_copy.parent).cards.values())
    assert {c.path.parent.resolve() for c in load_suite("other", toy_copy.parent).cards.values()} == {other / "nested"}  # found by either path


def test_a_suite_in_a_subfolder_of_another_keeps_its_cards(toy_copy):
    inner = toy_copy / "inner"
    shutil.copytree(toy_copy, inner, ignore=shutil.ignore_patterns("inner"))
    edit(inner / "suite.yaml", "suite: toy", "suite: inner")
    registry._suite_index.cache_clear()
    for name, folder in (("toy", toy_copy), ("inner", inner)):  # was: toy read inner's cards too ("already used")
        assert {c.path.parent for c in load_suite(name, toy_copy.parent).cards.values()} == {folder}


def test_a_folder_listed_but_not_entered_is_named_once(tmp_path, monkeypatch):
    import os

    locked = tmp_path / "locked"
    locked.mkdir()
    access = os.access
    monkeypatch.setattr(os, "access", lambda path, mode: mode != os.X_OK and access(path, mode) if Path(path) == locked else access(path, mode))
    denied = PermissionError(13, "Permission denied")  # what stat says of each entry of a folder of mode 444
    assert registry._not_entered(locked / "suite.yaml", denied) == {locked: f"{locked}: cannot be entered (Permission denied)"}
    assert registry._not_entered(tmp_path / "x.yaml", denied) == {tmp_path / "x.yaml": f"{tmp_path / 'x.yaml'}: Permission denied"}


def test_a_tasks_folder_without_suites_says_so(tmp_path, monkeypatch, capsys):
    code, lines, err = _list(tmp_path, monkeypatch, capsys)
    assert (code, lines[0], err) == (0, f"no suites under {tmp_path} (a suite is a YAML file with `suite: NAME`; see the README's Development section)", "")


def test_a_reader_that_leaves_early_ends_the_listing_quietly():
    import subprocess
    import sys

    listing = subprocess.Popen([sys.executable, "-m", "harness", "list"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    listing.stdout.close()  # as `harness list | head -1` does once it has its line
    assert (listing.wait(timeout=120), listing.stderr.read()) == (141, b"")


def test_a_linked_suite_folder_is_found_and_a_link_loop_ends(toy_copy, tmp_path):
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    (tasks / "toy").symlink_to(toy_copy)  # a suite kept elsewhere, linked in
    (toy_copy / "loop").symlink_to(toy_copy)
    registry._suite_index.cache_clear()
    assert load_suite("toy", tasks).sequence == ("cipher", "facts", "tooluse")


def test_a_card_that_is_a_broken_link_stops_its_suite_by_name(toy_copy):
    (toy_copy / "facts.yaml").unlink()
    (toy_copy / "facts.yaml").symlink_to(toy_copy / "gone.yaml")
    registry._suite_index.cache_clear()
    with pytest.raises(HarnessError, match=r"toy/facts.yaml \(a link to .*gone.yaml\): No such file or directory"):  # was dropped: "unknown task 'facts'"
        load_suite("toy", toy_copy.parent)


def test_a_yaml_error_names_where_the_unclosed_bracket_opened(toy_copy):
    edit(toy_copy / "suite.yaml", "sequence: [cipher, facts, tooluse]", "sequence: [cipher, facts, tooluse")
    registry._suite_index.cache_clear()
    line = next(n for n, text in enumerate((toy_copy / "suite.yaml").read_text().splitlines(), 1) if text.startswith("sequence:"))
    with pytest.raises(HarnessError, match=rf"suite.yaml, line \d+: malformed YAML \(.*while parsing a flow sequence at line {line}\)"):
        load_suite("toy", toy_copy.parent)


def test_a_tasks_folder_that_is_not_there_is_named(tmp_path, monkeypatch, capsys):
    from harness.cli import main

    monkeypatch.setenv("HARNESS_TASKS_DIR", str(tmp_path / "nowhere"))
    monkeypatch.setattr(registry, "TASKS_DIR", tmp_path / "nowhere")
    assert main(["list"]) == 2
    assert capsys.readouterr().err.strip() == f"error: {tmp_path / 'nowhere'} ($HARNESS_TASKS_DIR): not a folder of tasks"
