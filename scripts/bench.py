"""What the harness costs: `make bench` writes results/bench/bench.json and prints a table.

1. One stage per method on the toy suite (task `facts`): wall time split into generation /
   training / checkpoint save / evaluation / logging, training and generation tokens per second,
   peak memory.
2. The harness's overhead against a bare TRL script doing the same stage (same data, same TRL
   config, same process): the harness's training + save + logging over bare TRL's load + train +
   save, medians of interleaved pairs after a warm-up (this 2-core machine's noise is ~20%).
3. How a whole run's cost grows with the number of tasks (T = 1..3) and of probes (0..4).
4. How close the toy base's training runs to what one core can compute: a training step's matrix-multiply rate
   against a large float32 matrix multiply's, both on one torch thread.
Every measurement runs in a fresh process so peak memory and warm caches are its own."""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "results" / "bench"
TASKS = ["cipher", "facts", "tooluse"]
PROBES = ["addition", "capitals", "format", "incontext"]


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
    from harness.plan import RunRequest
    from harness.runner import run

    request = RunRequest(
        tasks=tasks, methods=methods, probes=probes, output=str(tmp / name), tracking_uri=f"sqlite:///{tmp / 'mlflow.db'}",
        set=[f"max_steps={steps}", "logging_steps=5"], eval=EvalSettings(limit=limit),
    )
    return run(request)


def bare_trl(method: str, card, rows: list[dict], config, ours: dict, model_path: str, out: Path) -> float:
    """What a user would write without the harness: load, build the TRL trainer, train, save. Seconds."""
    from datasets import Dataset

    from baselines import METHODS
    from baselines.common import load_model, scorer_reward  # plain transformers loading, in the harness's dtype

    start = time.perf_counter()
    model, tokenizer = load_model(model_path)
    extra = {}
    if method == "sft":
        from trl import SFTTrainer as Trainer
    elif method == "sdft":
        from trl.experimental.sdft import SDFTTrainer as Trainer
    else:
        from trl.experimental.sdpo import SDPOTrainer as Trainer

        extra = {"reward_funcs": scorer_reward(card.scorer)}
    columns = METHODS[method].rows(rows, ours)
    trainer = Trainer(model=model, args=config, train_dataset=Dataset.from_list(columns), processing_class=tokenizer, **extra)
    trainer.train()
    trainer.save_model(str(out))
    return time.perf_counter() - start


def measure_stage(method: str, steps: int, pairs: int) -> dict:
    """One stage through `harness run` (the cost breakdown), then its overhead against bare TRL.

    Overhead = (median harness stage + logging) / (median bare TRL stage) - 1, where a harness stage
    is what the runner times and does outside evaluation (the method's adapter: options, trainer,
    metering, checkpoint resume; then the atomic checkpoint save) and a bare stage is load + train +
    save through the TRL trainer directly. Both are timed in `pairs` interleaved pairs after one
    warm-up, so drift and this machine's noise fall on both sides alike.
    """
    import mlflow
    import torch

    from baselines import METHODS
    from baselines.common import configure, train
    from baselines.contract import Stage
    from harness import results, storage, tracking
    from harness.config import load_preset, method_options
    from harness.registry import load_suite
    from harness.report import PARTS
    from harness.rundir import RunDir
    from harness.taskdata import load_rows

    tmp = Path(tempfile.mkdtemp())
    suite = load_suite("toy")
    card = suite.card("facts")
    options = {**method_options(load_preset("toy"), {}, method, "facts", set(METHODS)), "max_steps": steps, "logging_steps": 5}
    rows = load_rows(card, "train")

    def bare() -> float:
        work = tmp / f"bare{time.time_ns()}"
        config, ours = configure(METHODS[method], options, card, work, 0)
        return bare_trl(method, card, rows, config, ours, suite.model_path(), work / "model")

    def harness_stage() -> float:
        work = tmp / f"harness{time.time_ns()}"
        start = time.perf_counter()
        model_path = Path(suite.model_path())
        result = train(METHODS[method], Stage(1, method, card, rows, model_path, model_path, work / "trainer", options))
        storage.write_dir(work / "model", lambda d: (result.model.save_pretrained(d), result.tokenizer.save_pretrained(d)))
        return time.perf_counter() - start

    run_dir = harness_run(tmp, "run", ["facts"], [method], PROBES, steps, None)
    record = json.loads(RunDir(run_dir).stage(1).scores.read_text())
    usage = json.loads(RunDir(run_dir).stage(1).train_log.read_text())["usage"]
    store = f"sqlite:///{tmp / 'fresh.db'}"
    mlflow.MlflowClient(store).search_experiments()  # create the store first: a new database's migrations are not per-stage cost
    start = time.perf_counter()
    results.write_summary(run_dir)
    tracking.sync(run_dir, store, strict=True)
    logging_s = time.perf_counter() - start

    bare()  # warm-up
    bare_s, harness_s = [], []
    for _ in range(pairs):
        bare_s.append(bare())
        harness_s.append(harness_stage())
    s = record["seconds"]
    return {
        "method": method,
        "steps": steps,
        "generation_s": s.get("generation", 0.0),
        "training_s": round(s["train"] - s.get("generation", 0.0), 2),
        "save_s": s["save"],
        "evaluation_s": round(sum(s.get(p, 0.0) for p in PARTS["eval"]), 2),
        "logging_s": round(logging_s, 2),
        "train_tokens_per_s": round(usage["trained_tokens"] / max(s["train"] - s.get("generation", 0.0), 1e-9), 1),
        "generation_tokens_per_s": round(usage["generated_tokens"] / s["generation"], 1) if s.get("generation") else None,
        "bare_trl_s": [round(x, 2) for x in bare_s],
        "harness_stage_s": [round(x, 2) for x in harness_s],
        "overhead": round((statistics.median(harness_s) + logging_s) / statistics.median(bare_s) - 1, 4),
        **({"peak_gpu_mb": round(torch.cuda.max_memory_allocated() / 2**20, 1)} if torch.cuda.is_available() else {}),
    }


def measure_total(tasks: list[str], probes: list[str], steps: int, limit: int) -> dict:
    """A whole SFT run: its wall time, and the stages' own training and evaluation seconds."""
    from harness.report import run_seconds

    tmp = Path(tempfile.mkdtemp())
    start = time.perf_counter()
    run_dir = harness_run(tmp, "run", tasks, ["sft"], probes, steps, limit)
    wall = time.perf_counter() - start
    run = {"metrics": json.loads((run_dir / "metrics.json").read_text())}
    return {
        "tasks": len(tasks),
        "probes": len(probes),
        "seconds": round(wall, 2),
        "training_s": round(run_seconds(run, "train"), 2),
        "evaluation_s": round(run_seconds(run, "eval"), 2),
    }


def measure_compute(batch: int = 16, length: int = 64, repeats: int = 10) -> dict:
    """GFLOP/s of a forward + backward pass of the toy base on one batch (matrix multiplies only: 2 FLOPs a weight a
    token forward, twice that backward) and of a 1024 x 1024 float32 matrix multiply, both on one torch thread."""
    import torch

    from baselines.common import load_model
    from harness.registry import load_suite

    def best(step) -> float:  # the fastest of several: noise here only ever adds time
        step()
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            step()
            times.append(time.perf_counter() - start)
        return min(times)

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model, _ = load_model(load_suite("toy").model_path())
        ids = torch.randint(10, model.config.vocab_size, (batch, length))
        weights = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))
        step_s = best(lambda: model(ids, labels=ids).loss.backward())
        a, b = torch.randn(1024, 1024), torch.randn(1024, 1024)
        matmul_s = best(lambda: a @ b)
    finally:
        torch.set_num_threads(threads)
    training, peak = 6 * weights * batch * length / step_s / 1e9, 2 * 1024**3 / matmul_s / 1e9
    return {"batch": batch, "length": length, "step_s": round(step_s, 4), "training_gflops": round(training, 1),
            "matmul_gflops": round(peak, 1), "fraction": round(training / peak, 2)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--child")
    parser.add_argument("--steps", type=int, default=20, help="training steps per benchmarked stage")
    parser.add_argument("--pairs", type=int, default=5, help="interleaved harness/bare-TRL stage pairs per method")
    args = parser.parse_args()
    if args.child:
        from harness.cli import quiet_libraries

        quiet_libraries()
        spec = json.loads(args.child)
        kind = spec.pop("kind")
        with open(os.devnull, "w") as devnull:  # keep the child's stdout for the JSON line only
            real, sys.stdout = sys.stdout, devnull
            result = {"stage": measure_stage, "total": measure_total, "compute": measure_compute}[kind](**spec)
            sys.stdout = real
        print(json.dumps(result))
        return

    import torch

    stages = [child("stage", method=m, steps=args.steps, pairs=args.pairs) for m in ("sft", "sdft", "sdpo")]
    by_tasks = [child("total", tasks=TASKS[:t], probes=PROBES[:1], steps=5, limit=20) for t in range(1, len(TASKS) + 1)]
    by_probes = [child("total", tasks=TASKS[:1], probes=PROBES[:p], steps=5, limit=None) for p in range(0, len(PROBES) + 1)]
    compute = child("compute")
    report = {
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "torch": torch.__version__, "cuda": torch.cuda.is_available()},
        "stages": stages,
        "scaling_tasks": by_tasks,
        "scaling_probes": by_probes,
        "compute": compute,
    }
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "bench.json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"one stage on `facts`, {args.steps} steps, seconds; harness = train + save + log, bare TRL = load + train + save "
          f"(medians of {args.pairs} interleaved pairs)")
    print(f"{'method':<6} {'gen':>6} {'train':>6} {'save':>5} {'eval':>6} {'log':>5} {'train tok/s':>11} {'gen tok/s':>9} "
          f"{'peak MB':>8} {'harness':>8} {'bare TRL':>9} {'overhead':>9}")
    for r in stages:
        gen_tps = "-" if r["generation_tokens_per_s"] is None else f"{r['generation_tokens_per_s']:.0f}"
        bare, harness = statistics.median(r["bare_trl_s"]), statistics.median(r["harness_stage_s"]) + r["logging_s"]
        print(f"{r['method']:<6} {r['generation_s']:>6.1f} {r['training_s']:>6.1f} {r['save_s']:>5.2f} {r['evaluation_s']:>6.1f} "
              f"{r['logging_s']:>5.2f} {r['train_tokens_per_s']:>11.0f} {gen_tps:>9} {r['peak_rss_mb']:>8.0f} "
              f"{harness:>8.2f} {bare:>9.2f} {r['overhead']:>+9.1%}")
    for name, rows in (("tasks (SFT, 5 steps a stage, 1 probe, 20 items)", by_tasks), ("probes (1 task, all items)", by_probes)):
        print(f"whole run by number of {name}:")
        for r in rows:
            print(f"  T={r['tasks']} P={r['probes']}: {r['seconds']:6.1f} s wall, {r['training_s']:5.1f} s training, {r['evaluation_s']:5.1f} s evaluation")
    print(f"one thread: a toy training step ({compute['batch']} x {compute['length']} tokens) multiplies matrices at "
          f"{compute['training_gflops']} GFLOP/s, a 1024 x 1024 float32 matmul at {compute['matmul_gflops']} ({compute['fraction']:.0%})")
    print(f"-> {OUT / 'bench.json'}")


if __name__ == "__main__":
    main()
