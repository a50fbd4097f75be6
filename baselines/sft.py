"""SFT: supervised fine-tuning on the demonstrations (trl.SFTTrainer, prompt/completion)."""

from __future__ import annotations

from baselines.common import Stage, TrainResult, load_model, make_config, names_of, peft_config, run, split_options

HARNESS_OPTIONS: dict = {}


def option_names() -> set[str]:
    from trl import SFTConfig

    return names_of(SFTConfig, HARNESS_OPTIONS)


def rows(task_rows: list[dict]) -> list[dict]:
    """Prompt/completion pairs: the loss falls on the demonstration only."""
    return [{"prompt": r["prompt"], "completion": [{"role": "assistant", "content": r["demonstration"]}]} for r in task_rows]


def train(stage: Stage) -> TrainResult:
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    trl_options, ours = split_options(stage.options, SFTConfig, HARNESS_OPTIONS, "sft")
    config = make_config(SFTConfig, trl_options, ours, stage)
    model, tokenizer = load_model(stage.start_model)
    trainer = SFTTrainer(
        model=model,
        args=config,
        train_dataset=Dataset.from_list(rows(stage.rows)),
        processing_class=tokenizer,
        peft_config=peft_config(ours),
    )
    return run(trainer, stage)
