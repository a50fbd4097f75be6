"""SFT: supervised fine-tuning on the demonstrations (trl.SFTTrainer, prompt/completion)."""

from __future__ import annotations

from baselines.contract import Method


class SFT(Method):
    name = "sft"
    about = "supervised fine-tuning on the demonstrations (trl.SFTTrainer)"
    trainer = "trl.SFTTrainer"
    config = "trl.SFTConfig"
    replay = True

    def rows(self, task_rows: list[dict], opts: dict) -> list[dict]:
        """Prompt/completion pairs: the loss falls on the demonstration only."""
        return [{"prompt": r["prompt"], "completion": [{"role": "assistant", "content": r["demonstration"]}]} for r in task_rows]
