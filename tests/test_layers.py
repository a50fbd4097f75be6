"""The layers run one way: no import cycle among harness/ and baselines/ modules.

The graph is read from the source with `ast`: every import statement counts, at module level
or inside a function (a function-local import that dodges a cycle at load time is still a
cycle in the design). `baselines/__init__.py` imports each module of its package by discovery,
which `ast` cannot see, so those edges are added explicitly.
"""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("harness", "baselines")
DISCOVERS = {"baselines"}  # packages whose __init__ imports every module beside it (pkgutil.iter_modules)


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules(root: Path = REPO) -> dict[str, Path]:
    return {module_name(p, root): p for package in PACKAGES for p in sorted((root / package).rglob("*.py"))}


def _target(name: str, known: set[str]) -> str | None:
    """The module an imported dotted name lands in: itself, else its closest known parent."""
    while name and name not in known:
        name = name.rpartition(".")[0]
    return name or None


def imports(source: str, module: str, is_package: bool, known: set[str]) -> set[str]:
    """Modules of `known` that `module`'s source imports, anywhere in the file."""
    package = module if is_package else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the package, up level - 1
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            # `from pkg import mod` imports the module pkg.mod; `from mod import name` the module mod
            names = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names]
        else:
            continue
        found |= {t for t in (_target(n, known) for n in names) if t and t != module}
    return found


def graph(root: Path = REPO) -> dict[str, set[str]]:
    files = modules(root)
    known = set(files)
    edges = {m: imports(p.read_text(encoding="utf-8"), m, p.name == "__init__.py", known) for m, p in files.items()}
    for package in DISCOVERS:
        edges[package] |= {m for m in known if m.rpartition(".")[0] == package}
    return edges


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), each sorted."""
    index, low, stack, on_stack, out = {}, {}, [], set(), []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def test_no_import_cycle():
    found = cycles(graph())
    assert not found, "import cycles (module-level or function-local): " + "; ".join(" <-> ".join(c) for c in found)


# The layers, top first: a module imports only from its own layer or below ("one way"). A module not
# listed here is held to the no-cycle rule only; place a new one where it belongs.
LAYERS = [
    {"harness.__main__", "harness.cli"},
    {"harness.sweep"},
    {"harness.report", "harness.grid"},
    {"harness.runner"},  # the stage loop
    {"harness.plan"},  # the request checked and resolved
    {"baselines", "baselines.common", "baselines.contract", "baselines.dft", "baselines.grpo", "baselines.sdft",
     "baselines.sdpo", "baselines.sft", "baselines.sft_reinvoke"},  # the methods
    {"harness.evaluation", "harness.passk", "harness.curves", "harness.reference", "harness.results", "harness.tracking"},
    {"harness.taskdata"},  # a card's data, and lm-eval's view of it
    {"harness.registry"},  # cards and suites
    {"harness.cardfile", "harness.fields", "harness.protocol", "harness.config", "harness.scoring", "harness.templates",
     "harness.metrics", "harness.rundir", "harness.lock", "harness.storage", "harness.faults", "harness.errors", "harness.hub", "harness"},
]


def test_no_module_imports_a_layer_above_its_own():
    rank = {m: i for i, layer in enumerate(LAYERS) for m in layer}
    up = [f"{m} -> {t}" for m, targets in graph().items() for t in targets if m in rank and t in rank and rank[t] < rank[m]]
    assert not up, "imports of a higher layer: " + "; ".join(sorted(up))


def test_the_graph_sees_every_kind_of_import():
    """The reader itself: module-level, function-local, `from pkg import mod`, relative, discovery."""
    known = {"harness", "harness.a", "harness.b", "harness.sub", "harness.sub.c", "baselines", "baselines.m"}
    source = (
        "import harness.a\n"
        "from harness import b\n"
        "def f():\n"
        "    from .sub.c import thing\n"
        "    from baselines import METHODS\n"
    )
    assert imports(source, "harness.x", False, known) == {"harness.a", "harness.b", "harness.sub.c", "baselines"}
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert graph()["baselines"] >= {"baselines.common", "baselines.sft"}


def print_graph() -> None:
    for module, targets in sorted(graph().items()):
        print(f"{module} -> {', '.join(sorted(targets)) or '-'}")


if __name__ == "__main__":
    print_graph()
    for c in cycles(graph()):
        print("CYCLE:", " <-> ".join(c))
