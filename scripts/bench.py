"""What the harness costs: `make bench` writes results/bench/bench.json and prints a table.

1. One stage per method on the toy suite (task `facts`): wall time split into generation /
   training / evaluation / logging, training and generation tokens per second, peak memory.
2. The harness's overhead against a bare TRL script doing the same stage (same data, same TRL
   config, same process): the harness's training phase over the bare one's, bare timed before and
   after to cancel drift.
3. How total cost grows with the number of tasks (T = 1..4) and of probes (0..4).
Every measurement runs in a fresh process so peak memory and warm caches are its own.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "results" / "bench"
TASKS = ["cipher", "facts", "tooluse", "swap"]
PROBES = ["addition", "reversal", "capitals", "incontext"]


def child(kind: str, **params) -> dict:
    """Run one measurement in a fresh interpreter; returns its JSON plus its peak memory."""
    proc = subprocess.Popen([sys.executable, __file__, "--child", json.dumps({"kind": kind, **params})], stdout=subprocess.PIPE, cwd=ROOT)
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    if status != 0:
        raise SystemExit(f"bench step {kind} {params} failed (status {status})")
    result = json.loads(out.decode().strip().splitlines()[-1])
    result["peak_rss_mb"] = round(usage.ru_maxrss / 1024, 1)  # Linux reports KiB
    return result


def harness_run(tmp: Path, name: str, tasks: list[str], methods: list[str], probes: list[str], steps: int, limit: int | None) -> Path:
    from harness.evaluation import EvalSettings
    from harness.runner import RunRequest, run

    request = RunRequest(
        tasks=tasks, methods=methods, probes=probes, output=str(tmp / name), tracking_uri=f"sqlite:///{tmp / 'mlflow.db'}",
        set=[f"max_steps={steps}", "logging_steps=5"], eval=EvalSettings(limit=limit),
    )
    return run(request)


def measure_stage(method: str, steps: int) -> dict:
    """One harness stage and the same stage through bare TRL, in this process."""
    from baselines import METHODS
    from baselines.common import Stage
    from harness import tracking
    from harness.config import load_preset, method_options
    from harness.registry import load_suite
    from harness.taskdata import load_rows

    tmp = Path(tempfile.mkdtemp())
    suite = load_suite("toy")
    card = suite.card("facts")
    options = {**method_options(load_preset("toy"), {}, method, "facts", set(METHODS)), "max_steps": steps}
    rows = load_rows(card, "train")

    def bare() -> float:
        """What a user would write without the harness: the method's trainer on the same rows and config."""
        start = time.perf_counter()
        METHODS[method].train(Stage(0, method, card, rows, Path(suite.model_path()), Path(suite.model_path()), tmp / f"bare{time.time_ns()}", options))
        return time.perf_counter() - start

    bare_before = bare()
    run_dir = harness_run(tmp, "run", ["facts"], [method], PROBES, steps, None)
    bare_after = bare()
    record = json.loads((run_dir / "stages" / "1" / "scores.json").read_text())
    usage = json.loads((run_dir / "stages" / "1" / "train_log.json").read_text())["usage"]
    start = time.perf_counter()
    tracking.sync(run_dir, f"sqlite:///{tmp / 'fresh.db'}", strict=True)
    logging_s = time.perf_counter() - start
    s = record["seconds"]
    bare_s = (bare_before + bare_after) / 2
    return {
        "method": method,
        "steps": steps,
        "generation_s": s.get("generation", 0.0),
        "training_s": round(s["train"] - s.get("generation", 0.0), 2),
        "evaluation_s": s["eval"],
        "logging_s": round(logging_s, 2),
        "train_tokens_per_s": round(usage["trained_tokens"] / max(s["train"] - s.get("generation", 0.0), 1e-9), 1),
        "generation_tokens_per_s": round(usage["generated_tokens"] / s["generation"], 1) if s.get("generation") else None,
        "bare_trl_s": round(bare_s, 2),
        "harness_train_s": s["train"],
        "overhead": round(s["train"] / bare_s - 1, 4),
    }


def measure_total(tasks: list[str], probes: list[str], steps: int, limit: int) -> dict:
    tmp = Path(tempfile.mkdtemp())
    start = time.perf_counter()
    harness_run(tmp, "run", tasks, ["sft"], probes, steps, limit)
    return {"tasks": len(tasks), "probes": len(probes), "seconds": round(time.perf_counter() - start, 2)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--child")
    parser.add_argument("--steps", type=int, default=20, help="training steps per benchmarked stage")
    args = parser.parse_args()
    if args.child:
        from harness.cli import quiet_libraries

        quiet_libraries()
        spec = json.loads(args.child)
        kind = spec.pop("kind")
        with open(os.devnull, "w") as devnull:  # keep the child's stdout for the JSON line only
            real, sys.stdout = sys.stdout, devnull
            result = measure_stage(**spec) if kind == "stage" else measure_total(**spec)
            sys.stdout = real
        print(json.dumps(result))
        return

    import torch

    stages = [child("stage", method=m, steps=args.steps) for m in ("sft", "sdft", "sdpo")]
    by_tasks = [child("total", tasks=TASKS[:t], probes=PROBES[:1], steps=5, limit=20) for t in range(1, 5)]
    by_probes = [child("total", tasks=TASKS[:1], probes=PROBES[:p], steps=5, limit=20) for p in range(0, 5)]
    report = {
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "torch": torch.__version__, "cuda": torch.cuda.is_available()},
        "stages": stages,
        "scaling_tasks": by_tasks,
        "scaling_probes": by_probes,
    }
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "bench.json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"{'method':<6} {'gen s':>7} {'train s':>8} {'eval s':>7} {'log s':>6} {'train tok/s':>12} {'gen tok/s':>10} {'peak MB':>8} {'vs bare TRL':>12}")
    for r in stages:
        gen_tps = "-" if r["generation_tokens_per_s"] is None else f"{r['generation_tokens_per_s']:.0f}"
        print(f"{r['method']:<6} {r['generation_s']:>7.1f} {r['training_s']:>8.1f} {r['evaluation_s']:>7.1f} {r['logging_s']:>6.1f} "
              f"{r['train_tokens_per_s']:>12.0f} {gen_tps:>10} {r['peak_rss_mb']:>8.0f} {r['overhead']:>+11.1%}")
    print("total seconds by number of tasks (SFT, 5 steps each, 1 probe):", [r["seconds"] for r in by_tasks])
    print("total seconds by number of probes (1 task):", [r["seconds"] for r in by_probes])
    print(f"-> {OUT / 'bench.json'}")


if __name__ == "__main__":
    main()
