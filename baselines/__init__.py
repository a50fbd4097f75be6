"""The training methods: one thin adapter per TRL trainer, presets beside them as data."""

from baselines import sdft, sdpo, sft

METHODS = {"sft": sft, "sdft": sdft, "sdpo": sdpo}
