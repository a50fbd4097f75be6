"""The training methods: one class per file in this folder (see contract.py), found here.

Every module of this package that defines a `Method` subclass with a `name` registers it;
nothing else lists methods, so adding a method is one file plus its preset entries.
"""

import importlib
import pkgutil

from baselines.contract import Method


def _discover() -> dict[str, Method]:
    found = {}
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{__name__}.{info.name}")
        for obj in vars(module).values():
            if isinstance(obj, type) and issubclass(obj, Method) and obj.__module__ == module.__name__ and obj.name:
                found[obj.name] = obj()
    return found


METHODS = _discover()
