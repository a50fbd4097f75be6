"""The sweep as a lab would run it: PostgreSQL, an MLflow server on it, a local 2-CPU Ray, and a
4-trial toy sweep (2 methods x 2 seeds) in which one trial's process is SIGKILLed mid-stage and
Ray's retry resumes it at that stage. The store must then hold exactly 4 complete parent runs,
each with one child per stage. Every process the test starts is gone at the end.

Slow (about two minutes on 2 CPU cores): `make sweep-test` runs it; `make test` leaves it out.
"""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from harness.registry import load_suite
from harness.rundir import TRIAL_LOG
from harness.sweep import ATTEMPT

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]
SUITE = load_suite("toy")
TASKS = SUITE.sequence[:2]  # the suite's own names: the toy world's tasks may change
PROBE = SUITE.probes[0].name
KILL_AT = "train@1"  # after stage 1's first trainer checkpoint: the retry continues from it


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def processes_mentioning(text: str) -> list[str]:
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in cmdline and int(pid) != os.getpid():
            found.append(f"{pid}: {cmdline[:160]}")
    return found


@pytest.fixture(scope="module")
def cluster():
    """A temporary folder holding PostgreSQL's data, MLflow's artifacts and Ray's session; the tracking server's URI."""
    root = Path(tempfile.mkdtemp(prefix="sweep"))  # short: Ray's socket paths live under it
    root.chmod(0o755)  # PostgreSQL runs as `postgres` when the test runs as root
    port, pg_port = free_port(), free_port()
    server = subprocess.Popen([sys.executable, str(REPO / "scripts" / "tracking_server.py"), "--data", str(root / "pg"),
                               "--port", str(port), "--pg-port", str(pg_port), "--workers", "1"],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        line = server.stdout.readline()
        assert "tracking server ready" in line, line + server.stdout.read()
        yield root, line.split("--tracking-uri ")[1].split()[0], pg_port
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(60)
        except subprocess.TimeoutExpired:
            server.kill()
        db = root / "pg" / "db"
        if (db / "postmaster.pid").exists():  # the server script died before stopping PostgreSQL
            pg_ctl = next(iter(sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"))), "pg_ctl")
            user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
            subprocess.run([*user, str(pg_ctl), "-D", str(db), "-m", "immediate", "stop"], capture_output=True)
        left = processes_mentioning(str(root))
        shutil.rmtree(root, ignore_errors=True)
        assert not left, f"processes left running: {left}"


@pytest.fixture(scope="module")
def sweep(cluster):
    root, uri, _ = cluster
    out = root / "trials"
    env = {**os.environ, "HARNESS_FAULT": KILL_AT, "HARNESS_FAULT_ONCE": str(root / "killed"), "RAY_TMPDIR": str(root / "ray")}
    args = [
        sys.executable, "-m", "harness", "sweep", "--methods", "sft,sdft", "--seeds", "0,1", "--num-cpus", "2",
        "--tasks", ",".join(TASKS), "--probes", PROBE, "--limit", "2", "--out", str(out), "--tracking-uri", uri,
        "--set", "max_steps=3", "--set", "save_steps=1", "--set", "per_device_train_batch_size=2",
        "--set", "logging_steps=1", "--set", "sdft.max_completion_length=12",
    ]
    start = time.time()
    result = subprocess.run(args, env=env, capture_output=True, text=True, cwd=REPO)
    print(f"sweep: {time.time() - start:.0f} s\n{result.stdout}\n{result.stderr[-3000:]}")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert (root / "killed").exists(), "the failpoint never fired"
    return out, result


def trial_dirs(out: Path) -> list[Path]:
    return sorted(p for p in out.iterdir() if p.is_dir() and not p.name.startswith("."))


def test_every_trial_finished_and_the_killed_one_was_retried(sweep):
    out, result = sweep
    trials = trial_dirs(out)
    assert len(trials) == 4
    table = result.stdout.split("\ntrial ")[1].splitlines()[1:5]
    assert all(" done " in row for row in table), table
    logs = {t: (t / TRIAL_LOG).read_text() for t in trials}
    retried = [t for t, text in logs.items() if text.count(ATTEMPT) == 2]
    assert len(retried) == 1 and all(text.count(ATTEMPT) == 1 for t, text in logs.items() if t not in retried), logs
    assert all(text.count("nice 0 ===") == text.count(ATTEMPT) for text in logs.values())  # not Ray's default 15
    first, second = logs[retried[0]].split(ATTEMPT)[1:]
    # The killed attempt had finished stage 0 and was training stage 1; the retry resumed there.
    assert "stage 1/2" in first and "training" in first and "stage 2/2" not in first
    assert "resuming" in second and "stage 0/2" not in second and "stage 1/2" in second and "done: ACC" in second
    usage = json.loads((retried[0] / "stages" / "1" / "train_log.json").read_text())["usage"]
    assert usage["resumed_from_step"] > 0, "the retry did not resume from a checkpoint"
    assert not (retried[0] / "stages" / "1" / "trainer").exists()  # spent once the stage's model was saved


def test_postgres_backed_store_holds_four_complete_parents_with_a_child_per_stage(cluster, sweep):
    from mlflow import MlflowClient

    _, uri, pg_port = cluster
    out, _ = sweep
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name(SUITE.name)
    parents = client.search_runs([experiment.experiment_id], "tags.`harness.kind` = 'sequence'")
    assert sorted(p.data.tags["harness.run_dir"] for p in parents) == [str(t.resolve()) for t in trial_dirs(out)]
    for parent in parents:
        assert parent.info.status == "FINISHED"
        children = client.search_runs([experiment.experiment_id], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
        assert sorted(c.data.tags["harness.stage"] for c in children) == ["0", "1", "2"]  # one each: no duplicates
        assert all(c.data.tags.get("harness.complete") == "true" for c in children)

    import psycopg  # the rows are PostgreSQL's, not a file store's

    with psycopg.connect(f"host=127.0.0.1 port={pg_port} user=harness dbname=mlflow") as db:
        active = db.execute("select count(*) from runs where lifecycle_stage = 'active'").fetchone()[0]
    assert active == 4 * (1 + len(TASKS) + 1)
