"""`harness sweep` without training: the grid, the trials' commands and folders, the sweep file, bad input.

The real thing (PostgreSQL, an MLflow server, Ray, a killed trial) is tests/test_sweep_cluster.py.
"""

import json
import math
import os
import socket
import subprocess
import time
from pathlib import Path

import pytest

from harness import grid, sweep
from harness.cli import main, parser
from harness.errors import HarnessError
from harness.registry import load_suite
from harness.rundir import RunDir

from .conftest import REPO

SEQUENCE = load_suite("toy").sequence  # the suite's own names: the toy world's tasks may change


def dry_run(capsys, *args) -> list[str]:
    """The trials' commands a dry run prints."""
    assert main(["sweep", "--dry-run", *args]) == 0
    return [line.strip() for line in capsys.readouterr().out.splitlines() if line.startswith("  harness run ")]


def fails(capsys, args, *expected) -> str:
    try:
        code = main(["sweep", *args])
    except SystemExit as e:  # argparse's own exit, where the parser reports usage errors that way
        code = e.code
    err = [line for line in capsys.readouterr().err.strip().splitlines() if line]
    assert code == 2
    assert len(err) == 1 and err[0].startswith("error: "), err
    for text in expected:
        assert text in err[0], err[0]
    return err[0]


def test_lists_split_at_top_level_commas_only():
    assert grid.split_list("1e-5,5e-5") == ["1e-5", "5e-5"]
    assert grid.split_list("{r: 8, alpha: 16},[a, b], 'x,y'") == ["{r: 8, alpha: 16}", "[a, b]", "'x,y'"]
    assert grid.option_axes(["learning_rate=1e-5,5e-5", "sdft.teacher=ema", "learning_rate=1e-4"]) == {"learning_rate": ["1e-4"], "sdft.teacher": ["ema"]}


@pytest.mark.parametrize("item, message", [
    ("learning_rate", "expected KEY=VALUE"),
    ("=1", "expected KEY=VALUE"),
    ("learning_rate=1e-5,,5e-5", "an empty value"),
    ("learning_rate=1e-5,", "an empty value"),
    ("learning_rate=1e-5,1e-5", "listed twice"),
])
def test_malformed_option_lists(item, message):
    with pytest.raises(HarnessError, match=message):
        grid.option_axes([item])


def test_orders_sampled_without_repeats_from_the_sweep_seed():
    tasks = ["a", "b", "c", "d"]
    assert grid.task_orders(tasks, None, 0) == [tuple(tasks)]
    every = grid.task_orders(tasks, "all", 0)
    assert len(set(every)) == 24 and every[0] == tuple(tasks) and all(sorted(o) == tasks for o in every)
    sampled = grid.task_orders(tasks, "5", 7)
    assert len(set(sampled)) == 5 and set(sampled) <= set(every)
    assert grid.task_orders(tasks, "5", 7) == sampled  # the same seed, the same orders
    assert grid.task_orders(tasks, "5", 8) != sampled
    assert set(grid.task_orders(tasks, "24", 3)) == set(every)


@pytest.mark.parametrize("spec, message", [("0", "expected 1 to 6"), ("7", "expected 1 to 6"), ("two", "expected a number"), ("-1", "expected 1 to 6")])
def test_bad_order_counts(spec, message):
    with pytest.raises(HarnessError, match=message):
        grid.task_orders(["a", "b", "c"], spec, 0)


def test_all_orders_only_for_short_sequences():
    with pytest.raises(HarnessError, match="give a number to sample"):
        grid.task_orders([str(i) for i in range(grid.MAX_ALL_ORDERS + 1)], "all", 0)
    assert len(grid.task_orders([str(i) for i in range(4)], "all", 0)) == math.factorial(4)


def make_trials(tmp_path, fixed=(), uri="sqlite:///x.db", axes=None, seeds=(0, 1)):
    return grid.trials([["sft"], ["sft", "sdft"]], list(seeds), [("cipher", "facts"), ("facts", "cipher")],
                       axes or {"learning_rate": ["1e-5", "5e-5"], "max_steps": ["2"]}, list(fixed), tmp_path, uri)


def test_every_combination_is_one_trial_with_its_own_folder(tmp_path):
    trials = make_trials(tmp_path)
    assert len(trials) == 2 * 2 * 2 * 2
    assert len({t.output for t in trials}) == len(trials)
    args = parser().parse_args(list(trials[-1].argv))  # the trial is an ordinary `harness run`
    assert (args.command, args.method, args.tasks, args.seed) == ("run", ["sft", "sdft"], ["facts", "cipher"], 1)
    assert args.set == ["learning_rate=5e-5", "max_steps=2"] and args.output == str(trials[-1].output)
    assert trials[-1].varies == {"method": "sft+sdft", "order": "facts,cipher", "seed": 1, "learning_rate": "5e-5"}
    assert trials[-1].name.startswith("sft+sdft-facts-cipher-seed1-learning_rate=5e-5-")


def test_folders_depend_on_what_the_run_is_not_where_it_is_tracked(tmp_path):
    names = [t.name for t in make_trials(tmp_path)]
    assert [t.name for t in make_trials(tmp_path, uri="http://127.0.0.1:5000")] == names
    assert [t.name for t in make_trials(tmp_path, fixed=["--limit", "2"])] != names  # a changed setting: new folders
    assert [t.name for t in make_trials(tmp_path, seeds=(1,))] == [n for n in names if "-seed1-" in n]  # a grown grid keeps its trials


def test_a_sweep_file_means_what_the_command_line_means(tmp_path, capsys):
    file = tmp_path / "sweep.yaml"
    file.write_text(f"methods: [sft, [sft, sdft]]\nseeds: [0, 1]\ntasks: [{SEQUENCE[0]}, {SEQUENCE[1]}]\nlimit: 2\n"
                    "set:\n  learning_rate: [1e-5, 5.0e-5]\n  lora: {r: 8, lora_alpha: 16}\nconfirm_unsafe_code: false\n")
    flags = ["--methods", "sft,sft+sdft", "--seeds", "0,1", "--tasks", ",".join(SEQUENCE[:2]), "--limit", "2",
             "--set", "learning_rate=1e-5,5.0e-05", "--set", "lora={lora_alpha: 16, r: 8}", "--out", str(tmp_path / "out")]
    from_flags = dry_run(capsys, *flags)
    assert len(from_flags) == 8
    assert dry_run(capsys, str(file), "--out", str(tmp_path / "out")) == from_flags
    overridden = dry_run(capsys, str(file), "--seeds", "3", "--out", str(tmp_path / "out"))  # the command line wins
    assert len(overridden) == 4 and all("--seed 3 " in c for c in overridden)


@pytest.mark.parametrize("text, message", [
    ("methods: [sft\n", ": malformed YAML"),
    ("- sft\n", "expected a mapping of sweep options"),
    ("method: [sft]\n", "unknown key 'method'"),
    ("set: [learning_rate]\n", "`set` must map options"),
])
def test_bad_sweep_files(tmp_path, capsys, text, message):
    file = tmp_path / "sweep.yaml"
    file.write_text(text)
    fails(capsys, [str(file)], str(file), message)


def test_the_example_sweep_file(capsys):
    commands = dry_run(capsys, str(REPO / "sweeps" / "toy.yaml"), "--out", "/nonexistent/out")
    assert len(commands) == 2 * 3 * 2 * 2 and len({c.split("--tasks ")[1].split()[0] for c in commands}) == 2


def test_missing_sweep_file(capsys):
    fails(capsys, ["/no/such/sweep.yaml"], "sweep file not found: /no/such/sweep.yaml")


@pytest.mark.parametrize("args, expected", [
    (["--set", "learning_rate=1e-5,,5e-5"], ["--set 'learning_rate=1e-5,,5e-5'", "an empty value"]),
    (["--set", "learnin_rate=1e-5,5e-5"], ["trial sft-", "unknown option", "'learnin_rate'", "did you mean 'learning_rate'"]),
    (["--set", "learning_rate=1e-5,fast"], ["learning_rate=fast", "expected a number"]),
    (["--methods", "sft,sdtf"], ["unknown method 'sdtf'"]),
    (["--methods", "sft+sdft"], [f"--method lists 2 methods for {len(SEQUENCE)} tasks"]),
    (["--methods", "sft,sdft,sft"], ["--methods lists sft twice"]),
    (["--methods", ","], ["argument --methods: empty entry in ','"]),
    (["--seeds", "1,1"], ["--seeds lists 1 twice"]),
    (["--orders", "0"], ["--orders 0: expected 1 to"]),
    (["--seeds", "0,x"], ["argument --seeds"]),
    (["--bogus"], ["unrecognized arguments: --bogus"]),
    (["--cpus-per-trial", "0"], ["--cpus-per-trial 0: expected a number above 0"]),
    (["--gpus-per-trial", "-1"], ["--gpus-per-trial -1"]),
    (["--max-concurrent", "0"], ["--max-concurrent 0"]),
    (["--retries", "-1"], ["--retries -1"]),
    (["--num-cpus", "2", "--address", "127.0.0.1:1"], ["--num-cpus sizes the local Ray"]),
])
def test_bad_grids_fail_before_any_trial_starts(tmp_path, capsys, monkeypatch, args, expected):
    monkeypatch.setattr(sweep, "start_ray", lambda _args: pytest.fail("Ray started despite bad input"))
    fails(capsys, ["--out", str(tmp_path / "out"), *args], *expected)
    assert not (tmp_path / "out").exists()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nothing listens there once the socket is closed


def test_an_unreachable_cluster_is_one_line(tmp_path, capsys, monkeypatch):
    port = closed_port()
    start = time.time()
    fails(capsys, ["--out", str(tmp_path / "out"), "--address", f"127.0.0.1:{port}", "--tasks", SEQUENCE[0]],
          f"Ray cluster 127.0.0.1:{port} does not answer")
    monkeypatch.setenv("RAY_ADDRESS", f"ray://127.0.0.1:{port}")
    fails(capsys, ["--out", str(tmp_path / "out"), "--tasks", SEQUENCE[0]], f"Ray cluster ray://127.0.0.1:{port} does not answer")
    assert time.time() - start < 60
    assert not (tmp_path / "out").exists()


def test_an_unreachable_tracking_server_warns_and_the_sweep_goes_on(tmp_path, capsys, caplog):
    uri = f"http://127.0.0.1:{closed_port()}"
    commands = dry_run(capsys, "--out", str(tmp_path / "out"), "--tracking-uri", uri)
    assert len(commands) == 1 and commands[0].endswith(f"--tracking-uri {uri}")
    assert f"tracking store {uri} does not answer" in caplog.text and f"--tracking-uri {uri}" in caplog.text


def finish(folder: Path) -> None:
    """A trial folder as a finished run leaves it (what `harness report` and the sweep read)."""
    folder.mkdir(parents=True)
    (folder / "run.json").write_text(json.dumps({"run_id": folder.name}))
    (folder / "matrix.csv").write_text("stage\n0\n")
    (folder / "metrics.json").write_text(json.dumps({"stages_done": 1, "stages_total": 1, "acc": 0.25}))


def test_rerunning_skips_finished_trials_without_starting_ray(tmp_path, capsys, monkeypatch):
    store = tmp_path / "store" / "mlflow.db"
    args = ["--out", str(tmp_path / "out"), "--tasks", SEQUENCE[0], "--seeds", "0,1", "--tracking-uri", f"sqlite:///{store}"]
    commands = dry_run(capsys, *args)
    folders = [Path(c.split("--output ")[1].split()[0]) for c in commands]
    assert len(folders) == 2
    monkeypatch.setattr(sweep, "start_ray", lambda _args: pytest.fail("Ray started with nothing to run"))
    for folder in folders:
        finish(folder)
    assert main(["sweep", *args]) == 0
    out = capsys.readouterr().out
    for folder in folders:
        row = next(line for line in out.splitlines() if line.startswith(folder.name))
        assert "finished earlier" in row and row.endswith("0.250")
    # The sweep creates a database store's tables itself: trials starting together would race to.
    import sqlite3

    with sqlite3.connect(store) as db:
        assert db.execute("select count(*) from experiments").fetchone()[0] >= 1


def test_trial_environment_carries_threads_and_harness_settings(monkeypatch):
    monkeypatch.setenv("HARNESS_DATA_DIR", "/data")
    env = sweep.trial_env(2.0)
    assert (env["OMP_NUM_THREADS"], env["MKL_NUM_THREADS"], env["HARNESS_DATA_DIR"]) == ("2", "2", "/data")
    assert sweep.trial_env(0.5)["OMP_NUM_THREADS"] == "1"


def test_capacity_counts_whole_trials():
    assert sweep.capacity({"CPU": 2.0}, 1.0, 0.0) == 2
    assert sweep.capacity({"CPU": 16.0, "GPU": 1.0}, 1.0, 0.5) == 2
    assert sweep.capacity({"CPU": 16.0}, 1.0, 1.0) == 0


def test_concurrent_runs_share_the_base_evaluation_cache_safely(tmp_path, monkeypatch):
    """Trials of a sweep write results/.cache at once: each writer fills its own temporary folder, a dead
    writer's leftover is cleared, and a copy that another writer renamed in first is kept."""
    from harness import storage

    target = tmp_path / "cache" / "key"
    host = socket.gethostname()
    dead = _dead_pid()
    (tmp_path / "cache" / f".key.{host}.{dead}.tmp").mkdir(parents=True)  # killed mid-write
    (tmp_path / "cache" / f".key.{host}.1.tmp").mkdir()  # a live writer's (pid 1 is always alive)
    real_replace = os.replace

    def another_writer_lands_first(src, dst):
        Path(dst).mkdir()
        (Path(dst) / "scores.json").write_text("theirs")
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", another_writer_lands_first)
    storage.write_dir(target, lambda d: (d / "scores.json").write_text("ours"))
    assert (target / "scores.json").read_text() == "theirs"
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == [f".key.{host}.1.tmp", "key"]


def _dead_pid() -> int:
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


def test_a_trial_that_fails_on_its_own_reports_its_error_line(tmp_path):
    """What a Ray worker runs, in a process of its own (it redirects its output into the run folder)."""
    import sys

    out = tmp_path / "trial"
    code = ("import json, sys; from harness.cli import main; from harness.sweep import run_trial; "
            "results = [run_trial(main, sys.argv[2:], sys.argv[-1], '.', 'S1') for _ in range(2)]; "
            "open(sys.argv[1], 'w').write(json.dumps(results))")
    argv = ["run", "--model", str(tmp_path / "no-model"), "--output", str(out)]
    result = subprocess.run([sys.executable, "-c", code, str(tmp_path / "result.json"), *argv], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    first, second = json.loads((tmp_path / "result.json").read_text())
    assert first["status"] == f"failed: error: --model {tmp_path / 'no-model'}: not a model folder (no config.json there)"
    assert (first["attempts"], second["attempts"]) == (1, 2)
    log_text = RunDir(out).trial_log.read_text()
    assert log_text.count(sweep.ATTEMPT) == 2 and "not a model folder" in log_text


def test_a_sweep_file_that_is_not_text_is_refused(tmp_path, capsys):
    file = tmp_path / "sweep.yaml"
    file.write_bytes(b"methods: [sft]\n\xff\xfe")
    fails(capsys, [str(file)], str(file), "not UTF-8 text (byte 15)")


def test_run_folders_no_trial_of_the_sweep_is_are_named(tmp_path, capsys):
    """An earlier grid's, or this one's named otherwise by an older harness: `harness report` would read them too."""
    out = tmp_path / "out"
    (out / "old-trial").mkdir(parents=True)
    (out / "old-trial" / "run.json").write_text("{}")
    args = ["--methods", "sft", "--seeds", "0", "--out", str(out), "--tracking-uri", f"sqlite:///{tmp_path / 'm.db'}"]
    assert main(["sweep", "--dry-run", *args]) == 0
    assert f"sweep: {out} also holds 1 run folder(s) that are no trial of this sweep: old-trial" in capsys.readouterr().out
