"""Card and suite files: lm-eval task YAML, each file parsed once per process.

A card is an lm-eval task file, so it is read as lm-eval reads one: `include:` names files whose
keys the card's own override, and a `!function` tag names a function by import path (or in a
.py file beside the YAML). `read` parses a file on its first use (again only if it changes) and
returns a fresh copy of the merged mapping, each `!function` kept as a `FunctionRef`: the string
lm-eval itself gives an unresolved tag, so a card's data hashes and prints as before. `resolve`
imports the functions, for the lm-eval task the evaluator builds.
"""

from __future__ import annotations

import importlib
import importlib.util
from functools import cache
from pathlib import Path

import yaml

from harness.errors import HarnessError

_BASE = yaml.CSafeLoader if getattr(yaml, "__with_libyaml__", False) else yaml.SafeLoader


class UniqueKeys:
    """A YAML loader mixin that refuses a key written twice in one mapping: YAML keeps the last one, so a second
    `scorer:` or `sft: {...}` would silently replace the first."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            if not isinstance(key, str | int | float | bool):  # an unhashable key: YAML's own error follows
                continue
            if key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"key {key!r} appears twice in one mapping", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep)


class FunctionRef(str):
    """A `!function module.name` tag of the file in `folder`; as a string, `<folder>/module.name`, as lm-eval writes it."""

    def __new__(cls, folder: Path, spec: str):
        ref = super().__new__(cls, str(folder.expanduser() / spec))
        ref.folder, ref.spec = folder, spec
        return ref

    def load(self):
        """The function: from `<module>.py` beside the YAML if there is one (as lm-eval looks first), else by import."""
        module_name, _, name = self.spec.rpartition(".")
        local = (self.folder / f"{module_name.replace('.', '/')}.py").resolve()
        try:
            module = _local_module(local) if local.exists() else importlib.import_module(module_name)
            return getattr(module, name)
        except (ImportError, AttributeError, ValueError) as e:
            raise HarnessError(f"{self.folder}: `!function {self.spec}` names no function ({e})") from None


@cache
def _local_module(path: Path):
    spec = importlib.util.spec_from_file_location(f"harness_card_{path.stem}_{abs(hash(path))}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _loader(folder: Path) -> type:
    class Loader(UniqueKeys, _BASE):
        pass

    Loader.add_constructor("!function", lambda loader, node: FunctionRef(folder, loader.construct_scalar(node)))
    return Loader


@cache
def _parse(path: Path, _mtime_ns: int, _size: int) -> dict:
    """One file's own mapping; the cache key changes when the file does."""
    try:
        with open(path, "rb") as f:
            data = yaml.load(f, Loader=_loader(path.parent))  # noqa: S506 (a safe loader plus the !function tag)
    except OSError as e:
        raise HarnessError(f"{path}: {e.strerror or e}") from None
    except yaml.YAMLError as e:
        mark, context = getattr(e, "problem_mark", None), getattr(e, "context_mark", None)
        where = f", line {mark.line + 1}" if mark else ""
        problem = " ".join(str(getattr(e, "problem", None) or e).split())  # a reader error spans lines: keep one
        if context and e.context and (not mark or context.line != mark.line):  # where the unclosed `[` opened
            problem += f", {e.context} at line {context.line + 1}"
        raise HarnessError(f"{path}{where}: malformed YAML ({problem})") from None
    if not isinstance(data, dict):
        raise HarnessError(f"{path}: expected a YAML mapping, got {type(data).__name__}")
    return data


def _copy(value):
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy(v) for v in value]
    return value


MAX_INCLUDES = 20  # files in one chain of `include:`; lm-eval's own cards chain two or three


def read(path: Path, _seen: tuple = ()) -> dict:
    """The file's mapping with its includes merged in (its own keys win), a copy the caller may change."""
    via = f" (the `include` of {_seen[-1]})" if _seen else ""
    given = path
    try:
        path = Path(path).expanduser().resolve()
    except (OSError, ValueError) as e:  # a null byte in the name, a symlink loop
        raise HarnessError(f"{path}{via}: not a file name ({e})") from None
    if path in _seen:
        raise HarnessError(f"{path}: `include` cycle through {', '.join(map(str, _seen))}")
    if len(_seen) >= MAX_INCLUDES:
        raise HarnessError(f"{path}{via}: `include` chain longer than {MAX_INCLUDES} files")
    try:
        stat = path.stat()
    except OSError as e:
        shown = Path(given).expanduser().absolute()
        name = f"{shown} (a link to {path})" if shown != path else str(path)  # a broken link names itself first
        raise HarnessError(f"{name}{via}: {e.strerror or e}") from None
    if not path.is_file():
        raise HarnessError(f"{path}{via}: not a file")
    try:
        own = _copy(_parse(path, stat.st_mtime_ns, stat.st_size))
    except RecursionError:  # a mapping nested some hundreds deep: the parser or the copy recurses per level
        raise HarnessError(f"{path}{via}: nested too deep to read") from None
    except HarnessError as e:  # unreadable or malformed: say which file included it
        raise HarnessError(f"{e}{via}") from None
    includes = own.pop("include", None)
    if includes is None:
        return own
    merged = {}
    for include in includes if isinstance(includes, list) else [includes]:
        if not isinstance(include, str) or not include.strip():
            raise HarnessError(f"{path}: `include` must name a file (or a list of files), not {include!r}")
        base = read(path.parent / include, (*_seen, path))
        base.pop("task_list", None)  # it lists the included file's own tasks
        merged.update(base)
    merged.update(own)
    return merged


def resolve(value):
    """A copy with every `!function` replaced by the function it names."""
    if isinstance(value, FunctionRef):
        return value.load()
    if isinstance(value, dict):
        return {k: resolve(v) for k, v in value.items()}
    if isinstance(value, list):
        return [resolve(v) for v in value]
    return value
