"""The stage loop: evaluate the base (row 0), then train, save, evaluate and record each stage.

A stage counts as done once `stages/<k>/scores.json` exists, and that file is
written last, atomically, after the stage's checkpoint and evaluation. Running
the same command again therefore resumes at the first unfinished stage.
"""

from __future__ import annotations

import gc
import hashlib
import json
import logging
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from harness import faults, reference, storage
from harness.config import load_overrides, load_preset, method_options
from harness.errors import HarnessError, unknown
from harness.evaluation import TEACHER_PREFIX, EvalSettings, Evaluator, vllm_available
from harness.lock import run_lock
from harness.passk import pass_at_k_scores
from harness.registry import load_suite
from harness.taskdata import load_rows, resolve_source

log = logging.getLogger("harness")
RESULTS_DIR = Path("results")
TEACHER_WARN = 0.8
UNSAFE_PROBES = {"humaneval", "humaneval_plus", "mbpp", "mbpp_plus"}  # lm-eval tasks that run generated code


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
    check_base: bool = False  # evaluate row 0 only and compare it with the published base row
    eval_every: int = 0  # >0: score the stage's task every N optimizer steps (curves inside a stage)
    eval_every_probes: bool = False  # ... and the probes
    pass_k: list[int] = field(default_factory=list)  # pass@k of the generative tasks after every stage


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
    from baselines.common import configure, option_names

    suite = load_suite(request.suite)
    if request.tasks == []:
        raise HarnessError("--tasks is empty: name at least one task, or leave --tasks out for the suite's sequence")
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
    unsafe = [p.task for p in probes if p.task in UNSAFE_PROBES]
    if unsafe and not request.eval.confirm_unsafe_code:
        raise HarnessError(f"probe {', '.join(unsafe)} executes model-generated code: pass --confirm-unsafe-code to allow it (or leave it out with --probes)")
    model = request.model or suite.model_path()
    check_model(model)
    check_probes(probes, suite)
    preset = load_preset(suite.preset)
    overrides = load_overrides(request.config, request.set)
    accepted = {m: option_names(METHODS[m]) for m in set(methods)}
    _check_overrides(overrides, accepted)
    unknown_eval = set(suite.eval) - {f for f in EvalSettings.__dataclass_fields__ if f != "backend"}
    if unknown_eval:
        raise HarnessError(f"{suite.path}: unknown `eval` setting(s) {', '.join(sorted(unknown_eval))}")
    # The suite's evaluation settings fill in what the command line left unset.
    request.eval = replace(request.eval, **{k: v for k, v in suite.eval.items() if getattr(request.eval, k) is None})
    backend = request.eval.backend
    if backend == "vllm" and not vllm_available():
        print("vLLM is not installed (pip install '.[vllm]'): generating and evaluating with the HF backend", flush=True)
        backend = "hf"
    request.eval = replace(request.eval, backend=backend)
    check_eval(request.eval, suite)
    if not 0 <= request.teacher_warn <= 1:
        raise HarnessError(f"--teacher-warn {request.teacher_warn:g}: expected an accuracy in [0, 1]")
    if not 0 <= request.seed < 2**32:
        raise HarnessError(f"--seed {request.seed}: expected an integer in [0, 2**32 - 1]")
    options = []
    for m, card in zip(methods, cards):
        # A flat override applies to the methods that have the option.
        mine = {k: v for k, v in overrides.items() if k in METHODS or k in accepted[m]}
        if backend == "vllm" and "use_vllm" in accepted[m]:
            mine = {"use_vllm": True, **mine}
        options.append(method_options(preset, mine, m, card.name, set(METHODS)))
        configure(METHODS[m], options[-1], card, Path(tempfile.gettempdir()) / "harness-check", request.seed)
    rows = {} if request.check_base else {card.name: load_rows(card, "train", request.data_dir) for card in cards}
    for card in cards + [p.card for p in probes if p.card]:
        load_rows(card, "test", request.data_dir)
    label = ["base"] if request.check_base else dict.fromkeys(methods)  # a base check gets its own folder
    run_id = request.output and Path(request.output).name or "-".join([suite.name, *label, *tasks, f"seed{request.seed}"])
    protocols = {**{c.name: c.protocol for c in cards}, **{p.name: p.protocol for p in probes}}
    run = {
        "run_id": run_id,
        "suite": suite.name,
        "tasks": tasks,
        "methods": methods,
        "model": model,
        "probes": [{"name": p.name, "task": p.task} for p in probes],
        "protocol": {column: protocol.as_dict() for column, protocol in protocols.items()},
        "seed": request.seed,
        "preset": suite.preset,
        "options": options,
        "eval": asdict(request.eval),
        "data_dir": request.data_dir,
    }
    if request.eval_every < 0:
        raise HarnessError(f"--eval-every {request.eval_every}: expected a number of optimizer steps (0 = off)")
    if request.eval_every:  # recorded only when used, so run folders from before these options still resume
        run["curves"] = {"every": request.eval_every, "probes": request.eval_every_probes}
    if request.pass_k:
        run["pass_k"] = request.pass_k
    return run, suite, cards, probes, rows


def check_eval(settings: EvalSettings, suite) -> None:
    """Evaluation sizes must be positive: lm-eval reads a batch size or limit of 0 as "unset" (64, everything)."""
    for name, flag in (("batch_size", "--batch-size"), ("limit", "--limit"), ("max_length", "max_length")):
        value = getattr(settings, name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            where = flag if flag.startswith("--") else f"{suite.path}: eval.{name}"
            raise HarnessError(f"{where} {value!r}: expected an integer >= 1")


def check_model(model: str) -> None:
    """A local model must be a model folder whose tokenizer has a chat template (training uses chat prompts)."""
    path = Path(model).expanduser()
    if not (model.startswith((".", "/", "~")) or path.exists()):
        return  # a hub id: resolved when loaded
    if not (path / "config.json").exists():
        raise HarnessError(f"--model {model}: not a model folder (no config.json there)")
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError) as e:
        raise HarnessError(f"--model {model}: cannot load its tokenizer ({str(e).splitlines()[0][:160]})") from None
    if not getattr(tokenizer, "chat_template", None):
        raise HarnessError(f"--model {model}: its tokenizer has no chat template; the harness trains and evaluates on chat prompts (use an instruct model or set tokenizer.chat_template)")


def check_probes(probes, suite) -> None:
    """Probes that are not the suite's cards must be lm-eval tasks (indexing them takes seconds, so only then)."""
    from harness.evaluation import builtin_task_names

    names = [p.task for p in probes if p.card is None]
    if names:
        known = builtin_task_names()
        for name in names:
            if name not in known:
                ours = [*suite.cards, *(p.name for p in suite.probes)]
                raise unknown("probe (neither a card of the suite nor an lm-eval task)", name, known | set(ours), prefer=ours)


def _check_overrides(overrides: dict, accepted: dict[str, set[str]]) -> None:
    """A flat override must mean something to at least one method of the schedule; a method's own section must be valid for it."""
    from baselines import METHODS
    from baselines.common import split_options

    for key, value in overrides.items():
        if key in METHODS:
            if not isinstance(value, dict):
                raise HarnessError(f"options for method {key!r} (--config or --set {key}.KEY=VALUE): expected a mapping, got {value!r}")
            # Checked even when the schedule leaves the method out: a typo in a scoped option fails now, not in a later run.
            split_options(value, METHODS[key])
        elif not any(key in names for names in accepted.values()):
            raise unknown(f"option (for {', '.join(sorted(accepted))})", key, set().union(*accepted.values()))


def run(request: RunRequest) -> Path:
    """Run (or resume) one sequence. Under `accelerate launch` every process trains; only the
    main process evaluates, writes the run folder and logs to MLflow, the others wait for it."""
    from accelerate import PartialState

    state = PartialState()
    run, suite, cards, probes, rows = resolve(request)
    if request.check_base and reference.for_model(run["model"]) is None:
        published = ", ".join(p.model for p in reference.load()) or "none"
        raise HarnessError(f"--check-base: no published base row for model {run['model']} in {reference.REFERENCE} (published: {published})")
    run_dir = Path(request.output) if request.output else RESULTS_DIR / run["run_id"]
    sequence = Sequence(run, run_dir, cards, probes, rows, request, state)
    if not state.is_main_process:
        state.wait_for_everyone()  # the main process checks the folder and takes the lock
        sequence.execute()
        return run_dir
    run_dir.mkdir(parents=True, exist_ok=True)
    with run_lock(run_dir):
        claim(run_dir, run)
        state.wait_for_everyone()
        sequence.execute()
    return run_dir


def claim(run_dir: Path, run: dict) -> None:
    """Resume the run the folder holds, or make it this run's. Only finished stages are protected: a folder whose
    earlier command crashed before finishing a stage belongs to whichever command comes next."""
    existing = run_dir / "run.json"
    if existing.exists():
        finished = sorted(p.parent.name for p in run_dir.glob("stages/*/scores.json"))
        try:
            before = storage.read_json(existing)
        except HarnessError:
            if finished:
                raise
            before = None
        if isinstance(before, dict) and {k: v for k, v in before.items() if k != "versions"} == run:
            log.info("resuming %s", run_dir)
            return
        if finished:
            raise HarnessError(f"{run_dir} holds a different run with finished stage(s) {', '.join(finished)} (its run.json differs): "
                               f"rerun that run's own command to resume it, or choose another --output (or delete the folder)")
        log.info("%s holds an unfinished run with no finished stage: replacing it with this one", run_dir)
        shutil.rmtree(run_dir / "stages", ignore_errors=True)  # its checkpoints and teacher checks belong to the other run
    storage.write_json(existing, {**run, "versions": versions()})


class Sequence:
    """Executes one resolved run in its folder."""

    def __init__(self, run, run_dir, cards, probes, rows, request: RunRequest, state):
        self.run, self.dir, self.cards, self.rows, self.request = run, run_dir, cards, rows, request
        self.evaluator = Evaluator(cards, probes, request.eval, request.data_dir)
        self.n = len(run["methods"])
        self.state = state
        self.main = state.is_main_process
        self.tracking_ok = True

    def stage_dir(self, k: int) -> Path:
        return self.dir / "stages" / str(k)

    def done(self, k: int) -> bool:
        return (self.stage_dir(k) / "scores.json").exists()

    def model_dir(self, k: int) -> Path | str:
        return self.run["model"] if k == 0 else self.stage_dir(k) / "model"

    def say(self, k: int, what: str) -> None:
        if self.main:
            print(f"[{self.run['run_id']}] stage {k}/{self.n} {what}", flush=True)

    def execute(self) -> None:
        if self.request.check_base:
            if not self.done(0):
                self.stage(0)
            if self.main:
                from harness import results

                results.write_summary(self.dir)
                self.compare_base(strict=True)
            return
        summary = None
        for k in range(self.n + 1):
            if self.done(k):
                continue
            self.stage(k)
            if self.main and k == 0:
                self.compare_base()
            if self.main:
                summary = self.publish()
            self.state.wait_for_everyone()
            gc.collect()
        if self.main:
            summary = summary or self.publish()  # a resumed run may have nothing left but logging
            if summary and summary.get("acc") is not None:
                print(f"[{self.run['run_id']}] done: ACC {summary['acc']:.3f}  BWT {_fmt(summary['bwt'])}  "
                      f"forgetting {_fmt(summary['forgetting'])}  probe delta {_fmt(summary['probe_delta'])}  -> {self.dir}")

    def compare_base(self, strict: bool = False) -> None:
        """Row 0 beside the published base row of this model, if any: a warning per column out of tolerance;
        strict (--check-base) prints every column and fails when any is out."""
        publication = reference.for_model(self.run["model"])
        if publication is None:
            return
        scores = storage.read_json(self.stage_dir(0) / "scores.json")["scores"]
        checks = reference.compare(publication, scores, self.run["protocol"])
        out = [c for c in checks if not c.ok]
        if not strict:
            for c in out:
                log.warning("base row differs from the published one: %s; check the evaluation protocol", c.line())
            return
        print(f"[{self.run['run_id']}] base row vs {publication.title}:\n{reference.table(checks)}", flush=True)
        if out:
            raise reference.BaseDriftError(f"{len(out)} of {len(checks)} base-row column(s) differ from the published ones by more than "
                                           f"{publication.tolerance:g} points: {', '.join(c.column for c in out)}")
        print(f"[{self.run['run_id']}] all {len(checks)} compared columns are within {publication.tolerance:g} points of the published base row", flush=True)

    def publish(self) -> dict | None:
        """Rewrite the summary files from the finished stages and log what MLflow lacks."""
        from harness import results, tracking

        summary = results.write_summary(self.dir)
        if self.tracking_ok:  # after one failure the store is left alone: one warning, not one stall per stage
            self.tracking_ok = tracking.sync(self.dir, self.request.tracking_uri)
        return summary

    def stage(self, k: int) -> None:
        from baselines import METHODS
        from baselines.common import load_model, split_options, train
        from baselines.contract import Stage, StageEnv

        sdir = self.stage_dir(k)
        faults.stage = k
        name = self.run["methods"][k - 1] if k else "base"
        card = self.cards[k - 1] if k else None
        seconds, record = {}, {"stage": k, "method": name, "task": card.name if card else None}
        if k:
            method = METHODS[name]
            stage = Stage(
                index=k,
                method=name,
                card=card,
                rows=self.rows[card.name],
                earlier_rows={c.name: self.rows[c.name] for c in self.cards[: k - 1]},
                start_model=Path(self.model_dir(k - 1)) if k > 1 else self.run["model"],
                initial_model=self.run["model"],
                work_dir=sdir / "trainer",
                options=self.run["options"][k - 1],
                seed=self.run["seed"],
            )
            if method.has_before_stage():
                start = time.time()
                env = StageEnv(sdir, self.main, lambda what: self.say(k, what), self.evaluate_teacher, self.request.teacher_warn)
                record.update(method.before_stage(stage, split_options(stage.options, method)[1], env))
                seconds[method.before_stage_seconds] = round(time.time() - start, 2)
                self.state.wait_for_everyone()
        model_dir = sdir / "model"
        if k == 0:
            if not self.main:
                return
            cached = self.cache_dir()
            if (cached / "scores.json").exists() and not self.request.pass_k:  # the cached row has no pass@k
                self.say(0, f"base model already evaluated with these settings: reusing {cached}")
                shutil.copytree(cached / "eval", sdir / "eval", dirs_exist_ok=True)
                storage.write_bytes(sdir / "scores.json", (cached / "scores.json").read_bytes())
                return
            self.say(0, "evaluating the base model")
            model, tokenizer = load_model(self.run["model"])
        elif model_dir.exists():
            if not self.main:
                return
            self.say(k, f"{name} on {card.name}: checkpoint found, evaluating it")
            model, tokenizer = load_model(model_dir)
        else:
            self.say(k, f"{name} on {card.name}: training")
            start = time.time()
            if self.request.eval_every:
                stage.callbacks.append(self.curve_callback(k, card))
            result = train(method, stage)
            seconds["train"] = round(time.time() - start, 2)
            if not self.main:
                return
            model, tokenizer = result.model, result.tokenizer
            seconds["generation"] = round(result.usage["generation_seconds"], 2)
            storage.write_json(sdir / "train_log.json", {"history": result.history, "seconds": seconds["train"], "usage": result.usage})
            start = time.time()
            storage.write_dir(model_dir, lambda d: (model.save_pretrained(d), tokenizer.save_pretrained(d)))
            seconds["save"] = round(time.time() - start, 2)
        self.say(k, "evaluating tasks and probes")
        start = time.time()
        model.eval()
        record["scores"] = self.evaluator.run(model, tokenizer, sdir / "eval", model_path=self.model_dir(k))
        seconds["eval"] = round(time.time() - start, 2)
        if self.request.pass_k:
            start = time.time()
            record["pass_k"] = pass_at_k_scores(model, tokenizer, self.cards, self.request.pass_k, self.request.eval, self.request.data_dir, sdir / "pass_k")
            seconds["pass_k"] = round(time.time() - start, 2)
        record["seconds"] = {**seconds, **self._earlier_seconds(sdir)}
        faults.point("record")
        storage.write_json(sdir / "scores.json", record)
        if k == 0:
            storage.write_dir(self.cache_dir(), lambda d: (shutil.copytree(sdir / "eval", d / "eval"), shutil.copy(sdir / "scores.json", d)))

    def evaluate_teacher(self, card, source, out_dir: Path) -> float:
        """The task's accuracy for the model at `source` with the demonstration in its prompt (a before-stage hook's tool)."""
        from baselines.common import load_model

        model, tokenizer = load_model(source)
        model.eval()
        scores = self.evaluator.run(model, tokenizer, out_dir, teacher_cards=[card], only_teacher=True, model_path=source)
        return scores[TEACHER_PREFIX + card.name]

    def curve_callback(self, k: int, card):
        """Scores of the stage's task (and the probes, with --eval-every-probes) every N optimizer steps."""
        from harness.curves import CurveCallback

        probes = self.evaluator.probes if self.request.eval_every_probes else []
        evaluator = Evaluator([card], probes, self.request.eval, self.request.data_dir)
        return CurveCallback(evaluator, self.request.eval_every, self.stage_dir(k) / "curve.json", self.main)

    def cache_dir(self) -> Path:
        """Where row 0 is kept for every run with the same model, tasks, probes and evaluation."""
        return self.dir.parent / ".cache" / "base-eval" / base_eval_key(self.run, self.cards, self.evaluator.probes)

    def _earlier_seconds(self, sdir: Path) -> dict:
        """Training time of a stage whose checkpoint an earlier, interrupted invocation saved."""
        log_file = sdir / "train_log.json"
        if not log_file.exists():
            return {}
        saved = storage.read_json(log_file)
        return {"train": saved["seconds"], "generation": round(saved["usage"]["generation_seconds"], 2)}


def _file_digest(path: Path, h) -> None:
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)


def base_eval_key(run: dict, cards, probes) -> str:
    """Content hash of everything row 0 depends on: model files, cards and their test data,
    probes, evaluation settings, library versions and the harness's own evaluation code."""
    h = hashlib.sha256()
    model = Path(run["model"])
    if model.is_dir():
        for path in sorted(p for p in model.rglob("*") if p.is_file()):
            h.update(path.relative_to(model).as_posix().encode())
            _file_digest(path, h)
    else:
        h.update(run["model"].encode())
    from lm_eval.tasks._yaml_loader import load_yaml

    for card in [*cards, *(p.card for p in probes if p.card)]:
        h.update(json.dumps(load_yaml(card.path, resolve_func=False), sort_keys=True, default=str).encode())
        source = resolve_source(card, "test", run["data_dir"])
        if isinstance(source, Path) and source.is_file():
            _file_digest(source, h)
        else:
            h.update(json.dumps(source, sort_keys=True, default=str).encode())
    h.update(json.dumps([run["probes"], run["protocol"], run["eval"], versions()], sort_keys=True).encode())
    for module in ("evaluation", "taskdata", "scoring"):
        _file_digest(Path(__file__).with_name(f"{module}.py"), h)
    return h.hexdigest()[:20]


def _fmt(value) -> str:
    return "n/a" if value is None else f"{value:+.3f}"
