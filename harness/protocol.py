"""How a column is evaluated, as data: chat template, few-shot, generation settings, metric, filter, scorer.

A suite's probe entry declares it for an lm-eval task (`{task: hellaswag, metric: acc, chat_template:
false, num_fewshot: 0}`); a card declares its chat template in `metadata.harness.protocol` and the rest
in its own lm-eval keys (`num_fewshot`, `generation_kwargs`). lm-eval applies the chat template per
call, so the evaluator runs the columns that share the call-level settings (`Protocol.call`) together.
Every run records each column's resolved protocol, and its fingerprint, so that runs evaluated
differently are never compared silently.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass

from harness.errors import HarnessError, did_you_mean


@dataclass(frozen=True)
class Protocol:
    chat_template: bool = True  # render the prompt through the tokenizer's chat template
    fewshot_as_multiturn: bool = True  # with the chat template, few-shot examples as earlier turns (lm-eval's default)
    num_fewshot: int | None = None  # None: the task's own (lm-eval: its config, else 0)
    gen_kwargs: dict | None = None  # generation settings over the task's own (generation tasks only)
    metric: str = "acc"  # the lm-eval metric read from the results
    filter: str = "none"  # the lm-eval filter it is reported under
    scorer: str | None = None  # a card's scoring rule (harness.scoring)

    @property
    def result_key(self) -> str:
        return f"{self.metric},{self.filter}"

    @property
    def call(self) -> tuple[bool, bool]:
        """The settings lm-eval takes per simple_evaluate call, not per task."""
        return self.chat_template, self.fewshot_as_multiturn

    def as_dict(self) -> dict:
        return asdict(self)

    def describe(self) -> str:
        shots = "the task's few-shot" if self.num_fewshot is None else f"{self.num_fewshot}-shot"
        parts = ["chat template" if self.chat_template else "no chat template", shots, f"metric {self.result_key}"]
        if self.scorer:
            parts.append(f"scorer {self.scorer}")
        if self.gen_kwargs:
            parts.append("generation " + json.dumps(self.gen_kwargs, sort_keys=True))
        return ", ".join(parts)


# What each key must be; a bool is not an int here (YAML's `num_fewshot: true` is a mistake).
TYPES = {
    "chat_template": (bool, "true or false"),
    "fewshot_as_multiturn": (bool, "true or false"),
    "num_fewshot": (int, "a whole number >= 0"),
    "gen_kwargs": (dict, "a mapping of generation settings, e.g. {max_gen_toks: 1024, do_sample: false}"),
    "metric": (str, "an lm-eval metric name, e.g. acc"),
    "filter": (str, "an lm-eval filter name, e.g. none"),
}
# A card states its few-shot and generation settings in its own lm-eval keys; its protocol block adds the rest.
CARD_KEYS = ("chat_template", "fewshot_as_multiturn")
HOME = {  # where a key belongs when it is given in the wrong place
    "num_fewshot": "a card sets it as its lm-eval key `num_fewshot`",
    "gen_kwargs": "a card sets it as its lm-eval key `generation_kwargs`",
    "chat_template": "a card sets it in its own `metadata.harness.protocol`",
    "fewshot_as_multiturn": "a card sets it in its own `metadata.harness.protocol`",
    "metric": "a suite's probe entry picks the metric to read", "filter": "a suite's probe entry picks the filter",
}


def parse(spec, path, field: str, keys=tuple(TYPES)) -> dict:
    """Checked protocol fields from a mapping; the one-line error names the file and the field."""
    if not isinstance(spec, dict):
        raise HarnessError(f"{path}: `{field}`: expected a mapping of protocol settings ({', '.join(keys)}), got {type(spec).__name__}")
    out = {}
    for key, value in spec.items():
        where = f"{path}: `{field}.{key}`"
        if key in TYPES and key not in keys:  # a known key in the wrong place
            raise HarnessError(f"{where}: not set here ({HOME[key]}); allowed here: {', '.join(keys)}")
        if key not in keys:
            raise HarnessError(f"{where}: unknown protocol key{did_you_mean(str(key), keys)}; allowed: {', '.join(keys)}")
        kind, expected = TYPES[key]
        if not isinstance(value, kind) or (kind is int and (isinstance(value, bool) or value < 0)):
            raise HarnessError(f"{where}: expected {expected}, got {value!r}")
        if key == "gen_kwargs":
            check_gen_kwargs(value, where)
        if key == "metric" and "," in value:
            metric, _, filter_ = value.partition(",")
            raise HarnessError(f"{where}: {value!r} holds a filter; write them apart: metric: {metric}, filter: {filter_}")
        out[key] = value
    return out


# Generation settings that reach generate() as numbers: a bad one would otherwise fail mid-run inside lm-eval or
# transformers, or (inf) when run.json is written. Each: the test a finite number must pass, and what it must be.
GEN_NUMBERS = {
    "temperature": (lambda v: v >= 0, "a number >= 0 (0: greedy)"),
    "top_p": (lambda v: 0 < v <= 1, "a number in (0, 1]"),
    "top_k": (lambda v: v >= 0 and v == int(v), "a whole number >= 0 (0: no limit)"),
    "max_gen_toks": (lambda v: v >= 1 and v == int(v), "a whole number >= 1"),
}


def check_gen_kwargs(gen_kwargs, where: str) -> None:
    """One-line errors for the generation settings whose type or range is known."""
    if not isinstance(gen_kwargs, dict):
        raise HarnessError(f"{where}: expected a mapping of generation settings, got {gen_kwargs!r}")
    for key, (valid, expected) in GEN_NUMBERS.items():
        value = gen_kwargs.get(key)
        if value is None:
            continue
        number = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
        if not number or not valid(value):
            raise HarnessError(f"{where}.{key}: expected {expected}, got {value!r}")
    until = gen_kwargs.get("until")
    if until is not None and not (isinstance(until, str) or isinstance(until, list) and all(isinstance(u, str) for u in until)):
        raise HarnessError(f"{where}.until: expected a stop text or a list of them, got {until!r}")
    if gen_kwargs.get("do_sample") is not None and not isinstance(gen_kwargs["do_sample"], bool):
        raise HarnessError(f"{where}.do_sample: expected true or false (unquoted), got {gen_kwargs['do_sample']!r}")


def fingerprint(protocols: dict[str, dict]) -> str:
    """A short hash of every column's protocol: equal fingerprints, equal evaluation."""
    return hashlib.sha256(json.dumps(protocols, sort_keys=True).encode()).hexdigest()[:10]


def differences(a: dict[str, dict], b: dict[str, dict]) -> list[str]:
    """The columns two runs evaluate differently, each with what differs."""
    out = []
    for column in sorted(set(a) | set(b)):
        pa, pb = a.get(column), b.get(column)
        if pa == pb:
            continue
        if pa is None or pb is None:
            out.append(f"{column} (only in one run)")
            continue
        keys = [k for k in sorted(set(pa) | set(pb)) if pa.get(k) != pb.get(k)]
        out.append(f"{column} ({', '.join(f'{k} {pa.get(k)!r} vs {pb.get(k)!r}' for k in keys)})")
    return out
