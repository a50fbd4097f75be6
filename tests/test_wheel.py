"""The project as `pip install git+<repo>` installs it: a wheel (not editable), run from a folder that is not the checkout.

Builds the wheel from the files a clone holds, installs it into a fresh target folder (the project's venv supplies
the dependencies) and runs the installed `harness` from an empty folder. About 25 s; part of `make test`.
"""

import csv
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from harness.config import presets
from harness.registry import load_suite, suite_index

REPO = Path(__file__).resolve().parents[1]


def _clone_files(dest: Path) -> None:
    """What a clone holds: tracked files and untracked ones git does not ignore (no .venv, no stale build/)."""
    try:
        listing = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                                 cwd=REPO, capture_output=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("the wheel is built from the files git lists: needs git and a git checkout")
    for name in filter(None, listing.split(b"\0")):
        path = os.fsdecode(name)
        if (REPO / path).is_file():  # a tracked file deleted in the worktree is not in the clone either
            (dest / path).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / path, dest / path)


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    pytest.importorskip("setuptools", minversion="69")  # the build backend, built without network
    root = tmp_path_factory.mktemp("wheel")
    _clone_files(root / "src")
    pip = [sys.executable, "-m", "pip", "-q", "--disable-pip-version-check"]
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-w", str(root / "dist"), str(root / "src")],
                   check=True, capture_output=True)
    wheel = next((root / "dist").glob("cl_harness-*.whl"))
    site = root / "site"
    subprocess.run([*pip, "install", "--no-deps", "--no-index", "--target", str(site), str(wheel)], check=True, capture_output=True)
    elsewhere = root / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("HARNESS_TASKS_DIR", "MLFLOW_TRACKING_URI")}
    env.update(PYTHONPATH=str(site), OMP_NUM_THREADS="1", TORCH_NUM_THREADS="1")

    def harness(*args):
        done = subprocess.run([str(site / "bin" / "harness"), *args], cwd=elsewhere, env=env, capture_output=True, text=True)
        return done.returncode, done.stdout + done.stderr

    return site, elsewhere, env, harness


def test_the_installed_package_reads_its_own_files(installed):
    site, elsewhere, env, _ = installed
    where = subprocess.run([sys.executable, "-c", "import harness.project as p, baselines; print(p.root()); print(baselines.__file__)"],
                           cwd=elsewhere, env=env, capture_output=True, text=True, check=True).stdout.split()
    assert where == [str(site / "harness" / "_project"), str(site / "baselines" / "__init__.py")]


def test_list_shows_the_suites_and_presets(installed):
    rc, out = installed[3]("list")
    assert rc == 0, out
    for name in suite_index().files:
        assert f"suite {name}: {load_suite(name).about}" in out
    assert f"presets: {', '.join(presets())}" in out


def test_base_check_finds_the_shipped_base(installed):
    site = installed[0]
    rc, out = installed[3]("base", "check")
    assert rc == 0, out
    assert out.strip() == f"{site / 'harness' / '_project' / 'tasks' / 'toy' / 'base'} matches the recipe"


def test_a_tiny_run_writes_its_results_under_the_current_folder(installed):
    _, elsewhere, _, harness = installed
    task = load_suite("toy").sequence[0]
    rc, out = harness("run", "--tasks", task, "--limit", "2", "--set", "max_steps=1")
    assert rc == 0, out
    with open(elsewhere / "results" / f"toy-sft-{task}-seed0" / "matrix.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["stage"] for r in rows] == ["0", "1"] and rows[1]["trained_on"] == task
    assert (elsewhere / "results" / "mlflow.db").is_file()
