"""The measuring scripts' own logic: the half-budget config of the toy reference and the bench's compute rates."""

import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))

from bench import measure_compute  # noqa: E402
from toyworld_reference import METHODS, half_budget  # noqa: E402

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
