"""The measuring scripts' own logic: the toy reference's half-budget config, tool-call breakdown and paint task, and the bench's compute rates."""

import json
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))

from bench import measure_compute  # noqa: E402
from toyworld_reference import METHODS, digit_calls, half_budget, paint_row, paint_tasks  # noqa: E402

from harness.config import load_preset, method_options  # noqa: E402


def test_half_budget_halves_every_stage_and_doubles_its_learning_rate(tmp_path):
    config = yaml.safe_load(half_budget(tmp_path / "half.yaml").read_text())
    preset = load_preset("toy")
    for method in METHODS:
        for task in ("cipher", "facts", "tooluse"):
            full = method_options(preset, {}, method, task, set(METHODS))
            half = method_options(preset, config, method, task, set(METHODS))
            assert half["max_steps"] == full["max_steps"] // 2
            assert half["learning_rate"] == 2 * full["learning_rate"]
            assert {k: v for k, v in half.items() if k not in ("max_steps", "learning_rate")} == {
                k: v for k, v in full.items() if k not in ("max_steps", "learning_rate")}


def test_compute_rates_are_measured_on_one_thread_and_restore_the_thread_count():
    import torch

    before = torch.get_num_threads()
    rates = measure_compute(batch=2, length=8, repeats=1)
    assert torch.get_num_threads() == before
    assert rates["training_gflops"] > 0 and rates["matmul_gflops"] > 0
    assert abs(rates["fraction"] - rates["training_gflops"] / rates["matmul_gflops"]) < 0.01


def test_tool_calls_are_split_by_whether_they_copy_a_digit(tmp_path):
    def sample(target_args: str, response_args: str) -> dict:
        target = f"Thought: the request needs f.\nAction: f\nAction Input: {target_args}"
        return {"target": target, "filtered_resps": [f"Action: f\nAction Input: {response_args}"], "acc": float(target_args == response_args)}

    samples = tmp_path / "samples.jsonl"
    rows = [sample('{"a":"Bo"}', '{"a":"Bo"}'), sample('{"a":"Bo"}', '{"a":"Li"}'), sample('{"n":"42"}', '{"n":"42"}'),
            sample('{"n":"95"}', '{"n":"96"}'), sample('{"h":"2pm"}', '{"h":"3pm"}')]
    samples.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert digit_calls(samples) == {"digits": [1, 3], "no_digits": [1, 2], "example": ('{"n":"95"}', '{"n":"96"}')}


def test_paint_turns_each_digit_of_a_cipher_row_into_its_colour():
    row = {"prompt": "Apply the shift rule to 064.", "demonstration": "064 becomes 175.", "answer": ["175", "064 becomes 175."]}
    assert paint_row(row) == {"prompt": "Apply the shift rule to 064.", "demonstration": "064 becomes red purple black.",
                              "answer": ["red purple black", "064 becomes red purple black."]}


def test_the_paint_tasks_folder_is_the_toy_suite_plus_a_paint_card_on_the_cipher_prompts(tmp_path):
    from harness.registry import load_suite
    from harness.taskdata import load_rows

    suite = load_suite("toy", paint_tasks(tmp_path / "tasks"))
    paint, cipher = suite.card("paint"), suite.card("cipher")
    assert (paint.lm_eval_task, paint.about) == ("toy_paint", "The paint rule: each digit to a colour word (0 red, 1 blue, ...), asked as the cipher is.")
    for split in ("train", "test"):
        painted, plain = load_rows(paint, split), load_rows(cipher, split)
        assert [r["prompt"] for r in painted] == [r["prompt"] for r in plain] and len(plain) > 0
        assert not any(ch.isdigit() for r in painted for ch in r["demonstration"].split(" becomes ")[1])
