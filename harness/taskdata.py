"""Task data: resolve a card's sources, read rows, map fields, and serve lm-eval.

A row, once normalized, is `{"prompt": [chat messages], "demonstration": str,
"answer": any}`: the prompt in TRL's conversational form, the demonstration the
SDFT teacher sees, the reference the scorer compares against. lm-eval reads the
same rows through `lm_eval_dataset` / `process_results` (named in the cards), so
training and evaluation can never disagree about a task's data or scoring.
"""

from __future__ import annotations

import json
import logging
import os
from functools import cache
from pathlib import Path

from harness import hub
from harness.errors import HarnessError, first_line
from harness.fields import FORMATTERS
from harness.registry import card_from_config
from harness.scoring import SCORERS, answer_problem, make_judge

DATA_DIR_ENV = "HARNESS_DATA_DIR"


def split_fields(card, split: str) -> dict:
    """The card's field mapping, with the split's own overrides (`data.<split>.fields`) where its schema differs."""
    spec = card.data.get(split)
    return {**card.fields, **((spec.get("fields") or {}) if isinstance(spec, dict) else {})}


def _file_names(spec: dict) -> list[str]:
    names = spec.get("file") or []
    return [names] if isinstance(names, str) else list(names)


def data_folder(data_dir: str | Path | None = None) -> Path | None:
    """The folder of local data copies: --data-dir, else $HARNESS_DATA_DIR, with `~` expanded (`--data-dir=~/x` and a
    quoted variable reach us unexpanded); None when neither is set."""
    data_dir = data_dir or os.environ.get(DATA_DIR_ENV)
    return Path(data_dir).expanduser() if data_dir else None


def check_data_folder(data_dir: str | Path | None = None) -> None:
    """A data folder that is not there would be passed over in silence: every card would look elsewhere or download.
    --data-dir is refused; a stale $HARNESS_DATA_DIR, set for other work, is a warning (runs on shipped data ignore it)."""
    if data_dir is not None and not str(data_dir).strip():
        raise HarnessError("--data-dir is empty: name a folder, or leave --data-dir out")
    folder = data_folder(data_dir)
    if folder is None or folder.is_dir():
        return
    given = data_dir or os.environ[DATA_DIR_ENV]
    expanded = "" if str(folder) == str(given) else f" ({folder})"
    problem = f"{'not a folder' if folder.exists() else 'no such folder'}{expanded}"
    if data_dir:
        raise HarnessError(f"--data-dir {given}: {problem}")
    logging.getLogger("harness").warning("$%s %s: %s; cards find no local data copies there", DATA_DIR_ENV, given, problem)


def resolve_source(card, split: str, data_dir: str | Path | None = None) -> Path | dict:
    """A local path for the split, or the hub spec to download when no local copy exists."""
    spec = card.data.get(split)
    if spec is None:
        raise HarnessError(f"{card.path}: task {card.name!r} has no {split!r} split in its `data` field")
    if isinstance(spec, str):
        try:
            return (card.path.parent / Path(spec).expanduser()).resolve()  # relative to the card's folder; ~ is home
        except RuntimeError as e:  # ~user with no such user
            raise HarnessError(f"{card.path}: `data.{split}` {spec!r}: {e}") from None
    folder = data_folder(data_dir)
    for name in _file_names(spec) if folder else []:  # `file` may list alternatives, e.g. a JSONL and a save_to_disk folder
        if (folder / name).exists():
            return folder / name
    if spec.get("hub"):
        return spec["hub"]
    origin = f" (origin: {spec['origin']})" if spec.get("origin") else ""
    raise HarnessError(
        f"{card.path}: no local copy of the {split!r} data of task {card.name!r}{origin}: put "
        f"{' or '.join(map(repr, _file_names(spec)))} in a folder and pass --data-dir (or set {DATA_DIR_ENV})"
    )


def read_records(source: Path | dict, card, split: str) -> list[tuple[str, dict]]:
    """Raw records, each with where it stands ("line 4" of a JSON Lines file, "row 3" of a datasets folder or the hub)."""
    if isinstance(source, dict):
        return _numbered(_from_hub(source, card, split))
    if not source.exists():
        raise HarnessError(f"{card.path}: data file for split {split!r} not found: {source}")
    if source.is_dir():
        import datasets

        try:
            return _numbered(list(datasets.load_from_disk(str(source))))
        except (FileNotFoundError, ValueError) as e:  # a folder that `Dataset.save_to_disk` did not write
            raise HarnessError(f"{card.path}: data for split {split!r} is the folder {source}, which is no saved dataset "
                               f"(a folder must be one `datasets.Dataset.save_to_disk` wrote: {first_line(e)}); give a JSON Lines file") from None
    records = [(f"line {n}", record) for n, record in _json_lines(source)]
    if not records:
        raise HarnessError(f"{source}: the {split!r} data of task {card.name!r} is empty")
    return records


def _numbered(records: list[dict]) -> list[tuple[str, dict]]:
    return [(f"row {i}", record) for i, record in enumerate(records, 1)]


def read_prompts(path: Path) -> list[list[dict]]:
    """Chat prompts from a JSON Lines file of objects with a `prompt` (a string or a list of chat messages)."""
    if not path.exists():
        raise HarnessError(f"{path}: prompt file not found")
    if not path.is_file():
        raise HarnessError(f"{path}: not a regular file (a JSON Lines file of prompts is expected)")
    prompts = []
    for n, record in _json_lines(path):
        prompt = record.get("prompt")
        if isinstance(prompt, str) and prompt.strip():
            prompt = [{"role": "user", "content": prompt}]
        if not (isinstance(prompt, list) and prompt and all(isinstance(m, dict) and isinstance(m.get("content"), str) and m["content"].strip() for m in prompt)
                and prompt[-1].get("role") == "user"):
            raise HarnessError(f"{path}, line {n}: field 'prompt' must be a non-empty string or non-empty chat messages ending with a user message")
        prompts.append(prompt)
    if not prompts:
        raise HarnessError(f"{path}: no prompts")
    return prompts


def _json_lines(source: Path) -> list[tuple[int, dict]]:
    """(line number, object) for every non-blank line of a JSON Lines file, naming the file and line on any fault."""
    data = source.read_bytes()
    try:
        # A byte-order mark (Windows editors write one) is no part of the JSON; lines end at \n alone (splitlines would
        # also split at U+2028 and other separators JSON allows inside a string).
        lines = [line.removesuffix("\r") for line in data.decode("utf-8-sig").split("\n")]
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise HarnessError(f"{source}, line {line}: not UTF-8 text ({e.reason} at byte {e.start}); save it as UTF-8") from None
    return [(n, _json_object(line, source, n)) for n, line in enumerate(lines, 1) if line.strip()]


def _json_object(line: str, source: Path, n: int) -> dict:
    try:
        record = json.loads(line)
    except json.JSONDecodeError as e:
        hint = "; JSON Lines holds one object a line, not one array of them" if n == 1 and line.lstrip().startswith("[") else ""
        raise HarnessError(f"{source}, line {n}: not valid JSON ({e.msg}){hint}") from None
    except RecursionError:
        raise HarnessError(f"{source}, line {n}: not valid JSON (nested too deeply)") from None
    if not isinstance(record, dict):
        hint = " (JSON Lines holds one object a line, not one array of them)" if isinstance(record, list) and n == 1 else ""
        raise HarnessError(f"{source}, line {n}: expected a JSON object, got {type(record).__name__}{hint}")
    return record


def _from_hub(spec: dict, card, split: str) -> list[dict]:
    import datasets

    name = f"{spec['path']}" + (f" (config {spec['name']})" if spec.get("name") else "")
    hub.reachable()
    try:
        ds = datasets.load_dataset(spec["path"], spec.get("name"), split=spec.get("split", split))
    except Exception as e:  # offline, gated, renamed: all end the same way for the user
        local = " or ".join(map(repr, _file_names(card.data[split]) or [f"{card.name}_{split}.jsonl"]))
        raise HarnessError(
            f"cannot download the {split!r} data of task {card.name!r} from the hub dataset {name}: "
            f"{type(e).__name__}. Provide it locally as {local} in a folder passed with --data-dir (or {DATA_DIR_ENV})"
        ) from None
    return list(ds)


def _empty(value) -> bool:
    return value is None or (isinstance(value, str | list) and len(value) == 0)


CHAT_ROLES = ("system", "user", "assistant")


def normalize(record: dict, card, where: str, fields: dict | None = None, evaluated: bool = False) -> dict:
    """Map a raw record to a row through the card's fields (or a split's), naming the row on any gap. An `evaluated`
    row (the test split's) must have a prompt lm-eval reads whole: system messages, then one user message."""
    fields = fields or card.fields
    row = {}
    for key in ("prompt", "demonstration", "answer"):
        field, *formatters = fields[key].split("|")
        value = record.get(field)
        if _empty(value):
            raise HarnessError(f"{where}: missing or empty field {field!r} (the task's {key}); expected a non-empty value")
        for formatter in formatters:
            value = FORMATTERS[formatter](value)
        if _empty(value):
            raise HarnessError(f"{where}: field {field!r} gives no {key} through {fields[key]!r}")
        row[key] = value
    prompt = row["prompt"]
    if isinstance(prompt, str):
        row["prompt"] = [{"role": "user", "content": prompt}]
    elif not (isinstance(prompt, list) and prompt and all(isinstance(m, dict) and isinstance(m.get("content"), str) for m in prompt)):
        raise HarnessError(f"{where}: field {fields['prompt']!r} must be a string or a list of chat messages (each with a string `content`)")
    roles = [m.get("role") for m in row["prompt"]]
    odd = [r for r in roles if r not in CHAT_ROLES]
    if odd:  # a chat template renders an unknown role (or none) as some other turn, or fails
        raise HarnessError(f"{where}: a prompt message has role {odd[0]!r}; chat roles are {', '.join(CHAT_ROLES)}")
    if roles[-1] != "user":
        raise HarnessError(f"{where}: the prompt must end with a user message (its last is {roles[-1]!r})")
    if not row["prompt"][-1]["content"].strip():
        raise HarnessError(f"{where}: field {fields['prompt']!r}: the user message is blank")
    if evaluated and any(r != "system" for r in roles[:-1]):
        raise HarnessError(f"{where}: a prompt of several turns; evaluation (lm-eval) reads only the system message and the last "
                           "user message, so it would score another prompt than the data holds: fold the earlier turns into that message")
    problem = answer_problem(card.scorer, row["answer"])
    if problem:
        raise HarnessError(f"{where}: field {fields['answer']!r}: {problem}")
    if not isinstance(row["demonstration"], str):
        row["demonstration"] = json.dumps(row["demonstration"])
    return row


def load_rows(card, split: str, data_dir=None) -> list[dict]:
    source = resolve_source(card, split, data_dir)
    records = read_records(source, card, split)
    label = source if isinstance(source, Path) else source.get("path")
    fields = split_fields(card, split)
    return [normalize(r, card, f"{label}, {position}", fields, evaluated=split == "test") for position, r in records]


# --------------------------------------------------------------- lm-eval glue
def lm_eval_dataset(harness: dict | None = None, config_source: str | None = None, data_dir: str | None = None, **_):
    """lm-eval's `custom_dataset`: the card's test split as flat documents (from --data-dir, else $HARNESS_DATA_DIR)."""
    import datasets

    card = card_from_config(harness, Path(config_source))
    docs = [document(row, card.scorer) for row in load_rows(card, "test", data_dir)]
    return datasets.DatasetDict({"test": datasets.Dataset.from_list(docs)})


def document(row: dict, scorer: str) -> dict:
    """An lm-eval document: text columns for the prompt, the reference as JSON (any shape survives Arrow)."""
    system = "\n".join(m["content"] for m in row["prompt"][:-1] if m.get("role") == "system")
    return {
        "system": system,
        "user": row["prompt"][-1]["content"],
        "demonstration": row["demonstration"],
        "reference": json.dumps(row["answer"]),
        "scorer": scorer,
    }


def process_results(doc: dict, results: list[str]) -> dict[str, float]:
    return {"acc": get_scorer(doc["scorer"])(results[0], json.loads(doc["reference"]))}


JUDGE_URL_ENV, JUDGE_MODEL_ENV = "HARNESS_JUDGE_URL", "HARNESS_JUDGE_MODEL"


@cache
def get_scorer(name: str):
    """A scorer by name; `judge` is the LLM judge at $HARNESS_JUDGE_URL, or a labelled fallback."""
    if name != "judge":
        return SCORERS[name]
    url = os.environ.get(JUDGE_URL_ENV)
    if url:
        return make_judge(url, os.environ.get(JUDGE_MODEL_ENV, "default"))
    logging.getLogger("harness").warning(
        "no LLM judge configured (%s / %s): scoring with the crude reference_overlap fallback, not the paper's judge",
        JUDGE_URL_ENV,
        JUDGE_MODEL_ENV,
    )
    return SCORERS["reference_overlap"]


