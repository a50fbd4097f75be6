"""Nothing lost: the run lock, a tracking outage replayed by `harness sync`, and a full disk while saving."""

import errno
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest

from harness import results, storage, tracking
from harness.cli import main
from harness.errors import HarnessError
from harness.lock import run_lock

# A synthetic two-stage run: real files, written the way the runner writes them.
RUN = {
    "run_id": "r", "suite": "toy", "tasks": ["cipher", "facts"], "methods": ["sft", "sdft"], "model": "m",
    "probes": [{"name": "addition", "task": "toy_addition", "metric": "acc"}], "seed": 0, "preset": "toy",
}
SCORES = [(None, {"cipher": 0.0, "facts": 0.0, "addition": 1.0}), ("cipher", {"cipher": 1.0, "facts": 0.0, "addition": 0.5}),
          ("facts", {"cipher": 0.5, "facts": 1.0, "addition": 0.25})]


@pytest.fixture
def finished_run(tmp_path):
    run_dir = tmp_path / "run"
    storage.write_json(run_dir / "run.json", RUN)
    for k, (task, scores) in enumerate(SCORES):
        method = RUN["methods"][k - 1] if k else "base"
        storage.write_json(run_dir / "stages" / str(k) / "scores.json", {"stage": k, "method": method, "task": task, "scores": scores})
    results.write_summary(run_dir)
    return run_dir


def test_a_second_writer_is_refused_naming_the_holder(tmp_path):
    with run_lock(tmp_path):
        with pytest.raises(HarnessError) as refused:
            with run_lock(tmp_path):
                pass
    message = str(refused.value)
    assert f"pid {os.getpid()} on host {socket.gethostname()}, started " in message
    assert not (tmp_path / ".lock").exists()  # released on exit


def test_a_dead_holders_lock_is_taken_over(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (tmp_path / ".lock").write_text(json.dumps({"pid": dead.pid, "host": socket.gethostname(), "started": 0}))
    with run_lock(tmp_path):
        assert json.loads((tmp_path / ".lock").read_text())["pid"] == os.getpid()


def test_tracking_outage_keeps_files_and_sync_replays_exactly_once(finished_run, tmp_path, caplog, capsys):
    from mlflow import MlflowClient

    from harness import tracking

    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")  # the store's folder is a file: every MLflow call fails
    before = {p: p.read_bytes() for p in finished_run.rglob("*") if p.is_file()}
    assert tracking.sync(finished_run, f"sqlite:///{blocker / 'mlflow.db'}") is False
    assert "MLflow tracking failed" in caplog.text and f"harness sync {finished_run}" in caplog.text
    assert {p: p.read_bytes() for p in finished_run.rglob("*") if p.is_file()} == before

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)

    def store():
        experiment = client.get_experiment_by_name("toy")
        runs = client.search_runs([experiment.experiment_id])
        return sorted((r.info.run_name, tuple(sorted(r.data.metrics.items())), len(client.get_metric_history(r.info.run_id, "train/loss"))) for r in runs)

    assert main(["sync", str(finished_run), "--tracking-uri", uri]) == 0
    once = store()
    assert len(once) == 4  # the parent and a child per stage
    parent = next(r for r in once if r[0] == "r")
    assert dict(parent[1])["acc"] == pytest.approx(0.75) and dict(parent[1])["probe_delta"] == pytest.approx(-0.75)
    assert main(["sync", str(finished_run), "--tracking-uri", uri]) == 0
    assert store() == once


def test_a_new_run_in_a_deleted_runs_folder_gets_its_own_mlflow_parent(tmp_path):
    """The parent is found by folder and claim: one path, deleted and run again, held the old run's numbers."""
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    run_dir = tmp_path / "bob's run"  # a quote inside an MLflow filter broke the lookup by path

    def write(claim: str, scale: float) -> None:
        shutil.rmtree(run_dir, ignore_errors=True)
        storage.write_json(run_dir / "run.json", {**RUN, "claim": claim})
        for k, (task, scores) in enumerate(SCORES):
            method = RUN["methods"][k - 1] if k else "base"
            storage.write_json(run_dir / "stages" / str(k) / "scores.json",
                               {"stage": k, "method": method, "task": task, "scores": {c: v * scale for c, v in scores.items()}})
        results.write_summary(run_dir)
        assert tracking.sync(run_dir, uri, strict=True)

    write("first", 1.0)
    write("second", 0.5)
    write("second", 0.5)  # a resume of the second: its own parent again
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("toy").experiment_id
    parents = {r.data.tags["harness.claim"]: r for r in client.search_runs([experiment], "tags.`harness.kind` = 'sequence'")}
    assert sorted(parents) == ["first", "second"]
    assert parents["first"].data.tags.get("harness.superseded") == "true" and "harness.superseded" not in parents["second"].data.tags
    assert parents["first"].data.metrics["acc"] == pytest.approx(0.75) and parents["second"].data.metrics["acc"] == pytest.approx(0.375)
    children = client.search_runs([experiment], f"tags.`mlflow.parentRunId` = '{parents['second'].info.run_id}'")
    assert sorted(c.data.metrics["score/facts"] for c in children) == [0.0, 0.0, 0.5]
    write("first", 1.0)  # the first run's folder restored from a copy: its parent is live again, the second's superseded
    parents = {r.data.tags["harness.claim"]: r for r in client.search_runs([experiment], "tags.`harness.kind` = 'sequence'")}
    assert "harness.superseded" not in parents["first"].data.tags and parents["second"].data.tags["harness.superseded"] == "true"


def test_a_parent_cut_off_before_its_params_gets_them_and_its_matrix_table_once(finished_run, tmp_path, monkeypatch):
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    real = MlflowClient.log_batch

    def cut_off(self, run_id, metrics=(), params=(), **kwargs):
        if params:
            raise MlflowException("killed right after the parent was created")
        return real(self, run_id, metrics=metrics, params=params, **kwargs)

    last = finished_run / "stages" / "2" / "scores.json"
    record = last.read_bytes()
    last.unlink()  # synced as the runner syncs: after stage 1, then after stage 2
    results.write_summary(finished_run)
    monkeypatch.setattr(MlflowClient, "log_batch", cut_off)
    assert tracking.sync(finished_run, uri) is False
    monkeypatch.setattr(MlflowClient, "log_batch", real)
    assert tracking.sync(finished_run, uri)
    last.write_bytes(record)
    results.write_summary(finished_run)
    assert tracking.sync(finished_run, uri) and tracking.sync(finished_run, uri)
    client = MlflowClient(uri)
    [parent] = client.search_runs([client.get_experiment_by_name("toy").experiment_id], "tags.`harness.kind` = 'sequence'")
    assert parent.data.params["methods"] == "sft,sdft"
    table = json.loads((Path(client.download_artifacts(parent.info.run_id, "matrix_table.json", str(tmp_path)))).read_text())
    assert [row[0] for row in table["data"]] == [0, 1, 2]  # one row per stage, logged once


@pytest.mark.parametrize("writer", ["os", "safetensors"])
def test_a_full_disk_while_saving_ends_in_one_line_and_keeps_earlier_results(tmp_path, monkeypatch, capsys, writer):
    from safetensors import SafetensorError

    out = tmp_path / "run"
    args = ["run", "--tasks", "cipher", "--probes", "addition", "--limit", "2", "--set", "max_steps=1",
            "--output", str(out), "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}"]
    real_write_dir = storage.write_dir

    def full_disk(path, fill):
        if path.name == "model":  # the stage's checkpoint; safetensors' own write error is no OSError
            if writer == "safetensors":
                raise SafetensorError("Error while serializing: No space left on device (os error 28)")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        real_write_dir(path, fill)

    monkeypatch.setattr(storage, "write_dir", full_disk)
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()  # progress bars above it, then one line
    assert [line for line in err if "error" in line.lower() or "Traceback" in line] == [err[-1]]
    model_dir = out / "stages" / "1" / "model"
    assert err[-1] == (f"error: cannot write or read {model_dir}: No space left on device" if writer == "os" else
                       f"error: cannot save stage 1's model in {model_dir}: Error while serializing: No space left on device "
                       "(os error 28); its trainer checkpoints are kept (stages/1/trainer/ with save_steps): free space and rerun to resume")
    row0 = (out / "stages" / "0" / "scores.json").read_bytes()
    assert not (out / "stages" / "1" / "scores.json").exists() and not (out / ".lock").exists()

    monkeypatch.setattr(storage, "write_dir", real_write_dir)  # space freed: the same command finishes the run
    assert main(args) == 0
    assert (out / "stages" / "0" / "scores.json").read_bytes() == row0
    assert (out / "stages" / "1" / "scores.json").exists()


@pytest.mark.parametrize("store", ["corrupt", "unwritable", "read-only"])
def test_a_sqlite_store_that_cannot_be_written_is_an_outage_found_at_once(finished_run, tmp_path, caplog, store, request):
    """MLflow retries a SQLite store it cannot write for ~100 s; the harness tries a write first."""
    import sqlite3
    import subprocess

    from harness import tracking

    if store == "corrupt":
        path = tmp_path / "mlflow.db"
        path.write_bytes(b"not a database" * 100)
    elif store == "read-only":  # a store SQLite opens read-only: it takes a write lock, but no write
        path = tmp_path / "mlflow.db"
        sqlite3.connect(path).execute("CREATE TABLE t (x)").connection.commit()
        if subprocess.run(["chattr", "+i", str(path)], capture_output=True).returncode:
            pytest.skip("needs chattr on this filesystem")
        request.addfinalizer(lambda: subprocess.run(["chattr", "-i", str(path)]))
    else:
        path = Path("/proc/harness-test.db")  # not writable even by root
        if not Path("/proc").is_dir():
            pytest.skip("needs /proc")
    with pytest.raises(tracking.Unreachable, match=f"cannot write the SQLite store {path}"):
        tracking.probe(f"sqlite:///{path}")
    assert tracking.sync(finished_run, f"sqlite:///{path}") is False
    assert "MLflow tracking failed (Unreachable: cannot write the SQLite store" in caplog.text


def test_a_corrupt_cached_base_row_is_evaluated_again(tmp_path, caplog):
    args = ["run", "--tasks", "cipher", "--limit", "2", "--set", "max_steps=1", "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}"]
    assert main([*args, "--output", str(tmp_path / "first")]) == 0
    [cached] = (tmp_path / ".cache" / "base-eval").glob("*/scores.json")
    row = json.loads(cached.read_text())
    for k, (broken, problem) in enumerate([('{"scores": {}}', "missing field 'stage'"),  # torn or hand-edited
                                            (json.dumps({**row, "scores": {}}), "no score for cipher, addition"),
                                            (None, "its eval/ folder is missing")]):
        if broken is None:
            shutil.rmtree(cached.parent / "eval")
        else:
            cached.write_text(broken)
        caplog.clear()
        assert main([*args, "--output", str(tmp_path / f"again{k}")]) == 0
        assert f"the cached base row {cached.parent} is unusable ({problem}" in caplog.text and "move it aside" not in caplog.text
        again = json.loads((tmp_path / f"again{k}" / "stages" / "0" / "scores.json").read_text())
        assert again["scores"] == row["scores"] and json.loads(cached.read_text())["scores"] == row["scores"]  # and cached anew


def test_the_cached_base_row_holds_no_pass_k(tmp_path):
    args = ["run", "--tasks", "cipher", "--limit", "2", "--set", "max_steps=1", "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}"]
    assert main([*args, "--pass-k", "1", "--output", str(tmp_path / "sampled")]) == 0
    assert "pass_k" in json.loads((tmp_path / "sampled" / "stages" / "0" / "scores.json").read_text())
    [cached] = (tmp_path / ".cache" / "base-eval").glob("*/scores.json")
    record = json.loads(cached.read_text())
    assert "pass_k" not in record and "pass_k" not in record["seconds"]


def test_the_cached_base_rows_key_follows_the_test_datas_content(tmp_path, monkeypatch):
    """A test split read from a datasets folder was keyed by the folder's path: new answers there reused the stale row 0."""
    import datasets

    from harness import registry
    from harness.plan import RunRequest, resolve
    from harness.runner import base_eval_key

    toy = Path(__file__).resolve().parents[1] / "tasks" / "toy"
    shutil.copytree(toy, tmp_path / "tasks" / "toy", ignore=shutil.ignore_patterns("base"))
    (tmp_path / "tasks" / "toy" / "base").symlink_to(toy / "base")
    monkeypatch.setattr(registry, "TASKS_DIR", tmp_path / "tasks")
    card = tmp_path / "tasks" / "toy" / "cipher.yaml"
    card.write_text(card.read_text().replace("test: data/cipher_test.jsonl", "test: {file: revtest}"))
    rows = [json.loads(line) for line in (toy / "data" / "cipher_test.jsonl").read_text().splitlines()]
    datasets.Dataset.from_list(rows).save_to_disk(str(tmp_path / "data" / "revtest"))
    plan = resolve(RunRequest(tasks=["cipher"], data_dir=str(tmp_path / "data")))
    key = base_eval_key(plan)
    assert base_eval_key(plan) == key  # nothing changed, the same row
    shutil.rmtree(tmp_path / "data" / "revtest")
    datasets.Dataset.from_list([{**r, "answer": ["0000"]} for r in rows]).save_to_disk(str(tmp_path / "data" / "revtest"))
    changed = base_eval_key(plan)
    assert changed != key
    probe_data = tmp_path / "tasks" / "toy" / "data" / "addition_test.jsonl"  # a JSON Lines file: its content too
    probes = [json.loads(line) for line in probe_data.read_text().splitlines()]
    probe_data.write_text("".join(json.dumps({**r, "answer": "0"}) + "\n" for r in probes))
    assert base_eval_key(plan) != changed


def test_a_sqlite_uri_with_options_probes_its_file(tmp_path):
    from harness import tracking

    tracking.probe(f"sqlite:///{tmp_path / 'a.db'}?timeout=5")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.db"]


@pytest.mark.parametrize("broken, expected", [
    ("stage", "metrics.json: stages 0-2 done, but stages/*/scores.json has rows for stages [0, 1]; rerun the run"),  # a stage lost
    ("summary", "metrics.json: missing; rerun the run"),
    ("edited", "metrics.json disagrees with stages/*/scores.json on acc (0.99 recorded, "),
])
def test_sync_logs_no_summary_that_disagrees_with_the_stages(finished_run, tmp_path, capsys, broken, expected):
    """The summary is rewritten from the stages after each one; a stale one would mark a half run FINISHED in MLflow."""
    if broken == "edited":
        metrics = json.loads((finished_run / "metrics.json").read_text())
        (finished_run / "metrics.json").write_text(json.dumps({**metrics, "acc": 0.99}))
    else:
        (finished_run / ("stages/2/scores.json" if broken == "stage" else "metrics.json")).unlink()
    store = tmp_path / "store" / "mlflow.db"
    assert main(["sync", str(finished_run), "--tracking-uri", f"sqlite:///{store}"]) == 2
    [line] = capsys.readouterr().err.strip().splitlines()
    assert expected in line and "MLflow" not in line, line  # the folder's fault, not blamed on the store
    assert not store.exists()


def test_a_tracking_uri_with_an_unknown_scheme_is_one_line(finished_run, capsys, monkeypatch):
    assert main(["sync", str(finished_run), "--tracking-uri", "sqllite:////tmp/x.db"]) == 2
    assert "tracking URI sqllite:////tmp/x.db: unknown scheme 'sqllite'" in capsys.readouterr().err
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "postgres-ql://db/x")  # a run checks it before training
    assert main(["run", "--tasks", "cipher"]) == 2
    assert "unknown scheme 'postgres-ql'" in capsys.readouterr().err
    with pytest.raises(HarnessError, match="unknown scheme 'bogus'"):  # a scheme without // is one too
        tracking.check_uri("bogus:x")
    tracking.check_uri("postgresql+psycopg2://u@db/x")  # a driver, and a plain folder (a file store), are MLflow's
    tracking.check_uri("results/mlruns")
    for empty in ("sqlite:///", "sqlite:///:memory:"):  # `sqlite:///$DB` with $DB unset: a store in memory kept nothing
        with pytest.raises(HarnessError, match=f"tracking URI {empty}: no database file, and a store in memory keeps nothing"):
            tracking.check_uri(empty)
    for plain in ("mlflow.db", "x.DB/", "runs.sqlite3"):
        with pytest.raises(HarnessError, match=f"tracking URI {plain}: a plain path is MLflow's file store; for a SQLite database write sqlite:///{plain.rstrip('/')}"):
            tracking.check_uri(plain)
    with pytest.raises(HarnessError, match="tracking URI sqlite://: no database file"):  # SQLAlchemy's in-memory form
        tracking.check_uri("sqlite://")
    with pytest.raises(HarnessError, match=r"tracking URI SQLite:///x.db: write its scheme in lower case \(sqlite://...\)"):
        tracking.check_uri("SQLite:///x.db")


def test_a_base_row_cache_that_cannot_be_written_leaves_the_run_going(tmp_path, monkeypatch, caplog):
    """Only a saving for later runs: a read-only parent folder (where the cache lives) stopped the run after stage 0."""
    real_write_dir = storage.write_dir

    def read_only_cache(path, fill):
        if ".cache" in path.parts:
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))
        real_write_dir(path, fill)

    monkeypatch.setattr(storage, "write_dir", read_only_cache)
    out = tmp_path / "run"
    assert main(["run", "--tasks", "cipher", "--probes", "addition", "--limit", "2", "--set", "max_steps=1",
                 "--output", str(out), "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}"]) == 0
    assert "could not keep the base row for other runs" in caplog.text and "Read-only file system" in caplog.text
    assert (out / "stages" / "1" / "scores.json").exists()


def test_a_stage_missing_before_finished_ones_is_refused_and_a_score_that_is_no_number_is_named(finished_run):
    """Deleting stage 1 (as a damaged model's message advised) retrained it and kept stage 2, trained from the old one;
    a hand-edited score "0.5" crashed the heatmap with a traceback."""
    from harness.rundir import finished_stages

    scores = finished_run / "stages" / "1" / "scores.json"
    kept = scores.read_text()
    scores.unlink()
    with pytest.raises(HarnessError, match=r"stage 1 is unfinished, but stage\(s\) 2 after it are finished, trained from the stage 1 that "
                                           r"was there: delete stages/1 and every later stage's folder to train them again, or restore stage 1's scores.json"):
        finished_stages(finished_run)
    scores.write_text(kept.replace("1.0", '"1.0"', 1))
    with pytest.raises(HarnessError, match=r"stages/1/scores.json: field 'scores': 'cipher' should be a number or null, got '1.0'"):
        finished_stages(finished_run)


def test_a_missing_model_folder_is_named_as_missing(tmp_path):
    from baselines.common import load_model

    with pytest.raises(HarnessError, match=r"model in .*stages/1/model: the folder is missing .*delete that stage's folder, stages/<k>, and the later stages'"):
        load_model(tmp_path / "stages" / "1" / "model")


def test_two_starters_meeting_a_dead_lock_never_both_hold_it(tmp_path):
    """Both saw the dead holder, both removed 'its' lock (the second removing the first's fresh one) and both ran."""
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    starter = f"""
import os, sys, time
sys.path.insert(0, {str(Path(__file__).resolve().parents[1])!r})
from harness.errors import HarnessError
from harness.lock import run_lock
folder = sys.argv[1]
while time.time() < float(sys.argv[2]):  # start together
    pass
try:
    with run_lock(folder):
        fd = os.open(os.path.join(folder, "held"), os.O_CREAT | os.O_EXCL)  # a second holder fails here
        time.sleep(0.3)
        os.unlink(os.path.join(folder, "held"))
    print("held")
except HarnessError:
    print("refused")
"""
    for trial in range(6):
        folder = tmp_path / str(trial)
        folder.mkdir()
        (folder / ".lock").write_text(json.dumps({"pid": dead.pid, "host": socket.gethostname(), "started": 0}))
        go = str(time.time() + 1.0)
        both = [subprocess.Popen([sys.executable, "-c", starter, str(folder), go], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                for _ in range(2)]
        outcomes = sorted(out.strip() or err for out, err in (p.communicate() for p in both))
        assert outcomes in (["held", "refused"], ["held", "held"]) and "Traceback" not in "".join(outcomes), outcomes
        assert not (folder / "held").exists()  # (held twice in turn is fine: one after the other finished)


def test_the_lock_works_where_files_cannot_be_hard_linked(tmp_path, monkeypatch):
    def no_links(*_):
        raise PermissionError(errno.EPERM, os.strerror(errno.EPERM))  # as vfat, exFAT and bucket mounts answer

    monkeypatch.setattr(os, "link", no_links)
    with run_lock(tmp_path):
        assert json.loads((tmp_path / ".lock").read_text())["pid"] == os.getpid()
        with pytest.raises(HarnessError, match="being written by another run: pid"):
            with run_lock(tmp_path):
                pass
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no draft left behind


def test_a_lock_whose_pid_was_given_again_is_taken_over(tmp_path):
    """A restarted container gives its first process the pid it had, and the dead run's lock names it: neither our own
    pid nor a process that began after the lock was taken holds it. A process older than the lock does."""
    from harness.lock import process_start

    if process_start(1) is None:
        pytest.skip("no /proc here to tell when a process began")
    host, ns = socket.gethostname(), os.readlink("/proc/self/ns/pid")
    for pid, started in ((os.getpid(), time.time() - 3600), (1, process_start(1) - 3600)):  # ours; one younger than its lock
        (tmp_path / ".lock").write_text(json.dumps({"pid": pid, "host": host, "started": started, "pidns": ns}))
        with run_lock(tmp_path):
            assert json.loads((tmp_path / ".lock").read_text())["pid"] == os.getpid()
    # pid 1 older than its lock; and a lock of another pid namespace (a container sharing the host name and the folder
    # has a pid 1 of its own), or one that does not say, whose pid is alive here: nothing here tells whether it ended
    for other in ({"started": time.time(), "pidns": ns}, {"started": time.time() - 3600, "pidns": "pid:[1]"}, {"started": time.time() - 3600}):
        (tmp_path / ".lock").write_text(json.dumps({"pid": 1, "host": host, **other}))
        with pytest.raises(HarnessError, match=rf"being written by another run: pid 1 on host {host}, .* \(if that process is gone, delete .*\.lock\)"):
            with run_lock(tmp_path):
                pass


@pytest.mark.parametrize("text", ["[1, 2]", '{"pid": "12", "host": "h"}', '{"pid": 99999999999, "host": "h"}'])
def test_a_lock_file_the_harness_did_not_write_is_named_unreadable(tmp_path, text):
    (tmp_path / ".lock").write_text(text)
    with pytest.raises(HarnessError, match="locked by an unreadable"):
        with run_lock(tmp_path):
            pass


def test_a_full_disk_while_saving_a_trainer_checkpoint_is_one_line(tmp_path, monkeypatch, capsys):
    from safetensors import SafetensorError
    from transformers import Trainer

    def full_disk(*_, **__):
        raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")

    monkeypatch.setattr(Trainer, "_save_checkpoint", full_disk)
    out = tmp_path / "run"
    assert main(["run", "--tasks", "cipher", "--probes", "addition", "--limit", "2", "--set", "max_steps=1", "--set", "save_steps=1",
                 "--output", str(out), "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: stage 1 (sft on cipher): cannot save a trainer checkpoint in ") and "No space left" in err[-1]


def test_runs_creating_one_new_sqlite_store_at_once_all_get_it(tmp_path):
    """Two `harness run`s started together on a new store raced in its schema migration: one died with an alembic
    traceback, or both lost tracking and left the store half-migrated for good."""
    uri = f"sqlite:///{tmp_path / 'new' / 'mlflow.db'}"
    starter = """
import sys, time
from harness import tracking
time.sleep(max(0.0, float(sys.argv[2]) - time.time()))
tracking._client(sys.argv[1]).search_experiments()
print("ok")
"""
    go = str(time.time() + 2.0)
    racers = [subprocess.Popen([sys.executable, "-c", starter, uri, go], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
              for _ in range(3)]
    results = [p.communicate() for p in racers]
    assert [out.strip() for out, _ in results] == ["ok"] * 3, [err[-500:] for _, err in results]
    from mlflow import MlflowClient

    assert [e.name for e in MlflowClient(uri).search_experiments()] == ["Default"]  # whole, and at the schema's head


def test_a_run_folder_is_one_run_however_its_path_is_spelled_and_a_moved_one_says_so(finished_run, tmp_path, monkeypatch):
    """`--output .` named the run "" (so the default name) and the same folder by its path another: it refused to resume."""
    from harness.plan import RunRequest, resolve
    from harness.runner import held_run

    folder = tmp_path / "dot"
    folder.mkdir()
    monkeypatch.chdir(folder)
    request = RunRequest(tasks=["cipher"], tracking_uri=f"sqlite:///{tmp_path / 'm.db'}")
    names = {resolve(replace(request, output=given)).run_id for given in (str(folder), "../dot", f"{folder}/")}
    assert names == {"dot"} and resolve(replace(request, output=".")).run_id == "toy-sft-cipher-seed0"  # as it always was
    moved = tmp_path / "moved"
    finished_run.rename(moved)
    run = {**json.loads((moved / "run.json").read_text()), "run_id": "moved"}
    with pytest.raises(HarnessError, match=r"moved holds run 'r' with finished stage\(s\) 0, 1, 2; a run is named by the last part of "
                                           r"--output .*, so resume it with the --output it began with, e.g. a folder named 'r'"):
        held_run(moved, {k: v for k, v in run.items() if k not in ("versions", "claim")})


def test_a_saved_folder_is_readable_as_the_umask_allows(tmp_path):
    """safetensors writes a model 0600: a shared project's group could not read a stage's checkpoint."""
    def fill(folder):
        (folder / "model.safetensors").write_bytes(b"x")
        os.chmod(folder / "model.safetensors", 0o600)

    old = os.umask(0o022)
    try:
        storage.write_dir(tmp_path / "model", fill)
    finally:
        os.umask(old)
    assert (tmp_path / "model" / "model.safetensors").stat().st_mode & 0o777 == 0o644


def test_a_run_resumed_with_a_stage_deleted_before_finished_ones_is_refused(tmp_path, capsys):
    """Deleting stages/1 of a finished two-stage run retrained stage 1 and kept stage 2, trained from the old one."""
    args = ["run", "--tasks", "cipher,facts", "--probes", "addition", "--limit", "2", "--set", "max_steps=1",
            "--output", str(tmp_path / "run"), "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}"]
    assert main(args) == 0
    shutil.rmtree(tmp_path / "run" / "stages" / "1")
    capsys.readouterr()
    assert main(args) == 2
    assert "stage 1 is unfinished, but stage(s) 2 after it are finished" in capsys.readouterr().err
    assert not (tmp_path / "run" / "stages" / "1").exists()  # nothing retrained
