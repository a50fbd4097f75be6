"""A sweep's trials: methods x seeds x task orders x option values, each trial one `harness run`.

A trial is nothing but the arguments of an ordinary `harness run` with its own
run folder, so it resumes like any run and can be reproduced alone with the
command printed for it. Its folder name is readable (schedule, order, seed, the
options that vary) and ends with a hash of everything that defines the run, so
rerunning a sweep finds its finished trials and a changed setting never reuses
an old folder.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

import yaml

from harness.config import load_yaml_mapping
from harness.errors import HarnessError

MAX_ALL_ORDERS = 6  # tasks: --orders all over more would be 5040+ permutations per method and seed
SCHEDULE_JOIN = "+"  # one entry of --methods naming a method per stage: sft+sdft+sdpo


@dataclass(frozen=True)
class Trial:
    argv: tuple[str, ...]  # the `harness run` arguments, --output included
    output: Path
    varies: dict  # what distinguishes it within the sweep: method, order, seed, option values

    @property
    def name(self) -> str:
        return self.output.name

    def command(self) -> str:
        return shlex.join(["harness", *self.argv])


def split_list(raw: str) -> list[str]:
    """Split at commas outside brackets and quotes: `1e-5,5e-5` is two values, `{r: 8, alpha: 16}` one."""
    parts, depth, quote, current = [], 0, None, ""
    for ch in raw:
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch in "[{(":
            depth += 1
        elif ch in "]})":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(current.strip())
            current = ""
            continue
        current += ch
    parts.append(current.strip())
    return parts


def option_axes(items: list[str]) -> dict[str, list[str]]:
    """--set KEY=V1,V2 items to {KEY: [V1, V2]}; a single value is an axis of one. A later item wins."""
    axes = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise HarnessError(f"--set {item!r}: expected KEY=VALUE or KEY=V1,V2,... (e.g. learning_rate=1e-5,5e-5)")
        values = split_list(raw)
        if any(v == "" for v in values):
            raise HarnessError(f"--set {item!r}: an empty value in the list; separate values with single commas")
        if len(set(values)) != len(values):
            raise HarnessError(f"--set {item!r}: a value is listed twice")
        axes[key.strip()] = values
    return axes


def task_orders(tasks: list[str], spec: str | None, seed: int) -> list[tuple[str, ...]]:
    """The given order alone; N orders sampled without repeats with the sweep's seed; or `all` of them."""
    if spec is None:
        return [tuple(tasks)]
    total = math.factorial(len(tasks))
    if spec == "all":
        if len(tasks) > MAX_ALL_ORDERS:
            raise HarnessError(f"--orders all: {len(tasks)} tasks have {total} orders; give a number to sample (at most {MAX_ALL_ORDERS} tasks for `all`)")
        return [permutation(tasks, i) for i in range(total)]
    try:
        n = int(spec)
    except ValueError:
        raise HarnessError(f"--orders {spec!r}: expected a number of orders to sample, or `all`") from None
    if not 1 <= n <= total:
        raise HarnessError(f"--orders {n}: expected 1 to {total} ({len(tasks)} tasks have {total} orders)")
    return [permutation(tasks, i) for i in random.Random(seed).sample(range(total), n)]


def permutation(items: list[str], index: int) -> tuple[str, ...]:
    """The index-th permutation in lexicographic order of positions (index 0 = the given order)."""
    pool, out = list(items), []
    for k in range(len(pool), 0, -1):
        position, index = divmod(index, math.factorial(k - 1))
        out.append(pool.pop(position))
    return tuple(out)


def trials(schedules: list[list[str]], seeds: list[int], orders: list[tuple[str, ...]], axes: dict[str, list[str]],
           fixed: list[str], out: Path, tracking_uri: str, config_text: str = "") -> list[Trial]:
    """Every combination, in a stable order. `fixed`: run arguments shared by every trial; the tracking
    store is left out of the hash (where results are logged does not change what the run is)."""
    combos = [{}]
    for key, values in axes.items():
        combos = [{**c, key: v} for c in combos for v in values]
    varying = [k for k, values in axes.items() if len(values) > 1]
    found = []
    for schedule in schedules:
        for order in orders:
            for seed in seeds:
                for combo in combos:
                    sets = [a for key in sorted(combo) for a in ("--set", f"{key}={combo[key]}")]
                    argv = [*fixed, "--tasks", ",".join(order), "--method", ",".join(schedule), "--seed", str(seed), *sets]
                    digest = hashlib.sha256(json.dumps([argv, config_text]).encode()).hexdigest()[:6]
                    label = [SCHEDULE_JOIN.join(schedule), *order, f"seed{seed}", *(f"{k}={combo[k]}" for k in varying)]
                    folder = out / f"{slug('-'.join(label))[:100]}-{digest}"
                    varies = {"method": SCHEDULE_JOIN.join(schedule), "order": ",".join(order), "seed": seed, **{k: combo[k] for k in varying}}
                    found.append(Trial(("run", *argv, "--output", str(folder), "--tracking-uri", tracking_uri), folder, varies))
    return found


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.=+-]+", "-", text).strip("-")


def file_arguments(path: str, known: dict[str, str]) -> list[str]:
    """A YAML sweep file as command-line arguments (the command line, given after, wins).

    Keys are the sweep's option names (`methods`, `seeds`, `set`, `limit`, ...); a list is a
    comma list, `set` maps options to a value or a list of values. `known` maps a key to its flag."""
    # plain YAML: a value passes on as written (1e-5 stays 1e-5 in the trials' --set and folder names)
    data = load_yaml_mapping(Path(path), "sweep file", holds="sweep options (methods, seeds, set, ...)", loader=yaml.SafeLoader)
    args = []
    for key, value in data.items():
        flag = known.get(str(key).replace("_", "-"))
        if flag is None:
            raise HarnessError(f"{path}: unknown key {key!r}; known: {', '.join(sorted(known))}")
        if key == "set":
            if not isinstance(value, dict):
                raise HarnessError(f"{path}: `set` must map options to a value or a list of values, e.g. {{learning_rate: [1e-5, 5e-5]}}")
            for option, values in value.items():
                values = values if isinstance(values, list) else [values]
                args += ["--set", f"{option}={','.join(_set_text(v) for v in values)}"]
        elif value is True:
            args.append(flag)
        elif value is not False and value is not None:
            if key == "methods" and isinstance(value, list):
                value = [SCHEDULE_JOIN.join(v) if isinstance(v, list) else v for v in value]
            args += [flag, ",".join(_text(v) for v in value) if isinstance(value, list) else _text(value)]
    return args


def _set_text(value) -> str:
    """An option value that stays one value: a string with a comma is quoted so it is not split."""
    return json.dumps(value) if isinstance(value, str) and len(split_list(value)) > 1 else _text(value)


def _text(value) -> str:
    """A YAML value as the command line would give it (read back by the same YAML rules)."""
    if isinstance(value, str):
        return value
    return yaml.safe_dump(value, default_flow_style=True, width=1_000_000).strip().removesuffix("...").strip()
