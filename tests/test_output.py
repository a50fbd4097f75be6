"""What `harness run` prints: the harness's own lines, one training bar per stage and the warnings that matter;
not the libraries' progress bars, a dict per logging step, or git's complaint outside a checkout.

Real commands in subprocesses (their stdout and stderr as one stream), run from a folder git is told is no
checkout, so lm-eval's commit look-up meets exactly what a user outside a clone meets.
"""

import os
import signal
import subprocess
import sys

import pytest

from harness.registry import load_suite

NOISE = ("fatal: not a git repository", "{'loss'", "'train_runtime'", "Running generate_until", "Loading weights",
         "Writing model shards", "Downloading artifacts", "Uploading artifacts", "it/s]\n  0%")


def harness_run(cwd, *args, **env):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TORCH_NUM_THREADS": "1", "GIT_CEILING_DIRECTORIES": str(cwd.parent), **env}
    env.pop("MLFLOW_TRACKING_URI", None)
    # A shell that starts pytest in the background without job control ignores SIGINT, and a child inherits that:
    # the run is given the default, as a terminal's Ctrl-C meets it.
    done = subprocess.run([sys.executable, "-m", "harness", "run", *args], cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    return done.returncode, done.stdout.decode()  # bytes: text mode would turn a bar's \r redraws into lines


def shown(out: str) -> list[str]:
    """The lines a terminal ends up showing: a bar redraws itself with \r, so each line's last redraw."""
    return [line.rsplit("\r", 1)[-1] for line in out.rstrip("\n").split("\n")]


@pytest.fixture(scope="module")
def suite():
    return load_suite("toy")


def test_a_successful_run_prints_its_stages_and_little_else(tmp_path, suite):
    tasks, methods = suite.sequence[:2], ["sft", "sdft"]
    rc, out = harness_run(tmp_path, "--tasks", ",".join(tasks), "--method", ",".join(methods), "--limit", "2",
                          "--set", "max_steps=2", "--set", "logging_steps=1", "--output", "run",
                          "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert rc == 0, out
    lines = shown(out)
    ours = [line for line in lines if line.startswith("[run] ")]
    assert ours[:2] == ["[run] stage 0/2 evaluating the base model", "[run] stage 0/2 evaluating tasks and probes"]
    for k, (method, task) in enumerate(zip(methods, tasks), 1):
        assert f"[run] stage {k}/2 {method} on {task}: training" in ours
        assert f"[run] stage {k}/2 evaluating tasks and probes" in ours
    assert ours[-1].startswith("[run] done: ACC")
    assert sum(line.startswith("training: ") for line in lines) == len(tasks)  # the bar stays, one line a stage
    assert not [n for n in NOISE if n in out], out
    # 2 + 2 + 3 (SDFT measures its teacher) + 1 of the harness's, 2 bars: 10; the slack is for a warning that matters
    assert len(lines) <= 12, out


def test_a_warning_and_ctrl_c_each_get_their_own_line(tmp_path, suite):
    """An unreachable tracking store warns after stage 0; a Ctrl-C mid-training (sent by the train failpoint at
    the first checkpoint) stops the run with its message on a fresh line, not after the bar."""
    rc, out = harness_run(tmp_path, "--tasks", suite.sequence[0], "--limit", "2", "--set", "max_steps=2", "--set", "save_steps=1",
                          "--output", "run", "--tracking-uri", "http://127.0.0.1:9", HARNESS_FAULT="train", HARNESS_FAULT_SIGNAL="SIGINT")
    assert rc == 130, out
    lines = shown(out)
    assert any(line.startswith("harness: WARNING: MLflow tracking failed") for line in lines), out
    assert lines[-1] == "interrupted: finished stages are kept; rerun the same command to resume", out
    assert lines[-2].startswith("training: ") and "1/2" in lines[-2], out


def test_sigterm_outside_training_stops_with_a_line_and_releases_the_lock(tmp_path, suite):
    """A wall-time limit while a stage is evaluated: the process said nothing and left its lock for the next to judge."""
    rc, out = harness_run(tmp_path, "--tasks", suite.sequence[0], "--limit", "2", "--set", "max_steps=1", "--output", "run",
                          "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}", HARNESS_FAULT="eval@1", HARNESS_FAULT_SIGNAL="SIGTERM")
    assert rc == 143, out
    assert shown(out)[-1] == "error: stopped by SIGTERM: finished stages are kept; rerun the same command to resume", out
    assert not (tmp_path / "run" / ".lock").exists() and (tmp_path / "run" / "stages" / "0" / "scores.json").exists()
