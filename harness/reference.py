"""Published numbers (results/reference/published.yaml) and the check of a run's base row against them.

A publication names the model it evaluated and its rows: the base model's scores per column and,
per method and trained task, the scores after training. When a run evaluates that model, its row 0
is compared column by column with the published base row: a difference beyond the tolerance means
the evaluation protocol differs from the paper's, which is cheaper to find before training than after.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import yaml

from harness import project
from harness.errors import HarnessError
from harness.protocol import Protocol

REFERENCE = project.path("results", "reference", "published.yaml")
TOLERANCE = 3.0  # points (percent) a base-row column may differ from the published one
PRIOR_AVG = "prior_avg"  # a published column: the mean of the paper's prior-capability probes


class BaseDriftError(HarnessError):
    """The base row is out of tolerance: a failed check, not bad input."""

    exit_code = 1


@dataclass(frozen=True)
class Publication:
    name: str
    title: str
    model: str  # the hub id of the model the paper evaluated
    rows: list[dict]  # {method, trained_on (None for base), values: {column: percent}}
    tolerance: float = TOLERANCE
    protocol: str = ""  # how the paper evaluated, in words
    measured_by: dict = field(default_factory=dict)  # published column -> the harness column that scores it the paper's way

    @property
    def base(self) -> dict[str, float]:
        return next((r["values"] for r in self.rows if r["method"] == "base"), {})

    def matches(self, model: str) -> bool:
        """The same hub id, or a local folder named like it (a downloaded copy)."""
        return model == self.model or Path(str(model)).name.lower() == self.model.rsplit("/", 1)[-1].lower()


def load(path: Path | None = None) -> list[Publication]:
    path = Path(path or REFERENCE)
    if not path.exists():
        return []
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError:
        raise HarnessError(f"{path}: malformed YAML") from None
    publications = []
    for name, spec in data.items():
        where = f"{path}: `{name}`"
        if not isinstance(spec, dict) or not {"model", "rows"} <= set(spec):
            raise HarnessError(f"{where} must give `model` and `rows`")
        rows = []
        for i, row in enumerate(spec["rows"]):
            values = row.get("values") if isinstance(row, dict) else None
            if not isinstance(values, dict) or "method" not in row or not all(isinstance(v, int | float) for v in values.values()):
                raise HarnessError(f"{where}.rows[{i}] must give `method` and `values` (column: percent)")
            rows.append({"method": row["method"], "trained_on": row.get("trained_on"), "values": values})
        publications.append(Publication(
            name=name, title=spec.get("title", name), model=spec["model"], rows=rows,
            tolerance=float(spec.get("tolerance", TOLERANCE)), protocol=spec.get("protocol", ""), measured_by=spec.get("measured_by") or {},
        ))
    return publications


def for_model(model: str, path: Path | None = None) -> Publication | None:
    return next((p for p in load(path) if p.base and p.matches(model)), None)


@dataclass(frozen=True)
class Check:
    column: str  # the published column
    measured_by: str  # the run's column compared with it
    run: float  # percent
    published: float
    protocol: str  # how the run evaluated the column
    tolerance: float
    note: str = ""  # e.g. that the column scoring it the paper's way is not in the run

    @property
    def diff(self) -> float:
        return self.run - self.published

    @property
    def ok(self) -> bool:
        return abs(self.diff) <= self.tolerance + 1e-9

    def line(self) -> str:
        rule = "" if self.measured_by == self.column else f" (scored by {self.measured_by})"
        note = f"; {self.note}" if self.note else ""
        return (f"{self.column}{rule}: {self.run:.1f} here vs {self.published:.1f} published ({self.diff:+.1f} points, "
                f"tolerance {self.tolerance:g}) under {self.protocol}{note}")


def compare(publication: Publication, scores: dict[str, float], protocols: dict[str, dict]) -> list[Check]:
    """Each published base column the run has, beside the run's row 0 (the column that scores it the paper's way when present)."""
    checks = []
    for column, published in publication.base.items():
        paper_rule, note = publication.measured_by.get(column), ""
        measured_by = paper_rule if paper_rule in scores else column
        if paper_rule and measured_by != paper_rule:
            note = f"the paper's scoring rule is column {paper_rule}, not in this run"
        value = scores.get(measured_by)
        if value is None or value != value:  # not in this run, or no score
            continue
        protocol = Protocol(**protocols[measured_by]).describe() if measured_by in protocols else "an unrecorded protocol"
        checks.append(Check(column, measured_by, 100 * value, float(published), protocol, publication.tolerance, note))
    return checks


def table(checks: list[Check]) -> str:
    width = max([len(c.column) + (0 if c.measured_by == c.column else len(c.measured_by) + 3) for c in checks] + [6])
    lines = [f"  {'column':<{width}}  {'run':>6}  {'paper':>6}  {'diff':>6}        protocol"]
    for c in checks:
        name = c.column if c.measured_by == c.column else f"{c.column} ({c.measured_by})"
        note = f" ({c.note})" if c.note else ""
        lines.append(f"  {name:<{width}}  {c.run:6.1f}  {c.published:6.1f}  {c.diff:+6.1f}  {'ok ' if c.ok else 'OUT'}   {c.protocol}{note}")
    return "\n".join(lines)
