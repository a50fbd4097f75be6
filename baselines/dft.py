"""DFT: Dynamic Fine-Tuning (Wu et al. 2025, "On the Generalization of SFT"), SFT with each token's loss
scaled by its own (detached) probability: TRL's SFTConfig(loss_type="dft"). The SDFT paper's DFT baseline."""

from __future__ import annotations

from baselines.sft import SFT


class DFT(SFT):
    name = "dft"
    about = "dynamic fine-tuning: SFT with the token loss scaled by its probability (SFTConfig loss_type=dft)"

    def trl_defaults(self, opts: dict, card) -> dict:
        return {"loss_type": "dft"}
