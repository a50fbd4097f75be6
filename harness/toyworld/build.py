"""Build the toy world's base model on a laptop CPU: a tiny Llama pretrained on prior skills and demonstration use.

The recipe (world settings, architecture, training settings, and a fingerprint of
the pretraining data) is hashed; the shipped checkpoint records the hash of the
recipe that made it, and a test fails when the recipe changes without a rebuild.
Label smoothing keeps the base soft, so the first distillation losses of a stage
start near a few nats a token rather than near ten.
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
import torch.nn.functional as F
from tqdm.auto import tqdm
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from harness.scoring import SCORERS
from harness.toyworld.tokenizer import END, build_tokenizer, chat_prompt
from harness.toyworld.world import NEW_TASKS, PRIOR_SKILLS, World, WorldSpec, teacher_prompt
from harness.toyworld.world import SCORERS as TASK_SCORERS


@dataclass(frozen=True)
class ModelSpec:
    hidden_size: int = 192
    num_hidden_layers: int = 4
    num_attention_heads: int = 4
    intermediate_size: int = 576
    max_position_embeddings: int = 256


@dataclass(frozen=True)
class TrainSpec:
    steps: int = 3200
    batch_size: int = 64
    learning_rate: float = 2e-3
    warmup_steps: int = 50
    weight_decay: float = 0.01
    label_smoothing: float = 0.1
    demo_share: float = 0.27
    seed: int = 0
    length_groups: int = 8  # draw this many batches at once and group them by length: little padding


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
        """Hash of the settings plus the first pretraining examples, so a change to what the model
        sees changes the hash but an edited comment does not. The new tasks are not part of it:
        they are never shown in pretraining."""
        world = World(self.world)
        sample = list(itertools.islice(world.pretraining_stream(self.train.seed, self.train.demo_share), 2000))
        payload = json.dumps({"recipe": self.to_dict(), "sample": sample}, sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()


def world_tokenizer(world: World) -> PreTrainedTokenizerFast:
    """The closed vocabulary: the world's lexicon plus every piece of its texts (pretraining and tasks)."""
    texts = [chat_prompt(""), teacher_prompt("", "")]
    texts += [text for pair in itertools.islice(world.pretraining_stream(0), 20000) for text in pair]
    for task in (*PRIOR_SKILLS, *NEW_TASKS):
        for rows in world.splits(task).values():
            texts += [text for r in rows for text in (r["prompt"], r["demonstration"], *answer_texts(r))]
    return build_tokenizer(texts, world.lexicon())


def answer_texts(row: dict) -> list[str]:
    """The reference texts a model writes (a format probe's reference is a pattern, not a text)."""
    answers = row["answer"] if isinstance(row["answer"], list) else [row["answer"]]
    return [a for a in answers if isinstance(a, str)]


def batches(world: World, tok: PreTrainedTokenizerFast, train: TrainSpec):
    """Endless encoded batches; each draw of `length_groups` batches is sorted by length, then shuffled."""
    stream = world.pretraining_stream(train.seed, train.demo_share)
    order = torch.Generator().manual_seed(train.seed)
    while True:
        examples = [next(stream) for _ in range(train.batch_size * train.length_groups)]
        encoded = encode(tok, examples)
        encoded.sort(key=lambda pair: len(pair[0]))
        groups = [encoded[i : i + train.batch_size] for i in range(0, len(encoded), train.batch_size)]
        for i in torch.randperm(len(groups), generator=order).tolist():
            yield collate(groups[i], tok.pad_token_id)


def encode(tok: PreTrainedTokenizerFast, examples: list[tuple[str, str]]) -> list[tuple[list[int], list[int]]]:
    """(input ids, labels) pairs with the loss on the answer and its end token only."""
    prompts = tok([chat_prompt(p) for p, _ in examples], add_special_tokens=False).input_ids
    answers = tok([a + END for _, a in examples], add_special_tokens=False).input_ids
    return [(p + a, [-100] * len(p) + a) for p, a in zip(prompts, answers)]


def collate(pairs: list[tuple[list[int], list[int]]], pad: int) -> dict:
    width = max(len(ids) for ids, _ in pairs)
    return {
        "input_ids": torch.tensor([ids + [pad] * (width - len(ids)) for ids, _ in pairs]),
        "attention_mask": torch.tensor([[1] * len(ids) + [0] * (width - len(ids)) for ids, _ in pairs]),
        "labels": torch.tensor([labels + [-100] * (width - len(labels)) for _, labels in pairs]),
    }


def answer_loss(model, batch: dict, label_smoothing: float) -> torch.Tensor:
    """Cross-entropy on the answer tokens, computing logits only there (the vocabulary projection is a
    seventh of the model's work, and three quarters of the positions are prompt)."""
    hidden = model.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
    targets = batch["labels"][:, 1:]
    answer = targets != -100
    logits = model.lm_head(hidden[:, :-1][answer]).float()
    return F.cross_entropy(logits, targets[answer], label_smoothing=label_smoothing)


@torch.no_grad()
def accuracy(model, tok, rows: list[dict], scorer: str, max_new_tokens: int = 48, batch_size: int = 100) -> float:
    """Greedy accuracy with the task's scorer: the build's own check, not the harness's evaluator."""
    model.eval()
    score, correct = SCORERS[scorer], 0
    for i in range(0, len(rows), batch_size):
        chunk = rows[i : i + batch_size]
        enc = tok([chat_prompt(r["prompt"]) for r in chunk], return_tensors="pt", padding=True, add_special_tokens=False)
        out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
        texts = tok.batch_decode(out[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)
        correct += sum(score(t, r["answer"]) for t, r in zip(texts, chunk))
    model.train()
    return correct / max(len(rows), 1)


def base_report(model, tok, world: World) -> dict:
    """The bars the base must reach: prior skills high, new tasks low bare and high with a demonstration."""
    report = {}
    for task in (*PRIOR_SKILLS, *NEW_TASKS):
        test, scorer = world.splits(task)["test"], TASK_SCORERS.get(task, "exact_match")
        report[task] = accuracy(model, tok, test, scorer)
        if task in NEW_TASKS:
            teacher = [{**r, "prompt": teacher_prompt(r["prompt"], r["demonstration"])} for r in test]
            report[f"{task}_teacher"] = accuracy(model, tok, teacher, scorer)
    return report


def build(recipe: Recipe, out_dir: Path, progress: bool = True, log_every: int = 100) -> dict:
    """Pretrain on the CPU (a 2M-parameter model gains nothing from a GPU worth the transfer) and save."""
    torch.manual_seed(recipe.train.seed)
    world = World(recipe.world)
    tok = world_tokenizer(world)
    config = LlamaConfig(
        vocab_size=len(tok),
        num_key_value_heads=recipe.model.num_attention_heads,
        tie_word_embeddings=True,
        pad_token_id=tok.pad_token_id,
        eos_token_id=tok.eos_token_id,
        bos_token_id=None,
        **asdict(recipe.model),
    )
    model = LlamaForCausalLM(config)
    train = recipe.train
    opt = torch.optim.AdamW(model.parameters(), lr=train.learning_rate, weight_decay=train.weight_decay, betas=(0.9, 0.98))
    schedule = lambda s: min(1.0, (s + 1) / train.warmup_steps) * (0.1 + 0.45 * (1 + math.cos(math.pi * s / train.steps)))  # noqa: E731
    sched = torch.optim.lr_scheduler.LambdaLR(opt, schedule)
    data = batches(world, tok, train)
    start, history, tokens = time.time(), [], 0
    bar = tqdm(range(train.steps), desc="pretraining the toy base", disable=not progress)
    for step in bar:
        batch = next(data)
        tokens += int(batch["attention_mask"].sum())
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = answer_loss(model, batch, train.label_smoothing)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        if step % log_every == 0 or step == train.steps - 1:
            history.append((step, round(loss.item(), 4)))
            bar.set_postfix(loss=f"{loss.item():.3f}")
    seconds = time.time() - start
    model.generation_config.eos_token_id = tok.eos_token_id
    model.generation_config.pad_token_id = tok.pad_token_id
    start = time.time()
    accuracy_report = base_report(model, tok, world)
    report = {
        "accuracy": accuracy_report,
        "loss": history,
        "steps": train.steps,
        "sequences": train.steps * train.batch_size,
        "tokens": tokens,
        "train_seconds": round(seconds, 1),
        "check_seconds": round(time.time() - start, 1),
        "threads": torch.get_num_threads(),
        "parameters": sum(p.numel() for p in model.parameters()),
        "vocabulary": len(tok),
    }
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
                "rebuild it with `harness base build` (about 15 minutes on 2 CPU cores) and commit it")
    return None
