"""MLflow: replay a run folder into a tracking store, exactly once.

Tracking holds no state of its own: `sync(run_dir)` reads the run's files and logs
whatever the store does not have yet: an experiment per suite, a parent run per
sequence, a child run per finished stage (its scores with step = stage index, its
training loss curve), and on the parent the per-stage scores, the summary
metrics, the matrix as a table and the heatmap. A child counts as logged only
once it carries the tag `harness.complete`; a half-logged child left by a crash
is deleted and logged again. The runner calls `sync` after every stage and only
warns when the store fails; `harness sync RUN_DIR` replays later.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from contextlib import contextmanager
from pathlib import Path

from harness import faults, storage
from harness.protocol import Protocol
from harness.results import SUMMARY_KEYS
from harness.rundir import (
    RESULTS_DIR,
    RunDir,
    finished_stages,
    matrix_of,
    protocol_fingerprint,
    read_curve,
    read_matrix,
    read_metrics,
    read_run,
)

log = logging.getLogger("harness")
COMPLETE = "harness.complete"
SUPERSEDED = "harness.superseded"  # on a parent whose folder now holds another run


def default_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{RESULTS_DIR.resolve() / 'mlflow.db'}"


def metric_key(name: str) -> str:
    """MLflow keys allow letters, digits, _ - . / and spaces; lm-eval's `acc,none` does not fit."""
    return re.sub(r"[^A-Za-z0-9_\-./ ]", "_", name)


class Unreachable(OSError):
    """The tracking server does not accept connections."""


def store_errors() -> tuple[type[BaseException], ...]:
    """What a failing store raises (MLflow, the network, the database): an outage, not a bug in the harness."""
    import requests
    from mlflow.exceptions import MlflowException

    errors: tuple = (MlflowException, OSError, requests.RequestException)
    try:
        from sqlalchemy.exc import SQLAlchemyError

        errors += (SQLAlchemyError,)
    except ImportError:
        pass
    try:  # two runs creating one new SQLite store race in its schema migration: one loses with this
        from alembic.util.exc import CommandError

        errors += (CommandError,)
    except ImportError:
        pass
    return errors


def sync(run_dir: Path, uri: str | None = None, strict: bool = False) -> bool:
    """Log what the store lacks; on a store failure warn (or, strict, fail in one line) and leave the files as they are."""
    from harness.errors import HarnessError

    uri = uri or default_uri()
    check_uri(uri)
    try:
        _sync(Path(run_dir), uri)
        return True
    except store_errors() as e:
        reason = f"{type(e).__name__}: {str(e).splitlines()[0][:1000] if str(e) else ''}"  # MLflow's own remedy included
        if strict:
            raise HarnessError(f"MLflow store {uri} failed ({reason})") from None
        log.warning("MLflow tracking failed (%s); results are safe in %s; the rest of this run will not try again: "
                    "run `%s` to replay", reason, run_dir, replay_command(run_dir, uri))
        return False


# The stores MLflow opens (SQLAlchemy's databases take a driver: postgresql+psycopg2://); a bare path is a file store.
STORE_SCHEMES = ("sqlite", "postgresql", "mysql", "mssql", "http", "https", "file", "databricks")


def check_uri(uri: str) -> None:
    """Refuse a scheme MLflow has no store for, before any work (MLflow would blame its model registry)."""
    from urllib.parse import urlparse

    from harness.errors import HarnessError

    scheme = urlparse(uri).scheme.split("+")[0]  # "" for a plain path
    if scheme and not uri.startswith(scheme) and scheme in STORE_SCHEMES:  # (urlparse lowers it) SQLAlchemy has no SQLITE dialect
        raise HarnessError(f"tracking URI {uri}: write its scheme in lower case ({scheme}://...)")
    if scheme and scheme not in STORE_SCHEMES:  # urlparse gives the scheme in lower case
        raise HarnessError(f"tracking URI {uri}: unknown scheme {scheme!r} (MLflow stores: {', '.join(STORE_SCHEMES)}; "
                           "e.g. sqlite:///PATH/mlflow.db or http://HOST:PORT)")
    if scheme == "sqlite" and (not uri.startswith("sqlite:///") or sqlite_file(uri).strip() in ("", ":memory:")):  # `sqlite:///$DB`, $DB unset
        raise HarnessError(f"tracking URI {uri}: no database file, and a store in memory keeps nothing; give sqlite:///PATH/mlflow.db")
    if not scheme and uri.rstrip("/").lower().endswith((".db", ".sqlite", ".sqlite3")):  # MLflow would make it a folder of files
        raise HarnessError(f"tracking URI {uri}: a plain path is MLflow's file store; for a SQLite database write sqlite:///{uri.rstrip('/')}")


def replay_command(run_dir: Path, uri: str) -> str:
    import shlex

    return f"harness sync {shlex.quote(str(run_dir))} --tracking-uri {shlex.quote(uri)}"


# A per-stage sync against a dead server must cost seconds: MLflow's own HTTP client retries with backoff for minutes.
HTTP_SETTINGS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}
CONNECT_TIMEOUT = 3.0


def sqlite_file(uri: str) -> str:
    """The database file of a `sqlite:///PATH[?options]` URI (SQLAlchemy's form: the options are not part of the name)."""
    return uri.removeprefix("sqlite:///").partition("?")[0]


def probe(uri: str) -> None:
    """Raise Unreachable within seconds if an HTTP tracking server does not accept connections, or a SQLite store
    cannot be written (MLflow retries that for ~100 s)."""
    from urllib.parse import urlparse

    if uri.startswith("sqlite:///"):
        import sqlite3
        from contextlib import closing

        path = sqlite_file(uri)
        try:  # a write lock and a write, undone at once; waiting on another run's lock is not an outage
            with closing(sqlite3.connect(path, timeout=60)) as db:
                db.execute("BEGIN IMMEDIATE")
                db.execute("CREATE TABLE harness_write_probe (x)")  # needs its journal beside it: a read-only folder fails here
                db.rollback()
        except sqlite3.Error as e:
            raise Unreachable(f"cannot write the SQLite store {path} ({e})") from None
        return
    parsed = urlparse(uri)
    if parsed.scheme not in ("http", "https"):
        return
    import socket

    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        socket.create_connection((parsed.hostname, port), timeout=CONNECT_TIMEOUT).close()
    except OSError as e:
        raise Unreachable(f"cannot connect to {parsed.hostname}:{port} ({e.strerror or e})") from None


def _client(uri: str):
    import mlflow
    from mlflow import MlflowClient

    logging.getLogger("mlflow").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    if uri.startswith("sqlite:///"):
        Path(sqlite_file(uri)).parent.mkdir(parents=True, exist_ok=True)
    for key, value in HTTP_SETTINGS.items():
        os.environ.setdefault(key, value)
    probe(uri)
    mlflow.set_tracking_uri(uri)
    if not uri.startswith("sqlite:///"):
        return MlflowClient(uri)
    with _folder_lock(Path(sqlite_file(uri)).parent):  # opening a new store creates its tables: two runs at once broke it
        client = MlflowClient(uri)
        client.search_experiments(max_results=1)
    return client


@contextmanager
def _folder_lock(folder: Path):
    """An exclusive lock on a folder, released when the block ends or the process dies; none where the file system
    refuses one (some network mounts), as before there was one."""
    import fcntl

    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        yield
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError:
            pass
        yield
    finally:
        os.close(fd)  # and with it the lock


def artifact_location(uri: str, experiment: str) -> str | None:
    """Where a new experiment of a SQLite store keeps its artifacts: beside the database (MLflow's default is ./mlruns
    of whatever folder first wrote the store, fixed there for good; unwritable from a read-only one)."""
    return (Path(sqlite_file(uri)).resolve().parent / "mlruns" / experiment).as_uri() if uri.startswith("sqlite:///") else None


def _sync(run_dir: Path, uri: str) -> None:
    from mlflow.entities import Metric, Param

    run, folder = read_run(run_dir), RunDir(run_dir)
    stages = finished_stages(run_dir)
    if not stages:
        return
    summary = _summary(run_dir, run, stages)  # read before the store: the folder's fault is not an outage
    matrix = _artifacts(run_dir)
    client = _client(uri)
    experiment = client.get_experiment_by_name(run["suite"])
    experiment_id = experiment.experiment_id if experiment else _create_experiment(client, run["suite"], uri)
    parent = _parent(client, experiment_id, run_dir, run)
    parent_id = parent.info.run_id
    if not parent.data.params:  # (also when a crash cut the first sync off after create_run)
        params = {
            "model": run["model"],
            **({"model_revision": run["model_revision"]} if run.get("model_revision") else {}),
            "methods": ",".join(run["methods"]),
            "schedule": " -> ".join(f"{m}:{t}" for m, t in zip(run["methods"], run["tasks"])),
            "tasks": ",".join(run["tasks"]),
            "probes": ",".join(p["name"] for p in run["probes"]),
            "seed": run["seed"],
            "preset": run["preset"],
            "suite": run["suite"],
            "protocol_fingerprint": protocol_fingerprint(run),
            # each column's evaluation protocol, e.g. protocol/hellaswag = "no chat template, 0-shot, metric acc,none"
            **{metric_key(f"protocol/{column}"): Protocol(**p).describe() for column, p in run.get("protocol", {}).items()},
        }
        client.log_batch(parent_id, params=[Param(k, str(v)[:500]) for k, v in params.items()])
        client.log_artifact(parent_id, str(folder.run))

    children = client.search_runs([experiment_id], f"tags.`mlflow.parentRunId` = '{parent_id}'")
    logged = {}
    for child in children:
        if child.data.tags.get(COMPLETE) == "true":
            logged[int(child.data.tags["harness.stage"])] = child.info.run_id
        else:
            client.delete_run(child.info.run_id)  # half-logged by a crash: start it over

    for record in stages:
        k = record["stage"]
        if k in logged:
            continue
        name = "stage 0: base" if k == 0 else f"stage {k}: {record['method']} on {record['task']}"
        child = client.create_run(experiment_id, run_name=name, tags={"mlflow.parentRunId": parent_id, "harness.stage": str(k), "harness.kind": "stage"})
        child_id = child.info.run_id
        stage_metrics = {metric_key(f"score/{c}"): v for c, v in record["scores"].items() if _defined(v)}
        for task, values in (record.get("pass_k") or {}).items():
            stage_metrics.update({metric_key(f"{key}/{task}"): v for key, v in values.items() if key.startswith("pass@") and _defined(v)})
        if _defined(record.get("teacher_acc")):
            stage_metrics["teacher_acc"] = record["teacher_acc"]
        for part, value in (record.get("seconds") or {}).items():
            stage_metrics[f"seconds/{part}"] = value
        metrics = [Metric(key, float(v), 0, k) for key, v in stage_metrics.items()]
        history_file = folder.stage(k).train_log
        if history_file.exists():
            for entry in storage.read_json(history_file)["history"]:
                if "loss" in entry:
                    metrics.append(Metric("train/loss", float(entry["loss"]), 0, int(entry.get("step", 0))))
        for point in read_curve(folder.stage(k).curve):  # scores inside the stage, by optimizer step
            metrics += [Metric(metric_key(f"curve/{c}"), float(v), 0, int(point["step"])) for c, v in point["scores"].items() if v == v]
        _log_metrics(client, child_id, metrics)
        _log_metrics(client, parent_id, [Metric(key, float(v), 0, k) for key, v in stage_metrics.items() if not key.startswith("seconds/")])
        faults.stage = k
        faults.point("mlflow")
        client.set_tag(child_id, COMPLETE, "true")
        client.set_terminated(child_id)

    done = summary["stages_done"]
    if parent.data.tags.get("harness.summary_stage") == str(done):
        return  # this summary is already in the store
    final = [Metric(metric_key(key), float(summary[key]), 0, done) for key in SUMMARY_KEYS if summary.get(key) is not None]
    if summary.get("probe_avg"):
        final.append(Metric("probe_avg", float(summary["probe_avg"][-1]), 0, done))
    _log_metrics(client, parent_id, final)
    for artifact in (folder.metrics, folder.matrix, folder.heatmap):
        client.log_artifact(parent_id, str(artifact))
    if done == summary["stages_total"]:  # once: MLflow appends a table logged again (a row per stage per sync)
        import pandas as pd

        client.log_table(parent_id, pd.DataFrame(matrix.cells(), columns=matrix.header), "matrix_table.json")
    client.set_tag(parent_id, "harness.summary_stage", str(done))
    client.set_terminated(parent_id, "FINISHED" if done == summary["stages_total"] else "RUNNING")


def _create_experiment(client, name: str, uri: str) -> str:
    """A new experiment's id, or the one another run created meanwhile (two runs of a new suite start together)."""
    from mlflow.exceptions import MlflowException

    try:
        return client.create_experiment(name, artifact_location(uri, name))
    except MlflowException:
        experiment = client.get_experiment_by_name(name)
        if experiment is None:
            raise
        return experiment.experiment_id


def _parent(client, experiment_id: str, run_dir: Path, run: dict):
    """The run folder's parent run (its params and tags as the store holds them), created if none. Found by a hash of the folder's path (a path inside an
    MLflow filter breaks on a quote) and by the claim token run.json got with the folder: a parent of the same path
    but another claim is an earlier run in a since-deleted folder, kept and tagged superseded."""
    path = str(run_dir.resolve())
    key = hashlib.sha256(path.encode()).hexdigest()[:32]
    found = client.search_runs([experiment_id], f"tags.`harness.run_key` = '{key}' and tags.`harness.kind` = 'sequence'")
    if not found and "'" not in path:  # parents logged before the key existed
        found = client.search_runs([experiment_id], f"tags.`harness.run_dir` = '{path}' and tags.`harness.kind` = 'sequence'")
    claim = run.get("claim")  # absent in run folders older than the token: any parent of the folder is theirs
    mine = [r for r in found if not claim or r.data.tags.get("harness.claim") == claim]
    for other in found:
        if other not in mine and other.data.tags.get(SUPERSEDED) != "true":
            client.set_tag(other.info.run_id, SUPERSEDED, "true")
    if mine:
        if mine[0].data.tags.get(SUPERSEDED) == "true":  # its folder is back (restored from a copy): live again
            client.delete_tag(mine[0].info.run_id, SUPERSEDED)
        return mine[0]
    tags = {"harness.run_dir": path, "harness.run_key": key, "harness.kind": "sequence", **({"harness.claim": claim} if claim else {})}
    return client.create_run(experiment_id, run_name=run["run_id"], tags=tags)


def _summary(run_dir: Path, run: dict, stages: list[dict]) -> dict:
    """metrics.json, logged only if it is what the finished stages give (the runner rewrites it after every stage)."""
    from harness.errors import HarnessError
    from harness.results import check_summary

    path = RunDir(run_dir).metrics
    if not path.exists():
        raise HarnessError(f"{path}: missing; rerun the run (the same `harness run`) to rebuild it from stages/*/scores.json")
    summary = read_metrics(run_dir)
    check_summary(run_dir, run, summary, matrix_of(run, stages), "stages/*/scores.json")
    return summary


def _artifacts(run_dir: Path):
    """The matrix, read, and the files logged beside it, present: a folder's fault named as such, not as the store's."""
    from harness.errors import HarnessError

    folder = RunDir(run_dir)
    for path in (folder.matrix, folder.heatmap):
        if not path.is_file():
            raise HarnessError(f"{path}: missing; rerun the run (the same `harness run`) to rewrite it from stages/*/scores.json")
    return read_matrix(folder.matrix)


def _log_metrics(client, run_id: str, metrics: list) -> None:
    for i in range(0, len(metrics), 900):  # log_batch takes at most 1000 metrics
        client.log_batch(run_id, metrics=metrics[i : i + 900])


def _defined(value) -> bool:
    """A score MLflow can hold: a finite number (undefined scores are null in the run's files, absent here)."""
    return isinstance(value, int | float) and not isinstance(value, bool) and value == value and abs(value) != float("inf")
