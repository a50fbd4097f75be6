"""SDFT: on-policy self-distillation from the model shown a demonstration (trl.experimental.sdft).

The student sees the prompt and samples a completion; the teacher is the same
model shown the prompt plus the demonstration through the card's teacher
template; the loss is a per-token divergence between the two on the student's
own completion.
"""

from __future__ import annotations

from baselines.common import Stage, TrainResult, configure, load_model, peft_config, run, teacher_source

# Which model the teacher is: TRL's "base" (the stage-start model), TRL's "ema"
# (an exponential average of the student; the paper's setting), or the run's
# initial model kept fixed across stages, which the harness supplies itself.
TEACHERS = {"stage_start": "base", "ema": "ema", "initial": "base"}
HARNESS_OPTIONS = {"teacher": "ema"}
CHOICES = {"teacher": tuple(TEACHERS)}


def config_class():
    from trl.experimental.sdft import SDFTConfig

    return SDFTConfig


def trl_defaults(ours: dict, card) -> dict:
    return {"teacher_model_kind": TEACHERS[ours["teacher"]], "teacher_prompt_template": card.teacher_template}


def rows(task_rows: list[dict]) -> list[dict]:
    return [{"prompt": r["prompt"], "privileged_context": r["demonstration"]} for r in task_rows]


def train(stage: Stage) -> TrainResult:
    from datasets import Dataset
    from trl.experimental.sdft import SDFTTrainer

    config, ours = configure("sdft", stage.options, stage.card, stage.work_dir, stage.seed)
    model, tokenizer = load_model(stage.start_model)
    teacher_source(model, stage.initial_model if ours["teacher"] == "initial" else stage.start_model)
    trainer = SDFTTrainer(
        model=model,
        args=config,
        train_dataset=Dataset.from_list(rows(stage.rows)),
        processing_class=tokenizer,
        peft_config=peft_config(ours),
    )
    return run(trainer, stage)
