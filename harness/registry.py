"""Task cards and suites: found under tasks/, validated on load.

A task card is an lm-eval task YAML with a `metadata.harness` block, so one file
says both how the harness trains on a task and how lm-eval evaluates it
(`lm_eval --include_path tasks/toy --tasks toy_cipher` works on its own). A suite
is a YAML with a top-level `suite:` key naming an ordered task sequence, the
probes (lm-eval tasks for prior capabilities, each with its evaluation protocol),
a default model and the method preset.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field, replace
from functools import cache
from pathlib import Path

from harness import cardfile, project, protocol
from harness.config import presets
from harness.errors import HarnessError, unknown
from harness.fields import FORMATTERS
from harness.protocol import Protocol
from harness.rundir import KEYS, TEACHER_COLUMN
from harness.scoring import SCORERS
from harness.templates import CONTEXT_MARK, PROMPT_MARK, TEACHER_TEMPLATE, marked

# Users with their own task folders point the harness at them with $HARNESS_TASKS_DIR.
TASKS_DIR = Path(os.environ.get("HARNESS_TASKS_DIR") or project.path("tasks")).expanduser()
CARD_FIELDS = ("prompt", "demonstration", "answer")
CARD_KEYS = ("name", "role", "about", "scorer", "protocol", "fields", "data", "teacher_template")  # of metadata.harness
SPLITS = ("train", "test")
SPLIT_KEYS = ("file", "hub", "fields", "origin")  # of a data split given as a mapping
HUB_KEYS = ("path", "name", "split")  # of its hub dataset: datasets.load_dataset(path, name, split=split)
SUITE_KEYS = ("suite", "about", "model", "sequence", "probes", "preset", "teacher_template", "eval")
MATRIX_KEYS = (*KEYS, TEACHER_COLUMN)
JUDGE = "judge"  # the LLM-judge scorer, configured at run time (see harness.taskdata.scorer)


@dataclass(frozen=True)
class TaskCard:
    name: str
    lm_eval_task: str
    path: Path
    role: str  # "task" (trainable, has a train split) or "probe"
    about: str
    scorer: str
    fields: dict
    data: dict
    teacher_template: str = TEACHER_TEMPLATE
    protocol: Protocol = Protocol()  # how lm-eval evaluates it (resolved from the card's lm-eval keys)


@dataclass(frozen=True)
class Probe:
    task: str  # the lm-eval task
    protocol: Protocol  # how it is evaluated, e.g. metric "prompt_level_strict_acc" without the chat template
    card: TaskCard | None = None  # set when the probe is one of the suite's own cards

    @property
    def name(self) -> str:
        return self.card.name if self.card else self.task


@dataclass(frozen=True)
class Suite:
    name: str
    path: Path
    about: str
    model: str
    sequence: tuple[str, ...]
    probes: tuple[Probe, ...]
    preset: str
    cards: dict = field(default_factory=dict, repr=False)
    eval: dict = field(default_factory=dict)  # evaluation settings the suite needs, e.g. max_length

    def card(self, name: str) -> TaskCard:
        if name not in self.cards:
            raise unknown(f"task in suite {self.name!r}", name, [n for n, c in self.cards.items() if c.role == "task"])
        return self.cards[name]

    def model_path(self) -> str:
        """The default model: a folder beside the suite if one exists, else a hub id."""
        local = self.path.parent / self.model
        return str(local) if local.exists() else self.model

    def probe(self, name: str) -> Probe:
        for p in self.probes:
            if name in (p.name, p.task):
                return p
        card = self.cards.get(name)
        if card is not None:
            return Probe(card.lm_eval_task, card.protocol, card)
        return Probe(name, Protocol())  # any lm-eval task, under the default protocol; the evaluator checks it exists


def card_from_config(meta: dict | None, path: Path, lm_eval_task: str | None = None, config: dict | None = None,
                     teacher_template: str = TEACHER_TEMPLATE) -> TaskCard:
    """Build and check a card from its `metadata.harness` block (and, for its protocol, its lm-eval config);
    `teacher_template` is its suite's default."""
    if not isinstance(meta, dict):
        raise HarnessError(f"{path}: missing `metadata.harness` block (expected the harness's task card fields)")
    known_keys(meta, CARD_KEYS, path, "metadata.harness")
    for key in ("name", "scorer", "fields", "data"):
        if key not in meta:
            raise HarnessError(f"{path}: task card is missing field `metadata.harness.{key}`")
    for key in ("name", "scorer", "about"):
        if key in meta and not isinstance(meta[key], str):
            raise HarnessError(f"{path}: `metadata.harness.{key}` must be a string, not {meta[key]!r}")
    if not NAME.fullmatch(meta["name"]):  # `a/../x` would put a default run folder outside results/
        raise HarnessError(f"{path}: `metadata.harness.name` must be ASCII letters, digits, '_' or '-' (it names folders, "
                           f"columns and --set paths), not {meta['name']!r}")
    if meta["name"] in MATRIX_KEYS:  # its column would sit beside the matrix's own of that name
        raise HarnessError(f"{path}: `metadata.harness.name` {meta['name']!r} names a column matrix.csv keeps for itself "
                           f"({', '.join(MATRIX_KEYS)}): give the task another name")
    fields = meta["fields"]
    if not isinstance(fields, dict) or any(k not in fields for k in CARD_FIELDS):
        raise HarnessError(f"{path}: `metadata.harness.fields` must map each of {', '.join(CARD_FIELDS)} to a data field")
    known_keys(fields, CARD_FIELDS, path, "metadata.harness.fields")
    if meta["scorer"] not in SCORERS and meta["scorer"] != JUDGE:
        raise HarnessError(f"{path}: `metadata.harness.scorer`: " + str(unknown("scorer", meta["scorer"], [*SCORERS, JUDGE])))
    role = meta.get("role", "task")
    if role not in ("task", "probe"):
        raise HarnessError(f"{path}: `metadata.harness.role` must be 'task' or 'probe', not {role!r}")
    data = meta["data"]
    if not isinstance(data, dict) or "test" not in data or (role == "task" and "train" not in data):
        needed = "train and test" if role == "task" else "test"
        raise HarnessError(f"{path}: `metadata.harness.data` must give the {needed} split(s)")
    _check_fields(fields, path, "fields")
    known_keys(data, SPLITS, path, "metadata.harness.data")
    for split, spec in data.items():
        if not isinstance(spec, str | dict):
            raise HarnessError(f"{path}: `metadata.harness.data.{split}` must be a file name or a mapping (file, hub, fields), not {type(spec).__name__}")
        names = spec.get("file") if isinstance(spec, dict) else spec
        hub_only = isinstance(spec, dict) and "hub" in spec and names in (None, [])  # a local copy is optional
        named = isinstance(names, str) and names.strip() or isinstance(names, list) and names and all(isinstance(n, str) and n.strip() for n in names)
        if not (hub_only or named):
            where = f"metadata.harness.data.{split}" + (".file" if isinstance(spec, dict) else "")
            raise HarnessError(f"{path}: `{where}` must be a file name (or a list of them), not {names!r}")
        if isinstance(spec, dict):
            known_keys(spec, SPLIT_KEYS, path, f"metadata.harness.data.{split}")
            hub = spec.get("hub")
            if hub is not None:
                if not (isinstance(hub, dict) and isinstance(hub.get("path"), str) and hub["path"].strip()):
                    raise HarnessError(f"{path}: `metadata.harness.data.{split}.hub` must be a mapping {{path, name, split}} naming a hub dataset, not {hub!r}")
                known_keys(hub, HUB_KEYS, path, f"metadata.harness.data.{split}.hub")
                for key in ("name", "split"):  # YAML reads `no` or a number as no text
                    if hub.get(key) is not None and not (isinstance(hub[key], str) and hub[key].strip()):
                        raise HarnessError(f"{path}: `metadata.harness.data.{split}.hub.{key}` must be text (quote it), not {hub[key]!r}")
    for split, spec in data.items():  # a split whose schema differs overrides some of the fields
        overrides = spec.get("fields") if isinstance(spec, dict) else None
        if overrides is None:
            continue
        if not isinstance(overrides, dict) or not set(overrides) <= set(CARD_FIELDS):
            raise HarnessError(f"{path}: `metadata.harness.data.{split}.fields` may only override {', '.join(CARD_FIELDS)}")
        _check_fields(overrides, path, f"data.{split}.fields")
    template = meta.get("teacher_template", teacher_template)
    check_teacher_template(template, f"{path}: `metadata.harness.teacher_template`")
    return TaskCard(
        name=meta["name"],
        lm_eval_task=lm_eval_task or meta["name"],
        path=path,
        role=role,
        about=meta.get("about", ""),
        scorer=meta["scorer"],
        fields=fields,
        data=data,
        teacher_template=template,
        protocol=card_protocol(meta, config or {}, path),
    )


def card_protocol(meta: dict, config: dict, path: Path) -> Protocol:
    """The card's declared call-level settings, with few-shot and generation from its own lm-eval keys."""
    declared = protocol.parse(meta.get("protocol") or {}, path, "metadata.harness.protocol", protocol.CARD_KEYS)
    generates = config.get("output_type", "generate_until") == "generate_until"
    if generates and config.get("generation_kwargs") is not None:
        protocol.check_gen_kwargs(config["generation_kwargs"], f"{path}: `generation_kwargs`")
    return Protocol(
        **declared,
        num_fewshot=config.get("num_fewshot") or 0,
        gen_kwargs=config.get("generation_kwargs") if generates else None,
        scorer=meta["scorer"],
    )


def check_teacher_template(template, where: str) -> None:
    if not isinstance(template, str) or "{prompt}" not in template or "{privileged_context}" not in template:
        raise HarnessError(f"{where} must be a string containing {{prompt}} and {{privileged_context}}")
    try:
        rendered = marked(template)
    except (KeyError, IndexError, ValueError) as e:
        raise HarnessError(f"{where}: a brace other than {{prompt}} and {{privileged_context}} ({type(e).__name__}: {e}); "
                           "write a literal brace twice, {{ or }}") from None
    if rendered.count(PROMPT_MARK) != 1 or rendered.count(CONTEXT_MARK) != 1:  # {{prompt}} is a literal: the teacher would read neither
        raise HarnessError(f"{where} must use {{prompt}} and {{privileged_context}} once each, in single braces "
                           "(Python format, not Jinja's double braces)")


def known_keys(mapping: dict, keys, path: Path, where: str) -> None:
    """A misspelled key would be silently ignored (and its setting with it): it stops the load, named."""
    for key in mapping:
        if key not in keys:
            raise HarnessError(f"{path}: `{where}`: " + str(unknown("key", str(key), keys)))


def _check_fields(fields: dict, path: Path, where: str) -> None:
    """Each field is a data field name, and formatter names after its bars exist: a typo fails at load, not mid-run."""
    for key, spec in fields.items():
        if not isinstance(spec, str) or not spec.strip():
            raise HarnessError(f"{path}: `metadata.harness.{where}.{key}` must name a data field (a string), not {spec!r}")
        for formatter in str(spec).split("|")[1:]:
            if formatter not in FORMATTERS:
                raise HarnessError(f"{path}: `metadata.harness.{where}.{key}`: " + str(unknown("formatter", formatter, FORMATTERS)))


# The keys of an lm-eval task file (lm_eval.api.task.TaskConfig's fields; a test keeps the two equal): lm-eval
# itself fails on an unknown one only mid-evaluation, with a TypeError naming no file.
TASK_CONFIG_KEYS = (
    "task", "task_alias", "tag", "custom_dataset", "dataset_path", "dataset_name", "dataset_kwargs", "training_split",
    "validation_split", "test_split", "fewshot_split", "process_docs", "doc_to_text", "doc_to_target", "doc_to_image",
    "doc_to_audio", "doc_to_choice", "process_results", "use_prompt", "description", "target_delimiter",
    "fewshot_delimiter", "fewshot_config", "num_fewshot", "metric_list", "output_type", "generation_kwargs", "repeats",
    "filter_list", "should_decontaminate", "doc_to_decontamination_query", "gen_prefix", "unsafe_code", "metadata",
)
OUTPUT_TYPES = ("generate_until", "loglikelihood", "loglikelihood_rolling", "multiple_choice")
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")  # a task's name is a column, a folder, an item of --tasks and of --set paths


def load_card(path: Path, teacher_template: str = TEACHER_TEMPLATE) -> TaskCard:
    config = cardfile.read(path)
    if not isinstance(config, dict) or "task" not in config:
        raise HarnessError(f"{path}: missing field `task` (the lm-eval task name)")
    _check_task_config(config, path)
    metadata = config.get("metadata") or {}
    if not isinstance(metadata, dict):
        raise HarnessError(f"{path}: field `metadata` must be a mapping holding the `harness` block, not {type(metadata).__name__}")
    return card_from_config(metadata.get("harness"), path, config["task"], config, teacher_template)


def _check_task_config(config: dict, path: Path) -> None:
    """The lm-eval keys whose misspelling or type would otherwise surface mid-evaluation as a traceback."""
    for key in config:
        if key not in TASK_CONFIG_KEYS:
            raise HarnessError(f"{path}: " + str(unknown("lm-eval task key", str(key), TASK_CONFIG_KEYS)))
    task = config["task"]
    if not isinstance(task, str) or not task or any(c.isspace() or c == "," for c in task):
        raise HarnessError(f"{path}: `task` must be a name without spaces or commas (lm-eval's task name), not {task!r}")
    shots = config.get("num_fewshot")
    if shots is not None and (isinstance(shots, bool) or not isinstance(shots, int) or shots < 0):
        raise HarnessError(f"{path}: `num_fewshot` must be a whole number >= 0, not {shots!r}")
    if config.get("output_type", "generate_until") not in OUTPUT_TYPES:
        raise HarnessError(f"{path}: `output_type` must be one of {', '.join(OUTPUT_TYPES)}, not {config['output_type']!r}")


def _yaml_files(root: Path, suffixes: tuple[str, ...] = (".yaml",)) -> tuple[list[Path], dict[Path, str]]:
    """The YAML files of a tasks folder, but none under a name starting with `_` (`include:` files, drafts) or `.`
    (an editor's lock file, .ipynb_checkpoints/, .git/). Linked folders are followed (a suite kept in a repository
    of its own), each real folder once (a link loop ends). Also each folder that could not be read -> why: skipped
    in silence, its suite or its cards would be missing without a word."""
    found, seen, unsearched = [], set(), {}

    def unreadable(e: OSError):
        unsearched.update(_not_entered(Path(e.filename), e))

    for folder, subfolders, names in os.walk(root, followlinks=True, onerror=unreadable):
        real = os.path.realpath(folder)
        if real in seen:
            subfolders[:] = []
            continue
        seen.add(real)
        subfolders[:] = [d for d in subfolders if not d.startswith(("_", "."))]
        found += [Path(folder) / n for n in (*names, *subfolders)  # a folder named x.yaml too: the index names it
                  if n.endswith(suffixes) and not n.startswith(("_", "."))]
    return sorted(found), unsearched


def _not_entered(path: Path, e: OSError) -> dict[Path, str]:
    """What could not be read -> why: the folder holding it when that folder can be listed but not entered
    (mode 444: each of its entries fails alike), else the path itself."""
    folder = path.parent
    if os.path.isdir(folder) and os.access(folder, os.R_OK) and not os.access(folder, os.X_OK):
        return {folder: f"{folder}: cannot be entered ({e.strerror or e})"}
    return {path: f"{path}: {e.strerror or e}"}


def _inside(path: Path, folders: set[Path]) -> bool:
    return not folders.isdisjoint(path.parents)


# A top-level `suite:` key, after a byte-order mark, quoted or spaced as YAML allows.
SUITE_KEY = re.compile(r"""^\ufeff?["']?suite["']?[ \t]*:""", re.MULTILINE)


@dataclass(frozen=True)
class SuiteIndex:
    files: dict[str, Path]  # suite name -> its file
    twice: dict[str, list[Path]]  # a suite name more than one file defines -> those files
    unreadable: dict[Path, str]  # a suite file that defines no suite -> why, naming the file
    suite_keyed: frozenset[Path] = frozenset()  # unreadable files whose top-level `suite:` key could be read
    unsearched: dict[Path, str] = field(default_factory=dict)  # a folder that could not be read -> why, naming it

    def suite_like(self) -> set[Path]:
        """Every file that defines a suite, has a `suite:` key or is named suite.yaml: none of them is a card.
        (A file under a suite's folder that could not be read at all is taken for a card: its suite names it.)"""
        paths = {*self.files.values(), *(p for paths in self.twice.values() for p in paths), *self.suite_keyed,
                 *(p for p in self.unreadable if p.name == "suite.yaml")}
        return {Path(os.path.realpath(p)) for p in paths}  # the same file through a linked folder too


def suite_index(root: Path | None = None) -> SuiteIndex:
    folder = Path(root or TASKS_DIR).expanduser().absolute()
    if not folder.is_dir():
        via = " ($HARNESS_TASKS_DIR)" if root is None and os.environ.get("HARNESS_TASKS_DIR") else ""
        raise HarnessError(f"{folder}{via}: not a folder of tasks")
    try:
        return _suite_index(folder)
    except RecursionError:  # os.walk recurses into each folder
        raise HarnessError(f"{folder}: its folders nest too deep to search for suites") from None


@cache
def _suite_index(root: Path) -> SuiteIndex:
    """Every suite under root. A broken suite file does not hide the others: it is named when the
    suite asked for is not found, and by `harness list`."""
    defining, unreadable, keyed = {}, {}, set()
    found, unsearched = _yaml_files(root, (".yaml", ".yml"))  # one walk for both suffixes
    candidates = [p for p in found if p.suffix == ".yaml"]
    for path in candidates:
        try:
            if not path.is_file():  # a folder or broken link: a suite.yaml is named below, a card by its suite
                continue
            if not SUITE_KEY.search(path.read_text(encoding="utf-8", errors="replace")):
                continue
            config = cardfile.read(path)
        except OSError as e:
            for where, why in _not_entered(path, e).items():
                (unreadable if where == path else unsearched)[where] = why
            continue
        except HarnessError as e:
            unreadable[path] = str(e)
            continue
        if "suite" not in config:  # the text matched inside a longer string: a card
            continue
        name = config["suite"]
        if not isinstance(name, str):  # YAML reads `1.10` as 1.1, `no` as False
            unreadable[path] = f"{path}: `suite` must be a name in text (quote it), not {name!r}"
        elif not NAME.fullmatch(name):  # it names the default run folders
            unreadable[path] = f"{path}: `suite` must be a name of letters, digits, - and _, not {name!r}"
        else:
            defining.setdefault(name, []).append(path)
            continue
        keyed.add(path)
    named = {p for paths in defining.values() for p in paths}
    folders = {p.parent for p in named}
    for path in [p for p in unreadable if p not in keyed and p.name != "suite.yaml"]:
        if _inside(path, folders):  # maybe a card of that suite, which names it: said once
            del unreadable[path]
    for path in list(unsearched):
        if _inside(path, folders | set(unsearched)):
            del unsearched[path]  # its suite names it, or a folder around it is named
    for path in (p for p in candidates if p.name == "suite.yaml"):  # not rglob("suite.yaml"): it skips a broken link
        if path not in unreadable and path not in named and not _inside(path, set(unsearched)):
            why = "no top-level `suite: NAME` there" if os.path.isfile(path) else "not a readable file"  # empty, a list, `suit:`
            unreadable[path] = f"{path}: {why}"
    for path in (p for p in found if p.name == "suite.yml"):  # lm-eval reads .yaml only, and so do we
        unreadable[path] = f"{path}: suite files end in .yaml (rename it suite.yaml)"
    files = {name: paths[0] for name, paths in defining.items() if len(paths) == 1}
    twice = {name: paths for name, paths in defining.items() if len(paths) > 1}
    return SuiteIndex(files, twice, unreadable, frozenset(keyed), unsearched)


def _unread_card(folder: Path, task: str) -> str:
    """A hint where a missed task's card may be: a file of that name saved as .yml (or .YAML), which no suite reads."""
    unread = [p for p in folder.rglob(f"{task}.*") if p.suffix.lower() in (".yml", ".yaml") and p.suffix != ".yaml"]
    return f"; {sorted(unread)[0]} is not read (cards end in .yaml)" if unread else ""


def load_suite(name: str, root: Path | None = None) -> Suite:
    index = suite_index(root)
    files = index.files
    if name in index.twice:
        raise HarnessError(f"suite {name!r} is defined by {' and by '.join(map(str, index.twice[name]))}: give one of them another name")
    if name not in files:
        error = str(unknown("suite", name, files))
        if index.unreadable:  # the suite asked for may be the broken one
            error += f"; unreadable suite files: {'; '.join(index.unreadable.values())}"
        if index.unsearched:  # or in a folder that could not be read
            error += f"; folders not searched: {'; '.join(index.unsearched.values())}"
        raise HarnessError(error)
    path = files[name]
    config = cardfile.read(path)
    known_keys(config, SUITE_KEYS, path, "suite")
    for key in ("sequence", "probes", "model", "preset"):
        if key not in config:
            raise HarnessError(f"{path}: suite is missing field `{key}`")
    if not isinstance(config["sequence"], list) or not config["sequence"] or not all(isinstance(t, str) for t in config["sequence"]):
        raise HarnessError(f"{path}: field `sequence` must be a non-empty list of task names, e.g. [cipher, facts], not {config['sequence']!r}")
    if len(set(config["sequence"])) != len(config["sequence"]):
        raise HarnessError(f"{path}: field `sequence` lists a task twice ({', '.join(config['sequence'])}); each task may appear once")
    if not isinstance(config["model"], str) or not config["model"].strip():
        raise HarnessError(f"{path}: field `model` must be a model id or a folder beside the suite, not {config['model']!r}")
    known_presets = presets()
    if not isinstance(config["preset"], str):
        raise HarnessError(f"{path}: field `preset` must be a preset's name ({', '.join(known_presets)}), not {config['preset']!r}")
    if config["preset"] not in known_presets:  # found now, not when a run is planned
        raise HarnessError(f"{path}: field `preset`: {unknown('preset', config['preset'], known_presets)}")
    about = config.get("about") or ""
    if not isinstance(about, str):
        raise HarnessError(f"{path}: field `about` must be text, not {about!r}")
    if not isinstance(config["probes"] or [], list):
        raise HarnessError(f"{path}: field `probes` must be a list of probes, not {type(config['probes']).__name__}")
    if not isinstance(config.get("eval") or {}, dict):
        raise HarnessError(f"{path}: field `eval` must be a mapping of evaluation settings")
    template = config.get("teacher_template", TEACHER_TEMPLATE)  # the default of the suite's cards
    check_teacher_template(template, f"{path}: `teacher_template`")
    cards = {}
    suite_like = index.suite_like()
    card_paths, unsearched = _yaml_files(path.parent)
    if unsearched:  # a card there would be missing: "unknown task", or a silently shorter suite
        raise HarnessError(f"folder of suite {name!r} not searched for cards: {next(iter(unsearched.values()))}")
    own, suite_folders = path.parent, {p.parent for p in suite_like}
    broken = []
    for card_path in card_paths:
        if Path(os.path.realpath(card_path)) in suite_like:
            continue
        between = card_path.parents[: len(card_path.parents) - len(own.parents) - 1]  # folders under this suite's
        if any(Path(os.path.realpath(f)) in suite_folders for f in between):  # another suite's, linked in or nested
            continue
        try:
            card = load_card(card_path, template)
        except HarnessError as e:
            broken.append(str(e))
            continue
        twin = next((c for c in cards.values() if c.lm_eval_task == card.lm_eval_task), None)
        if card.name in cards:
            broken.append(f"{card_path}: task name {card.name!r} is already used by {cards[card.name].path}")
        elif twin:  # lm-eval reports by task name: the two columns would read one task's scores
            broken.append(f"{card_path}: lm-eval task name {card.lm_eval_task!r} (`task`) is already used by {twin.path}")
        else:
            cards[card.name] = card
    if broken:  # every broken card at once: a suite's author fixes them in one pass, not one per run
        raise HarnessError("\n".join(broken) if len(broken) == 1 else f"{len(broken)} task cards of suite {name!r} are broken:\n  " + "\n  ".join(broken))
    suite = Suite(
        name=name,
        path=path,
        about=about,
        model=config["model"],
        sequence=tuple(config["sequence"]),
        probes=(),
        preset=config["preset"],
        cards=cards,
        eval=config.get("eval") or {},
    )
    probes = []
    for i, spec in enumerate(config["probes"] or []):
        if not isinstance(spec, dict) or not isinstance(spec.get("task"), str) or not spec["task"].strip():
            raise HarnessError(f"{path}: probes[{i}] must be a mapping with `task` and its protocol ({', '.join(protocol.TYPES)})")
        settings = {k: v for k, v in spec.items() if k != "task"}
        card = next((c for c in cards.values() if c.lm_eval_task == spec["task"] or c.name == spec["task"]), None)
        if card and card.name in config["sequence"]:
            raise HarnessError(f"{path}: probes[{i}] is {card.name!r}, a task of the sequence: a probe measures a prior capability")
        if card:  # a card's protocol lives in the card; the suite may only pick which metric to read
            probes.append(Probe(card.lm_eval_task, replace(card.protocol, **protocol.parse(settings, path, f"probes[{i}]", ("metric", "filter"))), card))
        else:
            probes.append(Probe(spec["task"], Protocol(**protocol.parse(settings, path, f"probes[{i}]")), None))
        twice = next((j for j, other in enumerate(probes[:-1]) if other.name == probes[-1].name), None)
        if twice is not None:  # one column, scored twice
            raise HarnessError(f"{path}: probes[{i}] is probe {probes[-1].name!r} again (probes[{twice}]); each probe may appear once")
    for task in suite.sequence:
        if task not in cards:
            hint = _unread_card(path.parent, task)
            raise HarnessError(f"{path}: field `sequence`: {unknown('task', task, [n for n, c in cards.items() if c.role == 'task'])}{hint}")
    return Suite(**{**suite.__dict__, "probes": tuple(probes)})
