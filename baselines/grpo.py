"""GRPO: group-relative policy optimization (trl.GRPOTrainer), the card's scorer as the reward.

The SDPO paper's baseline: each prompt gets a group of rollouts, each scored by the
task's own scorer (the one lm-eval grades with), and the advantage is the reward
minus the group mean. It learns nothing from a task the model never solves.
"""

from __future__ import annotations

import json

from baselines.common import scorer_reward
from baselines.contract import Method, Stage


class GRPO(Method):
    name = "grpo"
    about = "group-relative policy optimization with the card's scorer as reward (trl.GRPOTrainer)"
    trainer = "trl.GRPOTrainer"
    config = "trl.GRPOConfig"

    def rows(self, task_rows: list[dict], opts: dict) -> list[dict]:
        return [{"prompt": r["prompt"], "reference": json.dumps(r["answer"])} for r in task_rows]

    def trainer_kwargs(self, stage: Stage, opts: dict) -> dict:
        return {"reward_funcs": scorer_reward(stage.card.scorer)}
