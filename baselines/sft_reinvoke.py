"""SFT + re-invoke: SFT on the demonstrations as the model itself re-writes them.

The SDFT paper (arXiv 2601.19897) lists "SFT + re-invoke" beside SFT, DFT and SDFT in its
skill-learning results (the tool-use table: 63.1 new-task accuracy, 63.7 prior average, against
SFT's 63.2 / 56.0), but the project's transcription of the paper (PAPERS.md, outside this repository) does not
define it, and no definition was at hand while this was written. This module implements the most
defensible reading, stated here so it can be checked against the paper's text: the stage-start
model is *re-invoked* on each training prompt with the demonstration in its prompt (the card's
SDFT teacher template) and writes a response of its own; SFT then trains on those responses
instead of the demonstrations. That is offline self-distillation of the demonstrations (Yang et
al. 2024, "Self-Distillation Bridges Distribution Gap in Language Model Fine-Tuning", whose rule
this follows: a re-written response the card's scorer rejects falls back to the original
demonstration, `rewrite_keep: correct`). The published profile fits it: new-task accuracy like
SFT's, far less forgetting, because the targets come from the model's own distribution.
"""

from __future__ import annotations

import json
import random

import torch

from baselines.contract import Option, Stage
from baselines.sft import SFT


class SFTReinvoke(SFT):
    name = "sft_reinvoke"
    about = "SFT on the demonstrations as the stage-start model re-writes them with the demonstration in context"
    replay = False  # a replayed row would be re-written under this task's template and graded by this task's scorer
    options = {
        "rewrite_max_tokens": Option(256, kind=int, low=1, help="new tokens per re-written response"),
        "rewrite_keep": Option("correct", choices=("correct", "all"), help="correct: keep a re-write only if the scorer accepts it"),
        "rewrite_batch_size": Option(32, kind=int, low=1),
    }

    def build_rows(self, task_rows: list[dict], opts: dict, stage: Stage, model, tokenizer, config) -> list[dict]:
        from harness.taskdata import get_scorer

        scorer = get_scorer(stage.card.scorer)
        task_rows = consumed(task_rows, config, stage.seed)
        rewrites = rewrite(model, tokenizer, task_rows, stage.card.teacher_template, opts["rewrite_max_tokens"], opts["rewrite_batch_size"])
        out, accepted = [], 0
        for row, text in zip(task_rows, rewrites, strict=True):
            keep = bool(text) and (opts["rewrite_keep"] == "all" or scorer(text, row["answer"]) >= 1.0)
            accepted += keep
            out.append({**row, "demonstration": text if keep else row["demonstration"]})
        stage.work_dir.mkdir(parents=True, exist_ok=True)  # how many targets the model wrote itself, beside the trainer's files
        (stage.work_dir / "rewrites.json").write_text(json.dumps({"accepted": accepted, "total": len(out), "examples": rewrites[:5]}, indent=1))
        return self.rows(out, opts)


def consumed(rows: list[dict], config, seed: int) -> list[dict]:
    """With max_steps set, only as many rows as the stage's optimizer steps consume (a seeded draw): the
    re-writing is generation and costs; without max_steps, every row (the trainer's epochs use them all)."""
    if config.max_steps <= 0:
        return rows
    needed = config.max_steps * config.per_device_train_batch_size * config.gradient_accumulation_steps * config.world_size
    return rows if needed >= len(rows) else random.Random(f"reinvoke:{seed}").sample(rows, needed)


@torch.no_grad()
def rewrite(model, tokenizer, rows: list[dict], template: str, max_tokens: int, batch_size: int) -> list[str]:
    """Greedy responses of the model to each prompt with its demonstration put in through the teacher template."""
    side, tokenizer.padding_side = tokenizer.padding_side, "left"
    was_training = model.training
    model.eval()
    texts = []
    try:
        for i in range(0, len(rows), batch_size):
            batch = rows[i : i + batch_size]
            prompts = [
                tokenizer.apply_chat_template(
                    [*r["prompt"][:-1], {"role": "user", "content": template.format(prompt=r["prompt"][-1]["content"], privileged_context=r["demonstration"])}],
                    tokenize=False, add_generation_prompt=True,
                )
                for r in batch
            ]
            enc = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False).to(model.device)
            out = model.generate(**enc, max_new_tokens=max_tokens, do_sample=False, pad_token_id=tokenizer.pad_token_id)
            texts += tokenizer.batch_decode(out[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)
    finally:
        tokenizer.padding_side = side
        model.train(was_training)
    return [t.strip() for t in texts]
