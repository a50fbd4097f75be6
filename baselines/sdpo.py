"""SDPO: on-policy RL with self-distillation (trl.experimental.sdpo), the task's scorer as reward.

Each prompt gets a group of rollouts scored by the card's scorer; the teacher is
the model re-prompted with a successful rollout from the same group. With
`feedback: demonstration` the demonstration is also passed as environment
feedback, which gives failed groups a teacher too (the toy suite's tasks start at
zero accuracy, where plain SDPO has no success to learn from). With
`reprompt: card` the teacher is re-prompted in the card's demonstration format
(its teacher template) instead of SDPO's own, for a model that learned that format.
With `teacher: initial` the teacher starts from the run's first model in every stage
(TRL's EMA moves it from there; `teacher_update_rate: 0` keeps it fixed), for a model
whose use of demonstrations does not survive a stage.
"""

from __future__ import annotations

import json

from baselines.common import scorer_reward, teacher_source
from baselines.contract import Method, Option, Stage
from harness.templates import CONTEXT_MARK, PROMPT_MARK, marked


class SDPO(Method):
    name = "sdpo"
    about = "self-distillation policy optimization: RL with the card's scorer, a rollout-conditioned teacher"
    trainer = "trl.experimental.sdpo.SDPOTrainer"
    config = "trl.experimental.sdpo.SDPOConfig"
    options = {
        "feedback": Option("none", choices=("none", "demonstration"), help="pass the demonstration as environment feedback"),
        "reprompt": Option("sdpo", choices=("sdpo", "card"), help="re-prompt the teacher in SDPO's format or the card's teacher template"),
        "teacher": Option("stage_start", choices=("stage_start", "initial"),
                          help="where the teacher starts: the stage's model, or the run's first one (kept across stages)"),
    }

    templates = {"reprompt_template": ("prompt", "solution", "feedback"), "solution_template": ("successful_previous_attempt",),
                 "feedback_template": ("feedback_raw",)}

    def trl_defaults(self, opts: dict, card) -> dict:
        settings = {"include_environment_feedback": True} if opts["feedback"] == "demonstration" else {}
        if opts["reprompt"] == "card":
            settings.update(card_reprompt(card.teacher_template))
        return settings

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
        teacher_source(model, stage.teacher_start(opts["teacher"]))

    def trainer_kwargs(self, stage: Stage, opts: dict) -> dict:
        return {"reward_funcs": scorer_reward(stage.card.scorer)}


def card_reprompt(template: str) -> dict:
    """SDPO's reprompt templates that render a prompt plus one demonstration (a successful rollout, else
    the feedback) exactly as the card's teacher template does."""
    text = marked(template).replace("{", "{{").replace("}", "}}")  # literal braces escaped again for TRL's format calls
    prompt_first = text.index(PROMPT_MARK) < text.index(CONTEXT_MARK)
    first, second = (PROMPT_MARK, CONTEXT_MARK) if prompt_first else (CONTEXT_MARK, PROMPT_MARK)
    head, _, rest = text.partition(first)
    between, _, tail = rest.partition(second)
    # The text between the two goes with the demonstration: without one the teacher reads the prompt alone.
    if prompt_first:
        reprompt, solution, feedback = "{prompt}{solution}{feedback}", between + "{successful_previous_attempt}", between + "{feedback_raw}"
    else:
        reprompt, solution, feedback = "{solution}{feedback}{prompt}", "{successful_previous_attempt}" + between, "{feedback_raw}" + between
    return {
        "reprompt_template": head + reprompt + tail,
        "solution_template": solution,
        "feedback_template": feedback,
        "environment_feedback_only_without_solution": True,
    }
