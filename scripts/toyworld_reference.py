"""Measure the toy world against its bars and write results/reference/toyworld.md.

    .venv/bin/python scripts/toyworld_reference.py [--seeds 0,1,2]     (about an hour on 2 CPU cores)

1. The base: prior skills, new tasks on the bare prompt, new tasks with the teacher prompt.
2. Teacher survival: one SFT stage on each new task, then teacher accuracy on the others.
3. SFT and SDFT through the default sequence, per seed: the matrices and the teacher before each stage.
4. Determinism: the seed-0 SFT run repeated gives a byte-identical matrix.
All runs go through `harness run` with the toy preset, into results/reference-runs/.
"""

from __future__ import annotations

import argparse
import csv
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RUNS = ROOT / "results" / "reference-runs"
OUT = ROOT / "results" / "reference" / "toyworld.md"
TRACKING = f"sqlite:///{RUNS / 'mlflow.db'}"


def harness(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "harness", *args, "--tracking-uri", TRACKING], cwd=ROOT, check=True)


def matrix(run_dir: Path) -> list[dict]:
    with open(run_dir / "matrix.csv") as f:
        return list(csv.DictReader(f))


def table(rows: list[dict]) -> list[str]:
    header = list(rows[0])
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        out.append("| " + " | ".join(row[h] if h == "stage" else _fmt(row[h]) for h in header) + " |")
    return out


def _fmt(value) -> str:
    try:
        return f"{float(value):.2f}"
    except (TypeError, ValueError):
        return str(value)


def teacher_accuracies(model_dir, cards) -> dict:
    from baselines.common import load_model
    from harness.evaluation import Evaluator

    model, tokenizer = load_model(model_dir)
    model.eval()
    return Evaluator(cards, []).run(model, tokenizer, None, teacher_cards=cards, only_teacher=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", default="0,1,2")
    seeds = [int(s) for s in parser.parse_args().seeds.split(",")]
    sys.path.insert(0, str(ROOT))
    from harness.cli import quiet_libraries
    from harness.evaluation import Evaluator
    from harness.registry import load_suite

    quiet_libraries()
    suite = load_suite("toy")
    cards = [suite.card(t) for t in suite.sequence]
    lines = ["# The toy world, measured", "", f"Regenerate: `.venv/bin/python scripts/toyworld_reference.py --seeds {','.join(map(str, seeds))}` "
             "(runs in results/reference-runs/). Scores are lm-eval accuracies with the cards' scorers; 100 test items per task "
             "(30 for facts and capitals).", ""]

    # 1. the base
    from baselines.common import load_model

    model, tokenizer = load_model(suite.model_path())
    model.eval()
    base = Evaluator(cards, list(suite.probes)).run(model, tokenizer, None, teacher_cards=cards)
    lines += ["## The base model (tasks/toy/base)", "", "| | score | bar |", "|---|---|---|"]
    for probe in suite.probes:
        lines.append(f"| prior skill `{probe.name}` | {base[probe.name]:.2f} | >= 0.80 |")
    for card in cards:
        lines.append(f"| `{card.name}`, bare prompt | {base[card.name]:.2f} | <= 0.20 |")
        lines.append(f"| `{card.name}`, teacher prompt (demonstration shown) | {base['teacher:' + card.name]:.2f} | >= 0.80 |")

    # 2. teacher survival after one SFT stage
    lines += ["", "## Does the teacher survive one SFT stage?", "",
              "Teacher accuracy (demonstration in the prompt) on each new task after one SFT stage (toy preset) on another, from the base. Bar: >= 0.60.", "",
              "| SFT stage on | " + " | ".join(f"teacher on `{c.name}`" for c in cards) + " | own accuracy after |", "|---|" + "---|" * (len(cards) + 1)]
    for card in cards:
        run_dir = RUNS / f"survival-{card.name}"
        harness("run", "--tasks", card.name, "--method", "sft", "--output", str(run_dir))
        scores = teacher_accuracies(run_dir / "stages" / "1" / "model", cards)
        own = float(matrix(run_dir)[1][card.name])
        cells = ["(trained)" if c.name == card.name else f"{scores['teacher:' + c.name]:.2f}" for c in cards]
        lines.append(f"| `{card.name}` | " + " | ".join(cells) + f" | {own:.2f} |")

    # 3. SFT and SDFT through the sequence
    summary = {}
    for method in ("sft", "sdft"):
        lines += ["", f"## {method.upper()} through {' -> '.join(suite.sequence)}", ""]
        for seed in seeds:
            run_dir = RUNS / f"{method}-seed{seed}"
            harness("run", "--method", method, "--seed", str(seed), "--output", str(run_dir))
            rows = matrix(run_dir)
            lines += [f"Seed {seed}:", "", *table(rows), ""]
            import json

            m = json.loads((run_dir / "metrics.json").read_text())
            summary.setdefault(method, []).append({
                "acc": m["acc"], "forgetting": m["forgetting"], "probe_delta": m["probe_delta"],
                "right_after": [float(rows[k + 1][t]) for k, t in enumerate(suite.sequence)],
            })
    spread = " (mean ± sd)" if len(seeds) > 1 else ""
    lines += [f"## Summary over seed{'s' if len(seeds) > 1 else ''} {','.join(map(str, seeds))}{spread}", "",
              "| method | ACC | forgetting | probe delta | accuracy right after each stage |", "|---|---|---|---|---|"]
    for method, runs in summary.items():
        def ms(values):
            return f"{statistics.mean(values):.2f}" + (f" ± {statistics.stdev(values):.2f}" if len(values) > 1 else "")
        after = ", ".join(ms([r["right_after"][k] for r in runs]) for k in range(len(suite.sequence)))
        lines.append(f"| {method} | {ms([r['acc'] for r in runs])} | {ms([r['forgetting'] for r in runs])} | {ms([r['probe_delta'] for r in runs])} | {after} |")

    # 4. determinism
    again = RUNS / f"sft-seed{seeds[0]}-again"
    harness("run", "--method", "sft", "--seed", str(seeds[0]), "--output", str(again))
    same = (again / "matrix.csv").read_bytes() == (RUNS / f"sft-seed{seeds[0]}" / "matrix.csv").read_bytes()
    lines += ["", "## Determinism", "", f"SFT seed {seeds[0]} run twice: matrix.csv byte-identical: **{same}**. "
              "Two builds of the world with one seed write byte-identical data files (tests/test_toyworld.py).", ""]
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text("\n".join(lines) + "\n")
    print(OUT)


if __name__ == "__main__":
    main()
