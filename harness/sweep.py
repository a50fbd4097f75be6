"""`harness sweep`: the grid's trials as Ray tasks, each an ordinary `harness run` in its own folder.

Ray does the distributing and the retrying: a trial is a task with `max_retries`,
so when its process dies (SIGKILL, the OOM killer, a lost node) Ray runs it again
and the run resumes at its first unfinished stage. A trial that fails on its own
(bad input, an exception) is not retried: rerunning the sweep resumes it, and
skips the trials that finished. Every trial's options are checked before any starts.
"""

from __future__ import annotations

import argparse
import logging
import os
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlparse

from harness import grid, storage
from harness.errors import HarnessError, distinct, first_line
from harness.rundir import TRIAL_LOG, RunDir, run_folders

log = logging.getLogger("harness")
PASSED_ON = ("tasks", "set", "tracking_uri")  # run options the sweep sets per trial itself
LOCAL_OBJECT_STORE = 200 * 1024**2  # trials pass a few small dicts; Ray's default takes 30% of memory
# Ray starts workers at nice 15: on a machine that also does other work, a trial would get a fraction
# of the CPU `harness run` gets (measured: 4x slower on a busy 2-core machine). The local Ray runs them as usual.
LOCAL_SYSTEM_CONFIG = {"worker_niceness": 0}


def main(args, run_actions: list[argparse.Action], parse_run: Callable[[list[str]], object], entry: Callable[[list[str]], int]) -> int:
    """`parse_run`: a trial's `harness run` arguments -> its RunRequest; `entry`: the command line's main,
    which each trial runs (given by the command line, which sits above this module)."""
    from harness import tracking
    from harness.registry import load_suite

    check_resources(args)
    distinct("--methods", args.methods)
    distinct("--seeds", args.seeds)
    schedules = [m.split(grid.SCHEDULE_JOIN) for m in args.methods]
    suite = load_suite(args.suite)
    tasks = args.tasks or list(suite.sequence)
    orders = grid.task_orders(tasks, args.orders, args.order_seed)
    axes = grid.option_axes(args.set)
    uri = args.tracking_uri or tracking.default_uri()
    args.model = pinned_model(args.model, suite)
    held = run_folders(Path(args.out))
    for commit in other_commits(held, args.model or ""):
        print(f"sweep: {args.out} holds trials on commit {commit} of this model; to resume those, give "
              f"--model {args.model.partition('@')[0]}@{commit}", flush=True)
    fixed = [a for action in run_actions if action.dest not in PASSED_ON for a in as_arguments(action, getattr(args, action.dest))]
    config_text = Path(args.config).read_text(encoding="utf-8") if args.config and Path(args.config).is_file() else ""
    trials = grid.trials(schedules, args.seeds, orders, axes, fixed, Path(args.out).resolve(), uri, config_text)
    validate(trials, parse_run)
    ours = {t.output for t in trials}
    strays = [p.name for p in held if p.resolve() not in ours]
    if strays:  # an earlier grid's, or this one's from a harness that named its trials otherwise: `harness report` reads them too
        print(f"sweep: {args.out} also holds {len(strays)} run folder(s) that are no trial of this sweep: "
              f"{', '.join(strays[:5])}{' ...' if len(strays) > 5 else ''}", flush=True)
    print(f"sweep: {len(trials)} trial(s) in {args.out}; each alone:", flush=True)
    for t in trials:
        print(f"  {t.command()}", flush=True)
    warn_if_unreachable(uri)
    if args.dry_run:
        return 0
    create_store(uri)
    statuses = execute(trials, args, entry)
    print(table(trials, statuses), flush=True)
    failed = [t for t in trials if statuses[t.name]["status"] not in ("done", "finished earlier")]
    if failed:
        print(f"{len(failed)} trial(s) failed: each one's output is in its folder's {TRIAL_LOG}; rerunning the sweep resumes them", flush=True)
    print(f"compare: harness report {args.out}", flush=True)
    return 1 if failed else 0


def check_resources(args) -> None:
    if args.cpus_per_trial <= 0:
        raise HarnessError(f"--cpus-per-trial {args.cpus_per_trial:g}: expected a number above 0")
    if args.gpus_per_trial < 0:
        raise HarnessError(f"--gpus-per-trial {args.gpus_per_trial:g}: expected 0 or more")
    if args.max_concurrent is not None and args.max_concurrent < 1:
        raise HarnessError(f"--max-concurrent {args.max_concurrent}: expected 1 or more")
    if args.retries < 0:
        raise HarnessError(f"--retries {args.retries}: expected 0 or more")
    if args.num_cpus is not None and (args.num_cpus < 1 or cluster_address(args)):
        raise HarnessError("--num-cpus sizes the local Ray (1 or more); an existing cluster (--address, $RAY_ADDRESS) has its own")


def as_arguments(action: argparse.Action, value) -> list[str]:
    """A parsed run option back into the arguments that give it (nothing when it is the default)."""
    if value == action.default:
        return []
    flag = action.option_strings[-1]
    if isinstance(action, argparse._StoreTrueAction):
        return [flag]
    return [flag, ",".join(map(str, value)) if isinstance(value, list) else str(value)]


def pinned_model(model: str | None, suite) -> str | None:
    """A hub model named by the commit it is at now (`org/name@<commit>`, from a bare id, a branch, a tag or a short
    commit), so that every trial trains the same weights however long the sweep takes, and trial folders keep their
    names however the commit was typed; any other model as given."""
    from harness.plan import hub_id, locate_model

    given = model or suite.model_path()
    if not hub_id(given):
        return model
    named = f"--model {given}" if model else f"{suite.path}: `model: {suite.model}`"
    repo, commit, _ = locate_model(given, named, weights=False)
    print(f"sweep: {repo} at commit {commit} for every trial", flush=True)
    return f"{repo}@{commit}"


def other_commits(folders: list[Path], model: str) -> list[str]:
    """Commits other than `model`'s of the same hub model that these run folders ran on: after a push to the hub, a
    rerun starts the sweep anew beside them."""
    repo, _, commit = model.partition("@")
    found = {}
    for folder in folders if commit else []:
        try:
            run = storage.read_json(RunDir(folder).run)
        except HarnessError:  # a damaged trial is the trial's to report
            continue
        if isinstance(run, dict) and run.get("model") == repo and run.get("model_revision") not in (None, commit):
            found[run["model_revision"]] = None
    return list(found)


def validate(trials: list[grid.Trial], parse_run: Callable[[list[str]], object]) -> None:
    """`harness run`'s own up-front checks, for each trial's resolved options, before any trial starts (a hub model's
    weights are left for the trials to download where they run)."""
    from harness.plan import resolve

    for trial in trials:
        request = parse_run(list(trial.argv))
        try:
            resolve(request, weights=False)
        except HarnessError as e:
            raise HarnessError(f"trial {trial.name}: {e}") from None


def cluster_address(args) -> str | None:
    return args.address or os.environ.get("RAY_ADDRESS") or None


def _host_port(address: str, default_port: int) -> tuple[str, int] | None:
    parsed = urlparse(address if "://" in address else f"tcp://{address}")
    try:
        return (parsed.hostname, parsed.port or default_port) if parsed.hostname else None
    except ValueError:
        return None


def reachable(host: str, port: int, timeout: float = 5.0) -> bool:
    try:
        socket.create_connection((host, port), timeout=timeout).close()
        return True
    except OSError:
        return False


def warn_if_unreachable(uri: str) -> None:
    """A tracking server that does not answer: trials run anyway, each keeps its results and warns."""
    parsed = urlparse(uri)
    if parsed.scheme in ("", "file", "sqlite") or not parsed.hostname:
        return
    port = parsed.port or {"http": 80, "https": 443, "postgresql": 5432, "mysql": 3306}.get(parsed.scheme.split("+")[0], 80)
    if not reachable(parsed.hostname, port):
        log.warning("tracking store %s does not answer: trials run and keep their results; "
                    "replay them later with harness sync RUN_DIR --tracking-uri %s", uri, uri)


def create_store(uri: str) -> None:
    """Create a database store's tables once, here: trials starting together would race to create them."""
    from harness import tracking

    if urlparse(uri).scheme.split("+")[0] not in ("sqlite", "postgresql", "mysql", "mssql"):
        return
    try:
        tracking._client(uri).search_experiments(max_results=1)
    except Exception as e:  # an outage: the trials warn and keep their results, as a run does
        log.warning("MLflow store %s: %s", uri, first_line(e))


def start_ray(args):
    """Connect to the cluster named by --address / $RAY_ADDRESS, or start a local Ray for this command."""
    try:
        import ray
    except ImportError:
        raise HarnessError("harness sweep runs on Ray, which is not installed: pip install 'cl-harness[sweep]'") from None

    address = cluster_address(args)
    options = {"log_to_driver": False, "logging_level": logging.ERROR, "configure_logging": True}
    if address:
        if address != "auto":
            where = _host_port(address, 10001 if address.startswith("ray://") else 6379)
            if where is None or not reachable(*where):
                raise HarnessError(f"Ray cluster {address} does not answer (--address / $RAY_ADDRESS); "
                                   "start one with `ray start --head` or leave both unset for a local Ray")
        try:
            ray.init(address=address, **options)
        except (ConnectionError, RuntimeError, ValueError) as e:
            raise HarnessError(f"cannot join the Ray cluster at {address}: {first_line(e)}") from None
    else:
        ray.init(address="local", num_cpus=args.num_cpus or os.cpu_count(), include_dashboard=False,
                 object_store_memory=LOCAL_OBJECT_STORE, _system_config=LOCAL_SYSTEM_CONFIG, **options)
    return ray


def capacity(resources: dict, cpus: float, gpus: float) -> int:
    fits = [int(resources.get("CPU", 0) // cpus)]
    if gpus:
        fits.append(int(resources.get("GPU", 0) // gpus))
    return min(fits)


def execute(trials: list[grid.Trial], args, entry: Callable[[list[str]], int]) -> dict[str, dict]:
    """Run the unfinished trials on Ray with a live progress line; return each trial's status."""
    from harness.report import finished_runs

    finished = {p.resolve() for p in finished_runs(Path(args.out))}
    statuses = {t.name: {"status": "finished earlier", "attempts": 0} for t in trials if t.output in finished}
    todo = [t for t in trials if t.name not in statuses]
    if not todo:
        return statuses
    ray = start_ray(args)
    try:
        fits = capacity(ray.cluster_resources(), args.cpus_per_trial, args.gpus_per_trial)
        if fits < 1:
            raise HarnessError(f"the Ray cluster has {ray.cluster_resources().get('CPU', 0):g} CPUs and "
                               f"{ray.cluster_resources().get('GPU', 0):g} GPUs: a trial asks for "
                               f"{args.cpus_per_trial:g} and {args.gpus_per_trial:g} (--cpus-per-trial, --gpus-per-trial)")
        limit = min(args.max_concurrent or fits, len(todo))
        task = ray.remote(max_calls=1)(run_trial).options(
            num_cpus=args.cpus_per_trial, num_gpus=args.gpus_per_trial, max_retries=args.retries,
            runtime_env={"env_vars": trial_env(args.cpus_per_trial)},
        )
        sweep_id = f"{os.getpid()}-{int(time.time())}"
        progress = Progress(len(trials), len(statuses))
        queue, running = list(todo), {}
        while queue or running:
            while queue and len(running) < limit:
                trial = queue.pop(0)
                running[task.remote(entry, list(trial.argv), str(trial.output), os.getcwd(), sweep_id)] = trial
            progress.show(running=len(running), queued=len(queue))
            ready, _ = ray.wait(list(running), num_returns=1, timeout=1.0)
            for ref in ready:
                trial = running.pop(ref)
                statuses[trial.name] = outcome(ray, ref, trial)
                progress.finished(statuses[trial.name]["status"] == "done")
        progress.show(running=0, queued=0, final=True)
    finally:
        ray.shutdown()
    return statuses


def trial_env(cpus: float) -> dict[str, str]:
    """A trial's environment on any node: one torch thread per reserved CPU, and the harness's own settings."""
    threads = str(max(1, int(cpus)))
    ours = {k: v for k, v in os.environ.items() if k.startswith("HARNESS_")}
    return {"OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads, "TOKENIZERS_PARALLELISM": "false", **ours}


def outcome(ray, ref, trial: grid.Trial) -> dict:
    try:
        return ray.get(ref)
    except ray.exceptions.RayTaskError as e:  # an exception inside the trial: not retried
        reason = str(e.cause or e).strip().splitlines()[-1][:160]
    except ray.exceptions.RayError as e:  # the process died more often than --retries allows
        reason = f"{type(e).__name__} after every retry"
    return {"status": f"failed: {reason}", "attempts": attempts(RunDir(trial.output).trial_log)}


ATTEMPT = "=== harness sweep attempt"


def attempts(log_file: Path, sweep_id: str | None = None) -> int:
    if not log_file.exists():
        return 0
    marker = f"{ATTEMPT} ({sweep_id})" if sweep_id else ATTEMPT
    return sum(line.startswith(marker) for line in log_file.read_text(errors="replace").splitlines())


def run_trial(entry: Callable[[list[str]], int], argv: list[str], output: str, cwd: str, sweep_id: str) -> dict:
    """One trial inside a Ray worker: `harness run` (`entry`, the command line's main) in this process, its
    output in the run folder's trial.log. Each attempt appends to the log, so a retried trial's log shows where the run resumed."""
    if os.path.isdir(cwd):
        os.chdir(cwd)  # relative paths in the printed command mean what they meant where the sweep started
    log_file = RunDir(output).trial_log
    log_file.parent.mkdir(parents=True, exist_ok=True)
    attempt = attempts(log_file, sweep_id) + 1
    with open(log_file, "a", encoding="utf-8") as f:
        f.write(f"{ATTEMPT} ({sweep_id}) {attempt}: pid {os.getpid()} on {socket.gethostname()}, nice {os.nice(0)} ===\n")
    sys.stdout.flush(), sys.stderr.flush()
    fd = os.open(log_file, os.O_WRONLY | os.O_APPEND)
    os.dup2(fd, 1), os.dup2(fd, 2)  # this worker runs one trial (max_calls=1) and exits
    start = time.time()
    try:
        code = entry(argv)
    except SystemExit as e:  # an exit inside the run is the trial's failure, not a dead worker for Ray to retry
        code = e.code if isinstance(e.code, int) else 1
    sys.stdout.flush(), sys.stderr.flush()
    seconds = round(time.time() - start, 1)
    if code:
        lines = [line for line in log_file.read_text(errors="replace").splitlines() if line.startswith("error: ")]
        return {"status": f"failed: {lines[-1] if lines else f'exit code {code}'}", "attempts": attempt, "seconds": seconds}
    return {"status": "done", "attempts": attempt, "seconds": seconds}


class Progress:
    """One live line (rewritten in place on a terminal, a new line on change otherwise)."""

    def __init__(self, total: int, skipped: int):
        self.total, self.skipped, self.done, self.failed = total, skipped, 0, 0
        self.start, self.last = time.time(), None
        self.tty = sys.stderr.isatty()

    def finished(self, ok: bool) -> None:
        self.done += ok
        self.failed += not ok

    def show(self, running: int, queued: int, final: bool = False) -> None:
        counts = f"{self.done + self.skipped}/{self.total} done ({self.skipped} earlier), {running} running, {self.failed} failed, {queued} queued"
        elapsed = int(time.time() - self.start)
        if self.tty:
            print(f"\rsweep: {counts}  {elapsed // 60}m{elapsed % 60:02d}s ", end="\n" if final else "", file=sys.stderr, flush=True)
        elif counts != self.last:
            print(f"sweep: {counts}  {elapsed // 60}m{elapsed % 60:02d}s", file=sys.stderr, flush=True)
        self.last = counts


def table(trials: list[grid.Trial], statuses: dict[str, dict]) -> str:
    """The final table: one row per trial, what varies, its status, attempts and seconds."""
    from harness import storage

    keys = list(dict.fromkeys(k for t in trials for k in t.varies))
    header = ["trial", *keys, "status", "attempts", "seconds", "acc"]
    rows = []
    for t in trials:
        s = statuses.get(t.name, {"status": "not run"})
        acc = ""
        metrics = RunDir(t.output).metrics
        if s["status"] in ("done", "finished earlier") and metrics.exists():
            value = storage.read_json(metrics).get("acc")
            acc = "" if value is None else f"{value:.3f}"
        rows.append([t.name, *(str(t.varies.get(k, "")) for k in keys), s["status"], str(s.get("attempts", "")), str(s.get("seconds", "")), acc])
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in [header, *rows])
