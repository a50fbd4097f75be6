"""Build the toy world's base model: a tiny Llama pretrained on prior skills and demonstration use.

The recipe (world settings, architecture, training settings, and a fingerprint of
the pretraining data) is hashed; the shipped checkpoint records the hash of the
recipe that made it, and a test fails when the recipe changes without a rebuild.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from harness.toyworld.tokenizer import END, build_tokenizer, chat_prompt
from harness.toyworld.world import NEW_TASKS, PRIOR_SKILLS, World, WorldSpec, teacher_prompt


@dataclass(frozen=True)
class ModelSpec:
    hidden_size: int = 256
    num_hidden_layers: int = 4
    num_attention_heads: int = 8
    intermediate_size: int = 768
    max_position_embeddings: int = 512


@dataclass(frozen=True)
class TrainSpec:
    steps: int = 3600
    batch_size: int = 128
    learning_rate: float = 2e-3
    warmup_steps: int = 100
    weight_decay: float = 0.01
    demo_share: float = 0.6
    seed: int = 0
    data_workers: int = 3  # each worker draws its own seeded stream; batches alternate between them


@dataclass(frozen=True)
class Recipe:
    world: WorldSpec = field(default_factory=WorldSpec)
    model: ModelSpec = field(default_factory=ModelSpec)
    train: TrainSpec = field(default_factory=TrainSpec)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> Recipe:
        return cls(WorldSpec(**d["world"]), ModelSpec(**d["model"]), TrainSpec(**d["train"]))

    def digest(self) -> str:
        """Hash of the settings plus the first pretraining examples of every data worker, so a
        change to what the model sees changes the hash but an edited comment does not. The new
        tasks are not part of it: they are never shown in pretraining."""
        world = World(self.world)
        sample = [
            list(itertools.islice(world.pretraining_stream(self.train.seed * 1000 + w, self.train.demo_share), 1000))
            for w in range(self.train.data_workers)
        ]
        payload = json.dumps({"recipe": self.to_dict(), "sample": sample}, sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()


class PretrainingBatches(torch.utils.data.IterableDataset):
    """Encoded batches from the world's pretraining stream, one seeded stream per data worker."""

    def __init__(self, world: World, tok: PreTrainedTokenizerFast, train: TrainSpec):
        self.world, self.tok, self.train = world, tok, train

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        stream = self.world.pretraining_stream(self.train.seed * 1000 + (info.id if info else 0), self.train.demo_share)
        while True:
            yield encode_batch(self.tok, [next(stream) for _ in range(self.train.batch_size)], "cpu")


def encode_batch(tok: PreTrainedTokenizerFast, examples: list[tuple[str, str]], device) -> dict:
    """Right-padded input ids with the loss on the answer (and its end token) only."""
    prompts = tok([chat_prompt(p) for p, _ in examples], add_special_tokens=False).input_ids
    answers = tok([a + END for _, a in examples], add_special_tokens=False).input_ids
    ids = [p + a for p, a in zip(prompts, answers)]
    labels = [[-100] * len(p) + a for p, a in zip(prompts, answers)]
    width = max(map(len, ids))
    pad = tok.pad_token_id
    return {
        "input_ids": torch.tensor([x + [pad] * (width - len(x)) for x in ids], device=device),
        "attention_mask": torch.tensor([[1] * len(x) + [0] * (width - len(x)) for x in ids], device=device),
        "labels": torch.tensor([y + [-100] * (width - len(y)) for y in labels], device=device),
    }


@torch.no_grad()
def greedy_accuracy(model, tok, rows: list[dict], max_new_tokens: int, batch_size: int = 128) -> float:
    """Exact-match accuracy of greedy answers: the build's own check, not the harness's evaluator."""
    model.eval()
    correct = 0
    for i in range(0, len(rows), batch_size):
        chunk = rows[i : i + batch_size]
        enc = tok([chat_prompt(r["prompt"]) for r in chunk], return_tensors="pt", padding=True, add_special_tokens=False)
        enc = {k: v.to(model.device) for k, v in enc.items()}
        out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
        texts = tok.batch_decode(out[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)
        correct += sum(t.strip() == r["answer"] for t, r in zip(texts, chunk))
    model.train()
    return correct / max(len(rows), 1)


def base_report(model, tok, world: World) -> dict:
    """The bars the base must reach: prior skills high, new tasks low bare and high with a demonstration."""
    report = {}
    for task in (*PRIOR_SKILLS, *NEW_TASKS):
        test = world.splits(task)["test"]
        report[task] = greedy_accuracy(model, tok, test, 96)
        if task in NEW_TASKS:
            teacher = [{**r, "prompt": teacher_prompt(r["prompt"], r["demonstration"])} for r in test]
            report[f"{task}_teacher"] = greedy_accuracy(model, tok, teacher, 96)
    return report


def build(recipe: Recipe, out_dir: Path, device: str | None = None, progress: bool = True, log_every: int = 250) -> dict:
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(recipe.train.seed)
    world = World(recipe.world)
    corpus = (p + a for p, a in itertools.islice(world.pretraining_stream(recipe.train.seed), 2000))
    tok = build_tokenizer(corpus)
    config = LlamaConfig(
        vocab_size=len(tok),
        num_key_value_heads=recipe.model.num_attention_heads,
        tie_word_embeddings=True,
        pad_token_id=tok.pad_token_id,
        eos_token_id=tok.eos_token_id,
        bos_token_id=None,
        **asdict(recipe.model),
    )
    model = LlamaForCausalLM(config).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=recipe.train.learning_rate, weight_decay=recipe.train.weight_decay, betas=(0.9, 0.98))
    steps, warm = recipe.train.steps, recipe.train.warmup_steps
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / warm) * 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps)))
    batches = iter(torch.utils.data.DataLoader(PretrainingBatches(world, tok, recipe.train), batch_size=None, num_workers=recipe.train.data_workers))
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.startswith("cuda") else torch.autocast("cpu", enabled=False)
    start, history = time.time(), []
    bar = tqdm(range(steps), desc="pretraining the toy base", disable=not progress)
    for step in bar:
        batch = {k: v.to(device, non_blocking=True) for k, v in next(batches).items()}
        with autocast:
            loss = model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        if step % log_every == 0 or step == steps - 1:
            history.append((step, round(loss.item(), 4)))
            bar.set_postfix(loss=f"{loss.item():.3f}")
    seconds = time.time() - start
    model.generation_config.eos_token_id = tok.eos_token_id
    model.generation_config.pad_token_id = tok.pad_token_id
    report = {"accuracy": base_report(model, tok, world), "loss": history, "train_seconds": round(seconds, 1), "device": device}
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    tok.save_pretrained(out_dir)
    (out_dir / "recipe.json").write_text(json.dumps({"digest": recipe.digest(), "recipe": recipe.to_dict()}, indent=2) + "\n")
    (out_dir / "build_report.json").write_text(json.dumps(report, indent=2) + "\n")
    return report


def check_shipped(path: Path) -> str | None:
    """None if the checkpoint at `path` was built from the recipe in the code, else what differs."""
    try:
        recorded = json.loads((path / "recipe.json").read_text())["digest"]
    except (OSError, ValueError, KeyError):
        return f"{path}: no readable recipe.json: rebuild the base with `harness base build`"
    current = Recipe().digest()
    if recorded != current:
        return (f"{path} was built from another recipe (digest {recorded[:12]}; the code's is {current[:12]}): "
                "rebuild it with `harness base build` (minutes on a GPU) and commit it")
    return None
