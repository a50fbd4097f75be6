"""The comparison report on hand-made run folders with known numbers."""

import csv
import json
import re
from pathlib import Path

import pytest
import yaml

from harness import cli, reference
from harness.errors import HarnessError
from harness.metrics import continual_metrics
from harness.protocol import Protocol, fingerprint
from harness.report import COLUMNS, final, mean_ci, write_report

TASKS = ["cipher", "facts"]
PROBES = ["addition", "capitals"]
# Rows: base, after stage 1, after stage 2; columns: the two tasks, then the two probes.
BASE = [0.1, 0.2, 0.9, 0.8]


def make_run(root: Path, name: str, methods, matrix, seed=0, suite="toy", tasks=TASKS, options=None, done=None, protocol=None, model="base") -> Path:
    """A run folder as the runner leaves it: run.json, matrix.csv and metrics.json (from continual_metrics)."""
    run_dir = root / name
    run_dir.mkdir(parents=True)
    n = len(tasks)
    run = {
        "run_id": name, "suite": suite, "tasks": tasks, "methods": methods, "model": model, "seed": seed, "preset": "toy",
        "probes": [{"name": p, "task": f"toy_{p}", "metric": "acc"} for p in PROBES],
        "options": options or [{"learning_rate": 1e-4}] * n, "eval": {}, "data_dir": None, "versions": {},
    }
    if protocol is not None:
        run["protocol"] = protocol
    (run_dir / "run.json").write_text(json.dumps(run))
    header = ["stage", "method", "trained_on", *tasks, *PROBES, "teacher_acc"]
    lines = [",".join(header)]
    for k, row in enumerate(matrix):
        lines.append(",".join([str(k), "base" if k == 0 else methods[k - 1], "" if k == 0 else tasks[k - 1], *map(repr, row), ""]))
    (run_dir / "matrix.csv").write_text("\n".join(lines) + "\n")
    seen = len(matrix) - 1  # as in results.write_summary: an unfinished run's metrics cover the tasks trained so far
    metrics = continual_metrics([row[:seen] for row in matrix], [row[n:] for row in matrix])
    done = len(matrix) - 1 if done is None else done
    metrics.update(run_id=name, stages_done=done, stages_total=n, teacher_acc=[None] * len(matrix),
                   seconds=[{"eval": 1.0}] + [{"train": 2.0, "save": 0.1, "eval": 1.0}] * n)
    (run_dir / "metrics.json").write_text(json.dumps(metrics))
    return run_dir


def three_methods(root: Path) -> list[Path]:
    return [
        make_run(root, "toy-sft", ["sft", "sft"], [BASE, [0.9, 0.2, 0.7, 0.6], [0.3, 0.8, 0.5, 0.4]]),
        make_run(root, "toy-sdft", ["sdft", "sdft"], [BASE, [0.8, 0.25, 0.85, 0.8], [0.7, 0.75, 0.8, 0.75]]),
        make_run(root, "toy-mixed", ["sft", "sdpo"], [BASE, [0.9, 0.2, 0.7, 0.6], [0.6, 0.7, 0.65, 0.6]]),
    ]


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def md_row(md: str, label: str) -> list[str]:
    line = next(line for line in md.splitlines() if line.startswith(f"| {label} |"))
    return [c.strip() for c in line.strip("|").split("|")]


def test_table_equals_metrics_json(tmp_path):
    dirs = three_methods(tmp_path / "results")
    write_report(dirs, tmp_path / "out")
    rows = {r["method"]: r for r in read_csv(tmp_path / "out" / "comparison.csv")}
    md = (tmp_path / "out" / "comparison.md").read_text()
    assert list(rows) == ["sft", "sdft", "sft,sdpo"]  # one method for all stages, else the schedule
    for run_dir, label in zip(dirs, rows):
        metrics = json.loads((run_dir / "metrics.json").read_text())
        cells = md_row(md, label)[2:]
        for key, cell in zip(COLUMNS, cells, strict=True):
            assert float(rows[label][key]) == final(metrics, key)  # full precision, exactly
            assert rows[label][f"{key}_ci95"] == ""  # one seed: no interval
            assert cell == f"{final(metrics, key):.4f}"
        assert rows[label]["n"] == "1" and rows[label]["train_s"] == "4.0"


def test_seconds_count_the_teacher_check_as_evaluation(tmp_path):
    run_dir = make_run(tmp_path / "results", "toy-sdft", ["sdft", "sdft"], [BASE, BASE, BASE])
    metrics = json.loads((run_dir / "metrics.json").read_text())
    metrics["seconds"] = [{"eval": 1.0}] + [{"train": 2.0, "generation": 0.5, "save": 0.1, "teacher_eval": 0.25, "eval": 1.0}] * 2
    (run_dir / "metrics.json").write_text(json.dumps(metrics))
    write_report([run_dir], tmp_path / "out")
    row = read_csv(tmp_path / "out" / "comparison.csv")[0]
    assert (row["train_s"], row["eval_s"]) == ("4.0", "3.5")  # 2 + 2; 1 + (0.25 + 1) * 2


def test_seed_group_mean_and_ci(tmp_path):
    root = tmp_path / "results"
    # Final task scores 0.2, 0.4, 0.6 (both tasks) -> acc 0.2, 0.4, 0.6.
    dirs = [make_run(root, f"toy-sft-seed{s}", ["sft", "sft"], [BASE, [0.9, 0.2, 0.7, 0.6], [v, v, 0.5, 0.4]], seed=s)
            for s, v in zip((2, 0, 1), (0.6, 0.2, 0.4))]
    dirs.append(make_run(root, "toy-sft-lr", ["sft", "sft"], [BASE, [0.9, 0.2, 0.7, 0.6], [0.5, 0.5, 0.5, 0.4]], options=[{"learning_rate": 1e-3}] * 2))
    write_report(dirs, tmp_path / "out")
    rows = read_csv(tmp_path / "out" / "comparison.csv")
    # the two groups share a method: their labels say what differs
    assert [(r["method"], r["n"], r["seeds"]) for r in rows] == [("sft learning_rate=0.0001", "3", "0,1,2"), ("sft learning_rate=0.001", "1", "0")]
    # mean 0.4; half-width t(0.975, 2) * sd / sqrt(3) = 4.3027 * 0.2 / 1.7321 = 0.4968
    assert float(rows[0]["acc"]) == pytest.approx(0.4)
    assert float(rows[0]["acc_ci95"]) == pytest.approx(0.4968, abs=1e-4)
    # bwt per seed: mean of (final - just learned) over task 0 = v - 0.9
    assert float(rows[0]["bwt"]) == pytest.approx(-0.5)
    assert float(rows[0]["bwt_ci95"]) == pytest.approx(0.4968, abs=1e-4)
    assert float(rows[0]["probe_avg"]) == pytest.approx(0.45) and float(rows[0]["probe_avg_ci95"]) == 0.0
    md = (tmp_path / "out" / "comparison.md").read_text()
    assert md_row(md, "sft learning_rate=0.0001")[1:3] == ["0,1,2", "0.4000 ± 0.4968"]
    assert md_row(md, "sft learning_rate=0.001")[2] == "0.5000"
    cells = read_csv(tmp_path / "out" / "comparison_cells.csv")
    cell = next(c for c in cells if c["method"] == "sft learning_rate=0.0001" and c["stage"] == "2" and c["column"] == "cipher")
    assert (cell["n"], float(cell["mean"])) == ("3", pytest.approx(0.4))
    assert float(cell["ci95"]) == pytest.approx(0.4968, abs=1e-4)


def test_mean_ci_by_hand():
    assert mean_ci([0.7]) == (0.7, None)
    assert mean_ci([0.2, None]) == (None, None)
    mean, half = mean_ci([0.2, 0.4])  # t(0.975, 1) = 12.706; sd = 0.1414; / sqrt(2) -> 12.706 * 0.1
    assert mean == pytest.approx(0.3) and half == pytest.approx(1.2706, abs=1e-4)


def test_figures_written_and_referenced(tmp_path):
    out = tmp_path / "out"
    write_report(three_methods(tmp_path / "results"), out)
    md, page = (out / "comparison.md").read_text(), (out / "comparison.html").read_text()
    images = re.findall(r"!\[[^]]*\]\(([^)]+)\)", md)
    assert len(images) == 5  # scatter, normalized curves, one heatmap per method
    assert {"accuracy-vs-prior-toy-cipher-facts.png", "normalized-toy-cipher-facts.png", "heatmap-sft-toy-cipher-facts.png"} <= set(images)
    for name in images:
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f'src="{name}"' in page
    before = {name: (out / name).read_bytes() for name in images}
    write_report(three_methods(tmp_path / "again"), out)
    assert {name: (out / name).read_bytes() for name in images} == before  # deterministic bytes
    assert "Published numbers" not in md  # only for the paper's suite
    (out / "mine.png").write_bytes(b"a user's own")
    write_report(three_methods(tmp_path / "fewer")[:1], out)  # one method now: the others' heatmaps must not stay beside it
    assert sorted(p.name for p in out.glob("*.png")) == sorted([*re.findall(r"!\[[^]]*\]\(([^)]+)\)", (out / "comparison.md").read_text()), "mine.png"])


def test_published_numbers_for_paper_suite(tmp_path):
    tasks = ["tooluse", "science", "medical"]
    base = [0.4, 0.3, 0.3, 0.66, 0.64]
    run = make_run(tmp_path, "paper-sft", ["sft"] * 3, [base, [0.6, 0.3, 0.3, 0.6, 0.5], [0.5, 0.7, 0.3, 0.5, 0.5], [0.4, 0.6, 0.4, 0.5, 0.4]],
                   suite="paper-sequential", tasks=tasks)
    write_report([run], tmp_path / "out")
    md = (tmp_path / "out" / "comparison.md").read_text()
    assert "Published numbers" in md and "published.yaml in results/reference/" in md
    published = md[md.index("### Published numbers"):]
    # Tool use, SFT: run 60.0 / prior (0.6 + 0.5) / 2 = 55.0; paper 63.2 / 56.0.
    assert "| tooluse | sft | 60.0 | 63.2 | 55.0 | 56.0 |" in published
    assert "| science | base | 30.0 | 32.1 | 65.0 | 65.5 |" in published
    assert "| medical | sdft (paper only) | — | 40.2 | — | 65.4 |" in published


def protocols(**chat) -> dict:
    return {c: Protocol(chat_template=chat.get(c, True), num_fewshot=0).as_dict() for c in TASKS + PROBES}


def test_runs_of_different_protocols_never_form_a_group_and_are_marked(tmp_path, caplog):
    matrix = [BASE, [0.9, 0.2, 0.7, 0.6], [0.3, 0.8, 0.5, 0.4]]
    runs = [make_run(tmp_path, "sft-seed0", ["sft", "sft"], matrix, seed=0, protocol=protocols()),
            make_run(tmp_path, "sft-seed1", ["sft", "sft"], matrix, seed=1, protocol=protocols(addition=False))]
    write_report(runs, tmp_path / "out")
    rows = read_csv(tmp_path / "out" / "comparison.csv")
    # not two seeds of one experiment, and labelled by what differs
    assert [(r["method"], r["n"]) for r in rows] == [(f"sft protocol={fingerprint(protocols())}", "1"),
                                                     (f"sft protocol={fingerprint(protocols(addition=False))}", "1")]
    assert rows[0]["protocol"] == fingerprint(protocols()) != rows[1]["protocol"] == fingerprint(protocols(addition=False))
    md = (tmp_path / "out" / "comparison.md").read_text()
    expected = "sft-seed1 vs sft-seed0: addition (chat_template False vs True)"
    assert "Warning: these runs are not evaluated alike" in md and expected in md and expected in caplog.text
    same = [make_run(tmp_path / "same", f"sft-seed{k}", ["sft", "sft"], matrix, seed=k, protocol=protocols()) for k in (0, 1)]
    write_report(same, tmp_path / "out2")
    assert "not evaluated alike" not in (tmp_path / "out2" / "comparison.md").read_text()
    assert read_csv(tmp_path / "out2" / "comparison.csv")[0]["n"] == "2"


def test_base_row_beside_the_published_one(tmp_path, monkeypatch):
    published = tmp_path / "published.yaml"
    published.write_text(yaml.safe_dump({"fake": {"title": "a fake paper", "model": "org/base", "protocol": "as published.",
                                                  "rows": [{"method": "base", "values": {"cipher": 12.0, "addition": 80.0, "prior_avg": 1.0}}]}}))
    monkeypatch.setattr(reference, "REFERENCE", published)
    run = make_run(tmp_path, "toy-sft", ["sft", "sft"], [BASE, [0.9, 0.2, 0.7, 0.6], [0.3, 0.8, 0.5, 0.4]], protocol=protocols(), model="/models/base")
    write_report([run], tmp_path / "out")
    md = (tmp_path / "out" / "comparison.md").read_text()
    assert f"### Base model vs published (protocol {fingerprint(protocols())})" in md
    assert "| cipher | 10.0 | 12.0 | -2.0 | yes | chat template, 0-shot, metric acc,none |" in md
    assert "| addition | 90.0 | 80.0 | +10.0 | OUT | chat template, 0-shot, metric acc,none |" in md


def test_errors_for_unfinished_and_foreign_folders(tmp_path):
    unfinished = make_run(tmp_path, "half", ["sft", "sft"], [BASE, [0.9, 0.2, 0.7, 0.6]])
    with pytest.raises(HarnessError, match=r"unfinished \(1 of 2 stages\)"):
        write_report([unfinished], tmp_path / "out")
    (tmp_path / "other").mkdir()
    with pytest.raises(HarnessError, match=r"not a finished run folder \(no run.json\)"):
        write_report([tmp_path / "other"], tmp_path / "out")
    with pytest.raises(HarnessError, match="no finished run folders"):
        write_report([], tmp_path / "out", results=tmp_path)
    with pytest.raises(HarnessError, match="nowhere: no such folder"):
        write_report([tmp_path / "nowhere"], tmp_path / "out")


def test_no_runs_directly_under_results_names_the_folders_of_runs_there(tmp_path):
    """`make reproduce-sequential` leaves its runs in results/sequential: a bare `harness report` says so."""
    make_run(tmp_path / "sequential", "toy-sft-seed0", ["sft", "sft"], [BASE, [0.9, 0.2, 0.7, 0.6], [0.5, 0.8, 0.6, 0.5]])
    (tmp_path / "mlruns").mkdir()
    with pytest.raises(HarnessError) as caught:
        write_report([], tmp_path / "out", results=tmp_path)
    sequential = tmp_path / "sequential"
    hint = f" (folders of finished runs there: {sequential}); name one: harness report {sequential}"
    assert str(caught.value) == f"no finished run folders directly under {tmp_path}/ to report on{hint}"
    with pytest.raises(HarnessError) as caught:  # naming results/ itself
        write_report([tmp_path], tmp_path / "out")
    assert str(caught.value) == f"{tmp_path}: not a finished run folder (no run.json){hint}"
    assert write_report([sequential], tmp_path / "out").name == "comparison.md"  # the folder it names reports
    make_run(tmp_path / "half done", "toy-sft-seed1", ["sft", "sft"], [BASE, [0.9, 0.2, 0.7, 0.6]])  # unfinished: not named
    for name in "abcdef":
        make_run(tmp_path / f"{name} runs", "toy-sft-seed0", ["sft", "sft"], [BASE, [0.9, 0.2, 0.7, 0.6], [0.5, 0.8, 0.6, 0.5]])
    with pytest.raises(HarnessError) as caught:
        write_report([], tmp_path / "out", results=tmp_path)
    folders = ", ".join(str(tmp_path / f"{name} runs") for name in "abcde")
    assert str(caught.value).endswith(f"(folders of finished runs there: {folders} and 2 more); name one: harness report '{tmp_path}/a runs'")
    with pytest.raises(HarnessError, match=r"^no folder .*/nowhere/ to report on: run from the project's folder"):
        write_report([], tmp_path / "out", results=tmp_path / "nowhere")


def test_a_base_check_folder_is_named_as_one_not_as_an_unfinished_run(tmp_path, caplog):
    from harness.report import finished_runs

    check = make_run(tmp_path, "toy-base-cipher-facts-seed0", ["sft", "sft"], [BASE, BASE], done=0)
    run = json.loads((check / "run.json").read_text())
    (check / "run.json").write_text(json.dumps({**run, "check_base": True}))
    with pytest.raises(HarnessError, match=r"toy-base-cipher-facts-seed0: a --check-base folder: the base row alone, with no stage to compare$"):
        write_report([check], tmp_path / "out")
    assert finished_runs(tmp_path) == [] and "unfinished" not in caplog.text
    with pytest.raises(HarnessError, match=r": holds no finished run folder, only toy-base-cipher-facts-seed0 \(unfinished, or from --check-base"):
        write_report([tmp_path], tmp_path / "out")


def test_a_matrix_and_metrics_that_disagree_are_refused_naming_both(tmp_path):
    """The tables come from metrics.json and the cells from matrix.csv: a truncated or edited one is not reported."""
    run = make_run(tmp_path, "sft", ["sft", "sft"], [BASE, [0.9, 0.2, 0.7, 0.6], [0.3, 0.8, 0.5, 0.4]])
    matrix = (run / "matrix.csv").read_text()
    (run / "matrix.csv").write_text("".join(matrix.splitlines(keepends=True)[:3]))  # the last stage's row lost
    with pytest.raises(HarnessError, match=r"metrics.json: stages 0-2 done, but .*matrix.csv has rows for stages \[0, 1\]; rerun the run"):
        write_report([run], tmp_path / "out")
    (run / "matrix.csv").write_text(matrix.replace("0.3,0.8,0.5", "0.5,0.8,0.5"))  # a cell edited by hand
    with pytest.raises(HarnessError, match=r"metrics.json disagrees with .*matrix.csv on acc \(0.55\d* recorded, 0.65\d* from .*matrix.csv\)"):
        write_report([run], tmp_path / "out")


def test_no_arguments_reports_every_finished_run(tmp_path, monkeypatch, capsys, caplog):
    root = tmp_path / "results"
    three_methods(root)
    make_run(root, "half", ["sft", "sft"], [BASE, [0.9, 0.2, 0.7, 0.6]])
    (root / "comparison").mkdir()  # an earlier report's folder is no run
    monkeypatch.chdir(tmp_path)
    assert cli.main(["report", "--out", "results/comparison"]) == 0
    rows = read_csv(root / "comparison" / "comparison.csv")
    assert sorted(r["runs"] for r in rows) == ["toy-mixed", "toy-sdft", "toy-sft"]
    assert "left out 1 unfinished run(s) under results (rerun to finish them): half" in caplog.text
    assert cli.main(["report", "results/half"]) == 2
    assert "unfinished" in capsys.readouterr().err


def test_task_orders_pool_into_one_group_and_split_on_request(tmp_path):
    root = tmp_path / "results"
    # acc (mean final score over both tasks) per run: 0.2, 0.4 in one order; 0.6, 0.8 in the other.
    runs = [make_run(root, f"sft-{'-'.join(order)}-seed{seed}", ["sft", "sft"], [BASE, [0.9, 0.2, 0.7, 0.6], [v, v, 0.5, 0.4]], seed=seed, tasks=order)
            for order, values in ((TASKS, (0.2, 0.4)), (TASKS[::-1], (0.6, 0.8))) for seed, v in enumerate(values)]
    runs.append(make_run(root, "sft-other-options", ["sft", "sft"], [BASE, [0.9, 0.2, 0.7, 0.6], [0.5, 0.5, 0.5, 0.4]],
                         options=[{"learning_rate": 1e-3}, {"learning_rate": 1e-4}]))
    write_report(runs, tmp_path / "out")
    rows = read_csv(tmp_path / "out" / "comparison.csv")
    assert [(r["method"], r["n"], r["orders"]) for r in rows] == [("sft learning_rate=0.0001", "4", "2"), ("sft learning_rate=0.001/0.0001", "1", "1")]
    mean, half = mean_ci([0.2, 0.4, 0.6, 0.8])
    assert float(rows[0]["acc"]) == pytest.approx(mean) and float(rows[0]["acc_ci95"]) == pytest.approx(half)
    assert rows[0]["tasks"] == "cipher,facts;facts,cipher"
    md = (tmp_path / "out" / "comparison.md").read_text()
    assert "## toy: cipher, facts in 2 task orders" in md and md_row(md, "sft learning_rate=0.0001")[1:4] == ["2", "0,1", "4"]
    assert "heatmap-sft-" not in md  # a column would be a different task in each order
    assert not read_csv(tmp_path / "out" / "comparison_cells.csv")

    write_report(runs, tmp_path / "by-order", by_order=True)
    rows = read_csv(tmp_path / "by-order" / "comparison.csv")
    assert [(r["method"], r["tasks"], r["n"]) for r in rows][2:] == [("sft learning_rate=0.0001", "cipher,facts", "2"), ("sft", "facts,cipher", "2")]
    md = (tmp_path / "by-order" / "comparison.md").read_text()
    assert "## toy: cipher → facts" in md and "## toy: facts → cipher" in md
    assert "heatmap-sft-toy-facts-cipher.png" in md


def test_a_folder_of_runs_stands_for_its_finished_runs(tmp_path):
    three_methods(tmp_path / "sweep")
    write_report([tmp_path / "sweep"], tmp_path / "out")
    assert sorted(r["runs"] for r in read_csv(tmp_path / "out" / "comparison.csv")) == ["toy-mixed", "toy-sdft", "toy-sft"]


def test_pass_k_of_runs_that_sampled_differently_is_not_averaged(tmp_path):
    from harness.report import Group, pass_k_rows

    def run(name, scores):
        stage = tmp_path / name / "stages" / "1"
        stage.mkdir(parents=True)
        (stage / "scores.json").write_text(json.dumps({"pass_k": {"cipher": scores}}))
        return {"dir": tmp_path / name, "run": {"tasks": ["cipher"], "pass_k": [1, 2]}}

    group = Group("sft", [run("a", {"pass@1": 0.2, "pass@2": 0.4, "temperature": 1.0, "top_k": 0}),
                          run("b", {"pass@1": 0.4, "pass@2": 0.6, "temperature": 1.0, "top_k": 0}),
                          run("c", {"pass@1": 0.9, "pass@2": 1.0, "temperature": 0.5, "top_k": 0}),
                          run("d", {"pass@1": 0.1, "pass@2": 0.3, "temperature": 1.0})])  # written before top_k was
    assert pass_k_rows(group) == [[1, "cipher", "T 1, top_k 0", "pass@1 0.300", "pass@2 0.500"],
                                  [1, "cipher", "T 0.5, top_k 0", "pass@1 0.900", "pass@2 1.000"],
                                  [1, "cipher", "T 1, top_k unrecorded", "pass@1 0.100", "pass@2 0.300"]]


def test_runs_scored_on_other_items_are_not_seeds_of_one_experiment(tmp_path):
    matrix = [BASE, [0.9, 0.2, 0.7, 0.6], [0.3, 0.8, 0.5, 0.4]]
    runs = [make_run(tmp_path, "full", ["sft", "sft"], matrix, seed=0), make_run(tmp_path, "smoke", ["sft", "sft"], matrix, seed=1)]
    run = json.loads((runs[1] / "run.json").read_text())
    (runs[1] / "run.json").write_text(json.dumps({**run, "eval": {"limit": 2, "batch_size": 8}}))
    write_report(runs, tmp_path / "out")
    assert [(r["method"], r["n"]) for r in read_csv(tmp_path / "out" / "comparison.csv")] == [("sft eval.limit=unset", "1"), ("sft eval.limit=2", "1")]
    md = (tmp_path / "out" / "comparison.md").read_text()  # side by side, but marked: scored on other items
    assert "Warning: these runs are not evaluated alike, so their numbers do not compare. smoke vs full: eval.limit 2 vs unset" in md


def test_a_run_named_twice_counts_once_and_a_copied_run_is_refused(tmp_path):
    import shutil

    run = make_run(tmp_path, "sft-seed0", ["sft", "sft"], [BASE, [0.9, 0.2, 0.7, 0.6], [0.3, 0.8, 0.5, 0.4]])
    write_report([run, tmp_path / "." / "sft-seed0"], tmp_path / "out")
    assert read_csv(tmp_path / "out" / "comparison.csv")[0]["n"] == "1"
    shutil.copytree(run, tmp_path / "copy")
    with pytest.raises(HarnessError, match="the same run \\(seed 0, same settings\\) twice"):
        write_report([run, tmp_path / "copy"], tmp_path / "out")


def test_one_seed_scored_two_ways_is_two_groups_not_a_copy(tmp_path):
    matrix = [BASE, [0.9, 0.2, 0.7, 0.6], [0.3, 0.8, 0.5, 0.4]]
    runs = [make_run(tmp_path, name, ["sft", "sft"], matrix, seed=3) for name in ("t07", "t13")]
    for run, temperature in zip(runs, (0.7, 1.3)):
        record = json.loads((run / "run.json").read_text())
        (run / "run.json").write_text(json.dumps({**record, "pass_temperature": temperature}))  # (its pass@k files left out)
    write_report(runs, tmp_path / "out")
    assert [r["method"] for r in read_csv(tmp_path / "out" / "comparison.csv")] == ["sft pass_temperature=0.7", "sft pass_temperature=1.3"]


def test_labels_keep_every_digit_and_number_only_the_runs_they_cannot_tell_apart(tmp_path):
    from harness.report import telling_apart

    runs = [{"options": [{"learning_rate": lr}], "model": "base", "protocol": {}} for lr in (0.001, 0.0010000001, 0.001, 0.002)]
    assert telling_apart(runs) == ["learning_rate=0.001", "learning_rate=0.0010000001", "learning_rate=0.001 #2", "learning_rate=0.002"]
    assert telling_apart([{"options": [{"replay": 0.5}]}, {"options": [{}]}]) == ["replay=0.5", "replay=unset"]


def test_base_points_are_one_per_way_the_base_was_scored(tmp_path):
    from harness.report import base_points, group_runs, load_run

    full = make_run(tmp_path, "full", ["sft", "sft"], [BASE, [0.9, 0.2, 0.7, 0.6], [0.3, 0.8, 0.5, 0.4]])
    smoke = make_run(tmp_path, "smoke", ["sft", "sft"], [[0.5, 0.5, 1.0, 1.0], [0.9, 0.2, 0.7, 0.6], [0.3, 0.8, 0.5, 0.4]])
    run = json.loads((smoke / "run.json").read_text())
    (smoke / "run.json").write_text(json.dumps({**run, "eval": {"limit": 5}}))
    groups = group_runs([load_run(full), load_run(smoke)])
    assert base_points(groups, tuple(TASKS)) == {  # never their mean, a base neither run has
        "base (eval.limit=unset)": ([0.1, 0.2], pytest.approx(0.85)),
        "base (eval.limit=5)": ([0.5, 0.5], 1.0),
    }
    assert list(base_points(groups[:1], tuple(TASKS))) == ["base"]


def test_an_out_folder_that_cannot_be_written_is_named(tmp_path, capsys):
    runs = three_methods(tmp_path / "runs")
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    assert cli.main(["report", *map(str, runs), "--out", str(blocker / "report")]) == 2
    assert capsys.readouterr().err.startswith(f"error: --out {blocker / 'report'}: cannot write there")


def test_curves_skip_a_stage_without_points_and_offset_each_stage_by_the_steps_before_it(tmp_path):
    from harness.report import curve_points, load_run

    run_dir = make_run(tmp_path, "curved", ["sft", "sft"], [BASE, [0.9, 0.2, 0.7, 0.6], [0.3, 0.8, 0.5, 0.4]])
    run = json.loads((run_dir / "run.json").read_text())
    (run_dir / "run.json").write_text(json.dumps({**run, "curves": {"every": 2, "probes": False}}))
    stages = run_dir / "stages"
    for k, steps, points in ((1, 3, []), (2, 5, [(2, 0.4), (4, 0.7)])):  # stage 1: 3 steps, shorter than no curve point
        (stages / str(k)).mkdir(parents=True)
        (stages / str(k) / "train_log.json").write_text(json.dumps({"history": [{"step": s, "loss": 1.0} for s in range(1, steps + 1)]}))
        if points:
            (stages / str(k) / "curve.json").write_text(json.dumps({"points": [{"step": s, "scores": {"facts": v}} for s, v in points]}))
    # stage 2 (facts) starts after stage 1's 3 steps, from the matrix's row 1 (facts 0.2)
    assert curve_points(load_run(run_dir)) == [(2, 3, 0.2), (2, 5, 0.4), (2, 7, 0.7)]
    write_report([run_dir], tmp_path / "out")
    assert list((tmp_path / "out").glob("curves-*.png"))  # drawn: stage 1 had no points, stage 2 had


def test_labels_show_the_settings_that_tell_each_pair_apart_and_options_of_any_stage():
    from harness.report import method_label, telling_apart

    def run(**options):
        return {"options": [{"learning_rate": 3e-4, "max_steps": 2, **options}], "model": "base"}

    # four runs: learning_rate, max_steps and eval_every split (a, b) from the rest, but only merge_alpha and pass_k split c from d
    runs = [{"options": [{"learning_rate": 1e-3, "max_steps": 9}], "model": "base", "curves": {"every": 1}},
            run(max_steps=2, merge_alpha=0.9), run(merge_alpha=0.5), {**run(), "pass_k": [1, 3]}]
    labels = telling_apart(runs)
    assert len(set(labels)) == 4 and not any("#" in label for label in labels), labels
    assert "merge_alpha=0.5" in labels[2] and "merge_alpha=unset" in labels[3]
    assert method_label({"methods": ["sft", "sft"], "options": [{"merge_alpha": 0.5}, {}]}) == "sft merge_alpha=0.5/1"
    assert method_label({"methods": ["sft", "sft"], "options": [{"replay": 0.2}, {"replay": 0.2}]}) == "sft replay=0.2"


def test_labels_read_per_stage_settings_stage_by_stage():
    from harness.report import telling_apart

    runs = [{"options": [{"learning_rate": a}, {"learning_rate": b}, {"learning_rate": c}]} for a, b, c in
            ((0.001, 0.002, 0.001), (0.001, 0.002, 0.002))]
    assert telling_apart(runs) == ["learning_rate=0.001/0.002/0.001", "learning_rate=0.001/0.002/0.002"]


def test_methods_on_two_commits_of_a_hub_model_are_marked_and_labelled(tmp_path, caplog):
    """A push to the hub between two runs: the report says the bases differ (else it reads as the methods), and names
    each commit as --model takes it."""
    matrix = [BASE, [0.9, 0.2, 0.7, 0.6], [0.3, 0.8, 0.5, 0.4]]
    a, b = "a" * 40, "b" * 40
    runs = []
    for name, methods, commit in (("sft-a", ["sft", "sft"], a), ("sdft-b", ["sdft", "sdft"], b), ("sft-b", ["sft", "sft"], b)):
        run_dir = make_run(tmp_path, name, methods, matrix, model="acme/toy")
        run = json.loads((run_dir / "run.json").read_text())
        (run_dir / "run.json").write_text(json.dumps({**run, "model_revision": commit}))
        runs.append(run_dir)
    write_report(runs, tmp_path / "out")
    assert sorted((r["method"], r["model"]) for r in read_csv(tmp_path / "out" / "comparison.csv")) == [
        ("sdft", f"acme/toy@{b[:12]}"), (f"sft model=toy@{a[:12]}", f"acme/toy@{a[:12]}"), (f"sft model=toy@{b[:12]}", f"acme/toy@{b[:12]}")]
    twin = make_run(tmp_path, "sft-a-twin", ["sft", "sft"], matrix, model="acme/toy")  # its commit shares the 12 digits shown
    run = json.loads((twin / "run.json").read_text())
    (twin / "run.json").write_text(json.dumps({**run, "model_revision": a[:12] + "f" * 28}))
    write_report([runs[0], twin], tmp_path / "twins")
    assert "start from 2 different models" in (tmp_path / "twins" / "comparison.md").read_text()
    note = (f"Note: these runs start from 2 different models (acme/toy@{a[:12]}: sft model=toy@{a[:12]}; acme/toy@{b[:12]}: sdft, "
            f"sft model=toy@{b[:12]}): a difference between them is partly the models', not only the methods'.")
    assert note in (tmp_path / "out" / "comparison.md").read_text() and "start from 2 different models" in caplog.text


def test_a_run_name_the_font_lacks_draws_without_warnings(recwarn):
    from harness.results import heatmap_png
    from harness.rundir import Matrix, MatrixRow

    heatmap_png(Matrix(("a",), (MatrixRow(0, "base", "", {"a": 0.5}),)), title="运行-名字")  # four warnings a summary, each stage
    assert not [w for w in recwarn if "missing from font" in str(w.message)]
