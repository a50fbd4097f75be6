"""Evaluate a model on a stage's tasks and probes with lm-evaluation-harness.

Cards become lm-eval tasks straight from their YAML; a card's *teacher* variant is
the same task with the demonstration put into the prompt through the card's
teacher template, which measures whether the model can act as its own SDFT
teacher. Probes that are not cards are lm-eval's built-in tasks.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from functools import cache, partial
from pathlib import Path

from harness import faults
from harness.errors import HarnessError, unknown
from harness.registry import Probe, TaskCard

TEACHER_PREFIX = "teacher:"


def teacher_text(template: str, doc: dict) -> str:
    return template.format(prompt=doc["user"], privileged_context=doc["demonstration"])


def card_task(card: TaskCard, teacher: bool = False):
    from lm_eval.api.task import ConfigurableTask
    from lm_eval.tasks._yaml_loader import load_yaml

    config = load_yaml(card.path, resolve_func=True)
    config["metadata"] = {**(config.get("metadata") or {}), "config_source": str(card.path)}
    if teacher:
        config["task"] = f"{config['task']}_teacher"
        config["doc_to_text"] = partial(teacher_text, card.teacher_template)
    return ConfigurableTask(config=config)


@cache
def _task_manager():
    from lm_eval.tasks import TaskManager

    return TaskManager(include_defaults=True)


@cache
def _passthrough_manager():
    """An empty task manager: without one, simple_evaluate indexes lm-eval's ~14,000 task YAML files on
    every call (10-15 s on a laptop CPU), though the tasks it is given are built already."""
    from lm_eval.tasks import TaskManager

    return TaskManager(include_defaults=False)


def builtin_task_names() -> set[str]:
    """lm-eval's own tasks (indexing them takes seconds, so only when a probe needs it)."""
    return set(_task_manager().all_tasks)


def builtin_tasks(names: list[str]) -> dict:
    if not names:
        return {}
    for name in names:
        if name not in builtin_task_names():
            raise unknown("lm-eval task (probe)", name, builtin_task_names())
    return _task_manager().load_task_or_group(names)


@dataclass(frozen=True)
class EvalSettings:
    """Unset (None) values are filled from the suite's `eval:` section, then the defaults below."""

    batch_size: int | None = None
    limit: int | None = None  # items per task, for smoke tests
    max_length: int | None = None
    confirm_unsafe_code: bool = False  # humaneval runs generated code
    backend: str = "hf"  # or "vllm": lm-eval's vLLM backend on the saved checkpoint


def vllm_available() -> bool:
    try:
        import vllm  # noqa: F401
    except ImportError:
        return False
    return True


DEFAULT_BATCH_SIZE, DEFAULT_MAX_LENGTH = 64, 2048


def language_model(model, tokenizer, model_path, settings: EvalSettings):
    """lm-eval's model: vLLM on the saved checkpoint when asked and installed, else HF on the in-memory model."""
    if settings.backend == "vllm" and model_path is not None and vllm_available():
        from lm_eval.models.vllm_causallms import VLLM

        return VLLM(pretrained=str(model_path), dtype="auto", batch_size="auto", max_model_len=settings.max_length or DEFAULT_MAX_LENGTH, gpu_memory_utilization=0.6)
    from lm_eval.models.huggingface import HFLM

    return HFLM(
        pretrained=model,
        tokenizer=tokenizer,
        batch_size=settings.batch_size or DEFAULT_BATCH_SIZE,
        max_length=settings.max_length or DEFAULT_MAX_LENGTH,
    )


class Evaluator:
    """Scores one model on the sequence's tasks, the probes, and optionally teacher variants."""

    def __init__(self, cards: list[TaskCard], probes: list[Probe], settings: EvalSettings = EvalSettings()):
        self.cards, self.probes, self.settings = cards, probes, settings
        self._builtins = None

    def _tasks(self, teacher_cards: list[TaskCard]) -> dict[str, tuple[object, str]]:
        """Column name -> (lm-eval task, metric key)."""
        if self._builtins is None:
            self._builtins = builtin_tasks([p.task for p in self.probes if p.card is None])
        tasks = {card.name: (card_task(card), "acc") for card in self.cards}
        for probe in self.probes:
            task = card_task(probe.card) if probe.card else self._builtins[probe.task]
            tasks[probe.name] = (task, probe.metric)
        for card in teacher_cards:
            tasks[TEACHER_PREFIX + card.name] = (card_task(card, teacher=True), "acc")
        return tasks

    def run(self, model, tokenizer, out_dir: Path | None = None, teacher_cards=(), only_teacher: bool = False, model_path=None) -> dict[str, float]:
        from lm_eval import simple_evaluate

        tasks = self._tasks(list(teacher_cards))
        if only_teacher:
            tasks = {k: v for k, v in tasks.items() if k.startswith(TEACHER_PREFIX)}
        lm = language_model(model, tokenizer, model_path, self.settings)
        output = simple_evaluate(
            model=lm,
            tasks=[task for task, _ in tasks.values()],
            task_manager=_passthrough_manager(),
            limit=self.settings.limit,
            apply_chat_template=bool(getattr(tokenizer, "chat_template", None)),
            confirm_run_unsafe_code=self.settings.confirm_unsafe_code,
            log_samples=out_dir is not None,
            bootstrap_iters=0,
            random_seed=0,
            numpy_random_seed=0,
            torch_random_seed=0,
            fewshot_random_seed=0,
        )
        scores = {}
        for column, (task, metric) in tasks.items():
            results = output["results"][task.task_name]
            key = metric if metric in results else f"{metric},none"
            if key not in results:
                raise HarnessError(f"lm-eval task {task.task_name!r} reported no metric {metric!r}; it has: {', '.join(k for k in results if ',' in k)}")
            value = float(results[key])
            scores[column] = value if math.isfinite(value) else float("nan")
        faults.point("eval")
        if out_dir is not None:
            write_outputs(out_dir, output, scores)
        return scores


def write_outputs(out_dir: Path, output: dict, scores: dict) -> None:
    """lm-eval's per-task results and every sample, as plain JSON."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "results.json").write_text(json.dumps({"scores": scores, "lm_eval": output["results"]}, indent=1, default=str) + "\n")
    for task_name, samples in (output.get("samples") or {}).items():
        with open(out_dir / f"samples_{task_name}.jsonl", "w") as f:
            for s in samples:
                f.write(json.dumps({k: s.get(k) for k in ("doc_id", "arguments", "resps", "filtered_resps", "acc", "target")}, default=str) + "\n")
