"""pass@k of the generative tasks: n sampled completions per item, the unbiased estimator of Chen et al. 2021.

For an item with c correct among n samples, pass@k = 1 - C(n-c, k) / C(n, k): the chance that k
samples drawn without replacement from the n include a correct one (Chen et al., "Evaluating
Large Language Models Trained on Code", 2021, eq. 1 and its numerically stable product form).
Samples come from lm-eval (the card's prompt and chat template, `repeats` = n) at the card's
temperature, or 1.0 where the card decodes greedily (the SDFT paper's pass@k setting), or at --pass-temperature, and each is
graded by the card's own scorer; an item counts as solved by a sample that scores 1.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from harness.errors import HarnessError

MAX_SAMPLES = 10_000


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k for one item with c of n samples correct."""
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"pass@k needs 0 <= c <= n and 1 <= k <= n (n={n}, c={c}, k={k})")
    if n - c < k:
        return 1.0
    return float(1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))


def parse_ks(text: str) -> list[int]:
    try:
        ks = sorted({int(v) for v in text.split(",") if v.strip()})
    except ValueError:
        raise HarnessError(f"--pass-k {text!r}: expected comma-separated positive integers, e.g. 1,5,10") from None
    if not ks or ks[0] < 1:
        raise HarnessError(f"--pass-k {text!r}: expected comma-separated positive integers, e.g. 1,5,10")
    if ks[-1] > MAX_SAMPLES:  # n = max k completions per item are drawn and held at once
        raise HarnessError(f"--pass-k {text!r}: at most {MAX_SAMPLES} samples per item (n = the largest k)")
    return ks


def sampling_kwargs(gen_kwargs: dict | None, temperature: float | None = None) -> dict:
    """Sampling from the whole distribution unless the card limits it (top_k 0), as TRL's rollouts and vLLM sample:
    Hugging Face's generate otherwise keeps only the 50 likeliest tokens (the toy base's teacher on tool use at 1.0:
    0.64 with the top 50, 0.16 without)."""
    temperature = temperature or (gen_kwargs or {}).get("temperature") or 1.0
    return {"top_k": 0, **(gen_kwargs or {}), "do_sample": True, "temperature": float(temperature)}


def pass_at_k_scores(model, tokenizer, cards, ks: list[int], settings, data_dir, out_dir: Path,
                     teacher: bool = False, temperature: float | None = None) -> dict:
    """{task: {"pass@k": mean over items, ...}} for every generative task card; samples under out_dir.
    `teacher`: the cards' teacher variants (the demonstration in the prompt); `temperature` overrides the card's."""
    from lm_eval import simple_evaluate

    from harness.evaluation import _passthrough_manager, apply_protocol, card_task, language_model
    from harness.taskdata import get_scorer

    n = max(ks)
    out, lm = {}, language_model(model, tokenizer, None, settings)
    out_dir.mkdir(parents=True, exist_ok=True)
    for card in cards:
        protocol = card.protocol
        task = apply_protocol(card_task(card, teacher=teacher, data_dir=data_dir), protocol)
        if task.OUTPUT_TYPE != "generate_until":
            continue  # a log-likelihood task has no samples to draw
        kwargs = sampling_kwargs(protocol.gen_kwargs, temperature)
        task.set_config(key="generation_kwargs", value=kwargs)
        task.set_config(key="repeats", value=n)
        chat, multiturn = protocol.call
        result = simple_evaluate(model=lm, tasks=[task], task_manager=_passthrough_manager(), limit=settings.limit,
                                 apply_chat_template=chat, fewshot_as_multiturn=multiturn, log_samples=True,
                                 bootstrap_iters=0, random_seed=0, numpy_random_seed=0, torch_random_seed=0, fewshot_random_seed=0)
        samples = next(iter(result["samples"].values()))
        per_item = []
        with open(out_dir / f"samples_{card.name}.jsonl", "w") as f:
            for s in samples:
                texts = s["resps"][0]
                scorer, reference = get_scorer(s["doc"]["scorer"]), json.loads(s["doc"]["reference"])
                correct = sum(scorer(t, reference) >= 1.0 for t in texts)
                if len(texts) != n:
                    raise HarnessError(f"pass@k on {card.name}: lm-eval returned {len(texts)} samples for an item, expected {n}")
                per_item.append(correct)
                f.write(json.dumps({"doc_id": s["doc_id"], "correct": correct, "n": n, "samples": texts}) + "\n")
        out[card.name] = {f"pass@{k}": float(np.mean([pass_at_k(n, c, k) for c in per_item])) for k in ks}
        out[card.name].update(temperature=kwargs["temperature"], top_k=kwargs["top_k"])
    return out
