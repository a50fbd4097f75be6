"""Card files: read as lm-eval reads them, each parsed once per process, and the base row's key stable across processes."""

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import yaml

from harness import cardfile, registry
from harness.cli import main
from harness.errors import HarnessError

from .conftest import REPO

CARDS = sorted(p for suite in ("toy", "paper") for p in (REPO / "tasks" / suite).glob("*.yaml") if p.name != "suite.yaml")


@pytest.mark.parametrize("path", CARDS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_a_card_reads_as_lm_eval_reads_it(path):
    """lm-eval's own loader is the reference: the same mapping unresolved, the same functions resolved."""
    from lm_eval.tasks._yaml_loader import load_yaml

    assert cardfile.read(path) == load_yaml(path, resolve_func=False)
    assert cardfile.resolve(cardfile.read(path)) == load_yaml(path, resolve_func=True)


@pytest.fixture
def parses(monkeypatch):
    """YAML parses per file from here on (every YAML parse, lm-eval's included, goes through yaml.load)."""
    counts, real = Counter(), yaml.load

    def load(stream, Loader=None):
        counts[getattr(stream, "name", "<text>")] += 1
        return real(stream, Loader=Loader)

    cardfile._parse.cache_clear()
    registry._suite_index.cache_clear()
    monkeypatch.setattr(yaml, "load", load)
    return counts


def test_a_tiny_run_parses_each_card_once(parses, tmp_path):
    """Every path that reads a card: the suite, row 0, training, the SDFT teacher check, curves, pass@k, the base row's key."""
    suite = registry.load_suite("toy")
    task = suite.sequence[0]
    assert main(["run", "--tasks", task, "--method", "sdft", "--output", str(tmp_path / "run"), "--tracking-uri", f"sqlite:///{tmp_path / 'm.db'}",
                 "--limit", "1", "--set", "max_steps=1", "--set", "per_device_train_batch_size=2", "--eval-every", "1", "--pass-k", "1"]) == 0
    cards = {str(c.path) for c in suite.cards.values()} | {str(suite.path.parent / "_toy.yaml")}
    read = {name: n for name, n in parses.items() if name != "<text>"}
    assert cards <= set(read)
    assert set(read.values()) == {1}, read


def test_a_changed_file_is_read_again(tmp_path):
    card = tmp_path / "card.yaml"
    card.write_text("task: a\n")
    assert cardfile.read(card) == {"task": "a"}
    card.write_text("task: bb\n")
    assert cardfile.read(card) == {"task": "bb"}


def test_bad_files_are_one_line_errors(tmp_path):
    (tmp_path / "a.yaml").write_text("include: b.yaml\ntask: a\n")
    (tmp_path / "b.yaml").write_text("include: a.yaml\n")
    with pytest.raises(HarnessError, match="a.yaml: `include` cycle"):
        cardfile.read(tmp_path / "a.yaml")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "card.yaml").write_text("include: _shared.yaml\ntask: c\n")  # the shared file is one folder up
    with pytest.raises(HarnessError, match=r"sub/_shared.yaml \(the `include` of .*sub/card.yaml\): No such file or directory"):
        cardfile.read(tmp_path / "sub" / "card.yaml")
    for value in ("{file: b.yaml}", '""'):
        (tmp_path / "odd.yaml").write_text(f"include: {value}\ntask: o\n")
        with pytest.raises(HarnessError, match=r"odd.yaml: `include` must name a file"):
            cardfile.read(tmp_path / "odd.yaml")
    (tmp_path / "dir.yaml").write_text("include: sub\ntask: d\n")
    with pytest.raises(HarnessError, match=r"sub \(the `include` of .*dir.yaml\): not a file"):
        cardfile.read(tmp_path / "dir.yaml")
    (tmp_path / "nul.yaml").write_text('include: "a\\0.yaml"\ntask: n\n')
    with pytest.raises(HarnessError, match=r"\(the `include` of .*nul.yaml\): not a file name"):
        cardfile.read(tmp_path / "nul.yaml")
    (tmp_path / "_broken.yaml").write_text("task: [b\n")
    (tmp_path / "uses.yaml").write_text("include: _broken.yaml\ntask: u\n")
    with pytest.raises(HarnessError, match=r"_broken.yaml, line 2: malformed YAML .* \(the `include` of .*uses.yaml\)$"):
        cardfile.read(tmp_path / "uses.yaml")
    for i in range(cardfile.MAX_INCLUDES + 1):  # a chain of one-line files: too long, not "nested too deep"
        (tmp_path / f"_c{i}.yaml").write_text(f"include: _c{i + 1}.yaml\n")
    with pytest.raises(HarnessError, match=rf"_c{cardfile.MAX_INCLUDES}.yaml \(the `include` of .*\): `include` chain longer than {cardfile.MAX_INCLUDES} files"):
        cardfile.read(tmp_path / "_c0.yaml")
    (tmp_path / "list.yaml").write_text("- task\n")
    with pytest.raises(HarnessError, match="list.yaml: expected a YAML mapping, got list"):
        cardfile.read(tmp_path / "list.yaml")
    (tmp_path / "f.yaml").write_text("process_results: !function harness.taskdata.no_such_function\n")
    with pytest.raises(HarnessError, match="names no function"):
        cardfile.resolve(cardfile.read(tmp_path / "f.yaml"))


KEY = "from harness.plan import RunRequest, resolve; from harness.runner import base_eval_key; print(base_eval_key(resolve(RunRequest())))"


def test_the_base_row_key_is_the_same_in_another_process():
    """Row 0 is reused across runs through this key: nothing process-specific (a function's address) may enter it."""
    from harness.plan import RunRequest, resolve
    from harness.runner import base_eval_key

    other = subprocess.run([sys.executable, "-c", KEY], capture_output=True, text=True, cwd=REPO, check=True).stdout.split()[-1]
    assert other == base_eval_key(resolve(RunRequest()))


def test_function_tags_stay_lm_evals_strings_until_resolved():
    """The cards' unresolved `!function` values hash as lm-eval's strings (what the base row's key has always hashed)."""
    config = cardfile.read(CARDS[0])
    assert json.loads(json.dumps(config, default=str)) == config
    assert isinstance(config["process_results"], cardfile.FunctionRef) and config["process_results"].endswith("harness.taskdata.process_results")
    assert Path(config["process_results"]).parent == CARDS[0].parent
