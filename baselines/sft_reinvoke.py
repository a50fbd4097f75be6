"""SFT + re-invoke: SFT on the demonstrations, then on-policy distillation from the stage-start model
on general-purpose prompts, which re-invokes the behaviour SFT wore away.

The SDFT paper (Shenfeld et al. 2026, arXiv 2601.19897, section 4, its baselines) takes this baseline
from Lu & Thinking Machines Lab (2025), "On-Policy Distillation": after fine-tuning on new data had
degraded instruction following, they restored it by on-policy distillation with the earlier model as
the teacher on general chat prompts (Tulu-3's). Here, per stage: phase 1 is this stage's SFT (replay
and LoRA as for `sft`); phase 2 samples the student's own response to each general prompt and trains
it towards the stage-start model's next-token distribution on that response (TRL's SDFT trainer with
no privileged context: teacher and student see the same prompt; reverse KL, TML's objective). Phase 2
trains every weight (with `lora`, phase 1's adapters are merged before it).

`reinvoke_prompts` is a JSON Lines file with a `prompt` per line (a relative path is read from the
task card's folder). The toy suite ships tasks/toy/data/general_prompts.jsonl: prompts of its base's
pretraining distribution, the probes' test prompts held out. The paper suite needs one given, e.g.
Tulu-3's prompts: --set sft_reinvoke.reinvoke_prompts=/path/tulu3_prompts.jsonl.
"""

from __future__ import annotations

import dataclasses
import functools
import random
from pathlib import Path

from baselines.contract import Option, Stage, TrainResult
from baselines.sdft import SDFT
from baselines.sft import SFT
from harness.errors import HarnessError

# Phase 1's TRL settings that phase 2 keeps (the rest are SFT's own or set below).
SHARED = ("learning_rate", "per_device_train_batch_size", "gradient_accumulation_steps", "lr_scheduler_type", "warmup_steps",
          "weight_decay", "max_grad_norm", "bf16", "activation_checkpointing", "activation_checkpointing_kwargs", "logging_steps", "logging_first_step")
SAME_PROMPT = "{prompt}{privileged_context}"  # TRL's template needs both fields; the context is empty


def distiller() -> SDFT:
    """Phase 2: SDFT's trainer with the stage-start model as teacher, shown the prompt alone (a class made here, not at
    module level, where the package would register it as a method named sdft)."""
    class Distiller(SDFT):
        def trl_defaults(self, opts: dict, card) -> dict:
            return {**super().trl_defaults(opts, card), "teacher_prompt_template": SAME_PROMPT}

    return Distiller()


class SFTReinvoke(SFT):
    name = "sft_reinvoke"
    about = "SFT, then on-policy distillation from the stage-start model on general prompts (the SDFT paper's SFT + re-invoke)"
    options = {
        "reinvoke_prompts": Option(None, kind=str, help="JSON Lines of general-purpose prompts (`prompt` field); relative: from the card's folder"),
        "reinvoke_steps": Option(100, kind=int, low=1, help="optimizer steps of the distillation phase"),
        "reinvoke_max_tokens": Option(256, kind=int, low=1, help="new tokens per sampled response"),
        "reinvoke_alpha": Option(1.0, kind=float, low=0.0, high=1.0, help="divergence: 1 reverse KL (TML's), 0 forward KL, between: JSD"),
        "reinvoke_temperature": Option(1.0, kind=float, low=0.01, help="sampling temperature of the responses (TRL divides the compared logits by it too)"),
    }

    def check(self, opts: dict, card) -> None:
        general_prompts(card, opts)  # a missing or broken file stops the run before the base is evaluated

    def after_stage(self, stage: Stage, opts: dict, result: TrainResult) -> TrainResult:
        from datasets import Dataset

        from baselines import common

        prompts = general_prompts(stage.card, opts)
        steps, batch = opts["reinvoke_steps"], stage.options.get("per_device_train_batch_size", 8)
        rng = random.Random(f"reinvoke:{stage.seed}:{stage.index}")
        rows = [{"prompt": rng.choice(prompts), "privileged_context": ""} for _ in range(steps * batch)]
        work_dir = stage.work_dir / "reinvoke"
        options = {**{k: stage.options[k] for k in SHARED if k in stage.options}, "max_steps": steps, "teacher": "stage_start",
                   "num_generations": 1, "temperature": opts["reinvoke_temperature"], "max_completion_length": opts["reinvoke_max_tokens"],
                   "distillation_mode": "full_logits", "distillation_alpha": opts["reinvoke_alpha"], "num_loss_tokens_to_skip": 0,
                   "save_steps": stage.options.get("save_steps", 0)}
        method = distiller()
        config, _ = common.configure(method, options, stage.card, work_dir, stage.seed)
        common.teacher_source(result.model, stage.start_model)  # the teacher: this stage's start, not the SFT'd student
        trainer = method.trainer_class()(model=result.model, args=config, train_dataset=Dataset.from_list(rows),
                                          processing_class=result.tokenizer)
        offset = max((entry.get("step", 0) for entry in result.history), default=0)  # one step axis for both phases
        for callback in stage.callbacks:  # curves inside the stage go on through the second phase
            if hasattr(callback, "step_offset"):
                callback.step_offset = offset
        second = common.run(trainer, dataclasses.replace(stage, work_dir=work_dir))
        usage = {k: result.usage.get(k, 0) + v for k, v in second.usage.items()}
        history = result.history + [{**entry, "step": entry.get("step", 0) + offset, "phase": "reinvoke"} for entry in second.history]
        return TrainResult(second.model, second.tokenizer, history, {**result.usage, **usage})


def general_prompts(card, opts: dict) -> list:
    if not opts["reinvoke_prompts"]:
        raise HarnessError("method 'sft_reinvoke' needs general-purpose prompts: --set sft_reinvoke.reinvoke_prompts=FILE "
                           "(JSON Lines with a `prompt` per line, e.g. Tulu-3's prompts)")
    try:
        path = Path(opts["reinvoke_prompts"]).expanduser()
    except RuntimeError as e:  # ~nosuchuser/...
        raise HarnessError(f"option reinvoke_prompts={opts['reinvoke_prompts']!r} for method 'sft_reinvoke': {e}") from None
    path = path if path.is_absolute() else Path(card.path).parent / path
    try:
        stat = path.stat()
        stamp = stat.st_mtime_ns, stat.st_size
    except OSError:
        stamp = None  # read_prompts names what is wrong
    return _read_prompts(str(path), stamp)


@functools.lru_cache(maxsize=4)
def _read_prompts(path: str, stamp) -> list:
    """Read once per file version: a run checks the file at planning and at every stage (Tulu-3's is ~1M prompts)."""
    from harness.taskdata import read_prompts

    return read_prompts(Path(path))
