"""The command line: parses, then calls. Bad input ends with one line and exit code 2."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import warnings

from harness.errors import HarnessError, distinct, first_line


def _csv(value: str) -> list[str]:
    """`a,b,c`; an empty entry (`sft,` or `a,,b`) is refused: one meant per stage would silently become one for all."""
    items = [v.strip() for v in value.split(",")]
    if value.strip() and not all(items):
        raise argparse.ArgumentTypeError(f"empty entry in {value!r}: expected comma-separated names")
    return [v for v in items if v]


def _seeds(value: str) -> list[int]:
    try:
        seeds = [int(v) for v in _csv(value)]
    except (ValueError, argparse.ArgumentTypeError):
        seeds = []
    if not seeds or any(not 0 <= s < 2**32 for s in seeds):
        raise argparse.ArgumentTypeError(f"expected comma-separated integers in [0, 2**32 - 1], got {value!r}")
    return seeds


def run_options(p: argparse.ArgumentParser, sweep: bool = False) -> list[argparse.Action]:
    """The options of one run; a sweep passes them on to each trial (--set lists become grid axes)."""
    set_help = "an option, or a list to sweep: learning_rate=1e-5,5e-5 (a value with a top-level comma in quotes)" if sweep else \
        "override an option, e.g. learning_rate=1e-5, sdft.teacher=initial or sdft.by_task.tooluse.max_steps=800"
    return [
        p.add_argument("--suite", default="toy", help="suite (tasks/, `harness list`); default: toy, the embedded one"),
        p.add_argument("--tasks", type=_csv, help="comma-separated task sequence (default: the suite's)"),
        p.add_argument("--model", help="local folder, or Hugging Face model id, org/name@rev to pin a commit, branch or tag (default: the suite's)"),
        p.add_argument("--probes", type=_csv, help="prior-capability probes (default: the suite's); lm-eval task names allowed"),
        p.add_argument("--config", help="YAML of method options: {sdft: {learning_rate: 1e-5}} or flat"),
        p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help=set_help),
        p.add_argument("--data-dir", help="folder with local copies of task data the cards name (or $HARNESS_DATA_DIR)"),
        p.add_argument("--tracking-uri", help="MLflow store (default: $MLFLOW_TRACKING_URI or sqlite:///results/mlflow.db)"),
        p.add_argument("--limit", type=int, help="evaluate at most N items per task (smoke tests)"),
        p.add_argument("--batch-size", type=int, help="evaluation batch size (default: the suite's, else 64)"),
        p.add_argument("--teacher-warn", type=float, default=0.8, help="warn when the SDFT teacher scores below this"),
        p.add_argument("--confirm-unsafe-code", action="store_true", help="allow probes that execute generated code (humaneval)"),
        p.add_argument("--backend", choices=["hf", "vllm"], default="hf", help="generation and evaluation backend (vllm: pip install '.[vllm]')"),
        p.add_argument("--eval-every", type=int, default=0, metavar="N", help="score the stage's task every N optimizer steps (curves; MLflow step metrics)"),
        p.add_argument("--eval-every-probes", action="store_true", help="with --eval-every: the probes too"),
        p.add_argument("--pass-k", type=_pass_k, default=[], metavar="K,K", help="pass@k of the generative tasks after every stage, e.g. 1,5,10 (n = max k samples)"),
        p.add_argument("--pass-temperature", type=float, default=None, metavar="T", help="with --pass-k: sample at T (default: the card's temperature, 1.0 where it decodes greedily)"),
    ]


def _pass_k(value: str) -> list[int]:
    from harness.passk import parse_ks

    try:
        return parse_ks(value)
    except HarnessError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


class Parser(argparse.ArgumentParser):
    """Usage mistakes end like every other bad input: one line, exit code 2."""

    def error(self, message):
        raise HarnessError(f"{self.prog}: {message} (see {self.prog} --help)")


def parser() -> argparse.ArgumentParser:
    p = Parser(prog="harness", description="Continual-learning benchmark harness: train through a task sequence, probe after every stage.")
    sub = p.add_subparsers(dest="command", required=True)

    r = sub.add_parser("run", help="train a model through a task sequence, evaluating after every stage")
    r.add_argument("--method", type=_csv, default=["sft"], help="one method for every stage, or one per stage: sft,sdft,sdpo (`harness list`)")
    r.add_argument("--seed", type=int, default=None, help="default 0")
    r.add_argument("--seeds", type=_seeds, help="repeat the run once per seed, e.g. 0,1,2")
    r.add_argument("--output", help="run folder (default: results/<suite>-<methods>-<tasks>-seed<N>); rerunning resumes")
    r.add_argument("--check-base", action="store_true", help="evaluate the base model only (row 0), compare each column with the published base row "
                   "(results/reference/published.yaml) and exit 1 if any is out of tolerance")
    run_options(r)

    w = sub.add_parser("sweep", help="a grid of runs (methods x seeds x task orders x option values) on Ray; rerunning skips finished trials")
    w.add_argument("file", nargs="?", help="YAML sweep file: keys are these options' names (methods, seeds, orders, set, limit, ...); the command line wins")
    w.add_argument("--methods", type=_csv, default=["sft"], help="methods to compare, e.g. sft,sdft; one method per stage: sft+sdft+sdpo")
    w.add_argument("--seeds", type=_seeds, default=[0], help="seeds, e.g. 0,1,2")
    w.add_argument("--orders", help="N: sample N task orders with --order-seed; all: every order (short sequences); default: the given order")
    w.add_argument("--order-seed", type=int, default=0, help="the seed that samples --orders")
    w.add_argument("--out", default="results/sweep", help="folder of the trials' run folders")
    w.add_argument("--address", help="an existing Ray cluster (or $RAY_ADDRESS); default: a local Ray started and stopped here")
    w.add_argument("--num-cpus", type=int, help="CPUs of the local Ray (default: the machine's)")
    w.add_argument("--cpus-per-trial", type=float, default=1.0, help="CPUs each trial reserves (and its torch threads)")
    w.add_argument("--gpus-per-trial", type=float, default=0.0, help="GPUs each trial reserves")
    w.add_argument("--max-concurrent", type=int, help="trials at once (default: as many as the cluster's resources hold)")
    w.add_argument("--retries", type=int, default=2, help="times Ray reruns a trial whose process died (it resumes at its stage)")
    w.add_argument("--dry-run", action="store_true", help="check every trial and print its command; run nothing")
    run_options(w, sweep=True)

    sub.add_parser("list", help="show suites, tasks, probes, methods and presets")

    rep = sub.add_parser("report", help="compare finished runs: metric table per method")
    rep.add_argument("run_dirs", nargs="*", help="run folders (default: every finished one under results/)")
    rep.add_argument("--out", default="results/comparison", help="folder for comparison.md / .csv")
    rep.add_argument("--by-order", action="store_true", help="besides the table over seeds and task orders, a section per order")

    s = sub.add_parser("sync", help="replay run folders into MLflow (idempotent)")
    s.add_argument("run_dirs", nargs="+")
    s.add_argument("--tracking-uri")

    b = sub.add_parser("base", help="the toy world's base model and data")
    bsub = b.add_subparsers(dest="base_command", required=True)
    bb = bsub.add_parser("build", help="pretrain the toy base model from its recipe (about 15 minutes on 2 CPU cores)")
    bb.add_argument("--out", help="folder for the model (default: the project's tasks/toy/base)")
    bd = bsub.add_parser("data", help="write the toy tasks' data files from the recipe's world")
    bd.add_argument("--out", help="folder for the data files (default: the project's tasks/toy/data)")
    bsub.add_parser("check", help="does the shipped base match the recipe in the code?")
    return p


def run_request(args, seed: int):
    from harness.evaluation import EvalSettings
    from harness.plan import RunRequest

    return RunRequest(
        suite=args.suite,
        tasks=args.tasks,
        methods=args.method,
        model=args.model,
        probes=args.probes,
        seed=seed,
        output=args.output,
        config=args.config,
        set=args.set,
        data_dir=args.data_dir,
        tracking_uri=args.tracking_uri,
        eval=EvalSettings(batch_size=args.batch_size, limit=args.limit, confirm_unsafe_code=args.confirm_unsafe_code, backend=args.backend),
        teacher_warn=args.teacher_warn,
        check_base=args.check_base,
        eval_every=args.eval_every,
        eval_every_probes=args.eval_every_probes,
        pass_k=args.pass_k,
        pass_temperature=args.pass_temperature,
    )


def stop_on_sigterm() -> None:
    """SIGTERM outside training (a wall-time limit while evaluating) ends the run as Ctrl-C would, its lock released and
    a line said; while a stage trains, the training loop's own handler saves a checkpoint first."""
    import signal

    from harness.errors import Terminated

    def stop(signum, frame):
        raise Terminated("stopped by SIGTERM: finished stages are kept; rerun the same command to resume")

    signal.signal(signal.SIGTERM, stop)


def cmd_run(args) -> None:
    from harness.runner import run

    if args.seeds and args.seed is not None:
        raise HarnessError("--seed and --seeds: give one (--seeds 0,1,2 runs each)")
    seeds = args.seeds or [args.seed or 0]
    distinct("--seeds", seeds)
    if args.output and len(seeds) > 1:
        raise HarnessError("--output names one run folder; with --seeds each seed gets its own folder under results/")
    from harness.plan import resolve
    from harness.runner import held_run

    stop_on_sigterm()
    plans = [resolve(run_request(args, seed)) for seed in seeds]  # every seed's checked before the first trains
    for note in dict.fromkeys(note for plan in plans for note in plan.notes):  # said once, not once per seed
        print(note, flush=True)
    for plan in plans:
        held_run(plan.folder, plan.record(), plan.model_pinned)
    for plan in plans:
        run(plan)


def cmd_sweep(args) -> int:
    from harness import sweep

    if args.file:
        flags = {a.dest.replace("_", "-"): a.option_strings[-1] for a in parser_for("sweep")._actions if a.option_strings and a.dest != "help"}
        from harness.grid import file_arguments

        args = parser().parse_args(["sweep", *file_arguments(args.file, flags), *args.argv[1:]])
    return sweep.main(args, run_options(argparse.ArgumentParser()), parse_run, main)


def parse_run(argv: list[str]):
    """A `harness run` command line as its request (a sweep checks each trial's with it)."""
    args = parser().parse_args(argv)
    return run_request(args, args.seed or 0)


def parser_for(command: str) -> argparse.ArgumentParser:
    subparsers = next(a for a in parser()._actions if isinstance(a, argparse._SubParsersAction))
    return subparsers.choices[command]


def cmd_list(_args) -> None:
    from baselines import METHODS
    from harness.config import presets
    from harness.registry import TASKS_DIR, load_suite, suite_index

    index = suite_index()
    if not (index.files or index.twice or index.unreadable or index.unsearched):
        print(f"no suites under {TASKS_DIR} (a suite is a YAML file with `suite: NAME`; see the README's Development section)")
    broken = len(index.unreadable) + len(index.unsearched)
    for name in [*index.files, *index.twice]:
        try:
            suite = load_suite(name)
        except HarnessError as e:  # one broken suite does not hide the others
            print(f"suite {name}: cannot be loaded: {e}")
            broken += 1
            continue
        print(f"suite {name}: {suite.about}")
        print(f"  model: {suite.model}    preset: {suite.preset}")
        print(f"  sequence: {' -> '.join(suite.sequence)}")
        for card in suite.cards.values():
            if card.role == "task":
                print(f"  task  {card.name:<12} {card.about}")
        for probe in suite.probes:
            about = probe.card.about if probe.card else "lm-eval built-in"
            print(f"  probe {probe.name:<12} [{probe.task}: {probe.protocol.describe()}] {about}")
    for why in index.unreadable.values():
        print(f"unreadable suite file: {why}")
    for why in index.unsearched.values():
        print(f"folder not searched for suites: {why}")
    print("methods:")
    for name, method in METHODS.items():
        print(f"  {name:<13} {method.about}")
    print(f"presets: {', '.join(presets())}")
    if broken:  # listed in full, and still a failure a script or CI sees
        raise HarnessError(f"{broken} suite(s), suite file(s) or folder(s) above cannot be read or loaded")


def cmd_sync(args) -> None:
    from pathlib import Path

    from harness import tracking
    from harness.rundir import RunDir

    for run_dir in args.run_dirs:
        if not RunDir(run_dir).run.exists():
            raise HarnessError(f"{run_dir}: not a run folder (no run.json)")
        tracking.sync(Path(run_dir), args.tracking_uri, strict=True)
        print(f"synced {run_dir}")


def cmd_base(args) -> None:
    from pathlib import Path

    from harness import storage
    from harness.registry import TASKS_DIR
    from harness.toyworld import build

    if args.base_command == "build":
        out = Path(args.out) if args.out else TASKS_DIR / "toy" / "base"
        storage.writable_folder(out)  # refuse it now, not after 15 minutes of pretraining
        report = build.build(build.Recipe(), out)
        accuracy = "  ".join(f"{task} {value:.2f}" for task, value in report["accuracy"].items())
        print(f"built {out}: {report['steps']} steps in {report['train_seconds']} s; accuracy: {accuracy}")
    elif args.base_command == "data":
        from harness.toyworld.world import World, write_data

        for path in write_data(World(build.Recipe().world), args.out or TASKS_DIR / "toy" / "data"):
            print(path)
    else:
        base = TASKS_DIR / "toy" / "base"  # the project's, wherever the command runs from
        problem = build.check_shipped(base)
        if problem:
            raise HarnessError(problem)
        print(f"{base} matches the recipe")


def cmd_report(args) -> None:
    from pathlib import Path

    from harness.report import write_report

    print(write_report([Path(d) for d in args.run_dirs], Path(args.out), by_order=args.by_order))


COMMANDS = {"run": cmd_run, "sweep": cmd_sweep, "list": cmd_list, "report": cmd_report, "sync": cmd_sync, "base": cmd_base}


def quiet_libraries() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # a bar per artifact logged or read back
    warnings.filterwarnings("ignore", category=FutureWarning)
    logging.basicConfig(format="harness: %(levelname)s: %(message)s", level=logging.WARNING)
    logging.getLogger("harness").setLevel(logging.INFO)
    logging.getLogger("huggingface_hub").propagate = False  # it prints its own retries; the root handler would print them twice
    for noisy in ("transformers", "datasets", "lm_eval", "mlflow", "alembic", "accelerate", "trl"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    try:
        import datasets

        datasets.disable_progress_bars()
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        # Transformers' own bars (loading weights, writing shards) off; not disable_progress_bar(), which would
        # also hide the Hub's download bars, the one sign of life while a large model downloads.
        if hasattr(hf_logging, "set_tqdm_hook"):  # recent 5.x; tests/test_output.py counts the lines
            hf_logging.set_tqdm_hook(lambda factory, args, kwargs: factory(*args, **{**kwargs, "disable": True}))
    except ImportError:
        pass


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = None
    try:
        quiet_libraries()
        args = parser().parse_args(argv)
        args.argv = argv
        return COMMANDS[args.command](args) or 0
    except HarnessError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    except BrokenPipeError:  # `harness list | head -1`: the reader left, which is no error to tell it of
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # the exit's flush goes nowhere, quietly
        return 141  # 128 + SIGPIPE, as a shell reports any writer whose reader left
    except ConnectionError as e:  # offline, something not cached: an lm-eval built-in probe loads its dataset at evaluation
        print(f"error: cannot reach the network: {first_line(e)} (offline, every model and dataset must be in the local cache)",
              file=sys.stderr)
        return 2
    except OSError as e:  # a full disk, a read-only folder: the environment, explained in one line
        where = f" {e.filename}" if e.filename else ""
        print(f"error: cannot write or read{where}: {e.strerror or e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        training = getattr(args, "command", None) in ("run", "sweep")
        print("interrupted" + (": finished stages are kept; rerun the same command to resume" if training else ""), file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
