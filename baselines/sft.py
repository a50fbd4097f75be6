"""SFT: supervised fine-tuning on the demonstrations (trl.SFTTrainer, prompt/completion)."""

from __future__ import annotations

from baselines.common import Stage, TrainResult, configure, load_model, peft_config, run

HARNESS_OPTIONS: dict = {}


def config_class():
    from trl import SFTConfig

    return SFTConfig


def trl_defaults(ours: dict, card) -> dict:
    return {}


def rows(task_rows: list[dict]) -> list[dict]:
    """Prompt/completion pairs: the loss falls on the demonstration only."""
    return [{"prompt": r["prompt"], "completion": [{"role": "assistant", "content": r["demonstration"]}]} for r in task_rows]


def train(stage: Stage) -> TrainResult:
    from datasets import Dataset
    from trl import SFTTrainer

    config, ours = configure("sft", stage.options, stage.card, stage.work_dir, stage.seed)
    model, tokenizer = load_model(stage.start_model)
    trainer = SFTTrainer(
        model=model,
        args=config,
        train_dataset=Dataset.from_list(rows(stage.rows)),
        processing_class=tokenizer,
        peft_config=peft_config(ours),
    )
    return run(trainer, stage)
