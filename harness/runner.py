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
import time
import uuid
from functools import cached_property
from pathlib import Path

from safetensors import SafetensorError

from baselines import METHODS
from baselines.common import load_model, split_options, train
from baselines.contract import Stage, StageEnv
from harness import cardfile, faults, hub, reference, results, storage, tracking
from harness.curves import CurveCallback
from harness.errors import HarnessError, first_line
from harness.evaluation import TEACHER_PREFIX, Evaluator
from harness.lock import run_lock
from harness.passk import pass_at_k_scores
from harness.plan import Plan, RunRequest, resolve, versions
from harness.rundir import RUN_STAMPS, STAGE_RECORD, RunDir, StageDir, finished_stages
from harness.taskdata import resolve_source

log = logging.getLogger("harness")


def run(request: RunRequest | Plan) -> Path:
    """Run (or resume) one sequence. Under `accelerate launch` every process trains; only the
    main process evaluates, writes the run folder and logs to MLflow, the others wait for it."""
    from accelerate import PartialState

    state = PartialState()
    if isinstance(request, Plan):
        plan = request
    else:
        plan = resolve(request)
        if state.is_main_process:
            for note in plan.notes:
                print(note, flush=True)
    if plan.check_base and reference.for_model(plan.model) is None:
        published = ", ".join(p.model for p in reference.load()) or "none"
        raise HarnessError(f"--check-base: no published base row for model {plan.model} in {reference.REFERENCE} (published: {published})")
    run_dir = plan.folder
    sequence = Sequence(plan, state)
    if not state.is_main_process:
        state.wait_for_everyone()  # the main process checks the folder and takes the lock
        sequence.execute()
        return run_dir
    run_dir.mkdir(parents=True, exist_ok=True)
    with run_lock(run_dir):
        claim(run_dir, plan.record(), plan.model_pinned)
        state.wait_for_everyone()
        sequence.execute()
    return run_dir


def claim(run_dir: Path, run: dict, pinned: bool = False) -> None:
    """Resume the run the folder holds, or make it this run's. Only finished stages are protected: a folder whose
    earlier command crashed before finishing a stage belongs to whichever command comes next."""
    folder = RunDir(run_dir)
    finished = folder.finished()
    if not folder.run.exists() and finished:  # whose stages these are, no file says any more
        raise HarnessError(f"{run_dir} holds finished stage(s) {', '.join(finished)} but no run.json, so nothing says which "
                           "run they belong to: restore its run.json, or delete the folder (or choose another --output)")
    if folder.run.exists():
        if held_run(run_dir, run, pinned) == run:
            log.info("resuming %s", run_dir)
            return
        log.info("%s holds an unfinished run with no finished stage: replacing it with this one", run_dir)
        shutil.rmtree(folder.stages, ignore_errors=True)  # its checkpoints and teacher checks belong to the other run
    storage.write_json(folder.run, {**run, "versions": versions(), "claim": uuid.uuid4().hex})


def held_run(run_dir: Path, run: dict, pinned: bool = False) -> dict | None:
    """The run the folder's run.json records (None if none or unreadable); HarnessError if it is another run with
    finished stages, naming what differs. `pinned`: the hub model's commit was asked for (`org/name@rev`)."""
    folder = RunDir(run_dir)
    if not folder.run.exists():
        return None
    finished = folder.finished()
    try:
        before = storage.read_json(folder.run)
    except HarnessError as e:
        if finished:  # deleting it would not help: the stages would belong to no run (claim)
            raise HarnessError(f"{e}".removesuffix("; move it aside or delete it") + f"; the folder holds finished stage(s) "
                               f"{', '.join(finished)}, which only it says the run of: restore it, or delete the folder") from None
        return None
    stamps = {k: v for k, v in before.items() if k in RUN_STAMPS} if isinstance(before, dict) else {}
    before = {k: v for k, v in before.items() if k not in RUN_STAMPS} if isinstance(before, dict) else None
    if finished and before and run.get("check_base") and {**before, "check_base": True} == run:  # from before it was recorded
        storage.write_json(folder.run, {**run, **stamps})
        return run
    moved = before and {**before, "model_revision": None} == {**run, "model_revision": None} and before != run
    old_commit = (before or {}).get("model_revision")
    if finished and moved and not old_commit:  # a run folder from before commits were recorded
        if not pinned:
            cached = ", ".join(hub.cached_commits(run["model"])) or "none"
            raise HarnessError(f"{run_dir} was begun before the harness recorded hub commits, so nothing says which commit of "
                               f"{run['model']} its finished stage(s) {', '.join(finished)} came from: resume it with --model "
                               f"{run['model']}@<that commit> (a commit, not a branch or tag; the local cache holds: {cached})")
        log.warning("%s records no commit of the hub model %s (it was begun before the harness recorded them): resuming it on "
                    "commit %s, as --model pins it, recorded from now on", run_dir, run["model"], run["model_revision"])
        storage.write_json(folder.run, {**run, **stamps})
        return run
    if finished and moved and run.get("model_revision"):
        raise HarnessError(f"{run_dir} began on commit {old_commit} of the hub model {run['model']}, and this command reads commit "
                           f"{run['model_revision']}: resume it with --model {run['model']}@{old_commit}, or start a run on the "
                           "other commit in another folder (--output, or delete this one)")
    if finished and before and before.get("run_id") != run["run_id"] and {**before, "run_id": run["run_id"]} == run:  # moved or renamed
        raise HarnessError(f"{run_dir} holds run {before['run_id']!r} with finished stage(s) {', '.join(finished)}; a run is named "
                           "by the last part of --output (without one, by its suite, methods, tasks and seed), so resume it with the "
                           f"--output it began with, e.g. a folder named {before['run_id']!r}")
    if finished and before != run:
        same_model = f"; its model: --model {run['model']}@{old_commit}" if old_commit and old_commit != run.get("model_revision") else ""
        raise HarnessError(f"{run_dir} holds a different run with finished stage(s) {', '.join(finished)} (its run.json differs in "
                           f"{what_differs(before or {}, run)}): rerun that run's own command to resume it{same_model}, or choose "
                           "another --output (or delete the folder)")
    return before


def what_differs(held: dict, run: dict) -> str:
    """`eval.limit (2 there, 3 here), options[1].learning_rate (...)`: the first fields of run.json that differ, down to
    the innermost, with their values when short."""
    a, b = _flat(held), _flat(run)
    keys = [k for k in dict.fromkeys([*a, *b]) if a.get(k, "unset") != b.get(k, "unset")]
    shown = [f"{k} ({a.get(k, 'unset')!r} there, {b.get(k, 'unset')!r} here)" if len(repr(a.get(k)) + repr(b.get(k))) < 160 else k
             for k in keys[:4]]
    return ", ".join(shown) + (f" and {len(keys) - 4} more" if len(keys) > 4 else "")


def _flat(value, path: str = "") -> dict:
    """{"eval.limit": 2, "options[1].learning_rate": 1e-5, ...}: mappings and lists down to their leaves."""
    if isinstance(value, dict) and value:
        return {k: v for key, inner in value.items() for k, v in _flat(inner, f"{path}.{key}" if path else str(key)).items()}
    if isinstance(value, list) and value and all(isinstance(v, dict | list) for v in value):
        return {k: v for i, inner in enumerate(value) for k, v in _flat(inner, f"{path}[{i}]").items()}
    return {path: value}


class Sequence:
    """Executes one resolved run in its folder."""

    def __init__(self, plan: Plan, state):
        self.plan, self.folder, self.cards = plan, RunDir(plan.folder), list(plan.cards)
        self.dir = self.folder.path
        self.evaluator = Evaluator(self.cards, list(plan.probes), plan.eval, plan.data_dir)
        self.n = len(plan.methods)
        self.state = state
        self.main = state.is_main_process
        self.tracking_ok = True

    def stage_dir(self, k: int) -> StageDir:
        return self.folder.stage(k)

    def done(self, k: int) -> bool:
        return self.stage_dir(k).done()

    def model_dir(self, k: int) -> Path | str:
        return self.plan.source if k == 0 else self.stage_dir(k).model

    def say(self, k: int, what: str) -> None:
        if self.main:
            print(f"[{self.plan.run_id}] stage {k}/{self.n} {what}", flush=True)

    def execute(self) -> None:
        if self.plan.check_base:
            if not self.done(0):
                self.stage(0)
            if self.main:
                results.write_summary(self.dir)
                self.compare_base(strict=True)
            return
        summary = None
        finished_stages(self.dir)  # a stage missing before finished ones: refused, not retrained under them
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
                print(f"[{self.plan.run_id}] done: ACC {summary['acc']:.3f}  BWT {_fmt(summary['bwt'])}  "
                      f"forgetting {_fmt(summary['forgetting'])}  probe delta {_fmt(summary['probe_delta'])}  -> {self.dir}")

    def compare_base(self, strict: bool = False) -> None:
        """Row 0 beside the published base row of this model, if any: a warning per column out of tolerance;
        strict (--check-base) prints every column and fails when any is out."""
        publication = reference.for_model(self.plan.model)
        if publication is None:
            return
        scores = storage.read_json(self.stage_dir(0).scores)["scores"]
        checks = reference.compare(publication, scores, self.plan.record()["protocol"])
        out = [c for c in checks if not c.ok]
        if not strict:
            for c in out:
                log.warning("base row differs from the published one: %s; check the evaluation protocol", c.line())
            return
        if not checks:  # a pass that compared nothing would read as a protocol confirmed
            raise reference.BaseDriftError(f"no column of this run has a published base value ({publication.title} publishes "
                                           f"{', '.join(publication.base)}): add them with --tasks or --probes")
        print(f"[{self.plan.run_id}] base row vs {publication.title}:\n{reference.table(checks)}", flush=True)
        if out:
            raise reference.BaseDriftError(f"{len(out)} of {len(checks)} base-row column(s) differ from the published ones by more than "
                                           f"{publication.tolerance:g} points: {', '.join(c.column for c in out)}")
        print(f"[{self.plan.run_id}] all {len(checks)} compared columns are within {publication.tolerance:g} points of the published base row", flush=True)

    def publish(self) -> dict | None:
        """Rewrite the summary files from the finished stages and log what MLflow lacks."""
        summary = results.write_summary(self.dir)
        if self.tracking_ok:  # after one failure the store is left alone: one warning, not one stall per stage
            self.tracking_ok = tracking.sync(self.dir, self.plan.tracking_uri)
        return summary

    def stage(self, k: int) -> None:
        sdir = self.stage_dir(k)
        faults.stage = k
        plan, rows = self.plan, self.plan.rows
        name = plan.methods[k - 1] if k else "base"
        card = self.cards[k - 1] if k else None
        seconds, record = {}, {"stage": k, "method": name, "task": card.name if card else None}
        if k:
            method = METHODS[name]
            stage = Stage(
                index=k,
                method=name,
                card=card,
                rows=rows[card.name],
                earlier_rows={c.name: rows[c.name] for c in self.cards[: k - 1]},
                start_model=Path(self.model_dir(k - 1)) if k > 1 else plan.source,
                initial_model=plan.source,
                work_dir=sdir.trainer,
                options=plan.options[k - 1],
                seed=plan.seed,
            )
            if method.has_before_stage():
                start = time.time()
                env = StageEnv(sdir.path, self.main, lambda what: self.say(k, what), self.evaluate_teacher, plan.teacher_warn)
                record.update(method.before_stage(stage, split_options(stage.options, method)[1], env))
                seconds[method.before_stage_seconds] = round(time.time() - start, 2)
                self.state.wait_for_everyone()
        model_dir = sdir.model
        if k == 0:
            if not self.main:
                return
            cached = self.cache_dir
            if cached.done() and not plan.pass_k:
                problem = self.unusable_cache(cached)
                if problem:
                    log.warning("the cached base row %s is unusable (%s): evaluating the base model again", cached.path, problem)
                    shutil.rmtree(cached.path, ignore_errors=True)
            if cached.done() and not plan.pass_k:  # the cached row has no pass@k
                self.say(0, f"base model already evaluated with these settings: reusing {cached.path}")
                shutil.copytree(cached.eval, sdir.eval, dirs_exist_ok=True)
                storage.write_bytes(sdir.scores, cached.scores.read_bytes())
                return
            self.say(0, "evaluating the base model")
            model, tokenizer = load_model(plan.source)
        elif model_dir.exists():
            if not self.main:
                return
            self.say(k, f"{name} on {card.name}: checkpoint found, evaluating it")
            model, tokenizer = load_model(model_dir)
        else:
            self.say(k, f"{name} on {card.name}: training")
            start = time.time()
            if plan.eval_every:
                stage.callbacks.append(self.curve_callback(k, card))
            result = train(method, stage)
            seconds["train"] = round(time.time() - start + result.usage.get("seconds_before_resume", 0.0), 2)
            if not self.main:
                return
            model, tokenizer = result.model, result.tokenizer
            seconds["generation"] = round(result.usage["generation_seconds"], 2)
            storage.write_json(sdir.train_log, {"history": result.history, "seconds": seconds["train"], "usage": result.usage})
            start = time.time()
            try:
                storage.write_dir(model_dir, lambda d: (model.save_pretrained(d), tokenizer.save_pretrained(d)))
            except SafetensorError as e:  # its write errors (a full disk) are not OSErrors
                raise HarnessError(f"cannot save stage {k}'s model in {model_dir}: {first_line(e, 300)}; its trainer "
                                   f"checkpoints are kept (stages/{k}/trainer/ with save_steps): free space and rerun to resume") from None
            seconds["save"] = round(time.time() - start, 2)
            shutil.rmtree(sdir.trainer, ignore_errors=True)  # its checkpoints (weights and optimizer state) are spent
        self.say(k, "evaluating tasks and probes")
        start = time.time()
        model.eval()
        record["scores"] = self.evaluator.run(model, tokenizer, sdir.eval, model_path=self.model_dir(k))
        seconds["eval"] = round(time.time() - start, 2)
        if plan.pass_k:
            start = time.time()
            record["pass_k"] = pass_at_k_scores(model, tokenizer, self.cards, list(plan.pass_k), plan.eval, plan.data_dir, sdir.pass_k,
                                                temperature=plan.pass_temperature)
            seconds["pass_k"] = round(time.time() - start, 2)
        record["seconds"] = {**seconds, **self._earlier_seconds(sdir)}
        faults.point("record")
        storage.write_json(sdir.scores, record)
        if k == 0:  # the cache holds the row every run shares: not this run's pass@k
            shared = {**{key: v for key, v in record.items() if key != "pass_k"}, "seconds": {key: v for key, v in record["seconds"].items() if key != "pass_k"}}
            try:
                storage.write_dir(self.cache_dir.path, lambda d: (shutil.copytree(sdir.eval, StageDir(d).eval), storage.write_json(StageDir(d).scores, shared)))
            except OSError as e:  # only a saving for later runs: the run's own row is written
                log.warning("could not keep the base row for other runs in %s (%s); this run goes on", self.cache_dir.path, e.strerror or e)

    def unusable_cache(self, cached: StageDir) -> str | None:
        """Why a cached base row cannot stand in for this run's (torn, hand-edited, missing columns or samples), or None."""
        try:
            record = storage.read_record(cached.scores, STAGE_RECORD)
        except HarnessError as e:
            return str(e).removeprefix(f"{cached.scores}: ").removesuffix("; move it aside or delete it")
        missing = [c for c in self.evaluator.protocols() if c not in record["scores"]]
        if missing:
            return f"no score for {', '.join(missing)}"
        return None if cached.eval.is_dir() else "its eval/ folder is missing"

    def evaluate_teacher(self, card, source, out_dir: Path) -> float:
        """The task's accuracy for the model at `source` with the demonstration in its prompt (a before-stage hook's tool)."""
        model, tokenizer = load_model(source)
        model.eval()
        scores = self.evaluator.run(model, tokenizer, out_dir, teacher_cards=[card], only_teacher=True, model_path=source)
        return scores[TEACHER_PREFIX + card.name]

    def curve_callback(self, k: int, card):
        """Scores of the stage's task (and the probes, with --eval-every-probes) every N optimizer steps."""
        probes = self.evaluator.probes if self.plan.eval_every_probes else []
        evaluator = Evaluator([card], probes, self.plan.eval, self.plan.data_dir)
        return CurveCallback(evaluator, self.plan.eval_every, self.stage_dir(k).curve, self.main)

    @cached_property
    def cache_dir(self) -> StageDir:
        """Where row 0 is kept for every run with the same model, tasks, probes and evaluation. Keyed once, before the
        row is scored: data edited meanwhile must not file the row scored on the old data under the new data's key."""
        return self.folder.base_cache(base_eval_key(self.plan))

    def _earlier_seconds(self, sdir: StageDir) -> dict:
        """Training time of a stage whose checkpoint an earlier, interrupted invocation saved."""
        log_file = sdir.train_log
        if not log_file.exists():
            return {}
        saved = storage.read_json(log_file)
        return {"train": saved["seconds"], "generation": round(saved["usage"]["generation_seconds"], 2)}


def _file_digest(path: Path, h) -> None:
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)


def _tree_digest(path: Path, h) -> None:
    """A file's bytes, or the name and bytes of every file in a folder (a model, a datasets save_to_disk folder)."""
    if path.is_file():
        _file_digest(path, h)
        return
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        h.update(file.relative_to(path).as_posix().encode())
        _file_digest(file, h)


def base_eval_key(plan: Plan) -> str:
    """Content hash of everything row 0 depends on: model files, cards and their test data,
    probes, evaluation settings, library versions and the harness's own evaluation code."""
    h = hashlib.sha256()
    run = plan.record()
    model = Path(run["model"])
    if model.is_dir():
        _tree_digest(model, h)
    else:
        h.update(json.dumps([run["model"], run.get("model_revision")]).encode())
    for card in [*plan.cards, *(p.card for p in plan.probes if p.card)]:
        h.update(json.dumps(cardfile.read(card.path), sort_keys=True, default=str).encode())
        source = resolve_source(card, "test", run["data_dir"])
        if isinstance(source, Path) and source.exists():  # its content: a folder's path alone kept a stale row when its data changed
            _tree_digest(source, h)
        else:
            h.update(json.dumps(source, sort_keys=True, default=str).encode())
    h.update(json.dumps([run["probes"], run["protocol"], run["eval"], versions()], sort_keys=True).encode())
    for module in ("evaluation", "cardfile", "taskdata", "fields", "scoring"):
        _file_digest(Path(__file__).with_name(f"{module}.py"), h)
    return h.hexdigest()[:20]


def _fmt(value) -> str:
    return "n/a" if value is None else f"{value:+.3f}"
