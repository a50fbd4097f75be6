"""What every method shares: option checking, replay, the one training path, the weight merge.

A method (one class per file, see baselines/contract.py) declares its trainer, config, options
and rows; `train` below loads the stage-start model, builds the rows (with replayed rows of
earlier tasks when asked), runs the TRL trainer, and interpolates the weights back towards the
stage start when `merge_alpha` < 1. Options are the TRL config's own fields plus the harness
options declared here and by the method; anything else is an error.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import random
import shutil
import time
from pathlib import Path

import torch
from safetensors import SafetensorError

from baselines.contract import Method, Option, Stage, TrainResult
from harness import faults, storage
from harness.errors import HarnessError, Terminated, did_you_mean, first_line
from harness.templates import template_fields

# Harness options every method accepts.
COMMON_OPTIONS = {
    "lora": Option(None, kind=dict, help="a peft.LoraConfig mapping (r, lora_alpha, target_modules, ...) to train adapters"),
    "save_steps": Option(0, kind=int, low=0, help=">0: keep trainer checkpoints every N steps so a killed stage resumes mid-way"),
    "merge_alpha": Option(1.0, kind=float, low=0.0, high=1.0,
                          help="WiSE-FT: after the stage, alpha * trained + (1 - alpha) * stage-start weights; 1.0 = off"),
}
# Methods whose rows come from demonstrations can mix in earlier tasks' rows.
REPLAY_OPTION = {"replay": Option(0.0, kind=float, low=0.0, high=1.0, high_open=True,
                                  help="this fraction of each stage's rows drawn, seeded, from earlier tasks' train rows")}


def harness_options(method: Method) -> dict[str, Option]:
    return {**COMMON_OPTIONS, **(REPLAY_OPTION if method.replay else {}), **method.options}


def option_names(method: Method) -> set[str]:
    """Every option a method accepts: its TRL config's fields and the harness's."""
    return {f.name for f in dataclasses.fields(method.config_class())} | set(harness_options(method))


def split_options(options: dict, method: Method, name: str | None = None) -> tuple[dict, dict]:
    """Separate TRL config fields from harness options; unknown keys, wrong types and bad choices fail clearly."""
    name = name or method.name
    config_fields = {f.name for f in dataclasses.fields(method.config_class())}
    known = harness_options(method)
    trl, ours = {}, {key: option.default for key, option in known.items()}
    for key, value in options.items():
        where = OWNED.get(key) or method.owned.get(key)
        if where:
            raise HarnessError(f"option {key!r} for method {name!r} is the harness's to set: {where}")
        if isinstance(value, float) and not math.isfinite(value):
            # NaN slips past every bound check (each comparison is false) and then breaks run.json.
            raise HarnessError(f"option {key}={value!r} for method {name!r}: expected a finite number")
        if key in known:
            known[key].check(key, value, name)
            ours[key] = value
        elif key in config_fields:
            trl[key] = value
        else:
            raise HarnessError(f"unknown option {key!r} for method {name!r}{did_you_mean(key, [*config_fields, *known])}")
    fields = {f.name: f for f in dataclasses.fields(method.config_class())}
    for key, value in trl.items():
        _check_type(key, value, fields[key], name)
        _check_range(key, value, name)
        if key in method.templates:  # TRL formats it mid-run, after the base evaluation
            template_fields(value, method.templates[key], f"option {key}={value!r} for method {name!r}")
    if ours["lora"]:
        peft_config(ours, name)  # peft installed and the mapping valid, before any work
    return trl, ours


def _check_type(key: str, value, field: dataclasses.Field, method: str) -> None:
    """TRL's configs do not check types; a string where a number belongs would only fail mid-training. The kind is the
    default's, or for a field that defaults to None (e.g. `bool | None`) its annotation's."""
    annotation = str(field.type).replace(" ", "")
    if field.default is not None:
        kind = type(field.default).__name__
    elif value is None:
        return
    else:
        kinds = set(annotation.split("|")) - {"None"}
        kind = "dict" if any(k.startswith("dict") for k in kinds) else kinds.pop() if len(kinds) == 1 else None
    if kind == "bool":
        ok, expected = isinstance(value, bool), "true or false"
    elif kind == "int" and annotation in ("<class'int'>", "int", "int|None"):
        # A field that is an int (max_steps, num_generations) and not a float that defaults to one (save_steps, whose
        # fraction TRL reads as a ratio): 2.5 steps passed the number check and crashed in range() after the base eval.
        ok, expected = isinstance(value, int) and not isinstance(value, bool), "an integer"
    elif kind in ("int", "float"):
        ok, expected = isinstance(value, int | float) and not isinstance(value, bool), "a number"
    elif kind == "dict":  # transformers reads a string that starts with { as JSON
        ok, expected = isinstance(value, dict) or str(value).lstrip().startswith("{"), "a mapping, e.g. '{key: value}'"
    elif kind == "str" and isinstance(value, dict | list):  # YAML reads an unquoted {x} as a mapping, [x] as a list
        ok, expected = False, "a string (quote it: YAML reads {x} as a mapping and [x] as a list)"
    else:
        return
    if not ok:
        raise HarnessError(f"option {key}={value!r} for method {method!r}: expected {expected}")


# TRL config fields every stage gets from the run, and where a user sets them instead.
SEED_HINT = "the run's seed (`harness run --seed`, a sweep's `seeds`)"
OWNED = {"output_dir": "each stage trains in its run's folder (`harness run --output`, `harness sweep --out`)", "seed": SEED_HINT,
         "data_seed": SEED_HINT}
# Options whose nonsense values TRL, torch or lm-eval accept silently or reject only mid-run.
POSITIVE = ("per_device_train_batch_size", "per_device_eval_batch_size", "gradient_accumulation_steps", "learning_rate",
            "num_train_epochs", "num_generations", "generation_batch_size", "max_completion_length", "max_length",
            "max_prompt_length", "logging_steps", "temperature",  # temperature: the methods sample; 0 crashes generate()
            "max_reprompt_len")  # SDPO keeps a teacher prompt's last N tokens: 0 would keep all of it, -5 drop its first 5
NON_NEGATIVE = ("weight_decay", "warmup_steps", "warmup_ratio", "max_grad_norm")


def _check_range(key: str, value, method: str) -> None:
    if value is None or isinstance(value, bool) or not isinstance(value, int | float):
        return
    if key == "max_steps" and not (value == -1 or value > 0):
        problem = "expected a number of steps > 0, or -1 (TRL: train num_train_epochs instead)"
    elif key in POSITIVE and not value > 0:
        problem = "expected a value > 0"
    elif key in NON_NEGATIVE and not value >= 0:
        problem = "expected a value >= 0"
    else:
        return
    raise HarnessError(f"option {key}={value!r} for method {method!r}: {problem}")


def configure(method: Method, options: dict, card, work_dir: Path, seed: int):
    """The TRL config and harness options of a stage; raises HarnessError on any bad option."""
    name = method.name
    trl, ours = split_options(options, method, name)
    method.check(ours, card)
    settings = {
        "output_dir": str(work_dir),
        "seed": seed,
        "data_seed": seed,
        "report_to": [],
        "save_strategy": "steps" if ours["save_steps"] else "no",
        "save_steps": ours["save_steps"] or 500,
        "save_total_limit": 1,
        "use_cpu": not torch.cuda.is_available(),
        "bf16": torch.cuda.is_available(),
        "dataloader_num_workers": 0,
        "disable_tqdm": False,  # the progress bar, even though library logging is quiet
        **method.trl_defaults(ours, card),
        **trl,
    }
    try:
        return method.config_class()(**settings), ours
    except (TypeError, ValueError) as e:
        raise HarnessError(f"invalid options for method {name!r}: {e}") from None


RETRAIN = " (if it is a finished stage's model, delete that stage's folder, stages/<k>, and the later stages', and rerun to train them again)"


def load_model(path: Path | str):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    dtype = torch.bfloat16 if torch.cuda.is_available() else torch.float32
    if Path(path).is_absolute() and not Path(path).exists():  # (a relative name may be a hub id) a stage's model deleted
        raise HarnessError(f"cannot load the model in {path}: the folder is missing{RETRAIN}")
    try:
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
        tokenizer = AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError, SafetensorError) as e:  # a stage's saved model damaged since it was written, a model gone from its folder
        raise HarnessError(f"cannot load the model in {path} ({first_line(e)}){RETRAIN}") from None
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer


def peft_config(ours: dict, method: str = ""):
    """The stage's LoRA adapter config, or None; a missing peft or a bad mapping is a one-line error."""
    lora = ours["lora"]
    if not lora:
        return None
    if not isinstance(lora, dict):
        raise HarnessError(f"option lora={lora!r} for method {method!r}: expected a mapping, e.g. lora='{{r: 8, lora_alpha: 16}}'")
    try:
        from peft import LoraConfig
    except ImportError:
        raise HarnessError("option lora needs the peft package: pip install 'cl-harness[peft]' (make setup installs it)") from None
    rank = lora.get("r", 8)  # peft's default; a fraction only fails deep in torch
    if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
        raise HarnessError(f"option lora for method {method!r}: r={rank!r}: expected a positive integer")
    try:
        return LoraConfig(**{"task_type": "CAUSAL_LM", **lora})
    except (TypeError, ValueError) as e:
        raise HarnessError(f"option lora for method {method!r}: {first_line(e)}") from None


def check_adapter(model: str, lora: dict, where: str) -> None:
    """peft's own check of a LoRA adapter against the model's architecture, built on the meta device (no weights, no
    memory), so that a bad `r` or a target module the model lacks fails before any work, not when its stage starts."""
    from peft import get_peft_model
    from transformers import AutoConfig, AutoModelForCausalLM

    config = peft_config({"lora": lora}, where)
    try:
        architecture = AutoConfig.from_pretrained(model)
    except (OSError, ValueError):
        return  # a hub id unreachable now: the stage that loads it says why
    try:
        with torch.device("meta"):
            get_peft_model(AutoModelForCausalLM.from_config(architecture), config)
    except (TypeError, ValueError, RuntimeError) as e:
        raise HarnessError(f"{where}: option lora={lora!r}: {first_line(e)}") from None


def _train_failpoint():
    """Lets the fault-injection test kill a run mid-training, once a trainer checkpoint exists."""
    from transformers import TrainerCallback

    class TrainFailpoint(TrainerCallback):
        def on_save(self, args, state, control, **kwargs):
            faults.point("train")

    return TrainFailpoint()


def _save_on_sigterm():
    """While a stage trains in a single process, SIGTERM (a cluster's wall-time limit or a preemption, which leaves
    seconds before SIGKILL) saves a trainer checkpoint after the current step and stops: the rerun resumes there
    instead of at the last save_steps checkpoint, or at the stage's start. A callback, and the context that holds
    the signal handler while training runs."""
    import signal
    import threading

    from accelerate import PartialState
    from transformers import TrainerCallback

    class SaveOnSigterm(TrainerCallback):
        signalled, stopped_at, previous = False, None, None

        def on_step_end(self, args, state, control, **kwargs):
            if self.signalled:
                control.should_save = control.should_training_stop = True

        def on_save(self, args, state, control, **kwargs):
            if self.signalled:
                self.stopped_at = state.global_step

        def on_sigterm(self, signum, frame):
            self.signalled = True
            logging.getLogger("harness").warning("SIGTERM: saving a checkpoint after this step, then stopping")

        def __enter__(self):
            # ranks of a multi-process run would stop at different steps and wait on each other's checkpoint
            if threading.current_thread() is threading.main_thread() and PartialState().num_processes == 1:
                self.previous = signal.signal(signal.SIGTERM, self.on_sigterm)
            return self

        def __exit__(self, *exc):
            if self.previous is not None:
                signal.signal(signal.SIGTERM, self.previous)

    return SaveOnSigterm()


def _training_bar():
    """Transformers' training progress bar without the dict it prints at every logging step (train_log.json
    and MLflow keep those): the latest loss rides on the bar. close() ends its line if training is interrupted."""
    from tqdm.auto import tqdm
    from transformers.trainer_callback import ProgressCallback

    class TrainingBar(ProgressCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            if state.is_world_process_zero:
                self.training_bar = tqdm(total=state.max_steps, dynamic_ncols=True, desc="training")
            self.current_step = 0

        def on_log(self, args, state, control, logs=None, **kwargs):
            if self.training_bar is not None and isinstance((logs or {}).get("loss"), (int, float)):
                self.training_bar.set_postfix(loss=f"{logs['loss']:.4g}")

        def close(self):
            if self.training_bar is not None:
                self.training_bar.close()
                self.training_bar = None

    return TrainingBar()


def _meter(trainer) -> dict:
    """Count what a stage costs: time spent generating rollouts, tokens generated, and the prompt and completion
    tokens trained on. The hooks are TRL's private methods: if TRL moves them this fails loudly, never reads 0.

    Token counts add up as tensors, read once after training, so counting never forces a GPU sync mid-step.
    """
    usage = {"generation_seconds": 0.0, "generated_tokens": 0, "trained_tokens": 0, "prompt_tokens": 0}
    if _on_policy(trainer):
        if not callable(getattr(trainer, "_generate", None)):
            raise RuntimeError(f"{type(trainer).__name__} has no _generate method: TRL moved the hook the harness times "
                               f"generation with; update baselines.common._meter for this TRL version")
        generate = trainer._generate

        def timed_generate(prompt_ids):
            start = time.perf_counter()
            out = generate(prompt_ids)
            usage["generation_seconds"] += time.perf_counter() - start
            usage["generated_tokens"] += sum(len(c) for c in out[1])
            return out

        trainer._generate = timed_generate
    compute_loss = trainer.compute_loss

    def counted_loss(model, inputs, *args, **kwargs):
        # Completion tokens are what the loss trains on; prompt tokens are counted apart (SFT: the rest of the row).
        if "completion_mask" in inputs:
            completion = inputs["completion_mask"].sum()
            prompt = inputs["prompt_mask"].sum() if "prompt_mask" in inputs else inputs["attention_mask"].sum() - completion
        else:
            completion, prompt = inputs["attention_mask"].sum(), 0
        usage["trained_tokens"] = usage["trained_tokens"] + completion
        usage["prompt_tokens"] = usage["prompt_tokens"] + prompt
        return compute_loss(model, inputs, *args, **kwargs)

    trainer.compute_loss = counted_loss
    return usage


USAGE_FILE = "harness_usage.json"  # in each trainer checkpoint: what the stage cost up to it
COUNTS = ("generation_seconds", "generated_tokens", "trained_tokens", "prompt_tokens")


def _keep_usage(trainer, usage: dict, last: Path | None) -> None:
    """Each checkpoint records the stage's costs so far, and a resumed stage starts from the ones its checkpoint
    recorded, so train_log.json counts the whole stage, not only the part after a kill. Its training seconds
    before the kill go in `seconds_before_resume` (the runner adds them to the seconds it timed). The costs are
    written before the trainer saves: a checkpoint is whole (trainer_state.json) with them, never without."""
    saved = _saved_usage(last) if last else None
    if saved:
        for k in COUNTS:
            usage[k] = usage[k] + saved[k]
        usage["seconds_before_resume"] = saved["seconds"]
    elif last:  # a checkpoint from before this file, or a damaged one: the counts start at the resume
        logging.getLogger("harness").warning("%s has no readable %s: the stage's token counts and seconds start at the resume", last, USAGE_FILE)
    began = time.perf_counter() - usage.get("seconds_before_resume", 0.0)
    if not callable(getattr(trainer, "_save_checkpoint", None)):
        raise RuntimeError(f"{type(trainer).__name__} has no _save_checkpoint method: transformers moved the hook the harness records "
                           f"a checkpoint's costs with; update baselines.common._keep_usage for this version")
    save = trainer._save_checkpoint

    def save_with_usage(*args, **kwargs):
        if trainer.is_world_process_zero():
            counts = {k: float(usage[k]) if k == "generation_seconds" else int(usage[k]) for k in COUNTS}
            folder = Path(trainer.args.output_dir) / f"checkpoint-{trainer.state.global_step}"
            storage.write_json(folder / USAGE_FILE, {**counts, "seconds": round(time.perf_counter() - began, 2)})
        return save(*args, **kwargs)

    trainer._save_checkpoint = save_with_usage


def _saved_usage(checkpoint: Path) -> dict | None:
    """The costs a checkpoint recorded, or None if its file is missing or holds anything but plausible figures."""
    try:
        saved = storage.read_json(checkpoint / USAGE_FILE)
    except (OSError, HarnessError):
        return None

    def figure(value, whole: bool) -> bool:
        if isinstance(value, bool) or not isinstance(value, int | float) or (whole and not isinstance(value, int)):
            return False
        return math.isfinite(value) and 0 <= value < 2**53

    ok = isinstance(saved, dict) and all(figure(saved.get(k), k not in ("generation_seconds", "seconds")) for k in (*COUNTS, "seconds"))
    return saved if ok else None


ON_POLICY = ("SDFTTrainer", "SDPOTrainer")  # the trainers that sample rollouts through `_generate`


def _on_policy(trainer) -> bool:
    return any(c.__name__ in ON_POLICY for c in type(trainer).__mro__)


def run(trainer, stage: Stage) -> TrainResult:
    """Train, resuming from the stage's latest trainer checkpoint if a killed run left one."""
    from transformers.trainer_callback import ProgressCallback

    usage = _meter(trainer)
    last = last_checkpoint(stage.work_dir)
    state = check_checkpoint(last) if last else {}
    if last:  # the checkpoint goes once the stage's model is saved: train_log.json keeps where it resumed
        usage["resumed_from_step"] = state.get("global_step", 0)
        logging.getLogger("harness").info("resuming the stage from its checkpoint at step %s", usage["resumed_from_step"])
    _keep_usage(trainer, usage, last)
    trainer.add_callback(_train_failpoint())
    for callback in stage.callbacks:
        trainer.add_callback(callback)
    bar = _training_bar()
    trainer.remove_callback(ProgressCallback)
    trainer.add_callback(bar)
    sigterm = _save_on_sigterm()
    trainer.add_callback(sigterm)
    try:
        if last and 0 < trainer.args.max_steps <= state.get("global_step", 0):
            # Killed after its final checkpoint: resuming would train past max_steps, so load it instead.
            trainer._load_from_checkpoint(str(last))
            trainer.state.log_history, trainer.state.global_step = state.get("log_history", []), state["global_step"]
        else:
            with sigterm:
                try:
                    trainer.train(resume_from_checkpoint=str(last) if last else None)
                except SafetensorError as e:  # a save_steps checkpoint's write failed (a full disk): not an OSError
                    raise HarnessError(f"stage {stage.index} ({stage.method} on {stage.card.name}): cannot save a trainer "
                                       f"checkpoint in {stage.work_dir}: {first_line(e, 300)}; free space and rerun to resume") from None
    finally:  # Ctrl-C or an error mid-stage: end the bar's line so the message after it starts on its own
        bar.close()
    if sigterm.stopped_at is not None:  # (a signal after the last step lets the stage finish: it has no checkpoint to resume)
        raise Terminated(f"stopped by SIGTERM at step {sigterm.stopped_at} of stage {stage.index} ({stage.method} on "
                         f"{stage.card.name}), checkpoint saved in {stage.work_dir}: rerun the same command to resume")
    if trainer.state.global_step == 0:  # else the stage would pass for trained, its scores the stage start's
        args = trainer.args
        raise HarnessError(f"stage {stage.index} ({stage.method} on {stage.card.name}) made no optimizer step: its {len(stage.rows)} rows "
                           f"fill no batch of per_device_train_batch_size {args.per_device_train_batch_size} x gradient_accumulation_steps "
                           f"{args.gradient_accumulation_steps} x {args.world_size} process(es); lower gradient_accumulation_steps or give more rows")
    model = trainer.accelerator.unwrap_model(trainer.model)
    if hasattr(model, "merge_and_unload"):  # LoRA: the next stage starts from merged weights
        model = model.merge_and_unload()
    usage["trained_tokens"], usage["prompt_tokens"] = int(usage["trained_tokens"]), int(usage["prompt_tokens"])
    return TrainResult(model, trainer.processing_class, list(trainer.state.log_history), usage)


def last_checkpoint(work_dir: Path) -> Path | None:
    """The newest trainer checkpoint that was saved whole (its trainer_state.json is written last); newer
    ones a kill cut short are removed, so neither this resume nor the trainer's rotation trips on them."""
    found = sorted((p for p in work_dir.glob("checkpoint-*") if p.is_dir() and p.name.split("-")[-1].isdigit()),
                   key=lambda p: int(p.name.split("-")[-1])) if work_dir.is_dir() else []
    while found and not (found[-1] / "trainer_state.json").is_file():
        shutil.rmtree(found.pop())
    return found[-1] if found else None


def check_checkpoint(checkpoint: Path) -> dict:
    """Its trainer_state.json, once the checkpoint is known whole, as one to resume from must be: its state reads, its weights are complete, and the optimizer and
    scheduler state is there and complete (without it the trainer resumes silently from fresh state, another run)."""
    import zipfile

    def damaged(why: str) -> HarnessError:
        return HarnessError(f"{checkpoint}: damaged checkpoint ({why}); delete it to resume from the one before it, or "
                            f"from the stage's start if it is the only one")

    try:
        state = storage.read_json(checkpoint / "trainer_state.json")
    except (HarnessError, OSError) as e:
        raise damaged(f"trainer_state.json: {first_line(e, 160)}") from None
    if not isinstance(state, dict) or isinstance(state.get("global_step"), bool) or not isinstance(state.get("global_step"), int):
        raise damaged("trainer_state.json holds no integer global_step")
    if not any(any(checkpoint.glob(pattern)) for pattern in ("*.safetensors", "pytorch_model*", "model*")):  # (not training_args.bin)
        raise damaged("no weights")
    for kind in ("optimizer", "scheduler"):  # (sharded or per-process states are named optimizer_0/, ... : any counts)
        if not any(checkpoint.glob(f"{kind}*")):
            raise damaged(f"no {kind} state")
    for file in sorted(checkpoint.glob("*.safetensors")):
        problem = storage.weights_problem(file)
        if problem:
            raise damaged(f"{file.name}: {problem}")
    for file in sorted([*checkpoint.glob("*.pt"), *checkpoint.glob("*.pth")]):
        if not zipfile.is_zipfile(file):  # torch.save writes a zip archive; a cut one has no directory at its end
            raise damaged(f"{file.name} is not a whole torch file")
    return state


def replay_rows(stage: Stage, fraction: float) -> list[dict]:
    """Rows drawn from earlier tasks' train rows so that they make up `fraction` of the stage's rows.

    Seeded by the run's seed and the stage index: the same run draws the same rows, and a resumed
    stage trains on what it started with. Without replacement while the pool lasts.
    """
    pool = [row for rows in stage.earlier_rows.values() for row in rows]
    if not fraction or not pool:
        return []
    count = round(len(stage.rows) * fraction / (1 - fraction))
    rng = random.Random(f"replay:{stage.seed}:{stage.index}")
    if count <= len(pool):
        return rng.sample(pool, count)
    return [pool[rng.randrange(len(pool))] for _ in range(count)]


@torch.no_grad()
def interpolate(model, start_state: dict, alpha: float) -> None:
    """WiSE-FT (Wortsman et al. 2022) in place: alpha * trained + (1 - alpha) * stage start, every floating tensor."""
    seen = set()
    for name, tensor in model.state_dict().items():
        if tensor.data_ptr() in seen:  # tied weights (embeddings and LM head) share one tensor: merge it once
            continue
        seen.add(tensor.data_ptr())
        if tensor.is_floating_point() and name in start_state:
            tensor.copy_(alpha * tensor + (1 - alpha) * start_state[name].to(tensor.device, tensor.dtype))


def train(method: Method, stage: Stage) -> TrainResult:
    """The one training path every method shares."""
    from datasets import Dataset

    config, ours = configure(method, stage.options, stage.card, stage.work_dir, stage.seed)
    model, tokenizer = load_model(stage.start_model)
    method.prepare_model(model, stage, ours)
    replayed = replay_rows(stage, ours.get("replay", 0.0))
    trainer = method.trainer_class()(
        model=model,
        args=config,
        train_dataset=Dataset.from_list(method.build_rows(stage.rows + replayed, ours, stage, model, tokenizer, config)),
        processing_class=tokenizer,
        peft_config=peft_config(ours),
        **method.trainer_kwargs(stage, ours),
    )
    _check_kept(trainer, len(stage.rows) + len(replayed), stage)
    result = method.after_stage(stage, ours, run(trainer, stage))
    result.usage["replayed_rows"] = len(replayed)
    if ours["merge_alpha"] < 1.0:
        start, _ = load_model(stage.start_model)
        interpolate(result.model, start.state_dict(), ours["merge_alpha"])
    return result


def _check_kept(trainer, given: int, stage: Stage) -> None:
    """TRL drops the rows whose completion max_length cuts away entirely: say so, and stop if none is left."""
    kept = len(trainer.train_dataset)
    if kept == given:
        return
    limit = f"max_length {getattr(trainer.args, 'max_length', None)}"
    if not kept:
        raise HarnessError(f"stage {stage.index} ({stage.method} on {stage.card.name}): none of its {given} rows fits {limit} "
                           "(the prompt fills it, leaving no completion to learn): raise max_length, or shorten the prompts")
    logging.getLogger("harness").warning("stage %d (%s on %s): %d of %d rows dropped: their prompts fill %s", stage.index, stage.method,
                                         stage.card.name, given - kept, given, limit)


def teacher_source(model, path: os.PathLike) -> None:
    """Point TRL's teacher at `path`: SDFT/SDPO rebuild the teacher from the model's name_or_path."""
    model.config._name_or_path = str(path)


def scorer_reward(scorer_name: str):
    """The card's scorer as a TRL reward function; rows carry the reference as JSON in `reference`."""
    from harness.taskdata import get_scorer

    scorer = get_scorer(scorer_name)

    def reward(prompts, completions, reference, **_):
        texts = [c[-1]["content"] if isinstance(c, list) else c for c in completions]
        return [scorer(t, json.loads(ref)) for t, ref in zip(texts, reference, strict=True)]

    reward.__name__ = f"{scorer_name}_reward"
    return reward
