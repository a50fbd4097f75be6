"""Method options: a preset (data, in baselines/presets/) overridden by --config and --set.

A preset file maps each method to its options; a `common` section applies to every
method, and a `by_task` section (in common or a method) to one task. Overrides name a key for all
methods of the schedule (`learning_rate=1e-5`) or one method (`sdft.teacher=initial`), and either
for one task only (`by_task.tooluse.max_steps=800`, `sdft.by_task.tooluse.max_steps=800`).
"""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from harness import project
from harness.cardfile import UniqueKeys
from harness.errors import HarnessError, unknown

PRESETS_DIR = project.path("baselines", "presets")
# transformers 5 renamed these; a preset and an override that use different names must still override one another
ALIASES = {"gradient_checkpointing": "activation_checkpointing", "gradient_checkpointing_kwargs": "activation_checkpointing_kwargs"}


def presets() -> dict[str, Path]:
    return {p.stem: p for p in sorted(PRESETS_DIR.glob("*.yaml"))}


def load_yaml_mapping(path: Path, what: str, holds: str = "options", loader=None) -> dict:
    """A YAML file that must hold a mapping (a preset, a --config file, a sweep file); every way it can be wrong is one line."""
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), loader or _Loader) or {}  # noqa: S506
    except FileNotFoundError:
        raise HarnessError(f"{what} not found: {path}") from None
    except IsADirectoryError:
        raise HarnessError(f"{what} is a folder, expected a YAML file: {path}") from None
    except UnicodeDecodeError as e:
        raise HarnessError(f"{path}: not UTF-8 text (byte {e.start})") from None
    except yaml.YAMLError as e:
        mark, problem = getattr(e, "problem_mark", None), getattr(e, "problem", None)
        raise HarnessError(f"{path}{f', line {mark.line + 1}' if mark else ''}: malformed YAML" + (f" ({problem})" if problem else "")) from None
    if not isinstance(data, dict):
        raise HarnessError(f"{path}: expected a mapping of {holds}, got {type(data).__name__}")
    return data


def load_preset(name: str) -> dict:
    files = presets()
    if name not in files:
        raise unknown("preset", name, files)
    return load_yaml_mapping(files[name], "preset")


def parse_set(items: list[str]) -> dict:
    """`a.b.c=value` strings to a nested mapping; values are read as YAML scalars (1e-5, true, [a, b])."""
    out: dict = {}
    for item in items:
        key, sep, raw = item.partition("=")
        *path, last = key.split(".")
        if not sep or not all([*path, last]):
            raise HarnessError(f"--set {item!r}: expected KEY=VALUE (e.g. learning_rate=1e-5 or sdft.teacher=initial)")
        node = out
        for part in path:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise HarnessError(f"--set {item!r}: {part!r} was set to a value, so it cannot also hold options")
        node[last] = _scalar(raw)
    return out


def _merge(base: dict, extra: dict) -> dict:
    """`extra` over `base`, mapping by mapping (a --set inside a section of the --config file keeps the rest)."""
    out = dict(base)
    for key, value in extra.items():
        for old, new in ALIASES.items():  # either name in `extra` replaces both in `base`
            if key in (old, new) and key not in base:
                out.pop(old, None), out.pop(new, None)
        both = isinstance(value, dict) and isinstance(out.get(key), dict)
        out[key] = _merge(out[key], value) if both else value
    return out


class _Loader(UniqueKeys, yaml.SafeLoader):
    """YAML that reads `1e-5` as a number (plain YAML 1.1 wants `1.0e-5` and gives a string), each key once."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float", re.compile(r"^[-+]?(?:\d+\.?\d*|\.\d+)[eE][-+]?\d+$"), list("-+0123456789.")
)


def _scalar(raw: str):
    try:
        return yaml.load(raw, _Loader)  # noqa: S506 (a SafeLoader subclass)
    except yaml.YAMLError:
        return raw


def method_options(preset: dict, overrides: dict, method: str, task: str, methods: set[str]) -> dict:
    """The options of one stage: preset (common, then the method) < overrides (flat, then the method); each part's
    `by_task` for this task over that part."""

    def renamed(section: dict) -> dict:
        check_one_name(section)
        return {ALIASES.get(k, k): v for k, v in section.items()}

    def own(section: dict) -> dict:
        return renamed({k: v for k, v in section.items() if k != "by_task" and k not in methods})

    options = {}
    for part in (preset.get("common"), preset.get(method), overrides, overrides.get(method)):
        options.update(own(part or {}))
        options.update(renamed(((part or {}).get("by_task") or {}).get(task) or {}))
    return options


def check_one_name(section: dict, where: str = "") -> None:
    for old, new in ALIASES.items():
        if old in section and new in section:
            raise HarnessError(f"options {where}{old} and {where}{new} are one option (transformers 5 renamed it): set one")


def load_overrides(config_file: str | None, set_items: list[str]) -> dict:
    overrides = load_yaml_mapping(Path(config_file), "--config file") if config_file else {}
    return _merge(overrides, parse_set(set_items))
