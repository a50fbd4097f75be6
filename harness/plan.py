"""What a run will do, checked and resolved before any work: the request (the command line's arguments)
becomes a typed `Plan`, or a one-line error.

Every option, card, data file, model folder and probe is checked here, so a mistake ends the
command before any training. The plan's `record()` is what run.json holds: a rerun with the same
record resumes the folder's run.
"""

from __future__ import annotations

import functools
import math
import tempfile
from dataclasses import asdict, dataclass, field, replace
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from baselines import METHODS
from baselines.common import OWNED, check_adapter, configure, option_names, split_options
from harness import hub, storage, tracking
from harness.config import ALIASES, check_one_name, load_overrides, load_preset, method_options, presets
from harness.errors import HarnessError, first_line, unknown
from harness.evaluation import DEFAULT_MAX_LENGTH, EvalSettings, builtin_task_names, longest_prompt, vllm_available
from harness.protocol import Protocol
from harness.registry import Probe, TaskCard, load_suite
from harness.rundir import RESULTS_DIR
from harness.taskdata import check_data_folder, load_rows
from harness.templates import template_fields

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
    pass_temperature: float | None = None  # ... sampled at this temperature, not the cards'


@dataclass(frozen=True)
class Plan:
    """A resolved run: what run.json records (`record()`), and the objects its stages use."""

    run_id: str
    folder: Path  # the run folder (harness.rundir)
    suite: str
    preset: str
    cards: tuple[TaskCard, ...]  # the tasks, in sequence order
    methods: tuple[str, ...]  # one per stage
    model: str  # as run.json names it: a folder's absolute path, or a hub id
    source: str  # the folder every load reads: the model's, or a hub model's cache snapshot at model_revision
    probes: tuple[Probe, ...]
    seed: int
    options: tuple[dict, ...]  # each stage's options, from the preset and the overrides
    eval: EvalSettings  # with the suite's settings filled in and the backend available here
    data_dir: str | None
    rows: dict[str, list[dict]] = field(repr=False)  # each task's train rows (none for --check-base)
    tracking_uri: str | None = None
    teacher_warn: float = TEACHER_WARN
    check_base: bool = False
    eval_every: int = 0  # >0: score the stage's task every N optimizer steps
    eval_every_probes: bool = False
    pass_k: tuple[int, ...] = ()
    pass_temperature: float | None = None
    notes: tuple[str, ...] = ()  # what the user should hear before it starts (the caller prints them, once for many seeds)
    model_revision: str | None = None  # a hub model's commit
    model_pinned: bool = False  # ... as --model named it (`org/name@<commit>`), not a branch's or tag's, which may move

    @property
    def tasks(self) -> list[str]:
        return [card.name for card in self.cards]

    @property
    def protocols(self) -> dict[str, Protocol]:
        """Each column's evaluation protocol: the tasks', then the probes'."""
        return {**{c.name: c.protocol for c in self.cards}, **{p.name: p.protocol for p in self.probes}}

    def record(self) -> dict:
        """run.json, less the library versions: equal records mean the same run (a rerun resumes it)."""
        run = {
            "run_id": self.run_id,
            "suite": self.suite,
            "tasks": self.tasks,
            "methods": list(self.methods),
            "model": self.model,
            "probes": [{"name": p.name, "task": p.task} for p in self.probes],
            "protocol": {column: protocol.as_dict() for column, protocol in self.protocols.items()},
            "seed": self.seed,
            "preset": self.preset,
            "options": list(self.options),
            "eval": asdict(self.eval),
            "data_dir": self.data_dir,
        }
        if self.check_base:  # recorded only when set, as below: a folder of row 0 alone, no run to compare
            run["check_base"] = True
        if self.model_revision:  # recorded only for a hub model, so run folders of local models from before still resume
            run["model_revision"] = self.model_revision
        if self.eval_every:  # recorded only when used, so run folders from before these options still resume
            run["curves"] = {"every": self.eval_every, "probes": self.eval_every_probes}
        if self.pass_k:
            run["pass_k"] = list(self.pass_k)
        if self.pass_temperature is not None:
            run["pass_temperature"] = self.pass_temperature
        return run


def versions() -> dict:
    out = {}
    for package in ("torch", "transformers", "trl", "lm_eval", "datasets", "mlflow", "accelerate"):
        try:
            out[package] = version(package)
        except PackageNotFoundError:
            out[package] = None
    return out


def resolve(request: RunRequest, weights: bool = True) -> Plan:
    """Check everything that can be checked before any training; return the plan. `weights=False`: a hub model's
    weights are neither downloaded nor checked (a sweep's checks on a head node that trains nothing)."""
    suite = load_suite(request.suite)
    check_data_folder(request.data_dir)
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
    names = [p.name for p in probes]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise HarnessError(f"--probes names {', '.join(twice)} twice (by its task or its lm-eval name); each probe may appear once")
    clash = [p.name for p in probes if p.name in tasks]
    if clash:
        raise HarnessError(f"--probes {', '.join(clash)}: a task of this sequence, not a prior capability (its column is there already)")
    unsafe = [p.task for p in probes if p.task in UNSAFE_PROBES]
    if unsafe and not request.eval.confirm_unsafe_code:
        raise HarnessError(f"probe {', '.join(unsafe)} executes model-generated code: pass --confirm-unsafe-code to allow it (or leave it out with --probes)")
    model = request.model or suite.model_path()
    named = f"--model {model}" if request.model else f"{suite.path}: `model: {suite.model}`"
    asked = model.partition("@")[2].strip().lower() if hub_id(model) else ""
    model, revision, source = locate_model(model, named, weights)
    pinned = len(asked) >= 7 and bool(revision) and revision.startswith(asked)  # a commit named, not a branch or tag
    if revision:  # what is wrong lies in its cache snapshot
        named += f" (its files in {source})"
    try:
        config, tokenizer = check_model(source, named, weights or not revision)
    except ModelFilesError as e:
        if not revision:
            raise
        raise HarnessError(f"{e}; its cache copy is incomplete or damaged: fetch it again online "
                           f"(`hf download {model} --revision {revision}`)") from None
    check_probes(probes, suite, "--probes" if request.probes is not None else f"{suite.path}: `probes`")
    preset = load_preset(suite.preset)
    overrides = load_overrides(request.config, request.set)
    accepted = {m: accepted_by(m) for m in set(methods)}
    if request.config:  # a mistake in the file names the file (what --set adds is checked with it below)
        try:
            in_file = load_overrides(request.config, [])
            _check_overrides(in_file, accepted, tasks)
            for m, task in zip(methods, tasks):
                _stage_overrides(in_file, m, task, methods, accepted)
        except HarnessError as e:
            raise HarnessError(f"--config {request.config}: {e}") from None
    _check_overrides(overrides, accepted, tasks)
    notes = []
    unused = sorted(k for k in overrides if k in METHODS and k not in methods)
    if unused:  # valid (one --config can serve many runs), but a --set meant for this run would go silently unheard
        notes.append(f"options for {', '.join(unused)} (--config/--set) unused: this run trains with {', '.join(dict.fromkeys(methods))} only")
    unknown_eval = set(suite.eval) - {f for f in EvalSettings.__dataclass_fields__ if f != "backend"}
    if unknown_eval:
        raise HarnessError(f"{suite.path}: unknown `eval` setting(s) {', '.join(sorted(unknown_eval))}")
    # The suite's evaluation settings fill in what the command line left unset.
    from_suite = {k for k in suite.eval if getattr(request.eval, k) is None}
    settings = replace(request.eval, **{k: suite.eval[k] for k in from_suite})
    backend = settings.backend
    if backend == "vllm" and not vllm_available():
        notes.append("vLLM is not installed (pip install '.[vllm]'): generating and evaluating with the HF backend")
        backend = "hf"
    settings = replace(settings, backend=backend)
    check_eval(settings, suite, from_suite)
    check_context(named, config, settings)
    if not 0 <= request.teacher_warn <= 1:
        raise HarnessError(f"--teacher-warn {request.teacher_warn:g}: expected an accuracy in [0, 1]")
    if not 0 <= request.seed < 2**32:
        raise HarnessError(f"--seed {request.seed}: expected an integer in [0, 2**32 - 1]")
    for m, card in zip(methods, cards):  # a mistake in the preset names the preset
        try:
            split_options(method_options(preset, {}, m, card.name, set(METHODS)), METHODS[m])
        except HarnessError as e:
            raise HarnessError(f"preset {suite.preset} ({presets()[suite.preset]}): {e}") from None
    options, configs = [], []
    for m, card in zip(methods, cards):
        # A flat override applies to the methods that have the option.
        mine = {k: v for k, v in overrides.items() if k in METHODS or k in accepted[m]}
        mine["by_task"] = {card.name: _stage_overrides(overrides, m, card.name, methods, accepted)}
        if backend == "vllm" and "use_vllm" in accepted[m]:
            mine = {"use_vllm": True, **mine}
        options.append(method_options(preset, mine, m, card.name, set(METHODS)))
        configs.append(configure(METHODS[m], options[-1], card, Path(tempfile.gettempdir()) / "harness-check", request.seed)[0])
    for k, (m, card, stage) in enumerate(zip(methods, cards, options), 1):
        if stage.get("lora"):
            check_adapter(source, stage["lora"], f"stage {k} ({m} on {card.name})")
    rows = {} if request.check_base else {card.name: load_rows(card, "train", request.data_dir) for card in cards}
    notes += unwritable(tokenizer, rows)
    if rows:
        notes += train_room(config, tokenizer, methods, cards, options, configs, rows)
    columns = [(card, card.protocol, False) for card in cards] + [(p.card, p.protocol, False) for p in probes if p.card]
    for card, _, _ in columns:
        load_rows(card, "test", request.data_dir)
    if not request.check_base:  # a base check trains nothing, so no stage scores its teacher
        columns += [(card, card.protocol, True) for card, m in zip(cards, methods) if METHODS[m].evaluates_teacher]
    check_generation_room(named, config, tokenizer, columns, settings, request.data_dir)
    label = ["base"] if request.check_base else dict.fromkeys(methods)  # a base check gets its own folder
    if request.output and Path(request.output).exists() and not Path(request.output).is_dir():
        raise HarnessError(f"--output {request.output}: a file is there; give a folder (new or a run's) for the run")
    run_id = request.output and Path(request.output).name or "-".join([suite.name, *label, *tasks, f"seed{request.seed}"])
    if request.pass_temperature is not None:
        if not request.pass_k:
            raise HarnessError("--pass-temperature: it sets how pass@k samples; give --pass-k too (e.g. --pass-k 1,5,10)")
        if not (math.isfinite(request.pass_temperature) and request.pass_temperature > 0):
            raise HarnessError(f"--pass-temperature {request.pass_temperature:g}: expected a finite temperature > 0")
    tracking.check_uri(request.tracking_uri or tracking.default_uri())
    if request.eval_every < 0:
        raise HarnessError(f"--eval-every {request.eval_every}: expected a number of optimizer steps (0 = off)")
    if request.eval_every_probes and not request.eval_every:
        raise HarnessError("--eval-every-probes: it adds the probes to the curves; give --eval-every too (e.g. --eval-every 20)")
    short = [f"{k} ({m} on {card.name}, {stage['max_steps']})" for k, (m, card, stage) in enumerate(zip(methods, cards, options), 1)
             if request.eval_every and 0 < (stage.get("max_steps") or 0) < request.eval_every]
    if short:
        notes.append(f"--eval-every {request.eval_every}: stage(s) {', '.join(short)} train fewer steps, so they draw no curve")
    return Plan(
        run_id=run_id,
        folder=Path(request.output) if request.output else RESULTS_DIR / run_id,
        suite=suite.name,
        preset=suite.preset,
        cards=tuple(cards),
        methods=tuple(methods),
        model=model,
        source=source,
        probes=tuple(probes),
        seed=request.seed,
        options=tuple(options),
        eval=settings,
        data_dir=str(Path(request.data_dir).expanduser().resolve()) if request.data_dir else None,  # one name however typed
        rows=rows,
        tracking_uri=request.tracking_uri,
        teacher_warn=request.teacher_warn,
        check_base=request.check_base,
        eval_every=request.eval_every,
        eval_every_probes=request.eval_every_probes,
        pass_k=tuple(request.pass_k),
        pass_temperature=request.pass_temperature,
        notes=tuple(notes),
        model_revision=revision,
        model_pinned=pinned,
    )


def check_eval(settings: EvalSettings, suite, from_suite=frozenset()) -> None:
    """Evaluation sizes must be positive: lm-eval reads a batch size or limit of 0 as "unset" (64, everything).
    A bad value is named where it was set: its flag, or the suite's `eval` block (`from_suite`)."""
    for name, flag in (("batch_size", "--batch-size"), ("limit", "--limit"), ("max_length", None)):
        value = getattr(settings, name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            where = flag if flag and name not in from_suite else f"{suite.path}: eval.{name}"
            raise HarnessError(f"{where} {value!r}: expected an integer >= 1")


def hub_id(model: str) -> bool:
    """A model named by its hub id (`org/name`, `org/name@rev`), not a local folder."""
    return not (model.startswith((".", "/", "~")) or Path(model).expanduser().exists())


def locate_model(model: str, named: str, weights: bool = True) -> tuple[str, str | None, str]:
    """(the name run.json records, a hub model's commit, the folder every load reads). A folder is named by one path
    however it was typed; a hub model by its id and the commit of its cache snapshot, which holds its files (downloaded
    now if need be): a model pushed to the hub mid-run cannot change the run's weights."""
    if not hub_id(model):
        path = Path(model).expanduser()
        name = folder_name(path) if path.is_dir() else model
        return name, None, name
    from huggingface_hub.errors import LocalEntryNotFoundError

    repo, at, revision = model.partition("@")
    if at and not (repo.strip() and revision.strip()):
        raise HarnessError(f"{named}: give the model's id before the @ and a commit, branch or tag after it (or no @ for the newest)")
    try:
        revision = hub.commit_named(repo, revision.strip())
    except ValueError as e:  # a short commit that begins two
        raise HarnessError(f"{named}: {e}") from None
    hub.reachable()  # offline: the cache only, at once (the libraries would retry for ~30 s)
    try:
        folder = hub.snapshot(repo, revision or None, weights)
    except (OSError, ValueError) as e:
        at_revision = f" at {revision.strip()}" if revision.strip() else ""
        why = first_line(e)
        if isinstance(e, LocalEntryNotFoundError):  # offline; its own words advise HF_HUB_OFFLINE=0
            cached = hub.cached_commits(repo)
            why = "offline, and the local cache " + (f"holds only commit(s) {', '.join(cached)}" if cached else "holds none of its files")
        raise HarnessError(f"{named}: not a local folder, and the Hugging Face hub (or its cache) has no such model{at_revision} "
                           f"({why})") from None
    return repo, folder.name, str(folder)


class ModelFilesError(HarnessError):
    """A model folder's file is missing or does not read: a download or copy cut short, a clone without Git LFS."""


def check_model(model: str, named: str = "", weights: bool = True):
    """The model folder's config and tokenizer, read before any work: it must hold a readable model whose tokenizer
    fits its embeddings and has a chat template (training uses chat prompts)."""
    from transformers import AutoConfig, AutoTokenizer

    named = named or f"--model {model}"  # how errors name it: the flag, or the suite file that chose it
    path = Path(model).expanduser()
    if not (path / "config.json").exists():
        if (path / "adapter_config.json").exists():
            raise HarnessError(f"{named}: a PEFT adapter (adapter_config.json), not a model: merge it into its base model first")
        raise ModelFilesError(f"{named}: not a model folder (no config.json there)")
    try:
        config = AutoConfig.from_pretrained(path)
    except (OSError, ValueError, KeyError) as e:
        raise ModelFilesError(f"{named}: cannot read its config.json ({first_line(e, 160)})") from None
    if weights:
        _check_weights(named, path)
    if not any((path / name).exists() for name in TOKENIZER_FILES):
        raise ModelFilesError(f"{named}: no tokenizer files there ({', '.join(TOKENIZER_FILES)})")
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError) as e:
        raise ModelFilesError(f"{named}: cannot load its tokenizer ({first_line(e, 160)})") from None
    embedded = getattr(config.get_text_config(), "vocab_size", None)
    if embedded and len(tokenizer) > embedded:
        raise HarnessError(f"{named}: its tokenizer has {len(tokenizer)} tokens, but the model embeds {embedded} (vocab_size)")
    if not getattr(tokenizer, "chat_template", None):
        raise HarnessError(f"{named}: its tokenizer has no chat template; the harness trains and evaluates on chat prompts (use an instruct model or set tokenizer.chat_template)")
    return config, tokenizer


def unwritable(tokenizer, rows: dict[str, list[dict]]) -> list[str]:
    """A note per task whose demonstrations hold words the model's vocabulary lacks: a closed vocabulary (the toy
    base's) reads them as its unknown token, so no method can teach the model to write them."""
    if tokenizer.unk_token_id is None:  # byte-level vocabularies spell every word
        return []
    notes = []
    for task, task_rows in rows.items():
        texts = [r["demonstration"] for r in task_rows]
        lacking = [t for t, ids in zip(texts, tokenizer(texts, add_special_tokens=False)["input_ids"]) if tokenizer.unk_token_id in ids]
        if lacking:
            word = next((w for w in lacking[0].split() if tokenizer.unk_token_id in tokenizer(w, add_special_tokens=False)["input_ids"]), lacking[0])
            example = word if len(word) <= 40 else word[:40] + "..."
            notes.append(f"{task}: {len(lacking)} of {len(texts)} demonstrations hold text the model's vocabulary lacks (e.g. {example!r}, "
                         f"read as {tokenizer.unk_token}): no method can teach it to write that")
    return notes


def train_room(config, tokenizer, methods, cards, options, configs, rows: dict[str, list[dict]]) -> list[str]:
    """The stages' train prompts against the lengths TRL cuts them to, before any work: a stage none of whose rows
    fits is an error here, not after the base evaluation; prompts cut or rows dropped are a note (TRL says nothing).
    `configs`: each stage's TRL config."""
    def length(prompt) -> int:
        return len(tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=True, return_dict=True)["input_ids"])

    positions, notes = model_context(config), []
    for k, (m, card, opts) in enumerate(zip(methods, cards, options), 1):
        stage, task_rows = f"stage {k} ({m} on {card.name})", rows[card.name]
        if "max_completion_length" not in opts:  # trained on the demonstrations: TRL drops a row whose prompt fills max_length
            limit = opts.get("max_length")
            dropped = sum(length(r["prompt"]) >= limit for r in task_rows) if limit else 0
            if dropped == len(task_rows):
                raise HarnessError(f"{stage}: none of its {dropped} rows fits max_length {limit} (the prompt fills it, "
                                   "leaving no completion to learn): raise max_length, or shorten the prompts")
            if dropped:
                notes.append(f"{stage}: {dropped} of {len(task_rows)} rows will be dropped: their prompts fill max_length {limit}")
            continue
        cut, completion, trl = opts.get("max_prompt_length"), opts["max_completion_length"], configs[k - 1]
        # (what, its lengths, the cut TRL applies and that option, how a length was counted)
        measured = [("prompt", [length(r["prompt"]) for r in task_rows], cut, "max_prompt_length", "")]
        if m == "sdft":  # its teacher's prompt: the last user message through the teacher template, cut as the student's
            measured.append(("teacher prompt", [length([*r["prompt"][:-1], {"role": "user", "content": trl.teacher_prompt_template.format(
                prompt=r["prompt"][-1]["content"], privileged_context=r["demonstration"])}]) for r in task_rows], cut, "max_prompt_length", ""))
        elif m == "sdpo":
            measured.append(("teacher prompt", sdpo_teacher_lengths(trl, length, task_rows, opts), trl.max_reprompt_len, "max_reprompt_len",
                             f", with a successful rollout of max_completion_length {completion} in it"))
        for what, lengths, cut, limit, counted in measured:
            longest = min(max(lengths), cut) if cut else max(lengths)
            if positions and longest + completion > positions:
                raise HarnessError(f"{stage}: its longest train {what} ({longest} tokens{counted}{f', cut to {limit}' if cut and longest == cut else ''}) "
                                   f"plus max_completion_length {completion} is more than the model's {positions} positions: it would "
                                   f"read positions it was never trained on; lower {limit} or max_completion_length")
            over = sum(n > cut for n in lengths) if cut else 0
            if over:
                notes.append(f"{stage}: {over} of {len(lengths)} train {what}s {'can be' if counted else 'are'} longer than {limit} {cut} "
                             f"(the longest {max(lengths)} tokens{counted}): TRL keeps only their last {cut} tokens, so the model reads them "
                             "without their start")
    return notes


def sdpo_teacher_lengths(trl, length, task_rows: list[dict], opts: dict) -> list[int]:
    """The longest each row's SDPO teacher prompt can be. TRL re-prompts the last user message with a successful
    rollout of the group (at most max_completion_length tokens, counted as that many wherever the templates put it)
    or, with `feedback: demonstration`, the demonstration as feedback; a group with neither gives the prompt as is."""
    feedback = opts.get("feedback") == "demonstration" and trl.include_environment_feedback
    templates = METHODS["sdpo"].templates
    rollouts = (template_fields(trl.reprompt_template, templates["reprompt_template"], "reprompt_template").count("solution")
                * template_fields(trl.solution_template, templates["solution_template"], "solution_template").count("successful_previous_attempt"))

    def reprompt(row, solution: str, feedback_text: str) -> int:
        text = trl.reprompt_template.format(prompt=row["prompt"][-1]["content"], solution=solution, feedback=feedback_text)
        return length([*row["prompt"][:-1], {"role": "user", "content": text}])

    lengths = []
    for row in task_rows:
        told = trl.feedback_template.format(feedback_raw=row["demonstration"]) if feedback else ""
        with_rollout = reprompt(row, trl.solution_template.format(successful_previous_attempt=""),
                                "" if trl.environment_feedback_only_without_solution else told) + rollouts * trl.max_completion_length
        lengths.append(max(with_rollout, reprompt(row, "", told) if told else 0, length(row["prompt"])))
    return lengths


TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")


def _check_weights(named: str, path: Path) -> None:
    """The weights are there (every shard an index lists), and each safetensors file's header reads, without loading
    the weights: a missing, truncated or corrupt file fails here, not mid-run."""
    import json

    indexes = sorted(path.glob("*.index.json"))
    if not indexes and not any(path.glob("*.safetensors")) and not any(path.glob("*.bin")):
        raise ModelFilesError(f"{named}: no weights there (model.safetensors, pytorch_model.bin or a sharded index)")
    for index in indexes:
        try:
            shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        except (OSError, ValueError, KeyError, AttributeError) as e:
            raise ModelFilesError(f"{named}: cannot read {index.name} ({e})") from None
        missing = [shard for shard in shards if not (path / shard).exists()]
        if missing:
            raise ModelFilesError(f"{named}: {index.name} lists {len(shards)} shard(s), {len(missing)} missing: {', '.join(missing[:3])}")
    for file in sorted(path.glob("*.safetensors")):
        problem = storage.weights_problem(file)
        if problem:
            raise ModelFilesError(f"{named}: cannot read {file.name} ({problem})")


def model_context(config) -> int | None:
    """The positions the model reads (None if its config does not say)."""
    text = config.get_text_config()
    context = getattr(text, "max_position_embeddings", None) or getattr(config, "n_positions", None)
    scaling = getattr(text, "rope_scaling", None) or getattr(text, "rope_parameters", None)
    if context and isinstance(scaling, dict) and isinstance(scaling.get("factor"), int | float) and scaling["factor"] > 1:
        context = int(context * scaling["factor"])  # RoPE scaling (YaRN, linear, dynamic) reaches past the trained positions
    return context


def check_context(named: str, config, settings: EvalSettings) -> None:
    """The suite evaluates prompts up to its max_length: a model with a shorter context would fail or read them cut."""
    context = model_context(config)
    if settings.max_length and context and context < settings.max_length:
        raise HarnessError(f"{named}: its context is {context} positions (max_position_embeddings), shorter than the "
                           f"suite's evaluation max_length {settings.max_length}")


def check_generation_room(named: str, config, tokenizer, columns, settings: EvalSettings, data_dir) -> None:
    """Each evaluated card's longest test prompt plus its max_gen_toks must fit the context the evaluation has: lm-eval
    keeps only a prompt's last max_length - max_gen_toks tokens (other scores, silently) and stops mid-run when
    max_gen_toks alone fills max_length. `columns`: (card, protocol, with the demonstration) of each evaluated column."""
    length, positions = settings.max_length or DEFAULT_MAX_LENGTH, model_context(config)
    room = min(length, positions or length)
    for card, protocol, teacher in columns:
        longest = longest_prompt(card, protocol, tokenizer, data_dir, teacher=teacher, limit=settings.limit)
        if longest is None or longest.prompt + longest.gen <= room:
            continue
        prompt, gen = longest.prompt, longest.gen
        field = f"`generation_kwargs.max_gen_toks` {gen}" if longest.stated else f"max_gen_toks {gen} (lm-eval's default: no `generation_kwargs.max_gen_toks`)"
        which = f"the longest {'teacher prompt (with the demonstration)' if teacher else 'prompt'} of its test split ({prompt} tokens)"
        limit = (f"the model's {positions} positions (max_position_embeddings)" if room < length else
                 f"the evaluation's max_length {length}" + ("" if settings.max_length else " (the default; a suite sets eval.max_length)"))
        if gen >= length:
            effect = f"lm-eval would stop mid-run (max_gen_toks must be below max_length {length})"
        elif prompt + gen > length:
            effect = f"lm-eval would keep only the last {length - gen} tokens of the prompt (max_length {length} - max_gen_toks)"
        else:
            effect = "the model would read positions it was never trained on"
        fix = f"lower it to at most {room - prompt}" if prompt < room else "the prompt alone fills it"
        raise HarnessError(f"{card.path}: {field} plus {which} is {prompt + gen} tokens, more than {limit}: {effect}; {fix} "
                           f"(the longest is test row {longest.doc + 1}, counted from 1)")


def folder_name(path: Path) -> str:
    """The folder's absolute path: its parent resolved as the file system reads it (`link/..` included), its own name
    kept, so a symlinked model keeps the name a published base row is matched by (--check-base)."""
    if path.name in ("", ".", ".."):
        return str(path.resolve())
    return str(path.parent.resolve() / path.name)


def check_probes(probes, suite, where: str) -> None:
    """Probes that are not the suite's cards must be lm-eval tasks (indexing them takes seconds, so only then);
    `where` names what listed them (the flag or the suite file)."""
    names = [p.task for p in probes if p.card is None]
    if names:
        known = builtin_task_names()
        for name in names:
            if name not in known:
                ours = sorted({n for c in suite.cards.values() for n in (c.name, c.lm_eval_task)})
                error = unknown("probe (neither a card of the suite nor an lm-eval task)", name, known | set(ours), prefer=ours)
                raise HarnessError(f"{where}: {error}")


def _check_overrides(overrides: dict, accepted: dict[str, set[str]], tasks: list[str]) -> None:
    """A flat override must mean something to at least one method of the schedule; a method's own section must be valid
    for it; a `by_task` section names tasks of this run (values are checked when each stage is configured)."""
    known = set().union(*accepted.values())
    for key, value in overrides.items():
        if key == "by_task":
            _task_sections(value, tasks, "")  # its options: per stage, in _stage_overrides
        elif key in METHODS:
            if not isinstance(value, dict):
                raise HarnessError(f"options for method {key!r} (--config or --set {key}.KEY=VALUE): expected a mapping, got {value!r}")
            # Checked even when the schedule leaves the method out: a typo in a scoped option fails now, not in a later run.
            check_one_name(value, f"{key}.")
            for name in set(value) - accepted_by(key) - {"by_task"}:
                if methods_with(name):
                    raise HarnessError(f"unknown option {name!r} for method {key!r} (it is an option of {', '.join(methods_with(name))})")
            split_options({k: v for k, v in value.items() if k != "by_task"}, METHODS[key])
            for task, options in _task_sections(value.get("by_task"), tasks, f"{key}.").items():
                check_one_name(options, f"{key}.by_task.{task}.")
                _check_values(options, key, f"{key}.by_task.{task}")
        elif key not in known:
            hosts = methods_with(key)
            if not hosts and owned_by(key):  # SDFT's teacher template in a run without SDFT: where to set it
                raise HarnessError(f"option {key!r} is the harness's to set: {owned_by(key)}")
            if isinstance(value, dict) and hosts:  # `--set reprompt_template={x}`: YAML read the value as a mapping
                raise HarnessError(f"option {key}={value!r}: a mapping, not a method's section (quote the value: YAML reads {{x}} as a mapping)")
            if isinstance(value, dict):  # `--set sdtf.teacher=x` or a `sdtf:` section: a method's name, misspelled
                raise unknown("method (in --config or --set METHOD.KEY=VALUE)", key, METHODS)
            if hosts:
                raise HarnessError(f"option {key!r} is for {', '.join(hosts)}, not for {', '.join(sorted(accepted))}, which this run trains with")
            raise unknown(f"option (for {', '.join(sorted(accepted))})", key, known)
        else:
            for method, names in accepted.items():
                if key in names:
                    split_options({ALIASES.get(key, key): value}, METHODS[method])


@functools.cache
def accepted_by(method: str) -> frozenset[str]:
    return frozenset(option_names(METHODS[method]))


def methods_with(option: str) -> list[str]:
    """The methods that accept an option (a hint where the option was given to a method without it)."""
    return sorted(m for m in METHODS if option in accepted_by(m) and option not in METHODS[m].owned)


def owned_by(option: str) -> str:
    """Where to set a TRL field that the harness or a method sets itself ("" if none does)."""
    return OWNED.get(option) or next((method.owned[option] for method in METHODS.values() if option in method.owned), "")


def _stage_overrides(overrides: dict, method: str, task: str, methods: list[str], accepted: dict[str, set[str]]) -> dict:
    """The flat `by_task` options of the stage that trains `task` with `method`; an override that would reach no stage
    of this run is refused, not ignored (a section of a method the run leaves out is ignored, as its other options are)."""
    for other, section in overrides.items():
        if other in methods and other != method and task in (section.get("by_task") or {}):
            raise HarnessError(f"options {other}.by_task.{task}: {task} is trained by {method} in this run, not by {other}")
    mine = (overrides.get("by_task") or {}).get(task) or {}
    known = set().union(*accepted.values())
    for name in mine:
        if name not in known and not methods_with(name):
            raise unknown(f"option in by_task.{task} (for {', '.join(sorted(accepted))})", name, known)
        if name not in accepted[method]:
            raise HarnessError(f"option by_task.{task}.{name}: method {method!r} trains {task} in this run and has no option {name!r}")
    _check_values(mine, method, f"by_task.{task}")
    return mine


def _check_values(options: dict, method: str, where: str) -> None:
    """A `by_task` section's values checked on their own, so that an error says where the value came from."""
    try:
        split_options(options, METHODS[method])
    except HarnessError as e:
        raise HarnessError(f"{where}: {e}") from None


def _task_sections(by_task, tasks: list[str], where: str) -> dict[str, dict]:
    """A `by_task` section checked: each task one of this run's, each value a mapping (null: empty, as in presets)."""
    by_task = {} if by_task is None else by_task
    if not isinstance(by_task, dict):
        raise HarnessError(f"options {where}by_task: expected a mapping of task to options, got {by_task!r}")
    for task, options in by_task.items():
        if task not in tasks:
            raise unknown(f"task in {where}by_task (not in this run's --tasks)", str(task), tasks)
        if not isinstance({} if options is None else options, dict):
            raise HarnessError(f"options {where}by_task.{task}: expected a mapping of options, got {options!r}")
    return {task: options or {} for task, options in by_task.items()}
