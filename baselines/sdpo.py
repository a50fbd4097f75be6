"""SDPO: on-policy RL with self-distillation (trl.experimental.sdpo), the task's scorer as reward.

Each prompt gets a group of rollouts scored by the card's scorer; the teacher is
the model re-prompted with a successful rollout from the same group. With
`feedback: demonstration` the demonstration is also passed as environment
feedback, which gives failed groups a teacher too (the toy suite's tasks start at
zero accuracy, where plain SDPO has no success to learn from).
"""

from __future__ import annotations

import json

from baselines.common import scorer_reward, teacher_source
from baselines.contract import Method, Option, Stage


class SDPO(Method):
    name = "sdpo"
    about = "self-distillation policy optimization: RL with the card's scorer, a rollout-conditioned teacher"
    trainer = "trl.experimental.sdpo.SDPOTrainer"
    config = "trl.experimental.sdpo.SDPOConfig"
    options = {"feedback": Option("none", choices=("none", "demonstration"), help="pass the demonstration as environment feedback")}

    def trl_defaults(self, opts: dict, card) -> dict:
        return {"include_environment_feedback": True} if opts["feedback"] == "demonstration" else {}

    def rows(self, task_rows: list[dict], opts: dict) -> list[dict]:
        """Prompts with the reference (as JSON, any shape) for the reward, and optional feedback."""
        out = []
        for r in task_rows:
            row = {"prompt": r["prompt"], "reference": json.dumps(r["answer"])}
            if opts.get("feedback") == "demonstration":
                row["privileged_context"] = r["demonstration"]
            out.append(row)
        return out

    def prepare_model(self, model, stage: Stage, opts: dict) -> None:
        teacher_source(model, stage.start_model)

    def trainer_kwargs(self, stage: Stage, opts: dict) -> dict:
        return {"reward_funcs": scorer_reward(stage.card.scorer)}
