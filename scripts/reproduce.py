"""Run method variants through the suite's sequence, N at a time, then one comparison report.

    .venv/bin/python scripts/reproduce.py --variants "sft sdft sft:replay=0.2" --seeds 0 --out results/baselines --jobs 3

A variant is a method, or `method:option=value` (one option of that method). Each run is an ordinary
`harness run` into OUT/toy-<variant>-seed<S>: rerunning resumes unfinished runs and skips finished ones.
With --jobs above 1 every run gets one torch thread (two cores: oversubscribed threads are many times
slower) and its own log, OUT/<run>.log; its MLflow data is replayed into the shared store at the end,
so a run that lost a race for the SQLite lock is still complete there. Anything after `--` goes to every
`harness run` (e.g. -- --limit 50). Relative paths are read from the current folder, as `harness run` reads them.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import resource
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from harness.cli import Parser  # noqa: E402  (usage mistakes: one line, exit 2, as `harness` says them)
from harness.errors import HarnessError  # noqa: E402
from harness.grid import slug  # noqa: E402
from harness.storage import writable_folder  # noqa: E402

OWN_FLAGS = ("--method", "--output", "--seed", "--seeds", "--tracking-uri")  # set here, per run: not after `--`


def run_argv(variant: str, seed: int, out: Path) -> tuple[Path, list[str]]:
    """`sft:replay=0.2` -> (OUT/toy-sft-replay-0.2-seed0, the `harness run` arguments); ValueError if malformed."""
    method, colon, option = variant.partition(":")
    key, _, value = option.partition("=")
    if not method or (colon and not (key and value)):
        raise ValueError(f"{variant!r} is not METHOD or METHOD:OPTION=VALUE")
    plain = f"{method}-{key}-{value}" if colon else method
    label = slug(plain)
    if label != plain or len(label) > 60:  # a path or a long value: still readable, still one distinct folder
        label = f"{label[:60]}-{hashlib.sha256(variant.encode()).hexdigest()[:8]}"
    run_dir = out / f"toy-{label}-seed{seed}"
    argv = ["--method", method, "--seed", str(seed), "--output", str(run_dir)]
    return run_dir, argv + (["--set", f"{method}.{option}"] if colon else [])


class Children:
    """The `harness run` processes of this script, stopped with it (Ctrl-C, SIGTERM): none is left writing."""

    def __init__(self):
        self.running: set[subprocess.Popen] = set()
        self.lock = threading.Lock()
        self.stopping = False

    def run(self, command: list[str], env: dict, log: Path | None) -> int:
        with self.lock:
            if self.stopping:
                return 130
            out = log.open("a", encoding="utf-8") if log else None
            process = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT if out else None)
            self.running.add(process)
        try:
            return process.wait()
        except BaseException:  # Ctrl-C or SIGTERM while this (main) thread waits: the child stops with it
            process.terminate()
            process.wait()
            raise
        finally:
            with self.lock:
                self.running.discard(process)
            if out:
                out.close()

    def stop(self) -> None:
        with self.lock:
            self.stopping = True
            for process in self.running:
                process.terminate()


def harness(children: Children, *args: str, log: Path | None = None, threads: int | None = None, env: dict | None = None) -> int:
    env = {**os.environ, **(env or {}), "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    if threads:
        env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    return children.run([sys.executable, "-m", "harness", *args], env, log)


SAY = threading.Lock()


def say(line: str) -> None:
    """One whole line from any worker thread (print writes the text and its newline apart: two lines merged)."""
    with SAY:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


def interrupted(*_):
    raise KeyboardInterrupt  # SIGTERM stops the runs as Ctrl-C does


def main() -> int:
    parser = Parser(description=__doc__.split("\n")[0])
    parser.add_argument("--variants", required=True, help='space- or comma-separated: "sft dft sft:replay=0.2"')
    parser.add_argument("--seeds", default="0", help="e.g. 0,1,2")
    parser.add_argument("--out", type=Path, required=True, help="folder of the run folders and the comparison")
    parser.add_argument("--jobs", type=int, default=3, help="runs at once (default 3: one more than the cores here, so none idles at the end)")
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
    if not seeds or not variants:
        parser.error("--seeds and --variants must each name at least one")
    for name, given in (("--variants", variants), ("--seeds", seeds)):
        if len(set(given)) < len(given):
            parser.error(f"{name} names one twice: {' '.join(map(str, given))}")
    extra = args.run_args[1:] if args.run_args[:1] == ["--"] else args.run_args
    # argparse takes a unique prefix for the whole flag (--out for --output): refuse those too
    clash = [a.split("=")[0] for a in extra if a.startswith("--") and len(a.split("=")[0]) > 2
             and any(own.startswith(a.split("=")[0]) for own in OWN_FLAGS)]
    if clash:
        parser.error(f"{clash[0]} after `--`: this script sets {', '.join(o for o in OWN_FLAGS if o.startswith(clash[0]))} for each run")
    try:
        runs = [run_argv(v, s, args.out.resolve()) for s in seeds for v in variants]
    except ValueError as e:
        parser.error(f"--variants: {e}")
    out = writable_folder(args.out).resolve()
    tracking = ["--tracking-uri", args.tracking_uri] if args.tracking_uri else []
    at_once = min(args.jobs, len(runs))
    parallel = at_once > 1
    print(f"{len(runs)} run(s), {at_once} at a time, into {out}"
          + (" (each run's output in its .log there)" if parallel else ""), flush=True)
    if parallel:  # create a new store's tables once, here: runs starting together race to create them
        from harness.sweep import create_store
        from harness.tracking import default_uri

        create_store(args.tracking_uri or default_uri())
    children, start = Children(), time.monotonic()
    signal.signal(signal.SIGTERM, interrupted)

    def one(run: tuple[Path, list[str]]) -> tuple[Path, int]:
        run_dir, argv = run
        log = run_dir.parent / f"{run_dir.name}.log" if parallel else None  # not with_suffix: names hold dots (replay-0.2)
        began = time.monotonic()
        if parallel:
            say(f"running: {run_dir.name} (output in {log})")
        code = harness(children, "run", *argv, *tracking, *extra, log=log, threads=1 if parallel else None)
        if not children.stopping:
            state = "done" if code == 0 else f"FAILED (exit {code}" + (f"; see {log})" if log else ")")
            say(f"{state}: {run_dir.name} in {time.monotonic() - began:.0f} s")
        return run_dir, code

    pool = ThreadPoolExecutor(at_once)
    try:
        results = list(pool.map(one, runs))
        pool.shutdown()
        finished = [str(d) for d, code in results if code == 0]
        failed = [d.name for d, code in results if code != 0]
        report = out / "comparison" / "comparison.md"
        if parallel and finished and harness(children, "sync", *finished, *tracking) != 0:
            failed.append("harness sync")  # idempotent: fills in what a run could not write while the other held the lock
        if finished and harness(children, "report", *finished, "--out", str(report.parent)) != 0:
            failed.append("harness report")
    except KeyboardInterrupt:
        children.stop()
        pool.shutdown(wait=True, cancel_futures=True)
        print(f"stopped: rerun the same command to resume ({out})", file=sys.stderr, flush=True)
        return 130
    cpu = resource.getrusage(resource.RUSAGE_CHILDREN)  # the runs, sync and report: all waited for
    print(f"{len(finished)} of {len(runs)} run(s) finished in {time.monotonic() - start:.0f} s wall "
          f"({cpu.ru_utime + cpu.ru_stime:.0f} s of CPU on {os.cpu_count()} cores)"
          + (f"; report in {report}" if report.exists() and "harness report" not in failed else "")
          + (f"; failed: {', '.join(failed)}" if failed else ""), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    try:
        code = main()
    except HarnessError as e:
        print(f"error: {e}", file=sys.stderr)
        code = e.exit_code
    sys.exit(code)
