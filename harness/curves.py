"""Curves inside a stage: the stage's task (and optionally the probes) scored every N optimizer steps.

The points go to stages/<k>/curve.json as they come (a resumed stage keeps its earlier points),
then to MLflow as step metrics (harness.tracking) and into the report's curve figure. Each
evaluation saves and restores every random generator, so scoring mid-stage leaves the training
itself exactly as it would have been.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import torch
from transformers import TrainerCallback

from harness import storage
from harness.rundir import read_curve


def _rng_state():
    return random.getstate(), np.random.get_state(), torch.get_rng_state(), torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None


def _set_rng_state(state) -> None:
    random.setstate(state[0])
    np.random.set_state(state[1])
    torch.set_rng_state(state[2])
    if state[3] is not None:
        torch.cuda.set_rng_state_all(state[3])


class CurveCallback(TrainerCallback):
    def __init__(self, evaluator, every: int, path: Path, main: bool = True):
        self.evaluator, self.every, self.path, self.main = evaluator, every, path, main
        self.step_offset = 0  # a stage's later trainer (SFT + re-invoke's second phase) counts on from its first's steps

    def on_step_end(self, args, state, control, model=None, processing_class=None, **kwargs):
        step = state.global_step + self.step_offset
        if step % self.every or not self.main:
            return
        points = read_curve(self.path)
        if any(p["step"] == step for p in points):
            return  # a resumed stage already has this point
        tokenizer = processing_class or kwargs.get("tokenizer")
        rng, was_training = _rng_state(), model.training
        model.eval()
        try:
            scores = self.evaluator.run(model, tokenizer)
        finally:
            model.train(was_training)
            _set_rng_state(rng)
        storage.write_json(self.path, {"every": self.every, "points": [*points, {"step": step, "scores": scores}]})
