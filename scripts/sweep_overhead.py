"""What a sweep costs over running its trials by hand: the same 4 toy trials (2 methods x 2 seeds),
back to back, (a) one `harness run` after another as the sweep prints them, (b) through `harness sweep`
one trial at a time, (c) through `harness sweep` with as many at once as the machine's CPUs hold.
Every variant starts from empty folders (its own base-evaluation cache) and a SQLite store.

    .venv/bin/python scripts/sweep_overhead.py [--rounds 2]
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from harness.registry import load_suite

SUITE = load_suite("toy")
GRID = ["--methods", "sft,sdft", "--seeds", "0,1", "--tasks", ",".join(SUITE.sequence[:2]), "--probes", SUITE.probes[0].name,
        "--limit", "2", "--set", "max_steps=3", "--set", "per_device_train_batch_size=2", "--set", "sdft.max_completion_length=12"]
HARNESS = [sys.executable, "-m", "harness"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}


def sweep_args(root: Path, name: str) -> list[str]:
    return [*GRID, "--out", str(root / name), "--tracking-uri", f"sqlite:///{root / name / 'mlflow.db'}"]


def timed(cmd: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, env=ENV, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def by_hand(root: Path) -> float:
    printed = subprocess.run([*HARNESS, "sweep", "--dry-run", *sweep_args(root, "hand")], env=ENV, check=True, capture_output=True, text=True).stdout
    commands = [shlex.split(line.strip())[1:] for line in printed.splitlines() if line.startswith("  harness run ")]
    assert len(commands) == 4, printed
    return sum(timed([*HARNESS, *cmd]) for cmd in commands)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=1, help="repeat the three variants, interleaved")
    rounds = p.parse_args().rounds
    seconds: dict[str, list[float]] = {"by hand, one after another": [], "sweep, 1 at a time": [], f"sweep, {os.cpu_count()} CPUs": []}
    for _ in range(rounds):
        root = Path(tempfile.mkdtemp(prefix="overhead"))
        try:
            a = by_hand(root)
            b = timed([*HARNESS, "sweep", *sweep_args(root, "serial"), "--max-concurrent", "1"])
            c = timed([*HARNESS, "sweep", *sweep_args(root, "parallel")])
        finally:
            shutil.rmtree(root, ignore_errors=True)
        for key, value in zip(seconds, (a, b, c)):
            seconds[key].append(value)
        print(f"round: by hand {a:.1f} s, sweep serial {b:.1f} s, sweep parallel {c:.1f} s", flush=True)
    hand = statistics.median(seconds["by hand, one after another"])
    print("\n| 4 trials | seconds (median) | ratio to by hand |\n|---|---|---|")
    for key, values in seconds.items():
        print(f"| {key} | {statistics.median(values):.1f} | {statistics.median(values) / hand:.2f} |")


if __name__ == "__main__":
    main()
