"""Evaluate a model on a stage's tasks and probes with lm-evaluation-harness.

Cards become lm-eval tasks straight from their YAML; a card's *teacher* variant is
the same task with the demonstration put into the prompt through the card's
teacher template, which measures whether the model can act as its own SDFT
teacher. Probes that are not cards are lm-eval's built-in tasks. Each column is
evaluated under its own protocol (harness.protocol): the few-shot and generation
settings go on its task, and the columns that share the call-level settings (the
chat template) run in one lm-eval call.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
from dataclasses import dataclass
from functools import cache, partial
from pathlib import Path
from typing import NamedTuple

from harness import cardfile, faults, hub
from harness.errors import HarnessError, unknown
from harness.protocol import Protocol
from harness.registry import Probe, TaskCard

FEWSHOT_SEED = 0  # lm-eval's few-shot sampler, seeded alike wherever prompts are built

TEACHER_PREFIX = "teacher:"


def teacher_text(template: str, doc: dict) -> str:
    return template.format(prompt=doc["user"], privileged_context=doc["demonstration"])


def card_task(card: TaskCard, teacher: bool = False, data_dir=None):
    """The card as an lm-eval task; its test split is read from `data_dir` (--data-dir) when given."""
    from lm_eval.api.task import ConfigurableTask

    config = cardfile.resolve(cardfile.read(card.path))
    config["metadata"] = {**(config.get("metadata") or {}), "config_source": str(card.path), "data_dir": str(data_dir) if data_dir else None}
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
    """Name -> lm-eval Task, or Group for a group such as mmlu (its results are the group's aggregate)."""
    out = {}
    if names:
        hub.reachable()  # their data comes from the hub
    for name in names:
        if name not in builtin_task_names():
            raise unknown("lm-eval task (probe)", name, builtin_task_names())
        loaded = _task_manager().load([name])
        out[name] = loaded["groups"].get(name) or loaded["tasks"][name]
    return out


def task_name(task) -> str:
    return getattr(task, "task_name", None) or task.name  # a Task, or a Group


def apply_protocol(task, protocol: Protocol):
    """Put the protocol's per-task settings on the task (every subtask of a group); return the task."""
    leaves = task.get_all_tasks() if hasattr(task, "get_all_tasks") else [task]
    for leaf in leaves:
        if protocol.num_fewshot is not None:
            leaf.set_config(key="num_fewshot", value=protocol.num_fewshot)
        if protocol.gen_kwargs and leaf.get_config("output_type") == "generate_until":
            leaf.set_config(key="generation_kwargs", value=dict(protocol.gen_kwargs), update=True)
    return task


class Longest(NamedTuple):
    prompt: int  # tokens of the longest prompt
    doc: int  # its item of the test split
    gen: int  # max_gen_toks
    stated: bool  # by the card (else lm-eval's default)


def longest_prompt(card: TaskCard, protocol: Protocol, tokenizer, data_dir=None, teacher: bool = False, limit=None) -> Longest | None:
    """The longest prompt of the card's test split (its first `limit` items, as evaluated; with the demonstration
    for `teacher`) and its max_gen_toks, as lm-eval builds, encodes and generates them under `protocol`, few-shot
    examples drawn with the evaluation's seed; None for a card that does not generate."""
    import jinja2
    from lm_eval.models.utils import normalize_gen_kwargs

    _quiet_lm_eval()
    task = apply_protocol(card_task(card, teacher=teacher, data_dir=data_dir), protocol)
    if task.get_config("output_type") != "generate_until":
        return None
    task.set_fewshot_seed(seed=FEWSHOT_SEED)

    def chat(history, add_generation_prompt=True):  # as HFLM.apply_chat_template, which drops a system turn the template refuses
        render = partial(tokenizer.apply_chat_template, tokenize=False, add_generation_prompt=add_generation_prompt,
                         continue_final_message=not add_generation_prompt)
        try:
            return render(history)
        except jinja2.exceptions.TemplateError:
            return render([m for m in history if m["role"] != "system"])

    # Without a chat template the evaluation stops with its own error; the prompts are measured as text meanwhile.
    chat_template = protocol.chat_template and bool(getattr(tokenizer, "chat_template", None))
    task.build_all_requests(limit=limit, apply_chat_template=chat_template, fewshot_as_multiturn=protocol.fewshot_as_multiturn,
                            chat_template=chat)
    bos = tokenizer.bos_token
    length, doc = max((len(tokenizer(i.args[0], add_special_tokens=not (bos and i.args[0].startswith(bos)))["input_ids"]), i.doc_id)
                      for i in task.instances)  # as HFLM encodes
    gen_kwargs = task.instances[0].args[1]
    stated = any(k in gen_kwargs for k in ("max_gen_toks", "max_new_tokens"))
    return Longest(length, doc, int(normalize_gen_kwargs(gen_kwargs)["max_gen_toks"]), stated)


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
    _quiet_lm_eval()
    if settings.backend == "vllm" and model_path is not None and vllm_available():
        from lm_eval.models.vllm_causallms import VLLM

        return _quiet(VLLM(pretrained=str(model_path), dtype="auto", batch_size="auto", max_model_len=settings.max_length or DEFAULT_MAX_LENGTH, gpu_memory_utilization=0.6))
    from lm_eval.models.huggingface import HFLM

    return _quiet(HFLM(
        pretrained=model,
        tokenizer=tokenizer,
        batch_size=settings.batch_size or DEFAULT_BATCH_SIZE,
        max_length=settings.max_length or DEFAULT_MAX_LENGTH,
    ))


REQUEST_TYPES = ("generate_until", "loglikelihood", "loglikelihood_rolling")


def _quiet(lm):
    """No progress bar per lm-eval request type: the harness prints a line per evaluation. `disable_tqdm` is a
    parameter of every request method of lm-eval's TemplateLM (HF and vLLM alike)."""
    for name in REQUEST_TYPES:
        setattr(lm, name, partial(getattr(lm, name), disable_tqdm=True))
    return lm


@cache
def _quiet_lm_eval() -> None:
    """Two of lm-eval's outputs that have no switch: a progress bar per task while it builds the requests, and
    git's "fatal: not a git repository" on every evaluation outside a checkout (lm-eval records the current
    folder's commit). The bar goes; the commit is looked up as lm-eval does, with git's complaint kept off the
    terminal. tests/test_output.py fails if lm-eval moves either."""
    import lm_eval.api.task
    import lm_eval.evaluator
    from lm_eval.loggers.utils import get_commit_from_path
    from tqdm import tqdm

    def git_commit_hash():
        try:
            return subprocess.check_output(["git", "describe", "--always"], stderr=subprocess.DEVNULL).strip().decode()  # noqa: S607
        except (subprocess.CalledProcessError, FileNotFoundError):
            return get_commit_from_path(os.getcwd())

    lm_eval.api.task.tqdm = partial(tqdm, disable=True)
    lm_eval.evaluator.get_git_commit_hash = git_commit_hash


class Evaluator:
    """Scores one model on the sequence's tasks, the probes, and optionally teacher variants."""

    def __init__(self, cards: list[TaskCard], probes: list[Probe], settings: EvalSettings = EvalSettings(), data_dir=None):
        self.cards, self.probes, self.settings, self.data_dir = cards, probes, settings, data_dir
        self._builtins = None

    def protocols(self) -> dict[str, Protocol]:
        """Each column's protocol: the tasks', then the probes'."""
        return {**{card.name: card.protocol for card in self.cards}, **{probe.name: probe.protocol for probe in self.probes}}

    def _columns(self, teacher_cards: list[TaskCard]) -> dict[str, tuple[object, Protocol]]:
        """Column name -> (lm-eval task or group, protocol)."""
        if self._builtins is None:
            self._builtins = builtin_tasks([p.task for p in self.probes if p.card is None])
        columns = {card.name: (card_task(card, data_dir=self.data_dir), card.protocol) for card in self.cards}
        for probe in self.probes:
            columns[probe.name] = (card_task(probe.card, data_dir=self.data_dir) if probe.card else self._builtins[probe.task], probe.protocol)
        for card in teacher_cards:
            columns[TEACHER_PREFIX + card.name] = (card_task(card, teacher=True, data_dir=self.data_dir), card.protocol)
        return columns

    def run(self, model, tokenizer, out_dir: Path | None = None, teacher_cards=(), only_teacher: bool = False, model_path=None) -> dict[str, float]:
        from lm_eval import simple_evaluate

        columns = self._columns(list(teacher_cards))
        if only_teacher:
            columns = {k: v for k, v in columns.items() if k.startswith(TEACHER_PREFIX)}
        calls: dict[tuple, dict] = {}  # one lm-eval call per set of call-level settings
        for column, (task, protocol) in columns.items():
            calls.setdefault(protocol.call, {})[column] = (task, protocol)
        lm = language_model(model, tokenizer, model_path, self.settings)
        results, samples, n_shot = {}, {}, {}
        for (chat, multiturn), members in calls.items():
            if chat and not getattr(tokenizer, "chat_template", None):
                raise HarnessError(f"{', '.join(members)}: the protocol asks for the chat template, but the model's tokenizer has none")
            output = simple_evaluate(
                model=lm,
                tasks=[apply_protocol(task, protocol) for task, protocol in members.values()],
                task_manager=_passthrough_manager(),
                limit=self.settings.limit,
                apply_chat_template=chat,
                fewshot_as_multiturn=multiturn,
                confirm_run_unsafe_code=self.settings.confirm_unsafe_code,
                log_samples=out_dir is not None,
                bootstrap_iters=0,
                random_seed=0,
                numpy_random_seed=0,
                torch_random_seed=0,
                fewshot_random_seed=FEWSHOT_SEED,
            )
            results.update(output["results"])
            samples.update(output.get("samples") or {})
            n_shot.update(output.get("n-shot") or {})
        scores = {column: read_score(results, task_name(task), protocol) for column, (task, protocol) in columns.items()}
        faults.point("eval")
        if out_dir is not None:
            protocols = {column: protocol.as_dict() for column, (_, protocol) in columns.items()}
            write_outputs(out_dir, {"scores": scores, "protocol": protocols, "n_shot": n_shot, "lm_eval": results}, samples)
        return scores


def read_score(results: dict, name: str, protocol: Protocol) -> float | None:
    """The column's score; None (null in scores.json, an empty cell in matrix.csv, n/a on screen) when lm-eval gave NaN."""
    reported = results[name]
    if protocol.result_key not in reported:
        raise HarnessError(f"lm-eval task {name!r} reported no metric {protocol.result_key!r} (metric,filter); it has: {', '.join(k for k in reported if ',' in k)}")
    value = float(reported[protocol.result_key])
    return value if math.isfinite(value) else None


SAMPLE_KEYS = ("doc_id", "doc", "arguments", "resps", "filtered_resps", "acc", "target")


def write_outputs(out_dir: Path, summary: dict, samples: dict) -> None:
    """The scores, each column's protocol, lm-eval's per-task results and every sample, as plain JSON."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "results.json").write_text(json.dumps(summary, indent=1, default=str) + "\n")
    for name, task_samples in samples.items():
        with open(out_dir / f"samples_{name}.jsonl", "w") as f:
            for s in task_samples:
                f.write(json.dumps({k: s.get(k) for k in SAMPLE_KEYS}, default=str) + "\n")
