"""SDPO: on-policy RL with self-distillation (trl.experimental.sdpo), the task's scorer as reward.

Each prompt gets a group of rollouts scored by the card's scorer; the teacher is
the model re-prompted with a successful rollout from the same group. With
`feedback: demonstration` the demonstration is also passed as environment
feedback, which gives failed groups a teacher too (the toy suite's tasks start at
zero accuracy, where plain SDPO has no success to learn from). With
`reprompt: card` the teacher is re-prompted in the card's demonstration format
(its teacher template) instead of SDPO's own, for a model that learned that format.
"""

from __future__ import annotations

import json

from baselines.common import Stage, TrainResult, configure, load_model, peft_config, run, teacher_source
from harness.taskdata import get_scorer

HARNESS_OPTIONS = {"feedback": "none", "reprompt": "sdpo"}
CHOICES = {"feedback": ("none", "demonstration"), "reprompt": ("sdpo", "card")}


def config_class():
    from trl.experimental.sdpo import SDPOConfig

    return SDPOConfig


def trl_defaults(ours: dict, card) -> dict:
    settings = {"include_environment_feedback": True} if ours["feedback"] == "demonstration" else {}
    if ours["reprompt"] == "card":
        settings.update(card_reprompt(card.teacher_template))
    return settings


def card_reprompt(template: str) -> dict:
    """SDPO's reprompt templates that render a prompt plus one demonstration (a successful rollout, else
    the feedback) exactly as the card's teacher template does."""
    head, _, rest = template.partition("{prompt}")
    between, _, tail = rest.partition("{privileged_context}")
    return {
        "reprompt_template": head + "{prompt}{solution}{feedback}" + tail,
        "solution_template": between + "{successful_previous_attempt}",
        "feedback_template": between + "{feedback_raw}",
        "environment_feedback_only_without_solution": True,
    }


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
    from trl.experimental.sdpo import SDPOTrainer

    config, ours = configure("sdpo", stage.options, stage.card, stage.work_dir, stage.seed)
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
