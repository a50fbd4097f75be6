"""SDPO: on-policy RL with self-distillation (trl.experimental.sdpo), the task's scorer as reward.

Each prompt gets a group of rollouts scored by the card's scorer; the teacher is
the model re-prompted with a successful rollout from the same group. With
`feedback: demonstration` the demonstration is also passed as environment
feedback, which gives failed groups a teacher too (the toy suite's tasks start at
zero accuracy, where plain SDPO has no success to learn from).
"""

from __future__ import annotations

import json

from baselines.common import (
    Stage,
    TrainResult,
    load_model,
    make_config,
    names_of,
    peft_config,
    run,
    split_options,
    teacher_source,
)
from harness.errors import HarnessError
from harness.taskdata import get_scorer

HARNESS_OPTIONS = {"feedback": "none"}
FEEDBACK_CHOICES = ("none", "demonstration")


def option_names() -> set[str]:
    from trl.experimental.sdpo import SDPOConfig

    return names_of(SDPOConfig, HARNESS_OPTIONS)


def rows(task_rows: list[dict], feedback: str = "none") -> list[dict]:
    """Prompts with the reference (as JSON, any shape) for the reward, and optional feedback."""
    out = []
    for r in task_rows:
        row = {"prompt": r["prompt"], "reference": json.dumps(r["answer"])}
        if feedback == "demonstration":
            row["privileged_context"] = r["demonstration"]
        out.append(row)
    return out


def reward_function(scorer_name: str):
    scorer = get_scorer(scorer_name)

    def reward(prompts, completions, reference, **_):
        texts = [c[-1]["content"] if isinstance(c, list) else c for c in completions]
        return [scorer(t, json.loads(ref)) for t, ref in zip(texts, reference, strict=True)]

    reward.__name__ = f"{scorer_name}_reward"
    return reward


def train(stage: Stage) -> TrainResult:
    from datasets import Dataset
    from trl.experimental.sdpo import SDPOConfig, SDPOTrainer

    trl_options, ours = split_options(stage.options, SDPOConfig, HARNESS_OPTIONS, "sdpo")
    if ours["feedback"] not in FEEDBACK_CHOICES:
        raise HarnessError(f"option feedback={ours['feedback']!r}: expected one of {', '.join(FEEDBACK_CHOICES)}")
    if ours["feedback"] == "demonstration":
        trl_options = {"include_environment_feedback": True, **trl_options}
    config = make_config(SDPOConfig, trl_options, ours, stage)
    model, tokenizer = load_model(stage.start_model)
    teacher_source(model, stage.start_model)
    trainer = SDPOTrainer(
        model=model,
        reward_funcs=reward_function(stage.card.scorer),
        args=config,
        train_dataset=Dataset.from_list(rows(stage.rows, ours["feedback"])),
        processing_class=tokenizer,
        peft_config=peft_config(ours),
    )
    return run(trainer, stage)
