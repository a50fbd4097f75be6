"""The stage loop: evaluate the base (row 0), then train, save, evaluate and record each stage.

A stage counts as done once `stages/<k>/scores.json` exists, and that file is
written last, atomically, after the stage's checkpoint and evaluation. Running
the same command again therefore resumes at the first unfinished stage.
"""

from __future__ import annotations

import gc
import logging
import time
from dataclasses import asdict, dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from harness import storage
from harness.config import load_overrides, load_preset, method_options
from harness.errors import HarnessError, unknown
from harness.evaluation import TEACHER_PREFIX, EvalSettings, Evaluator
from harness.registry import load_suite
from harness.taskdata import load_rows

log = logging.getLogger("harness")
RESULTS_DIR = Path("results")
TEACHER_WARN = 0.8


@dataclass
class RunRequest:
    """What the user asked for, before resolution (the CLI's arguments)."""

    suite: str = "toy"
    tasks: list[str] | None = None
    methods: list[str] = field(default_factory=lambda: ["sft"])
    model: str | None = None
    probes: list[str] | None = None
    seed: int = 0
    output: str | None = None
    config: str | None = None
    set: list[str] = field(default_factory=list)
    data_dir: str | None = None
    tracking_uri: str | None = None
    eval: EvalSettings = field(default_factory=EvalSettings)
    teacher_warn: float = TEACHER_WARN


def versions() -> dict:
    out = {}
    for package in ("torch", "transformers", "trl", "lm_eval", "datasets", "mlflow", "accelerate"):
        try:
            out[package] = version(package)
        except PackageNotFoundError:
            out[package] = None
    return out


def resolve(request: RunRequest):
    """Check everything that can be checked before any training; return the plan."""
    from baselines import METHODS

    suite = load_suite(request.suite)
    tasks = request.tasks or list(suite.sequence)
    if len(set(tasks)) != len(tasks):
        raise HarnessError(f"--tasks {','.join(tasks)}: each task may appear once in a sequence")
    cards = [suite.card(t) for t in tasks]
    for card in cards:
        if card.role != "task":
            raise HarnessError(f"{card.path}: {card.name!r} is a probe, not a trainable task")
    methods = request.methods
    for m in methods:
        if m not in METHODS:
            raise unknown("method", m, METHODS)
    if len(methods) == 1:
        methods = methods * len(tasks)
    if len(methods) != len(tasks):
        raise HarnessError(f"--method lists {len(methods)} methods for {len(tasks)} tasks: give one method, or one per task")
    probes = [suite.probe(p) for p in request.probes] if request.probes is not None else list(suite.probes)
    model = request.model or suite.model_path()
    if (model.startswith((".", "/", "~")) or Path(model).exists()) and not (Path(model).expanduser() / "config.json").exists():
        raise HarnessError(f"--model {model}: not a model folder (no config.json there)")
    preset = load_preset(suite.preset)
    overrides = load_overrides(request.config, request.set)
    options = [method_options(preset, overrides, m, t, set(METHODS)) for m, t in zip(methods, tasks)]
    _check_overrides(overrides, methods)
    rows = {card.name: load_rows(card, "train", request.data_dir) for card in cards}
    for card in cards + [p.card for p in probes if p.card]:
        load_rows(card, "test", request.data_dir)
    run_id = request.output and Path(request.output).name or "-".join([suite.name, *dict.fromkeys(methods), *tasks, f"seed{request.seed}"])
    run = {
        "run_id": run_id,
        "suite": suite.name,
        "tasks": tasks,
        "methods": methods,
        "model": model,
        "probes": [{"name": p.name, "task": p.task, "metric": p.metric} for p in probes],
        "seed": request.seed,
        "preset": suite.preset,
        "options": options,
        "eval": asdict(request.eval),
        "data_dir": request.data_dir,
    }
    return run, suite, cards, probes, rows


def _check_overrides(overrides: dict, methods: list[str]) -> None:
    """A flat override must mean something to at least one method of the schedule."""
    from baselines import METHODS

    names = {m: METHODS[m].option_names() for m in set(methods)}
    for key in overrides:
        if key in METHODS:
            continue
        if not any(key in n for n in names.values()):
            raise unknown(f"option (for {', '.join(sorted(names))})", key, set().union(*names.values()))


def run(request: RunRequest) -> Path:
    run, suite, cards, probes, rows = resolve(request)
    run_dir = Path(request.output) if request.output else RESULTS_DIR / run["run_id"]
    run_dir.mkdir(parents=True, exist_ok=True)
    existing = run_dir / "run.json"
    if existing.exists():
        before = storage.read_json(existing)
        if {k: v for k, v in before.items() if k != "versions"} != run:
            raise HarnessError(f"{run_dir} holds a different run (its run.json differs); choose another --output")
        log.info("resuming %s", run_dir)
    else:
        storage.write_json(existing, {**run, "versions": versions()})
    Sequence(run, run_dir, cards, probes, rows, request).execute()
    return run_dir


class Sequence:
    """Executes one resolved run in its folder."""

    def __init__(self, run, run_dir, cards, probes, rows, request: RunRequest):
        self.run, self.dir, self.cards, self.rows, self.request = run, run_dir, cards, rows, request
        self.evaluator = Evaluator(cards, probes, request.eval)
        self.n = len(run["methods"])

    def stage_dir(self, k: int) -> Path:
        return self.dir / "stages" / str(k)

    def done(self, k: int) -> bool:
        return (self.stage_dir(k) / "scores.json").exists()

    def model_dir(self, k: int) -> Path | str:
        return self.run["model"] if k == 0 else self.stage_dir(k) / "model"

    def say(self, k: int, what: str) -> None:
        print(f"[{self.run['run_id']}] stage {k}/{self.n} {what}", flush=True)

    def execute(self) -> None:
        from harness import results, tracking

        for k in range(self.n + 1):
            if self.done(k):
                continue
            self.stage(k)
            summary = results.write_summary(self.dir)
            tracking.sync(self.dir, self.request.tracking_uri)
            gc.collect()
        summary = results.write_summary(self.dir)
        if summary and summary.get("acc") is not None:
            print(f"[{self.run['run_id']}] done: ACC {summary['acc']:.3f}  BWT {_fmt(summary['bwt'])}  "
                  f"forgetting {_fmt(summary['forgetting'])}  probe delta {_fmt(summary['probe_delta'])}  -> {self.dir}")

    def stage(self, k: int) -> None:
        from baselines import METHODS
        from baselines.common import Stage, load_model

        sdir = self.stage_dir(k)
        method = self.run["methods"][k - 1] if k else "base"
        card = self.cards[k - 1] if k else None
        seconds, record = {}, {"stage": k, "method": method, "task": card.name if card else None}
        if k and self.run["methods"][k - 1] == "sdft":
            record["teacher_acc"] = self.teacher_accuracy(k, card)
        model_dir = sdir / "model"
        if k == 0:
            self.say(0, "evaluating the base model")
            model, tokenizer = load_model(self.run["model"])
        elif model_dir.exists():
            self.say(k, f"{method} on {card.name}: checkpoint found, evaluating it")
            model, tokenizer = load_model(model_dir)
        else:
            self.say(k, f"{method} on {card.name}: training")
            start = time.time()
            stage = Stage(
                index=k,
                method=method,
                card=card,
                rows=self.rows[card.name],
                start_model=Path(self.model_dir(k - 1)) if k > 1 else self.run["model"],
                initial_model=self.run["model"],
                work_dir=sdir / "trainer",
                options=self.run["options"][k - 1],
                seed=self.run["seed"],
            )
            result = METHODS[method].train(stage)
            seconds["train"] = round(time.time() - start, 2)
            model, tokenizer = result.model, result.tokenizer
            storage.write_json(sdir / "train_log.json", {"history": result.history, "seconds": seconds["train"]})
            start = time.time()
            storage.write_dir(model_dir, lambda d: (model.save_pretrained(d), tokenizer.save_pretrained(d)))
            seconds["save"] = round(time.time() - start, 2)
        self.say(k, "evaluating tasks and probes")
        start = time.time()
        model.eval()
        record["scores"] = self.evaluator.run(model, tokenizer, sdir / "eval")
        seconds["eval"] = round(time.time() - start, 2)
        record["seconds"] = {**seconds, **self._earlier_seconds(sdir)}
        storage.write_json(sdir / "scores.json", record)

    def _earlier_seconds(self, sdir: Path) -> dict:
        log_file = sdir / "train_log.json"
        return {"train": storage.read_json(log_file)["seconds"]} if log_file.exists() else {}

    def teacher_accuracy(self, k: int, card) -> float:
        """Accuracy of the stage's teacher with the demonstration in its prompt, measured before training."""
        from baselines.common import load_model

        path = self.stage_dir(k) / "teacher.json"
        if path.exists():
            return storage.read_json(path)["teacher_acc"]
        teacher = self.run["options"][k - 1].get("teacher", "ema")
        source = self.run["model"] if teacher == "initial" else self.model_dir(k - 1)
        self.say(k, f"measuring the teacher on {card.name} (demonstration in the prompt)")
        model, tokenizer = load_model(source)
        model.eval()
        scores = self.evaluator.run(model, tokenizer, None, teacher_cards=[card], only_teacher=True)
        acc = scores[TEACHER_PREFIX + card.name]
        if acc < self.request.teacher_warn:
            log.warning(
                "teacher accuracy on %s is %.2f, below %.2f: SDFT distils from a teacher that cannot use the "
                "demonstration, so expect little learning (consider --set sdft.teacher=initial)",
                card.name, acc, self.request.teacher_warn,
            )
        storage.write_json(path, {"teacher_acc": acc, "teacher": teacher, "source": str(source)})
        return acc


def _fmt(value) -> str:
    return "n/a" if value is None else f"{value:+.3f}"
