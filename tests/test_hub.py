"""An offline machine learns at once that the hub is out of reach, and uses the cache only."""

import os
import socket

import datasets.config
import pytest
from huggingface_hub import constants

from harness import hub
from harness.errors import HarnessError

PROXIES = [f"{scheme}_PROXY" for scheme in ("HTTPS", "HTTP", "ALL", "NO")]
PROXIES += [name.lower() for name in PROXIES]


@pytest.fixture
def endpoint(monkeypatch):
    """Point the hub libraries at an address of our choosing; every setting go_offline changes is put back."""
    for name in ("HF_HUB_OFFLINE", *PROXIES):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", False)
    hub.reachable.cache_clear()
    yield lambda url: monkeypatch.setattr(constants, "ENDPOINT", url)
    hub.reachable.cache_clear()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nothing listens once it is closed


def test_an_unreachable_hub_switches_the_libraries_to_their_cache(endpoint, caplog):
    endpoint(f"http://127.0.0.1:{closed_port()}")
    with caplog.at_level("WARNING", logger="harness"):
        assert hub.reachable() is False
    assert constants.HF_HUB_OFFLINE and datasets.config.HF_HUB_OFFLINE and os.environ["HF_HUB_OFFLINE"] == "1"
    assert "unreachable" in caplog.text and "cache only" in caplog.text


def test_a_reachable_hub_changes_nothing(endpoint):
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        endpoint(f"http://127.0.0.1:{server.getsockname()[1]}")
        assert hub.reachable() is True
    assert not constants.HF_HUB_OFFLINE and "HF_HUB_OFFLINE" not in os.environ


def test_a_proxy_or_offline_mode_already_set_is_trusted(endpoint, monkeypatch):
    endpoint(f"https://127.0.0.1:{closed_port()}")
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example:3128")  # it may reach what this machine cannot
    assert hub.reachable() is True and not constants.HF_HUB_OFFLINE
    hub.reachable.cache_clear()
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    assert hub.reachable() is False


@pytest.mark.parametrize("proxy", [{"HTTP_PROXY": "http://proxy.example:3128"},  # for http only: the endpoint is https
                                   {"HTTPS_PROXY": "http://proxy.example:3128", "NO_PROXY": "127.0.0.1"}])
def test_a_proxy_that_does_not_serve_the_hub_is_no_reason_to_skip_the_check(endpoint, monkeypatch, proxy):
    endpoint(f"https://127.0.0.1:{closed_port()}")
    for name, value in proxy.items():
        monkeypatch.setenv(name, value)
    assert hub.reachable() is False and constants.HF_HUB_OFFLINE


def test_a_hub_model_missing_offline_is_one_line_naming_the_flag(endpoint):
    from harness.plan import locate_model

    endpoint(f"http://127.0.0.1:{closed_port()}")
    with pytest.raises(HarnessError, match=r"^--model someone/no-such-model: not a local folder, and the Hugging Face hub"):
        locate_model("someone/no-such-model", "--model someone/no-such-model")
    assert constants.HF_HUB_OFFLINE


def hub_cache(root, model: str, commit: str):
    """A Hugging Face cache holding the toy base as `model` at `commit` (the layout the hub libraries write)."""
    import shutil
    from pathlib import Path

    repo = root / f"models--{model.replace('/', '--')}"
    shutil.copytree(Path(__file__).resolve().parents[1] / "tasks" / "toy" / "base", repo / "snapshots" / commit)
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(commit)


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """An offline hub cache holding the toy base as acme/toy at two commits, the newest (refs/main) the second."""
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    for commit in ("a" * 40, "b" * 40):
        hub_cache(tmp_path / "hub", "acme/toy", commit)
    return tmp_path / "hub" / "models--acme--toy"


def test_a_hub_model_is_read_from_its_snapshot_at_one_commit(cache):
    """Every load of the run reads the snapshot folder, so a push to the hub mid-run cannot change its weights."""
    from harness.plan import locate_model

    a, b = "a" * 40, "b" * 40
    assert locate_model("acme/toy", "--model acme/toy") == ("acme/toy", b, str(cache / "snapshots" / b))
    for pin in (a, a[:12], " " + a, a[:12].upper()):  # a whole commit, or its first characters as the report prints them
        assert locate_model(f"acme/toy@{pin}", "--model x") == ("acme/toy", a, str(cache / "snapshots" / a))
    (cache / "refs" / "v1").write_text(a)  # a tag
    assert locate_model("acme/toy@v1", "--model x")[1] == a
    (cache / "refs" / "bbbbbbbb").write_text(a)  # a tag that reads like a commit is the tag
    assert locate_model("acme/toy@bbbbbbbb", "--model x")[1] == a
    hub_cache(cache.parent, "acme/toy", "a" * 8 + "c" * 32)
    with pytest.raises(HarnessError, match=rf"^--model x: aaaaaaa begins 2 cached commits \({a}, a{{8}}c{{32}}\): give more of it$"):
        locate_model("acme/toy@aaaaaaa", "--model x")
    with pytest.raises(HarnessError, match=rf"^--model acme/toy@c+: not a local folder, and the Hugging Face hub \(or its cache\) "
                                           rf"has no such model at c+ \(offline, and the local cache holds only commit\(s\) {a}, a{{8}}c{{32}}, {b}\)$"):
        locate_model(f"acme/toy@{'c' * 40}", f"--model acme/toy@{'c' * 40}")
    for bad in ("acme/toy@", "acme/toy@ ", "@main"):
        with pytest.raises(HarnessError, match=rf"^--model {bad}: give the model's id before the @ and a commit, branch or tag after it"):
            locate_model(bad, f"--model {bad}")


def test_a_sweep_checks_a_hub_model_without_its_weights_and_pins_its_commit(cache, tmp_path):
    """A sweep's head node trains nothing: it checks each trial's plan on the config and tokenizer alone. Its trials
    are handed the commit the model is at when the sweep starts: a push while it runs cannot split them over two."""
    from harness.plan import RunRequest, resolve
    from harness.registry import load_suite
    from harness.sweep import pinned_model

    toy = load_suite("toy")
    (cache / "refs" / "v1").write_text("a" * 40)  # a tag: it may move too
    for given, commit in (("acme/toy", "b"), ("acme/toy@main", "b"), ("acme/toy@v1", "a"), ("acme/toy@aaaaaaa", "a")):
        assert pinned_model(given, toy) == f"acme/toy@{commit * 40}", given  # one name for one commit: trial folders keep theirs
    assert pinned_model(None, toy) is None  # the suite's local folder

    (cache / "snapshots" / ("b" * 40) / "model.safetensors").unlink()  # not downloaded here
    request = RunRequest(tasks=["facts"], model="acme/toy", tracking_uri=f"sqlite:///{tmp_path / 'm.db'}")
    assert resolve(request, weights=False).source == str(cache / "snapshots" / ("b" * 40))
    with pytest.raises(HarnessError, match=r"^--model acme/toy \(its files in .*snapshots/b+\): no weights there .*; its cache copy is "
                                           rf"incomplete or damaged: fetch it again online \(`hf download acme/toy --revision {'b' * 40}`\)$"):
        resolve(request)


def test_a_hub_models_commit_is_recorded_and_a_moved_model_is_another_run(tmp_path):
    """The same hub id may name other weights tomorrow: run.json and MLflow carry the commit, and the run folder
    refuses to resume on the moved model (its stages were trained from the old one)."""
    import json
    import subprocess
    import sys

    from mlflow import MlflowClient

    first, second = "a" * 40, "b" * 40
    hub_cache(tmp_path / "hub", "acme/toy", first)
    env = {**os.environ, "HF_HUB_CACHE": str(tmp_path / "hub"), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    args = [sys.executable, "-m", "harness", "run", "--tasks", "facts", "--probes", "addition", "--model", "acme/toy",
            "--limit", "2", "--set", "max_steps=1", "--output", str(tmp_path / "run"), "--tracking-uri", store]

    def run():
        return subprocess.run(args, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600)

    done = run()
    assert done.returncode == 0, done.stderr[-2000:]
    record = json.loads((tmp_path / "run" / "run.json").read_text())
    assert record["model"] == "acme/toy" and record["model_revision"] == first
    client = MlflowClient(store)
    [parent] = client.search_runs([client.get_experiment_by_name("toy").experiment_id], "tags.`harness.kind` = 'sequence'")
    assert parent.data.params["model_revision"] == first
    (tmp_path / "hub" / "models--acme--toy" / "refs" / "main").write_text(second)
    hub_cache(tmp_path / "hub", "acme/toy", second)
    moved = run()
    assert moved.returncode == 2
    assert moved.stderr.strip().endswith(
        f"run began on commit {first} of the hub model acme/toy, and this command reads commit {second}: resume it with "
        f"--model acme/toy@{first}, or start a run on the other commit in another folder (--output, or delete this one)"), moved.stderr[-2000:]
    args[args.index("acme/toy")] = f"acme/toy@{first[:12]}"  # as the message says, or as the report prints it
    assert run().returncode == 0
    # a folder begun before commits were recorded: resumed when the command names its commit, which is recorded then
    (tmp_path / "run" / "run.json").write_text(json.dumps({k: v for k, v in record.items() if k != "model_revision"}))
    args[args.index(f"acme/toy@{first[:12]}")] = "acme/toy"
    unknown = run()
    assert unknown.returncode == 2 and (f"nothing says which commit of acme/toy its finished stage(s) 0, 1 came from: resume it "
                                        f"with --model acme/toy@<that commit> (a commit, not a branch or tag; the local cache holds: {first}, {second})") in unknown.stderr
    args[args.index("acme/toy")] = "acme/toy@main"  # a branch names no commit the folder's stages ran on
    assert run().returncode == 2
    args[args.index("acme/toy@main")] = f"acme/toy@{first}"
    upgraded = run()
    assert upgraded.returncode == 0 and "records no commit of the hub model acme/toy" in upgraded.stderr, upgraded.stderr[-2000:]
    assert json.loads((tmp_path / "run" / "run.json").read_text()) == record


def test_runs_compare_a_hub_model_by_its_commit():
    """The report's groups, base points and summary: two commits are two bases, named as --model takes them."""
    from harness.rundir import base_model

    assert base_model({"model": "acme/toy", "model_revision": "0123456789abcdef" * 2}) == "acme/toy@0123456789ab"
    assert base_model({"model": "/models/toy"}) == "/models/toy"  # a local folder: its files are hashed instead


def test_a_rerun_sweep_names_the_commits_its_earlier_trials_ran_on(tmp_path):
    """After a push the sweep's trials get new folders (their --model names the new commit): the old ones are named, and
    how to resume them."""
    import json

    from harness.rundir import run_folders
    from harness.sweep import other_commits

    for name, record in (("t1", {"model": "acme/toy", "model_revision": "a" * 40}), ("t2", {"model": "acme/toy", "model_revision": "b" * 40}),
                         ("t3", {"model": "other/model", "model_revision": "c" * 40}), ("t4", {"model": "/models/toy"})):
        (tmp_path / name).mkdir()
        (tmp_path / name / "run.json").write_text(json.dumps(record))
    (tmp_path / "t5").mkdir()
    (tmp_path / "t5" / "run.json").write_text("{")  # a damaged trial is its own to report
    assert other_commits(run_folders(tmp_path), f"acme/toy@{'b' * 40}") == ["a" * 40]
    assert other_commits(run_folders(tmp_path), "/models/toy") == []
