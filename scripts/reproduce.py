"""Run method variants through the suite's sequence, N at a time, then one comparison report.

    .venv/bin/python scripts/reproduce.py --variants "sft sdft sft:replay=0.2" --seeds 0 --out results/baselines --jobs 2

A variant is a method, or `method:option=value` (one option of that method). Each run is an ordinary
`harness run` into OUT/toy-<variant>-seed<S>: rerunning resumes unfinished runs and skips finished ones.
With --jobs above 1 every run gets one torch thread (two cores: oversubscribed threads are many times
slower) and its own log, OUT/<run>.log; its MLflow data is replayed into the shared store at the end,
so a run that lost a race for the SQLite lock is still complete there. Anything after `--` goes to every
`harness run` (e.g. -- --limit 50).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_argv(variant: str, seed: int, out: Path) -> tuple[Path, list[str]]:
    """`sft:replay=0.2` -> (OUT/toy-sft-replay-0.2-seed0, the `harness run` arguments)."""
    method, _, option = variant.partition(":")
    if not method or (option and "=" not in option):
        sys.exit(f"--variants: {variant!r} is not METHOD or METHOD:OPTION=VALUE")
    run_dir = out / f"toy-{variant.replace(':', '-').replace('=', '-')}-seed{seed}"
    argv = ["--method", method, "--seed", str(seed), "--output", str(run_dir)]
    return run_dir, argv + (["--set", f"{method}.{option}"] if option else [])


def harness(*args: str, log: Path | None = None, threads: int | None = None) -> int:
    env = {**os.environ, **({"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)} if threads else {})}
    command = [sys.executable, "-m", "harness", *args]
    if log is None:
        return subprocess.run(command, cwd=ROOT, env=env).returncode
    with log.open("a", encoding="utf-8") as f:
        return subprocess.run(command, cwd=ROOT, env=env, stdout=f, stderr=subprocess.STDOUT).returncode


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--variants", required=True, help='space- or comma-separated: "sft dft sft:replay=0.2"')
    parser.add_argument("--seeds", default="0", help="e.g. 0,1,2")
    parser.add_argument("--out", type=Path, required=True, help="folder of the run folders and the comparison")
    parser.add_argument("--jobs", type=int, default=2, help="runs at once (default 2: one per core here)")
    parser.add_argument("--tracking-uri", help="MLflow store of every run (default: harness run's)")
    parser.add_argument("run_args", nargs=argparse.REMAINDER, help="-- then arguments for every `harness run`")
    args = parser.parse_args()
    if args.jobs < 1:
        parser.error(f"--jobs must be at least 1, got {args.jobs}")
    try:
        seeds = [int(s) for s in args.seeds.replace(",", " ").split()]
    except ValueError:
        parser.error(f"--seeds: expected integers like 0,1,2, got {args.seeds!r}")
    variants = args.variants.replace(",", " ").split()
    extra = args.run_args[1:] if args.run_args[:1] == ["--"] else args.run_args
    tracking = ["--tracking-uri", args.tracking_uri] if args.tracking_uri else []
    runs = [run_argv(v, s, args.out.resolve()) for s in seeds for v in variants]
    args.out.mkdir(parents=True, exist_ok=True)
    parallel = args.jobs > 1 and len(runs) > 1
    print(f"{len(runs)} run(s), {args.jobs if parallel else 1} at a time, into {args.out}"
          + (" (each run's output in its .log there)" if parallel else ""), flush=True)
    start = time.monotonic()

    def one(run: tuple[Path, list[str]]) -> tuple[Path, int]:
        run_dir, argv = run
        log = run_dir.parent / f"{run_dir.name}.log" if parallel else None  # not with_suffix: names hold dots (replay-0.2)
        began = time.monotonic()
        code = harness("run", *argv, *tracking, *extra, log=log, threads=1 if parallel else None)
        state = "done" if code == 0 else f"FAILED (exit {code}" + (f"; see {log})" if log else ")")
        print(f"{state}: {run_dir.name} in {time.monotonic() - began:.0f} s", flush=True)
        return run_dir, code

    with ThreadPoolExecutor(args.jobs if parallel else 1) as pool:
        results = list(pool.map(one, runs))
    finished = [str(d) for d, code in results if code == 0]
    if parallel and finished:  # idempotent: fills in whatever a run could not write while the other held the lock
        harness("sync", *finished, *tracking)
    if finished:
        harness("report", *finished, "--out", str(args.out / "comparison"))
    failed = [d.name for d, code in results if code != 0]
    print(f"{len(finished)} of {len(runs)} run(s) finished in {time.monotonic() - start:.0f} s wall; "
          f"report in {args.out / 'comparison' / 'comparison.md'}" + (f"; failed: {', '.join(failed)}" if failed else ""), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
