"""What every method shares: the stage it trains, option checking, and running a TRL trainer.

A method module (sft.py, sdft.py, ...) is a thin adapter: it turns the task's rows
into the columns its TRL trainer expects (`rows`), and builds and runs that
trainer (`train`). Options are the TRL config's own fields plus a few harness
options a method declares (e.g. SDFT's `teacher`); anything else is an error.
"""

from __future__ import annotations

import dataclasses
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from harness import faults
from harness.errors import HarnessError, did_you_mean

# Harness options every method accepts, with their defaults.
COMMON_OPTIONS = {
    "lora": None,  # a peft.LoraConfig mapping (r, lora_alpha, target_modules, ...) to train adapters
    "save_steps": 0,  # >0: keep trainer checkpoints every N steps so a killed stage resumes mid-way
}


@dataclass
class Stage:
    """One training stage, as the runner hands it to a method."""

    index: int
    method: str
    card: Any  # harness.registry.TaskCard
    rows: list[dict]  # normalized rows: prompt (chat), demonstration, answer
    start_model: Path  # the checkpoint this stage starts from (a folder: TRL rebuilds teachers from it)
    initial_model: Path  # the run's first model (for a teacher kept fixed across stages)
    work_dir: Path  # the trainer's own output (its checkpoints)
    options: dict = field(default_factory=dict)
    seed: int = 0


@dataclass
class TrainResult:
    model: Any
    tokenizer: Any
    history: list[dict]  # the trainer's log history (loss per logging step, ...)
    usage: dict = field(default_factory=dict)  # generation seconds, generated and trained tokens


def option_names(method) -> set[str]:
    """Every option a method module accepts: its TRL config's fields and the harness's."""
    return {f.name for f in dataclasses.fields(method.config_class())} | set(COMMON_OPTIONS) | set(method.HARNESS_OPTIONS)


def split_options(options: dict, method, name: str) -> tuple[dict, dict]:
    """Separate TRL config fields from harness options; unknown keys and bad choices fail clearly."""
    config_fields = {f.name for f in dataclasses.fields(method.config_class())}
    known_harness = {**COMMON_OPTIONS, **method.HARNESS_OPTIONS}
    trl, ours = {}, dict(known_harness)
    for key, value in options.items():
        if key in known_harness:
            ours[key] = value
        elif key in config_fields:
            trl[key] = value
        else:
            raise HarnessError(f"unknown option {key!r} for method {name!r}{did_you_mean(key, [*config_fields, *known_harness])}")
    defaults = {f.name: f.default for f in dataclasses.fields(method.config_class())}
    for key, value in trl.items():
        _check_type(key, value, defaults[key], name)
        _check_range(key, value, name)
    if not isinstance(ours["save_steps"], int) or isinstance(ours["save_steps"], bool) or ours["save_steps"] < 0:
        raise HarnessError(f"option save_steps={ours['save_steps']!r} for method {name!r}: expected an integer >= 0 (0: no checkpoints)")
    if ours["lora"]:
        peft_config(ours, name)  # peft installed and the mapping valid, before any work
    for key, choices in getattr(method, "CHOICES", {}).items():
        if ours[key] not in choices:
            raise HarnessError(f"option {key}={ours[key]!r} for method {name!r}: expected one of {', '.join(choices)}")
    return trl, ours


def _check_type(key: str, value, default, method: str) -> None:
    """TRL's configs do not check types; a string where a number belongs would only fail mid-training."""
    if isinstance(default, bool):
        ok, expected = isinstance(value, bool), "true or false"
    elif isinstance(default, int | float):
        ok, expected = isinstance(value, int | float) and not isinstance(value, bool), "a number"
    else:
        return
    if not ok:
        raise HarnessError(f"option {key}={value!r} for method {method!r}: expected {expected}")


# Options whose nonsense values TRL, torch or lm-eval accept silently or reject only mid-run.
POSITIVE = ("per_device_train_batch_size", "per_device_eval_batch_size", "gradient_accumulation_steps", "learning_rate",
            "num_train_epochs", "num_generations", "generation_batch_size", "max_completion_length", "max_length",
            "max_prompt_length", "logging_steps")
NON_NEGATIVE = ("weight_decay", "warmup_steps", "warmup_ratio", "max_grad_norm", "temperature")


def _check_range(key: str, value, method: str) -> None:
    if value is None or isinstance(value, bool) or not isinstance(value, int | float):
        return
    if key == "max_steps" and not (value == -1 or value > 0):
        problem = "expected a number of steps > 0, or -1 (TRL: train num_train_epochs instead)"
    elif key in POSITIVE and not value > 0:
        problem = "expected a value > 0"
    elif key in NON_NEGATIVE and not value >= 0:
        problem = "expected a value >= 0"
    else:
        return
    raise HarnessError(f"option {key}={value!r} for method {method!r}: {problem}")


def configure(name: str, options: dict, card, work_dir: Path, seed: int):
    """The TRL config and harness options of a stage; raises HarnessError on any bad option."""
    from baselines import METHODS

    method = METHODS[name]
    trl, ours = split_options(options, method, name)
    settings = {
        "output_dir": str(work_dir),
        "seed": seed,
        "data_seed": seed,
        "report_to": [],
        "save_strategy": "steps" if ours["save_steps"] else "no",
        "save_steps": ours["save_steps"] or 500,
        "save_total_limit": 1,
        "use_cpu": not torch.cuda.is_available(),
        "bf16": torch.cuda.is_available(),
        "dataloader_num_workers": 0,
        "disable_tqdm": False,  # the progress bar, even though library logging is quiet
        **method.trl_defaults(ours, card),
        **trl,
    }
    try:
        return method.config_class()(**settings), ours
    except (TypeError, ValueError) as e:
        raise HarnessError(f"invalid options for method {name!r}: {e}") from None


def load_model(path: Path | str):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    dtype = torch.bfloat16 if torch.cuda.is_available() else torch.float32
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer


def peft_config(ours: dict, method: str = ""):
    """The stage's LoRA adapter config, or None; a missing peft or a bad mapping is a one-line error."""
    lora = ours["lora"]
    if not lora:
        return None
    if not isinstance(lora, dict):
        raise HarnessError(f"option lora={lora!r} for method {method!r}: expected a mapping, e.g. lora='{{r: 8, lora_alpha: 16}}'")
    try:
        from peft import LoraConfig
    except ImportError:
        raise HarnessError("option lora needs the peft package: pip install 'cl-harness[peft]' (make setup installs it)") from None
    try:
        return LoraConfig(**{"task_type": "CAUSAL_LM", **lora})
    except (TypeError, ValueError) as e:
        raise HarnessError(f"option lora for method {method!r}: {str(e).splitlines()[0][:200]}") from None


def _train_failpoint():
    """Lets the fault-injection test kill a run mid-training, once a trainer checkpoint exists."""
    from transformers import TrainerCallback

    class TrainFailpoint(TrainerCallback):
        def on_save(self, args, state, control, **kwargs):
            faults.point("train")

    return TrainFailpoint()


def _meter(trainer) -> dict:
    """Count what a stage costs: time spent generating rollouts, tokens generated, and the prompt and completion
    tokens trained on. The hooks are TRL's private methods: if TRL moves them this fails loudly, never reads 0.

    Token counts add up as tensors, read once after training, so counting never forces a GPU sync mid-step.
    """
    usage = {"generation_seconds": 0.0, "generated_tokens": 0, "trained_tokens": 0, "prompt_tokens": 0}
    if _on_policy(trainer):
        if not callable(getattr(trainer, "_generate", None)):
            raise RuntimeError(f"{type(trainer).__name__} has no _generate method: TRL moved the hook the harness times "
                               f"generation with; update baselines.common._meter for this TRL version")
        generate = trainer._generate

        def timed_generate(prompt_ids):
            start = time.perf_counter()
            out = generate(prompt_ids)
            usage["generation_seconds"] += time.perf_counter() - start
            usage["generated_tokens"] += sum(len(c) for c in out[1])
            return out

        trainer._generate = timed_generate
    compute_loss = trainer.compute_loss

    def counted_loss(model, inputs, *args, **kwargs):
        # Completion tokens are what the loss trains on; prompt tokens are counted apart (SFT: the rest of the row).
        if "completion_mask" in inputs:
            completion = inputs["completion_mask"].sum()
            prompt = inputs["prompt_mask"].sum() if "prompt_mask" in inputs else inputs["attention_mask"].sum() - completion
        else:
            completion, prompt = inputs["attention_mask"].sum(), 0
        usage["trained_tokens"] = usage["trained_tokens"] + completion
        usage["prompt_tokens"] = usage["prompt_tokens"] + prompt
        return compute_loss(model, inputs, *args, **kwargs)

    trainer.compute_loss = counted_loss
    return usage


ON_POLICY = ("SDFTTrainer", "SDPOTrainer")  # the trainers that sample rollouts through `_generate`


def _on_policy(trainer) -> bool:
    return any(c.__name__ in ON_POLICY for c in type(trainer).__mro__)


def run(trainer, stage: Stage) -> TrainResult:
    """Train, resuming from the stage's latest trainer checkpoint if a killed run left one."""
    from transformers.trainer_utils import get_last_checkpoint

    trainer.add_callback(_train_failpoint())
    usage = _meter(trainer)
    last = get_last_checkpoint(str(stage.work_dir)) if stage.work_dir.is_dir() else None
    trainer.train(resume_from_checkpoint=last)
    model = trainer.accelerator.unwrap_model(trainer.model)
    if hasattr(model, "merge_and_unload"):  # LoRA: the next stage starts from merged weights
        model = model.merge_and_unload()
    usage["trained_tokens"], usage["prompt_tokens"] = int(usage["trained_tokens"]), int(usage["prompt_tokens"])
    return TrainResult(model, trainer.processing_class, list(trainer.state.log_history), usage)


def teacher_source(model, path: os.PathLike) -> None:
    """Point TRL's teacher at `path`: SDFT/SDPO rebuild the teacher from the model's name_or_path."""
    model.config._name_or_path = str(path)
