"""Compare finished runs: metric table, accuracy matrices and the SDFT papers' figures, per method.

Runs that differ only in seed or task order form a group; the table shows each
metric's mean ± 95% confidence half-width over the group's runs (Student t, n-1
degrees of freedom). Matrices and figures need one order (a column is a stage's
task): a sequence run in several orders gets its pooled table, and with
`by_order` each order's own section as well. Every metric comes from the runs' metrics.json, every matrix cell from
their matrix.csv, so each number in the report traces back to a run folder.
Runs evaluated under different protocols never form one group, and a sequence
whose runs differ in protocol is marked, naming the columns and how they differ.
"""

from __future__ import annotations

import csv
import html
import io
import json
import logging
import math
import re
import shlex
import statistics
from dataclasses import dataclass, field, replace
from pathlib import Path

from harness import reference, storage
from harness.errors import HarnessError
from harness.protocol import differences
from harness.results import check_summary, heatmap_png, pyplot
from harness.rundir import (
    RESULTS_DIR,
    RUN_STAMPS,
    Matrix,
    MatrixRow,
    RunDir,
    base_model,
    protocol_fingerprint,
    read_curve,
    read_matrix,
    read_metrics,
    read_run,
    run_folders,
)

COLUMNS = ("acc", "bwt", "forgetting", "forgetting_first_final", "fwt", "new_task_gain", "probe_avg", "probe_delta")
TITLES = {
    "acc": "ACC",
    "bwt": "BWT",
    "forgetting": "Forgetting",
    "forgetting_first_final": "Forgetting (first-final)",
    "fwt": "FWT",
    "new_task_gain": "New-task gain",
    "probe_avg": "Probe avg",
    "probe_delta": "Probe delta",
}
PAPER_SUITE = "paper-sequential"
log = logging.getLogger("harness")
# Run task names that mean a published task, besides the published name itself.
TASK_ALIASES = {"tooluse": ("toolalpaca",), "science": ("sciknoweval", "chemistry"), "medical": ("huatuo",)}


# ---------------------------------------------------------------- loading


def load_run(run_dir: Path) -> dict:
    folder = RunDir(run_dir)
    if not Path(run_dir).is_dir():
        raise HarnessError(f"{run_dir}: {'not a folder' if Path(run_dir).exists() else 'no such folder'}")
    inner = [p.name for p in run_folders(run_dir)]
    if inner and not folder.run.exists():  # a folder of runs, none of them finished
        raise HarnessError(f"{run_dir}: holds no finished run folder, only {', '.join(inner[:5])}{' ...' if len(inner) > 5 else ''} "
                           "(unfinished, or from --check-base: name one to see which)")
    if not folder.run.exists():
        raise HarnessError(f"{run_dir}: not a finished run folder (no {folder.run.name})" + runs_further_down(run_dir))
    for path in (folder.metrics, folder.matrix):
        if not path.exists():
            raise HarnessError(f"{run_dir}: not a finished run folder (no {path.name})")
    run = read_run(run_dir, {"options": list})  # grouping compares the options
    if run.get("check_base"):
        raise HarnessError(f"{run_dir}: a --check-base folder: the base row alone, with no stage to compare")
    metrics = read_metrics(run_dir)
    if metrics["stages_done"] != metrics["stages_total"]:
        raise HarnessError(f"{run_dir}: unfinished ({metrics['stages_done']} of {metrics['stages_total']} stages); rerun it to resume")
    matrix = read_matrix(folder.matrix)
    check_summary(run_dir, run, metrics, matrix, str(folder.matrix))  # tables come from metrics.json, cells from matrix.csv
    return {"dir": run_dir, "run": run, "metrics": metrics, "matrix": matrix}


def finished_runs(root: Path) -> list[Path]:
    """Run folders directly under root whose every stage is done (unfinished ones are named in a warning, foreign
    folders skipped)."""
    found, unfinished = [], []
    candidates = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")) if root.is_dir() else []
    for path in candidates:
        if _finished(path):
            found.append(path)
        elif RunDir(path).run.exists() and not _check_base(path):  # a base check's folder never has stages
            unfinished.append(path.name)
    if unfinished:
        log.warning("left out %d unfinished run(s) under %s (rerun to finish them): %s", len(unfinished), root,
                    ", ".join(unfinished[:5]) + (" ..." if len(unfinished) > 5 else ""))
    return found


def _finished(path: Path) -> bool:
    try:
        metrics = read_metrics(path)
        return RunDir(path).run.exists() and RunDir(path).matrix.exists() and metrics["stages_done"] == metrics["stages_total"]
    except (OSError, HarnessError):  # a foreign or corrupt folder is not a finished run; named, it is an error
        return False


def runs_further_down(root: Path) -> str:
    """For a folder with no finished run directly in it: the folders under it that hold some (e.g. results/sequential
    after `make reproduce-sequential`), as a hint to name them; "" if none."""
    try:
        folders = [d for d in sorted(Path(root).iterdir()) if d.is_dir() and not d.name.startswith(".")
                   and any(_finished(c) for c in d.iterdir() if c.is_dir())]
    except OSError:
        return ""
    if not folders:
        return ""
    more = f" and {len(folders) - 5} more" if len(folders) > 5 else ""
    return (f" (folders of finished runs there: {', '.join(map(str, folders[:5]))}{more}); name one: "
            f"harness report {shlex.quote(str(folders[0]))}")


def _check_base(path: Path) -> bool:
    try:
        return bool(storage.read_json(RunDir(path).run).get("check_base"))
    except (HarnessError, AttributeError):  # unreadable, or not a mapping: not a base check's
        return False


# ---------------------------------------------------------------- grouping and statistics


# Harness options that make a method a different baseline: shown in its label (e.g. "sft replay=0.2").
LABEL_OPTIONS = {"replay": 0.0, "merge_alpha": 1.0}


def method_label(run: dict) -> str:
    """`sft`, `sft,sdft`, `sft replay=0.2`; an option set on some stages only reads stage by stage (`merge_alpha=1/0.5`)."""
    methods = run["methods"]
    label = methods[0] if len(set(methods)) == 1 else ",".join(methods)
    stages = run.get("options") or [{}]
    shown = []
    for key, off in LABEL_OPTIONS.items():
        values = [o.get(key, off) for o in stages]
        if any(v != off for v in values):
            shown.append(f"{key}=" + (f"{values[0]:g}" if len(set(values)) == 1 else "/".join(f"{v:g}" for v in values)))
    return " ".join([label, *shown])


# Evaluation settings that change a score (a limit scores other items); the batch size and the unsafe-code switch do not.
SCORED_EVAL = ("limit", "max_length", "backend")
# What run.json holds that says nothing about the experiment: the folder's name, this seed, where the data lay.
NOT_THE_EXPERIMENT = ("run_id", "seed", "data_dir", *RUN_STAMPS)


def experiment(run: dict) -> dict:
    """A run's settings but its seed: runs alike in all of these are seeds of one experiment (probes and evaluation too:
    their average must mean the same; --eval-every and pass@k draw on the random state the next stage trains with)."""
    fields = {k: v for k, v in run.items() if k not in NOT_THE_EXPERIMENT}
    fields["probes"] = [p["name"] for p in run.get("probes", [])]
    fields["eval"] = {k: (run.get("eval") or {}).get(k) for k in SCORED_EVAL}
    return fields


def group_key(run: dict, pool_orders: bool = False) -> str:
    """Pooling orders, each task keeps its own options wherever it comes in the sequence."""
    fields = experiment(run)
    if pool_orders:
        fields["tasks"] = sorted(zip(fields.pop("tasks"), fields.pop("options")), key=lambda pair: pair[0])
    return json.dumps(fields, sort_keys=True)


def task_set(run: dict) -> tuple[str, tuple[str, ...]]:
    return run["suite"], tuple(sorted(run["tasks"]))


@dataclass
class Group:
    label: str
    runs: list[dict] = field(default_factory=list)

    @property
    def run(self) -> dict:
        return self.runs[0]["run"]

    @property
    def sequence(self) -> tuple[str, tuple[str, ...]]:
        return self.run["suite"], tuple(self.run["tasks"])

    @property
    def seeds(self) -> list:
        return [r["run"]["seed"] for r in self.runs]

    @property
    def orders(self) -> list[tuple[str, ...]]:
        return list(dict.fromkeys(tuple(r["run"]["tasks"]) for r in self.runs))


def group_runs(runs: list[dict], pool_orders: bool = False) -> list[Group]:
    """Seed (and order) groups in order of first appearance. Groups of one sequence that share a label are told apart
    by what differs between them (`sft max_steps=10`), else by a #k suffix. Two runs of one group with the same seed
    and order are one run counted twice (a copied folder): refused, as it would narrow the interval on no evidence."""
    groups: dict[str, Group] = {}
    for r in runs:
        groups.setdefault(group_key(r["run"], pool_orders), Group(method_label(r["run"]))).runs.append(r)
    result = list(groups.values())
    for g in result:
        g.runs.sort(key=lambda r: (r["run"]["tasks"], r["run"]["seed"], str(r["dir"])))
        for a, b in zip(g.runs, g.runs[1:]):
            if (a["run"]["tasks"], a["run"]["seed"]) == (b["run"]["tasks"], b["run"]["seed"]):
                raise HarnessError(f"{a['dir']} and {b['dir']}: the same run (seed {a['run']['seed']}, same settings) twice; "
                                   "report one of them (a copy would count as a second seed)")
    clashes: dict[tuple, list[Group]] = {}
    for g in result:
        clashes.setdefault((task_set(g.run) if pool_orders else g.sequence, g.label), []).append(g)
    for same in clashes.values():
        if len(same) > 1:
            for g, suffix in zip(same, telling_apart([g.run for g in same])):
                g.label = f"{g.label} {suffix}".rstrip()
    return result


def telling_apart(runs: list[dict]) -> list[str]:
    """A label suffix for each of runs that share a label: `key=value` of the settings where they differ (options,
    evaluation, model, probes), else (e.g. they differ only in the protocol) none for the first and `#k` after."""

    def settings(run: dict) -> dict[str, str]:
        fields = experiment(run)
        fields.pop("tasks", None)  # alike in a clash, or another order of them
        stages = fields.pop("options", None) or []
        per_stage = {k: [_short(o.get(k)) for o in stages] for k in sorted({k for o in stages for k in o})}
        out = {k: v[0] if len(set(v)) == 1 else "/".join(v) for k, v in per_stage.items()}  # stage by stage when they differ
        out.update({f"eval.{k}": _short(v) for k, v in fields.pop("eval").items()})
        out.update(protocol=protocol_fingerprint(run) or "unrecorded", model=Path(base_model(run)).name if "model" in run else "")
        for key in ("model", "model_revision", "protocol"):  # said above (a hub model's commit in its name)
            fields.pop(key, None)
        out.update({k: _short(v) for k, v in fields.items()})
        return out

    each = [settings(r) for r in runs]
    differing = [k for k in dict.fromkeys(k for s in each for k in s) if len({s.get(k) for s in each}) > 1]
    # At most three settings, each chosen to tell apart the most pairs still alike in those chosen before it
    # (the first three that differ anywhere could all be alike between two of the runs).
    alike = {(i, j) for i in range(len(each)) for j in range(i + 1, len(each))}
    chosen = []
    while alike and differing and len(chosen) < 3:
        key = max(differing, key=lambda k: sum(each[i].get(k) != each[j].get(k) for i, j in alike))
        if not any(each[i].get(key) != each[j].get(key) for i, j in alike):
            break
        chosen.append(key)
        differing.remove(key)
        alike = {(i, j) for i, j in alike if each[i].get(key) == each[j].get(key)}
    shown = [" ".join(f"{k}={s.get(k, 'unset')}" for k in chosen) for s in each]
    for text in {t for t in shown if shown.count(t) > 1}:  # alike in what is shown: numbered, the first as it is
        for n, i in enumerate([i for i, t in enumerate(shown) if t == text][1:], 2):
            shown[i] = f"{text} #{n}".lstrip()
    return shown


def _short(value) -> str:
    """A value as it reads in a label: unset for None, floats in full (1e-05, never a rounding that makes two equal)."""
    return "unset" if value is None else json.dumps(value) if isinstance(value, dict | list) else str(value)


def t_quantile(dof: int) -> float:
    from scipy.special import stdtrit

    return float(stdtrit(dof, 0.975))


def mean_ci(values: list) -> tuple[float | None, float | None]:
    """Mean and 95% half-width (None for one value); (None, None) if any value is undefined."""
    if not values or any(v is None for v in values):
        return None, None
    mean = statistics.fmean(values)
    if len(values) == 1:
        return mean, None
    return mean, t_quantile(len(values) - 1) * statistics.stdev(values) / math.sqrt(len(values))


def final(metrics: dict, key: str):
    value = metrics.get(key)
    return value[-1] if isinstance(value, list) else value


def group_metrics(g: Group) -> dict[str, tuple]:
    return {key: mean_ci([final(r["metrics"], key) for r in g.runs]) for key in COLUMNS}


def cell_stats(g: Group) -> list[tuple[MatrixRow, dict[str, tuple]]]:
    """Per row of the matrix, each score column's (tasks then probes) mean and half-width over the group's runs."""
    first = g.runs[0]["matrix"]
    return [(row, {c: mean_ci([r["matrix"].rows[i].scores[c] for r in g.runs]) for c in first.columns}) for i, row in enumerate(first.rows)]


def row_stats(g: Group, key: str, i: int) -> tuple:
    return mean_ci([r["metrics"][key][i] if r["metrics"].get(key) else None for r in g.runs])


# ---------------------------------------------------------------- figures


def _png(fig) -> bytes:
    buffer = io.BytesIO()
    # no version stamp: same input, same bytes; the tight box takes in a legend beside the axes, however long its labels
    fig.savefig(buffer, format="png", dpi=110, metadata={"Software": None}, bbox_inches="tight")
    pyplot().close(fig)
    return buffer.getvalue()


def _panels_png(fig, title: str) -> bytes:
    """A figure of panels, titled, with one legend beside them (never on them)."""
    fig.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8, frameon=False)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return _png(fig)


def _color(index: int):
    return pyplot().get_cmap("tab10")(index % 10)


def base_points(groups: list[Group], tasks: tuple) -> dict[str, tuple[list, float | None]]:
    """Per base evaluation (model and scored evaluation settings, e.g. --limit): base accuracy per task and base probe
    average, means over every run evaluated so; each named by what tells it from the others ("base" when alone)."""
    by_base: dict[tuple, list[dict]] = {}
    for g in groups:
        by_base.setdefault((base_model(g.run, 40), tuple(experiment(g.run)["eval"].items())), []).extend(g.runs)
    models = {model for model, _ in by_base}
    shown = {base_model(g.run, 40): base_model(g.run) for g in groups}  # compared whole, named short
    out = {}
    for (model, scored), runs in by_base.items():
        differs = [f"eval.{k}={_short(v)}" for k, v in scored if len({dict(other)[k] for _, other in by_base}) > 1]
        name = ", ".join(([Path(shown[model]).name] if len(models) > 1 else []) + differs)
        accuracy = [mean_ci([r["matrix"].rows[0].scores[task] for r in runs])[0] for task in tasks]
        probe = mean_ci([r["metrics"]["probe_avg"][0] if r["metrics"].get("probe_avg") else None for r in runs])[0]
        out[f"base ({name})" if name else "base"] = (accuracy, probe)
    return out


def scatter_png(groups: list[Group], colors: dict[str, int], published: list[dict]) -> bytes:
    """SDFT's accuracy-versus-forgetting plot, one panel per task: the task's accuracy right after its stage
    against the probe average then; error bars are 95% CIs over seeds."""
    plt = pyplot()
    suite, tasks = groups[0].sequence
    fig, axes = plt.subplots(1, len(tasks), figsize=(3.6 * len(tasks) + 1.2, 3.6), sharey=True, squeeze=False)
    bases = base_points(groups, tasks)
    for j, (ax, task) in enumerate(zip(axes[0], tasks)):
        for name, (accuracy, probe) in bases.items():
            if accuracy[j] is not None and probe is not None:
                ax.scatter(accuracy[j], probe, marker="*", s=180, color="black", zorder=3, label=name if j == 0 else None)
        for g in groups:
            (x, dx), (y, dy) = cell_stats(g)[j + 1][1][task], row_stats(g, "probe_avg", j + 1)
            if x is None or y is None:
                continue
            ax.errorbar(x, y, xerr=dx, yerr=dy, fmt="o", ms=8, capsize=3, color=_color(colors[g.label]), label=g.label if j == 0 else None)
        for p in (p for p in published if p["task_index"] == j):
            ax.scatter(p["acc"], p["prior"], marker="D", s=40, facecolors="none", edgecolors="gray", zorder=2)
            ax.annotate(f"paper {p['method']}", (p["acc"], p["prior"]), fontsize=7, color="gray", xytext=(4, 3), textcoords="offset points")
        ax.set_title(f"stage {j + 1}: {task}", fontsize=10)
        ax.set_xlabel(f"{task} accuracy after stage {j + 1}")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("prior capability (probe average)")
    return _panels_png(fig, f"{suite}: new-task accuracy vs prior capability")


def normalized_png(groups: list[Group], colors: dict[str, int]) -> bytes:
    """SDFT's sequential figure: per task, (score - base) / (best row - base) after every stage, one line per method."""
    plt = pyplot()
    suite, tasks = groups[0].sequence
    stages = range(len(tasks) + 1)
    fig, axes = plt.subplots(1, len(tasks), figsize=(3.6 * len(tasks) + 1.2, 3.4), sharey=True, squeeze=False)
    for j, (ax, task) in enumerate(zip(axes[0], tasks)):
        ax.axhline(0, color="black", lw=0.8)
        ax.axhline(1, color="gray", lw=0.8, ls=":")
        ax.axvline(j + 1, color="gray", lw=0.8, ls="--")  # the stage that trains this task
        for g in groups:
            values = [mean_ci([r["metrics"]["normalized"][i][j] for r in g.runs])[0] for i in stages]
            ax.plot(stages, [math.nan if v is None else v for v in values], marker="o", color=_color(colors[g.label]), label=g.label if j == 0 else None)
        ax.set_xticks(list(stages), ["base", *(f"{k}: {t}" for k, t in enumerate(tasks, 1))], rotation=30, ha="right", fontsize=8)
        ax.set_title(task, fontsize=10)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("normalized score (0 = base, 1 = best)")
    return _panels_png(fig, f"{suite}: normalized performance across stages")


def curve_points(r: dict) -> list[tuple[int, int, float]]:
    """(stage, optimizer step counted across stages, score on the stage's task) of a run's --eval-every curves;
    each stage starts from the previous row of the matrix, where the one before it ended (its steps: train_log.json).
    A stage shorter than N has no curve and draws nothing, but its steps still count."""
    points, offset = [], 0
    tasks = r["run"]["tasks"]
    if not r["run"].get("curves"):
        return points
    for k, task in enumerate(tasks, 1):
        stage = RunDir(r["dir"]).stage(k)
        curve = read_curve(stage.curve)
        if curve:
            points.append((k, offset, r["matrix"].rows[k - 1].scores[task]))
            points += [(k, offset + p["step"], p["scores"][task]) for p in curve]
        log = storage.read_json(stage.train_log) if stage.train_log.is_file() else {}
        history = log.get("history") if isinstance(log, dict) and isinstance(log.get("history"), list) else []
        steps = [h["step"] for h in history if isinstance(h, dict) and isinstance(h.get("step"), int)]
        offset += max(steps + [curve[-1]["step"] if curve else 0])
    return points


def curves_png(groups: list[Group], colors: dict[str, int]) -> bytes:
    """The score on the task being trained, every N optimizer steps (the first run of each method), stage by stage."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 3.6))
    marked = set()
    for g in groups:
        points = curve_points(g.runs[0])
        stages = sorted({p[0] for p in points})
        for k in stages:
            xs, ys = zip(*[(x, y) for stage, x, y in points if stage == k])
            ax.plot(xs, ys, marker=".", color=_color(colors[g.label]), label=g.label if k == stages[0] else None)
            if (k, xs[0]) not in marked:  # where each stage starts, and the task it trains
                marked.add((k, xs[0]))
                ax.axvline(xs[0], color="gray", lw=0.6, ls=":")
                ax.text(xs[0], 1.01, f" {k}: {g.run['tasks'][k - 1]}", transform=ax.get_xaxis_transform(), fontsize=7, va="bottom")
    ax.set_xlabel("optimizer steps (stages one after another)")
    ax.set_ylabel("score on the task being trained")
    ax.grid(alpha=0.3)
    ax.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8, frameon=False)
    fig.tight_layout()
    return _png(fig)


def pass_k_rows(g: Group) -> list[list]:
    """[stage, task, sampling, pass@k means...] for the task each stage trained, mean over the group's runs that
    sampled alike (a temperature or top_k apart, or a different k, is another row, never averaged in)."""
    rows = []
    for k, task in enumerate(g.run["tasks"], 1):
        settings: dict[tuple, dict[str, list]] = {}
        for r in g.runs:
            if not r["run"].get("pass_k"):
                continue
            scores = (storage.read_json(RunDir(r["dir"]).stage(k).scores).get("pass_k") or {}).get(task) or {}
            ks = tuple(key for key in scores if key.startswith("pass@"))
            # records from before top_k was written sampled with generate's default (50 for the HF backend)
            setting = (scores.get("temperature"), scores.get("top_k", "unrecorded"), ks)
            for key in ks:
                settings.setdefault(setting, {}).setdefault(key, []).append(scores[key])
        for (temperature, top_k, _), values in settings.items():
            rows.append([k, task, f"T {temperature:g}, top_k {top_k}" if temperature is not None else "unrecorded",
                         *(f"{key} {statistics.mean(v):.3f}" for key, v in values.items())])
    return rows


def group_heatmap_png(g: Group) -> bytes:
    means = Matrix(g.runs[0]["matrix"].columns, tuple(replace(row, scores={c: mean for c, (mean, _) in stats.items()}) for row, stats in cell_stats(g)))
    title = g.runs[0]["run"]["run_id"] if len(g.runs) == 1 else f"{g.label}: mean of {len(g.runs)} seeds"
    return heatmap_png(means, title=title)


# ---------------------------------------------------------------- published numbers


def load_reference(path: Path | None = None) -> tuple[list[dict], str]:
    """Published new-task accuracy and prior average per (task, method), in percent, and where they come from."""
    points, titles = [], []
    for publication in reference.load(path):
        tasks = [r["trained_on"] for r in publication.rows if r["trained_on"]]
        for row in publication.rows:
            for task in [row["trained_on"]] if row["trained_on"] else dict.fromkeys(tasks):
                values = row["values"]
                if task in values and reference.PRIOR_AVG in values:
                    points.append({"task": task, "method": row["method"], "acc": float(values[task]), "prior": float(values[reference.PRIOR_AVG])})
        titles.append(publication.title)
    return points, "; ".join(titles) + f" ({Path(path or reference.REFERENCE).name} in results/reference/)"


def reference_task(task: str, reference: list[dict]) -> str | None:
    name = re.sub(r"[^a-z0-9]", "", task.lower())
    for ref in dict.fromkeys(r["task"] for r in reference):
        if any(alias in name for alias in (ref, *TASK_ALIASES.get(ref, ()))):
            return ref
    return None


def published_rows(groups: list[Group], reference: list[dict]) -> list[list]:
    """[task, method, run acc, paper acc, run prior, paper prior] in percent, for the run's tasks the paper has."""
    _, tasks = groups[0].sequence
    bases = list(base_points(groups, tasks).values())
    rows = []
    for j, task in enumerate(tasks):
        ref = reference_task(task, reference)
        if ref is None:
            continue
        paper = {r["method"]: r for r in reference if r["task"] == ref}
        for accuracy, probe in bases:
            rows.append([task, "base", accuracy[j], paper.get("base"), probe])
        shown = {"base"}
        for g in groups:
            method = g.run["methods"][j]  # the method that trained this task
            acc, prior = cell_stats(g)[j + 1][1][task][0], row_stats(g, "probe_avg", j + 1)[0]
            rows.append([task, g.label, acc, paper.get(method.lower()), prior])
            shown.add(method.lower())
        rows += [[task, f"{m} (paper only)", None, r, None] for m, r in paper.items() if m not in shown]
    pct = lambda v: None if v is None else 100 * v  # noqa: E731
    return [[t, m, pct(a), p and p["acc"], pct(pr), p and p["prior"]] for t, m, a, p, pr in rows]


def published_points(groups: list[Group], reference: list[dict]) -> list[dict]:
    """The paper's points for the scatter, as fractions, at the panel of the run task they match."""
    _, tasks = groups[0].sequence
    points = []
    for j, task in enumerate(tasks):
        ref = reference_task(task, reference)
        points += [{"task_index": j, "method": r["method"], "acc": r["acc"] / 100, "prior": r["prior"] / 100} for r in reference if r["task"] == ref]
    return points


def protocol_mismatch(groups: list[Group]) -> str:
    """Empty when every run of these groups was evaluated alike (protocols, and the items and settings scored, e.g.
    --limit); else which runs differ, and how."""
    first = groups[0].runs[0]
    scored = experiment(first["run"])["eval"]
    notes = []
    for g in groups:
        for r in g.runs:
            how = [f"eval.{k} {_short(v)} vs {_short(scored[k])}" for k, v in experiment(r["run"])["eval"].items() if v != scored[k]]
            if protocol_fingerprint(r["run"]) != protocol_fingerprint(first["run"]):
                if "protocol" not in r["run"] or "protocol" not in first["run"]:
                    how.append("no recorded protocol (an older run)")
                else:
                    how += differences(r["run"]["protocol"], first["run"]["protocol"])
            if how:
                notes.append(f"{r['run']['run_id']} vs {first['run']['run_id']}: " + ", ".join(how))
    return "; ".join(notes)


def mismatch_warning(groups: list[Group], where: str) -> list[tuple]:
    """A logged warning and a paragraph when these runs were not evaluated alike, and when they start from different
    models (a hub model at two commits too: a difference there reads as the methods' otherwise); nothing when neither."""
    blocks = []
    mismatch = protocol_mismatch(groups)
    if mismatch:
        log.warning("%s: %s", where, mismatch)
        blocks.append(("p", f"Warning: these runs are not evaluated alike, so their numbers do not compare. {mismatch}"))
    bases = {}
    for g in groups:
        for r in g.runs:
            bases.setdefault((base_model(r["run"], 40), base_model(r["run"])), {})[g.label] = None  # compared whole, named short
    if len(bases) > 1:
        which = "; ".join(f"{model}: {', '.join(labels)}" for (_, model), labels in bases.items())
        note = f"these runs start from {len(bases)} different models ({which}): a difference between them is partly the models'"
        log.warning("%s: %s", where, note)
        blocks.append(("p", f"Note: {note}, not only the methods'."))
    return blocks


def base_vs_published(groups: list[Group]) -> list[tuple]:
    """Row 0 beside the published base row of the model, per distinct protocol (report blocks)."""
    blocks, seen = [], set()
    for g in groups:
        publication = reference.for_model(g.run["model"])
        key = (base_model(g.run, 40), protocol_fingerprint(g.run))
        if publication is None or key in seen:
            continue
        seen.add(key)
        runs = [r for h in groups for r in h.runs if (base_model(h.run, 40), protocol_fingerprint(h.run)) == key]
        means = {c: mean_ci([r["matrix"].rows[0].scores.get(c) for r in runs])[0] for c in runs[0]["matrix"].columns}
        checks = reference.compare(publication, {c: v for c, v in means.items() if v is not None}, g.run.get("protocol", {}))
        rows = [[c.column if c.measured_by == c.column else f"{c.column} ({c.measured_by})", _fmt(c.run, 1), _fmt(c.published, 1),
                 f"{c.diff:+.1f}", "yes" if c.ok else "OUT", c.protocol + (f"; {c.note}" if c.note else "")] for c in checks]
        blocks += [("h", 3, f"Base model vs published (protocol {key[1] or 'unrecorded'})"),
                   ("table", ["Column", "Run %", "Paper %", "Diff", f"Within {publication.tolerance:g}", "Protocol (run)"], rows),
                   ("p", f"Row 0 (the base model, mean over {len(runs)} run(s)) against the base row of {publication.title}; "
                         f"the paper's protocol: {publication.protocol.strip()} A column out of tolerance means the evaluation differs from the paper's.")]
    return blocks


# ---------------------------------------------------------------- writing


def _fmt(value, digits: int = 4) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def _fmt_ci(stats: tuple) -> str:
    mean, half = stats
    return _fmt(mean) if half is None else f"{_fmt(mean)} ± {_fmt(half)}"


def _raw(value) -> str:
    """Full precision for the CSVs, so they equal metrics.json exactly."""
    return "" if value is None else repr(float(value)) if isinstance(value, float) else str(value)


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower() or "run"


def sequence_title(sequence: tuple) -> str:
    suite, tasks = sequence
    return f"{suite}: {' → '.join(tasks)}"


def _csv_text(header: list[str], rows: list[list]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows([[_raw(v) for v in row] for row in rows])
    return buffer.getvalue()


# Seconds a run spent on each part, from its stages' records; SDFT's teacher check counts as evaluation.
PARTS = {"train": ("train",), "eval": ("eval", "teacher_eval")}


def run_seconds(run: dict, part: str) -> float:
    return sum(s.get(p, 0) for s in run["metrics"]["seconds"] for p in PARTS[part])


def _seconds(g: Group, part: str) -> float:
    return statistics.fmean(run_seconds(r, part) for r in g.runs)


def summary_csv(groups: list[Group]) -> str:
    header = ["method", "suite", "tasks", "orders", "model", "protocol", "n", "seeds", "runs"]
    header += [c for key in COLUMNS for c in (key, f"{key}_ci95")] + ["train_s", "eval_s"]
    rows = []
    for g in groups:
        stats = group_metrics(g)
        tasks = ";".join(",".join(order) for order in g.orders)  # every order the group's runs took
        row = [g.label, g.run["suite"], tasks, len(g.orders), base_model(g.run), protocol_fingerprint(g.run) or "", len(g.runs),
               ",".join(map(str, g.seeds)), ",".join(r["run"]["run_id"] for r in g.runs)]
        rows.append(row + [v for key in COLUMNS for v in stats[key]] + [round(_seconds(g, "train"), 1), round(_seconds(g, "eval"), 1)])
    return _csv_text(header, rows)


def cells_csv(groups: list[Group]) -> str:
    rows = []
    for g in groups:
        for row, stats in cell_stats(g):
            rows += [[g.label, g.run["suite"], row.stage, row.method, row.trained_on, column, len(g.runs), mean, half] for column, (mean, half) in stats.items()]
    return _csv_text(["method", "suite", "stage", "stage_method", "trained_on", "column", "n", "mean", "ci95"], rows)


def render_md(blocks: list[tuple]) -> str:
    lines = []
    for kind, *rest in blocks:
        if kind == "h":
            lines += ["#" * rest[0] + " " + rest[1], ""]
        elif kind == "p":
            lines += [rest[0], ""]
        elif kind == "img":
            lines += [f"![{rest[1]}]({rest[0]})", ""]
        elif kind == "table":
            header, rows = rest
            cell = lambda v: str(v).replace("|", "\\|")  # noqa: E731
            lines += ["| " + " | ".join(map(cell, header)) + " |", "|" + "---|" * len(header)]
            lines += ["| " + " | ".join(map(cell, row)) + " |" for row in rows] + [""]
    return "\n".join(lines)


def render_html(blocks: list[tuple]) -> str:
    def text(s: str) -> str:
        return re.sub(r"`([^`]+)`", r"<code>\1</code>", html.escape(s))

    body = []
    for kind, *rest in blocks:
        if kind == "h":
            body.append(f"<h{rest[0]}>{text(rest[1])}</h{rest[0]}>")
        elif kind == "p":
            body.append(f"<p>{text(rest[0])}</p>")
        elif kind == "img":
            body.append(f'<p><img src="{html.escape(rest[0])}" alt="{html.escape(rest[1])}"></p>')
        elif kind == "table":
            header, rows = rest
            body.append("<table><tr>" + "".join(f"<th>{text(str(h))}</th>" for h in header) + "</tr>")
            body += ["<tr>" + "".join(f"<td>{text(str(v))}</td>" for v in row) + "</tr>" for row in rows]
            body.append("</table>")
    style = "body{font-family:sans-serif;max-width:1200px;margin:2em auto}table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right;white-space:nowrap}img{max-width:100%}"
    return f'<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>Method comparison</title><style>{style}</style></head><body>\n' + "\n".join(body) + "\n</body></html>\n"


METRICS_NOTE = ("ACC: mean final score over the tasks. BWT: final minus just-learned, mean over all but the last task. "
                "Forgetting: best earlier score minus final (Chaudhry); first-final: just-learned minus final. "
                "FWT: score before a task's own stage minus base. New-task gain: just-learned minus base. "
                "Probe avg / delta: the prior-capability average after the last stage, and its change from the base.")


def orders_blocks(key: tuple, members: list[Group], by_order: bool) -> list[tuple]:
    """A sequence run in several task orders: each method's metrics over every seed and order."""
    suite, tasks = key
    n = len({o for g in members for o in g.orders})
    header = ["Method", "Orders", "Seeds", "Runs", *(TITLES[k] for k in COLUMNS)]
    rows = [[g.label, len(g.orders), ",".join(map(str, sorted(set(g.seeds)))), len(g.runs), *(_fmt_ci(s) for s in group_metrics(g).values())]
            for g in members]
    where = "each order's own section follows" if by_order else "`harness report --by-order` adds each order's own section"
    blocks = [("h", 2, f"{suite}: {', '.join(tasks)} in {n} task orders"), ("h", 3, "Metrics over seeds and orders"), ("table", header, rows),
              ("p", f"Mean ± 95% half-width over every run of the method, whatever its task order. Matrices and figures need one order "
                    f"(a column is the task a stage trains): {where}. " + METRICS_NOTE)]
    return blocks + mismatch_warning(members, f"{suite} in {n} orders")


def sequence_blocks(sequence: tuple, members: list[Group], colors: dict[str, int], reference: tuple, out: Path) -> list[tuple]:
    """One task order: metrics over seeds, the figures and each method's mean matrix."""
    published_points_all, published_source = reference
    blocks: list[tuple] = []
    name = slug(f"{sequence[0]}-{'-'.join(sequence[1])}")
    blocks += [("h", 2, sequence_title(sequence)), ("h", 3, "Metrics")]
    header = ["Method", "Seeds", *(TITLES[k] for k in COLUMNS)]
    rows = [[g.label, ",".join(map(str, g.seeds)), *(_fmt_ci(s) for s in group_metrics(g).values())] for g in members]
    blocks.append(("table", header, rows))
    blocks.append(("p", METRICS_NOTE))
    blocks += mismatch_warning(members, sequence_title(sequence))
    blocks += base_vs_published(members)

    published = published_points(members, published_points_all) if sequence[0] == PAPER_SUITE else []
    blocks.append(("h", 3, "New-task accuracy vs prior capability"))
    if all(g.runs[0]["metrics"].get("probe_avg") for g in members):
        file = f"accuracy-vs-prior-{name}.png"
        storage.write_bytes(out / file, scatter_png(members, colors, published))
        blocks += [("img", file, "accuracy vs prior capability"),
                   ("p", "One panel per stage: the accuracy on the task just trained against the probe average after that stage; "
                         "the star is the base model, error bars are 95% CIs over seeds" + ("; gray diamonds are the SDFT paper's points." if published else "."))]
    else:
        blocks.append(("p", "No probes in these runs: no prior-capability axis to plot."))

    file = f"normalized-{name}.png"
    storage.write_bytes(out / file, normalized_png(members, colors))
    blocks += [("h", 3, "Normalized performance across stages"), ("img", file, "normalized performance"),
               ("p", "Per task, (score - base) / (best row - base) from metrics.json `normalized`, mean over seeds; "
                     "the dashed line marks the stage that trains the task. A task no row improves on is not drawn.")]

    if any(curve_points(g.runs[0]) for g in members):
        file = f"curves-{name}.png"
        storage.write_bytes(out / file, curves_png(members, colors))
        blocks += [("h", 3, "Accuracy inside each stage"), ("img", file, "accuracy across training"),
                   ("p", "Runs made with --eval-every N: the score on the task being trained every N optimizer steps, each stage "
                         "starting from the row before it (the first run of each method; values in stages/<k>/curve.json and MLflow `curve/<task>`).")]
    passk = [[g.label, *row] for g in members for row in pass_k_rows(g)]
    if passk:
        blocks += [("h", 3, "pass@k"), ("table", ["Method", "Stage", "Task", "Sampling", "pass@k (mean over runs)"], [[*r[:4], "  ".join(r[4:])] for r in passk]),
                   ("p", "Unbiased estimator (Chen et al. 2021) from n = max k samples per item at the card's temperature (1.0 where it decodes greedily) "
                         "or --pass-temperature, on the task each stage trained, right after it. Runs that sampled differently are not averaged together.")]

    blocks.append(("h", 3, "Accuracy matrices"))
    for g in members:
        file = f"heatmap-{slug(g.label)}-{name}.png"
        storage.write_bytes(out / file, group_heatmap_png(g))
        blocks += [("h", 4, g.label), ("img", file, f"accuracy matrix {g.label}")]

    if published:
        header = ["Task", "Method", "New-task acc % (run)", "New-task acc % (paper)", "Prior avg % (run)", "Prior avg % (paper)"]
        rows = [[t, m, *(_fmt(v, 1) for v in values)] for t, m, *values in published_rows(members, published_points_all)]
        blocks += [("h", 3, "Published numbers"), ("table", header, rows),
                   ("p", f"Paper columns: {published_source}. Run columns: the task's accuracy right after the stage that trains it "
                         "and the probe average then; only the first task starts from the base model as in the paper, later ones follow earlier stages.")]
    return blocks


def write_report(run_dirs: list[Path], out: Path, results: Path | None = None, by_order: bool = False) -> Path:
    """Report on the named run folders (a folder of run folders, e.g. a sweep's, stands for its finished runs),
    or on every finished one under `results` (default results/) when none is named."""
    if not run_dirs:
        results = results or RESULTS_DIR
        if not results.is_dir():
            here = "" if results.is_absolute() else f" in {Path.cwd()}"
            raise HarnessError(f"no folder {results}/{here} to report on: run from the project's folder, or name the run "
                               "folders: harness report RUN_DIR...")
        run_dirs = finished_runs(results)
        if not run_dirs:
            raise HarnessError(f"no finished run folders directly under {results}/ to report on"
                               + (runs_further_down(results) or "; name them: harness report RUN_DIR..."))
    run_dirs = [d for named in map(Path, run_dirs) for d in ([named] if RunDir(named).run.exists() else finished_runs(named) or [named])]
    unique: dict[Path, Path] = {}
    for d in run_dirs:  # a folder named twice is one run
        unique.setdefault(d.resolve(), d)
    run_dirs = list(unique.values())
    runs = [load_run(d) for d in run_dirs]
    orders: dict[tuple, set] = {}
    for r in runs:
        orders.setdefault(task_set(r["run"]), set()).add(tuple(r["run"]["tasks"]))
    pooled = group_runs(runs, pool_orders=True)
    several = {key for key, seen in orders.items() if len(seen) > 1}
    per_order = group_runs([r for r in runs if task_set(r["run"]) in several]) if by_order else []
    one_order = [g for g in pooled if task_set(g.run) not in several] + per_order  # what matrices and figures can show
    colors = {label: i for i, label in enumerate(dict.fromkeys(g.label for g in pooled + per_order))}  # a method keeps its color across sequences
    storage.writable_folder(out)  # named, not the first figure's temp file
    reference = load_reference()

    blocks: list[tuple] = [
        ("h", 1, "Method comparison"),
        ("p", f"{len(runs)} run(s) in {len(pooled)} group(s); runs that differ only in seed or task order form a group. "
              "Metrics come from each run's metrics.json: the value for one run, else the mean ± the 95% confidence half-width "
              "(Student t, n-1 degrees of freedom). Heatmaps show per-cell means; comparison.csv and comparison_cells.csv hold full precision and the half-widths."),
    ]
    for key in dict.fromkeys(task_set(g.run) for g in pooled):
        if key in several:
            blocks += orders_blocks(key, [g for g in pooled if task_set(g.run) == key], by_order)
        for sequence in dict.fromkeys(g.sequence for g in one_order if task_set(g.run) == key):
            blocks += sequence_blocks(sequence, [g for g in one_order if g.sequence == sequence], colors, reference, out)

    blocks += [("h", 2, "Runs"), ("table", ["Method", "Seed", "Run folder", "Protocol", "Train s", "Eval s"],
                                   [[g.label, r["run"]["seed"], str(r["dir"]), protocol_fingerprint(r["run"]) or "unrecorded",
                                     *(round(run_seconds(r, p), 1) for p in PARTS)] for g in pooled for r in g.runs]),
               ("p", "Protocol: the fingerprint of every column's evaluation protocol (run.json `protocol`); equal fingerprints, equal evaluation.")]

    pooled_runs = {id(r) for g in pooled if len(g.orders) > 1 for r in g.runs}
    storage.write_text(out / "comparison.csv", summary_csv(pooled + [g for g in per_order if id(g.runs[0]) in pooled_runs]))
    storage.write_text(out / "comparison_cells.csv", cells_csv(one_order))
    storage.write_text(out / "comparison.html", render_html(blocks))
    storage.write_text(out / "comparison.md", render_md(blocks))
    shown = {block[1] for block in blocks if block[0] == "img"}
    for stale in out.glob("*.png"):  # an earlier report's figures of runs no longer in it would pass for this one's
        if stale.name.startswith(FIGURES) and stale.name not in shown:
            stale.unlink(missing_ok=True)
    return out / "comparison.md"


FIGURES = ("accuracy-vs-prior-", "normalized-", "curves-", "heatmap-")  # the names of the report's own figures
