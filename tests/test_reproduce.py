"""scripts/reproduce.py (make reproduce-baselines): variants -> runs, two at a time, one store, one report."""

import csv
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from scripts.reproduce import run_argv  # noqa: E402


def test_a_variant_is_a_method_or_one_method_option(tmp_path):
    assert run_argv("sdft", 1, tmp_path) == (tmp_path / "toy-sdft-seed1", ["--method", "sdft", "--seed", "1", "--output", str(tmp_path / "toy-sdft-seed1")])
    run_dir, argv = run_argv("sft:replay=0.2", 0, tmp_path)
    assert run_dir.name == "toy-sft-replay-0.2-seed0"
    assert argv[-2:] == ["--set", "sft.replay=0.2"]
    run_dir, argv = run_argv("sft_reinvoke:reinvoke_prompts=/data/../tulu.jsonl", 0, tmp_path)
    assert run_dir.parent == tmp_path and run_dir.name.startswith("toy-sft_reinvoke-reinvoke_prompts-") and "tulu.jsonl-" in run_dir.name
    assert argv[-1] == "sft_reinvoke.reinvoke_prompts=/data/../tulu.jsonl"
    assert len(run_argv(f"sft:nosuch={'a' * 300}", 0, tmp_path)[0].name) < 100
    for bad in ("sft:replay", "sft:", ":replay=1", "sft:=1"):
        with pytest.raises(ValueError, match="is not METHOD or METHOD:OPTION=VALUE"):
            run_argv(bad, 0, tmp_path)


@pytest.mark.parametrize(("args", "message"), [
    (["--variants", "sft", "--seeds", " , "], "--seeds and --variants must each name at least one"),
    (["--variants", "sft,sft"], "--variants names one twice"),
    (["--variants", "sft:"], "'sft:' is not METHOD or METHOD:OPTION=VALUE"),
    (["--variants", "sft", "--jobs", "0"], "--jobs must be at least 1"),
    (["--variants", "sft", "--", "--output", "x"], "--output after `--`: this script sets --output for each run"),
    (["--variants", "sft", "--", "--meth=dft"], "--meth after `--`: this script sets --method for each run"),
    (["--variants", "sft", "--seeds", "0,0"], "--seeds names one twice"),
])
def test_bad_arguments_are_one_line_and_exit_2(tmp_path, args, message):
    done = reproduce("--out", str(tmp_path / "out"), *args)
    assert done.returncode == 2 and message in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_an_unwritable_out_is_one_line(tmp_path):
    (tmp_path / "file").write_text("")
    done = reproduce("--variants", "sft", "--out", str(tmp_path / "file" / "sub"))
    assert done.returncode == 2 and "cannot write there" in done.stderr and "Traceback" not in done.stderr


def reproduce(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "scripts" / "reproduce.py"), *args], cwd=REPO,
                          capture_output=True, text=True, timeout=600)


def test_two_variants_at_once_land_in_one_store_and_one_report(tmp_path):
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    args = ["--variants", "sft,sft:merge_alpha=0.5", "--out", str(tmp_path / "out"), "--jobs", "2", "--tracking-uri", store,
            "--", "--tasks", "facts", "--limit", "3", "--set", "max_steps=1", "--set", "per_device_train_batch_size=4"]
    done = reproduce(*args)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "2 of 2 run(s) finished" in done.stdout and "report in" in done.stdout
    for state in ("running", "done"):  # the workers' lines stay whole (print wrote text and newline apart: two merged)
        assert sorted(line.split()[1] for line in done.stdout.splitlines() if line.startswith(f"{state}: ")) == [
            "toy-sft-merge_alpha-0.5-seed0", "toy-sft-seed0"], done.stdout
    for name in ("toy-sft-seed0", "toy-sft-merge_alpha-0.5-seed0"):
        assert (tmp_path / "out" / f"{name}.log").stat().st_size > 0  # each run's own output, not interleaved
        with open(tmp_path / "out" / name / "matrix.csv") as f:
            assert [r["trained_on"] for r in csv.DictReader(f)] == ["", "facts"]
    report = (tmp_path / "out" / "comparison" / "comparison.md").read_text()
    assert "toy-sft-merge_alpha-0.5-seed0" in report and "toy-sft-seed0" in report

    from mlflow import MlflowClient

    client = MlflowClient(store)
    experiment = client.get_experiment_by_name("toy")
    parents = client.search_runs([experiment.experiment_id], "tags.`harness.kind` = 'sequence'")
    assert len(parents) == 2

    again = reproduce(*args)  # finished runs are skipped, nothing is logged twice
    assert again.returncode == 0, again.stdout + again.stderr
    assert len(client.search_runs([experiment.experiment_id], "tags.`harness.kind` = 'sequence'")) == 2


def test_a_failing_run_is_named_and_the_exit_is_nonzero(tmp_path):
    done = reproduce("--variants", "sft:no_such_option=1", "--out", str(tmp_path), "--jobs", "1")
    assert done.returncode == 1
    assert "FAILED (exit 2)" in done.stdout and "failed: toy-sft-no_such_option-1-seed0" in done.stdout


def test_an_interrupt_while_the_main_thread_waits_stops_the_child(tmp_path):
    """Ctrl-C or SIGTERM during the closing sync or report left that child running with PPID 1."""
    import os
    import signal

    from scripts.reproduce import Children

    pid_file = tmp_path / "pid"
    child = f"import os, time; open({str(pid_file)!r}, 'w').write(str(os.getpid())); time.sleep(60)"

    def interrupt(*_):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGALRM, interrupt)
    signal.setitimer(signal.ITIMER_REAL, 1.5)
    try:
        with pytest.raises(KeyboardInterrupt):
            Children().run([sys.executable, "-c", child], dict(os.environ), None)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    with pytest.raises(ProcessLookupError):  # stopped and reaped, not left behind
        os.kill(int(pid_file.read_text()), 0)
