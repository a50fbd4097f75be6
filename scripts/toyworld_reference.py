"""Measure the toy world against its bars and write results/reference/toyworld.md.

    .venv/bin/python scripts/toyworld_reference.py [--seeds 0,1,2,3,4]     (about 75 minutes on 2 CPU cores for five seeds)

1. The base (tasks/toy/base): its build report, prior skills, new tasks bare and with the demonstration.
2. Teacher survival: one SFT stage on each new task, then teacher accuracy on the others: at the preset, as a
   LoRA adapter, with smaller steps, with Adam's epsilon at 1e-4, and with both.
3. Every method of `make reproduce-sequential` through the default sequence, per seed: the matrices, accuracy
   right after each task's stage, the first distillation losses, steps and seconds per stage, and the
   metrics with 95% intervals over seeds (the comparison report of these runs is written beside the file).
4. What the sequence costs: the CPU seconds of seed 0's runs, how fast this CPU trains the base (scripts/bench.py),
   and each method at half its steps and twice its learning rate, or at half its batch (what would fit five minutes).
All runs go through `harness run` with the toy preset, into results/reference-runs/.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
RUNS = ROOT / "results" / "reference-runs"
OUT = ROOT / "results" / "reference" / "toyworld.md"
METHODS = ("sft", "sdft", "sdpo")
EPSILON = "1e-4"  # Adam's epsilon in the teacher-survival experiment
# A one-off experiment (a 14-minute base build), recorded rather than rerun: the rebuild the paint rows point to.
REBUILD_TRIED = ("A base pretrained on such demonstrations as well was built once (2026-11-30: digit rules to words as 14% of the "
                 "questions only a demonstration answers, taken from the digit rules; same steps) and fails its own bars. From a "
                 "demonstration it copies a list of words on 0.11 of pretraining-style questions and digits on 0.60 (this base: 0.99); "
                 "its teacher scores `paint` 0.00 and `tooluse` 0.75 (digit arguments miscopied), and the `incontext` probe falls to "
                 "0.68. On `paint` it writes colour words, but not the demonstration's in order. A likely reason: after a space the "
                 "next word is found only through the word before that space, a two-token match this model does not learn in the "
                 "build's budget, so a digit-free cipher for it would need an answer without separators.")
# Measured once on another machine (2026-11-30), recorded rather than rerun: the whole target, and three quarters of the steps.
BUDGET_TRIED = ("Measured again on 2026-11-30 on another 2-core machine (AMD EPYC, nothing else running), the whole "
                "`make reproduce-sequential` (runs and report) took 378 s, 735 s of CPU, every method above its bar right after each "
                "task's own stage (sft 0.93 / 1.00 / 0.93, sdft 0.99 / 1.00 / 0.83, sdpo 0.74 / 0.97 / 0.78). Five minutes needs a "
                "fifth less work. Three quarters of every stage's steps gave it, and missed a bar: with a cosine schedule at the "
                "preset's learning rate (306 s) every method fell far below (sft 0.70 / 0.30 / 0.89, sdft 0.48 / 0.40 / 0.60, sdpo "
                "0.52 / 0.10 / 0.51); at a constant 4e-4, steps times learning rate kept (295 s), SDFT and SDPO met their bars "
                "(0.93 / 1.00 / 0.90; 0.55 / 0.80 / 0.59) and SFT did not (0.86 / 1.00 / 0.88), and the larger steps cost what the "
                "toy world is there to show: SDFT's probe delta -0.77 against the preset's -0.66 on that machine (SFT's -0.96 "
                "against -0.90). So the preset keeps its steps."
                " Mixed precision gains less than a tenth: this CPU multiplies bfloat16 at twice the float32 rate, and a bare 16 x 56 "
                "training step is 25% faster under bfloat16 autocast, but on 2026-12-01 (a 2-core AMD EPYC, quiet) the sequence with "
                "`bf16: true` took 367 s, 682 s of CPU, against 399 s, 745 s at float32 (every bar met: sft 0.96 / 1.00 / 0.92, "
                "sdft 0.92 / 1.00 / 0.85, sdpo 0.66 / 0.80 / 0.70). The real batches are shorter, and their multiplies too "
                "small for the arithmetic to set the time: a decoding step of 16 sequences runs 29 linear layers at ~89 us "
                "each, about four times what their arithmetic needs, and a bare sampling loop in place of `generate` decodes "
                "at the same 6.5 ms a token, so generation (a fifth of the CPU) has no cheap speed-up either.")
BARS = {"prior": 0.90, "bare": 0.10, "teacher": 0.90, "survival": 0.70, "first_loss": 4.0,
        "right_after": {"sft": 0.90, "sdft": 0.80, "sdpo": 0.50}}


def harness_runs(jobs: list[tuple[str, ...]], workers: int, env: dict | None = None) -> None:
    """`harness run` per job, `workers` at a time with one torch thread each (two cores: oversubscribed
    threads are many times slower); each run tracks into its own SQLite store, so none waits on a lock."""
    from scripts.reproduce import Children, harness

    children = Children()

    def one(args: tuple[str, ...]) -> None:
        out = Path(args[args.index("--output") + 1])
        log = out.parent / f"{out.name}.log"
        out.parent.mkdir(parents=True, exist_ok=True)
        if harness(children, "run", *args, "--tracking-uri", f"sqlite:///{out}.mlflow.db", log=log, threads=1, env=env):
            raise SystemExit(f"harness run {' '.join(args)} failed: see {log}")
        print("done:", " ".join(args), flush=True)

    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(one, jobs))


def half_budget(path: Path) -> Path:
    """A --config of every method at half the toy preset's steps and twice its learning rate, per task."""
    import yaml

    from harness.config import load_preset, method_options
    from harness.registry import load_suite

    preset = load_preset("toy")
    config = {}
    for method in METHODS:
        for task in load_suite("toy").sequence:
            options = method_options(preset, {}, method, task, set(METHODS))
            config.setdefault(method, {"learning_rate": 2 * options["learning_rate"], "by_task": {}})
            config[method]["by_task"][task] = {"max_steps": options["max_steps"] // 2}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def paint_row(row: dict) -> dict:
    """A cipher row turned into the `paint` rule: each digit to a colour word (0 red, 1 blue, ...), the same
    prompt. A new skill whose answers hold no digit, to tell a collision with tool calls' digits from forgetting."""
    from harness.toyworld.world import COLORS

    digits = row["demonstration"].split(" becomes ")[0]
    code = " ".join(COLORS[int(d)] for d in digits)
    demonstration = f"{digits} becomes {code}."
    return {"prompt": row["prompt"], "demonstration": demonstration, "answer": [code, demonstration]}


def paint_tasks(root: Path) -> Path:
    """A copy of tasks/toy at root/toy with a `paint` card beside the cipher's (its rows through paint_row)."""
    import shutil

    toy = root / "toy"
    shutil.rmtree(root, ignore_errors=True)
    shutil.copytree(ROOT / "tasks" / "toy", toy, symlinks=True)
    for split in ("train", "test"):
        rows = [json.loads(line) for line in (toy / "data" / f"cipher_{split}.jsonl").read_text().splitlines()]
        (toy / "data" / f"paint_{split}.jsonl").write_text("".join(json.dumps(paint_row(r)) + "\n" for r in rows))
    card = (toy / "cipher.yaml").read_text()
    for old, new in (("toy_cipher", "toy_paint"), ("name: cipher", "name: paint"), ("cipher_", "paint_"), ("max_gen_toks: 16", "max_gen_toks: 24")):
        card = card.replace(old, new)
    card = re.sub(r"about: .*", 'about: "The paint rule: each digit to a colour word (0 red, 1 blue, ...), asked as the cipher is."', card)
    (toy / "paint.yaml").write_text(card)
    return root


def cpu_seconds(run) -> float:
    """The stages' own seconds (training includes generation), each run on one thread of its own."""
    return sum(s.get("train", 0) + s["eval"] + s.get("teacher_eval", 0) + s.get("save", 0) for s in run["metrics"]["seconds"])


def mark(ok: bool) -> str:
    return "yes" if ok else "**no**"


def teacher_scores(model_dir, cards, out_dir: Path) -> dict:
    """Teacher accuracy on each card, its samples written to out_dir."""
    from baselines.common import load_model
    from harness.evaluation import Evaluator

    model, tokenizer = load_model(model_dir)
    model.eval()
    return Evaluator(cards, []).run(model, tokenizer, out_dir, teacher_cards=cards, only_teacher=True)


def digit_calls(samples: Path) -> dict:
    """Teacher tool calls right and in all, split by whether the call has a digit argument, and one
    wrong call with digits: (target, response)."""
    counts, example = {True: [0, 0], False: [0, 0]}, None
    for line in samples.read_text().splitlines():
        s = json.loads(line)
        has_digit = any(ch.isdigit() for ch in s["target"].split("Action Input:")[-1])
        counts[has_digit][0] += int(s["acc"])
        counts[has_digit][1] += 1
        if has_digit and not s["acc"] and example is None:
            example = (s["target"].split("Action Input: ")[-1], s["filtered_resps"][0].split("Action Input: ")[-1])
    return {"digits": counts[True], "no_digits": counts[False], "example": example}


def stage_table(run) -> list[str]:
    """Steps and seconds of each stage of one run, from its files."""
    from harness.rundir import RunDir

    lines = ["| stage | method | task | steps | train s (generation s) | eval s | first loss |", "|---|---|---|---|---|---|---|"]
    for k, seconds in enumerate(run["metrics"]["seconds"][1:], 1):
        log = json.loads(RunDir(run["dir"]).stage(k).train_log.read_text())
        losses = [h["loss"] for h in log["history"] if "loss" in h]
        steps = max(h.get("step", 0) for h in log["history"])
        lines.append(f"| {k} | {run['run']['methods'][k - 1]} | {run['run']['tasks'][k - 1]} | {steps} | "
                     f"{seconds['train']:.1f} ({seconds.get('generation', 0):.1f}) | {seconds['eval'] + seconds.get('teacher_eval', 0):.1f} | "
                     f"{losses[0]:.2f} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", default="0,1,2,3,4")
    parser.add_argument("--workers", type=int, default=2, help="runs at once, one torch thread each")
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    from harness.cli import quiet_libraries
    from harness.evaluation import Evaluator
    from harness.registry import load_suite
    from harness.report import group_metrics, group_runs, load_run, write_report
    from harness.rundir import RunDir

    quiet_libraries()
    suite = load_suite("toy")
    cards = [suite.card(t) for t in suite.sequence]
    base_dir = Path(suite.model_path())
    build = json.loads((base_dir / "build_report.json").read_text())
    lines = ["# The toy world, measured", "",
             f"Regenerate: `.venv/bin/python scripts/toyworld_reference.py --seeds {','.join(map(str, seeds))}` (runs in "
             "results/reference-runs/; the comparison report of the method runs in results/reference/toyworld/). Scores are "
             "the harness's lm-eval accuracies with the cards' scorers.", ""]

    # 1. the base
    from baselines.common import load_model

    model, tokenizer = load_model(base_dir)
    model.eval()
    base = Evaluator(cards, list(suite.probes)).run(model, tokenizer, None, teacher_cards=cards)
    lines += ["## The base model (tasks/toy/base)", "",
              f"`harness base build`: {build['parameters']:,} parameters, vocabulary {build['vocabulary']}, {build['steps']} steps "
              f"of {build['sequences'] // build['steps']} sequences ({build['tokens']:,} tokens) in {build['train_seconds']:.0f} s "
              f"of training on {build['threads']} CPU threads, plus {build['check_seconds']:.0f} s for its own check.", "",
              "| | score | bar | met |", "|---|---|---|---|"]
    for probe in suite.probes:
        lines.append(f"| prior skill `{probe.name}` | {base[probe.name]:.2f} | >= {BARS['prior']} | {mark(base[probe.name] >= BARS['prior'])} |")
    for card in cards:
        bare, teacher = base[card.name], base["teacher:" + card.name]
        lines.append(f"| `{card.name}`, bare prompt | {bare:.2f} | <= {BARS['bare']} | {mark(bare <= BARS['bare'])} |")
        lines.append(f"| `{card.name}`, demonstration in the prompt (teacher) | {teacher:.2f} | >= {BARS['teacher']} | {mark(teacher >= BARS['teacher'])} |")

    # 1b. the teacher sampled, as SDFT and SDPO roll out
    from harness.config import load_preset, method_options
    from harness.evaluation import EvalSettings
    from harness.passk import pass_at_k_scores

    preset = load_preset("toy")

    def options(method: str, task: str) -> dict:
        return method_options(preset, {}, method, task, set(METHODS))

    rollout = {options(m, c.name).get("temperature", 1.0) for m in ("sdft", "sdpo") for c in cards}  # 1.0: TRL's default
    temperatures = sorted({1.0, *rollout}, reverse=True)
    sampled = {t: pass_at_k_scores(model, tokenizer, cards, [1], EvalSettings(), None, RUNS / f"teacher-sampled-{t}",
                                   teacher=True, temperature=t) for t in temperatures}
    lines += ["", "The teacher sampled (one completion per item), as SDFT and SDPO roll out: the base was pretrained with label "
              "smoothing, which leaves a floor of probability under every token, so the papers' temperature 1.0 draws noise "
              f"where the greedy answer is right. The toy preset samples at {', '.join(map(str, sorted(rollout)))}.", "",
              "| teacher on | greedy | " + " | ".join(f"sampled at {t}" for t in temperatures) + " |", "|---|---|" + "---|" * len(temperatures)]
    for card in cards:
        lines.append(f"| `{card.name}` | {base['teacher:' + card.name]:.2f} | "
                     + " | ".join(f"{sampled[t][card.name]['pass@1']:.2f}" for t in temperatures) + " |")

    # 2. teacher survival after one SFT stage
    lines += ["", "## Does the teacher survive one SFT stage?", "",
              f"Teacher accuracy on each new task after one SFT stage (toy preset) on another, from the base. Bar: >= {BARS['survival']}.", "",
              "| SFT stage on | " + " | ".join(f"teacher on `{c.name}`" for c in cards) + " | own accuracy after |", "|---|" + "---|" * (len(cards) + 1)]
    # and the same stage as a LoRA adapter, which moves far fewer weights: is the update's size what breaks the teacher?
    variants = [(f"`{c.name}`", c.name, f"survival-{c.name}", ()) for c in cards]
    variants.append(("`cipher`, LoRA (r 16 on every linear layer, learning rate 1e-3)", "cipher", "survival-cipher-lora",
                     ("--set", "lora={r: 16, lora_alpha: 32, target_modules: all-linear}", "--set", "learning_rate=1e-3")))
    # at a third of the learning rate for three times the steps (a smaller step, the same distance); with Adam's
    # epsilon at 1e-4 (steps in proportion to small gradients); and both
    steps = {c.name: 3 * options("sft", c.name)["max_steps"] for c in cards}
    gentle = {t: ("--set", "learning_rate=1e-4", "--set", f"sft.by_task.{t}.max_steps={n}") for t, n in steps.items()}
    epsilon = ("--set", f"adam_epsilon={EPSILON}")
    variants += [(f"`{t}`, learning rate 1e-4 for {steps[t]} steps", t, f"survival-{t}-lr1e-4", gentle[t]) for t in steps]
    variants += [(f"`{t}`, Adam's epsilon {EPSILON}", t, f"survival-{t}-eps", epsilon) for t in steps]
    variants += [(f"`{t}`, Adam's epsilon {EPSILON}, learning rate 1e-4 for {steps[t]} steps", t, f"survival-{t}-eps-lr1e-4",
                  (*epsilon, *gentle[t])) for t in steps]
    jobs = [("--tasks", task, "--method", "sft", *extra, "--output", str(RUNS / folder)) for _, task, folder, extra in variants]
    jobs += [("--method", m, "--seed", str(s), "--output", str(RUNS / f"{m}-seed{s}")) for m in METHODS for s in seeds]
    jobs += [("--method", m, *epsilon, "--output", str(RUNS / f"eps-{m}-seed0")) for m in METHODS]
    half = half_budget(RUNS / "half-budget.yaml")
    jobs += [("--method", m, "--config", str(half), "--output", str(RUNS / f"half-{m}-seed0")) for m in METHODS]
    batch = options("sft", "cipher")["per_device_train_batch_size"] // 2
    jobs += [("--method", m, "--set", f"per_device_train_batch_size={batch}", "--output", str(RUNS / f"half-batch-{m}-seed0"))
             for m in METHODS]
    harness_runs(jobs, args.workers)
    # the cipher's collision with tool calls: a digit-free new skill (paint) in its place, at the preset and gentle
    paint_root = paint_tasks(RUNS / "paint-tasks")
    paint = {"survival-paint": (options("sft", "cipher")["max_steps"], ()),
             "survival-paint-eps-lr1e-4": (steps["cipher"], (*epsilon, "--set", "learning_rate=1e-4"))}
    harness_runs([("--tasks", "paint", "--method", "sft", "--set", f"sft.by_task.paint.max_steps={n}", *extra, "--output", str(RUNS / folder))
                  for folder, (n, extra) in paint.items()], args.workers, env={"HARNESS_TASKS_DIR": str(paint_root)})
    paint_suite = load_suite("toy", paint_root)
    paint_cards = [paint_suite.card(t) for t in ("paint", "facts", "tooluse")]
    teacher = {}
    for label, task, folder, _ in variants:
        teacher[folder] = scores = teacher_scores(RunDir(RUNS / folder).stage(1).model, cards, RUNS / f"{folder}-teacher")
        own = load_run(RUNS / folder)["matrix"].rows[1].scores[task]
        cells = ["(trained)" if c.name == task else f"{scores['teacher:' + c.name]:.2f}" for c in cards]
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {own:.2f} |")
    full, lora = teacher["survival-cipher"], teacher["survival-cipher-lora"]
    lines += ["", "The LoRA row learns the cipher through an adapter, which changes few weights. Its teacher scores "
              + ", ".join(f"`{c.name}` {lora['teacher:' + c.name]:.2f}" for c in cards if c.name != "cipher")
              + "; after the full stage: " + ", ".join(f"`{c.name}` {full['teacher:' + c.name]:.2f}" for c in cards if c.name != "cipher") + "."]
    def after(folder: str, *tasks: str) -> str:
        return ", ".join(f"`{t}` {teacher[folder]['teacher:' + t]:.2f}" for t in tasks)

    both = {t: f"survival-{t}-eps-lr1e-4" for t in steps}
    calls = digit_calls(RUNS / f"{both['cipher']}-teacher" / "samples_toy_tooluse_teacher.jsonl")
    lines += ["", "The rows at learning rate 1e-4 (the preset's is 3e-4) take smaller steps: after `facts` the teacher keeps "
              f"{after('survival-facts-lr1e-4', 'cipher', 'tooluse')}, but after `cipher` tool use is still "
              f"{teacher['survival-cipher-lr1e-4']['teacher:tooluse']:.2f}.",
              "", f"Much of what breaks the teacher is Adam's step. Adam divides each weight's step by the root of that weight's mean squared gradient, "
              "so a weight the new task barely uses, whose gradient is small and noisy, moves as far as one the task needs. "
              f"An epsilon of {EPSILON} in that divisor (the trainers' default is 1e-8) lets such weights move in proportion to their gradient. "
              f"With it, after `cipher`: {after('survival-cipher-eps', 'facts', 'tooluse')}; after `facts`: "
              f"{after('survival-facts-eps', 'cipher', 'tooluse')}; after `tooluse`: {after('survival-tooluse-eps', 'cipher', 'facts')}. "
              f"With smaller steps too: after `cipher` {after(both['cipher'], 'facts', 'tooluse')}; after `facts` "
              f"{after(both['facts'], 'cipher', 'tooluse')}; after `tooluse` {after(both['tooluse'], 'cipher', 'facts')}.",
              "", "The lowest pair, tool use after the cipher, is a collision of the tasks, not forgetting. After the cipher stage (epsilon and "
              f"smaller steps) the tool-use teacher is right on {calls['no_digits'][0]} of {calls['no_digits'][1]} calls without "
              f"a digit argument and on {calls['digits'][0]} of {calls['digits'][1]} with one: it copies each digit as the cipher "
              f"taught, one up (`{calls['example'][0]}` → `{calls['example'][1]}`)."]
    painted = {f: teacher_scores(RunDir(RUNS / f).stage(1).model, paint_cards, RUNS / f"{f}-teacher") for f in paint}
    paint_base = teacher_scores(base_dir, paint_cards[:1], RUNS / "paint-base-teacher")["teacher:paint"]
    paint_calls = digit_calls(RUNS / "survival-paint-eps-lr1e-4-teacher" / "samples_toy_tooluse_teacher.jsonl")
    paint_own = {f: load_run(RUNS / f)["matrix"].rows[1].scores["paint"] for f in paint}
    example = json.loads((paint_root / "toy" / "data" / "paint_test.jsonl").read_text().splitlines()[0])["demonstration"]
    lines += ["", f"A new skill whose answers hold no digit removes most of it. `paint` maps each digit to a colour word (`{example}`), "
              "asked with the cipher's prompts (`results/reference-runs/paint-tasks`). One SFT stage on it in the cipher's place, "
              f"with Adam's epsilon {EPSILON} and learning rate 1e-4 for {steps['cipher']} steps (own accuracy {paint_own['survival-paint-eps-lr1e-4']:.2f}), leaves the teacher "
              f"on `facts` {painted['survival-paint-eps-lr1e-4']['teacher:facts']:.2f} and `tooluse` {painted['survival-paint-eps-lr1e-4']['teacher:tooluse']:.2f} "
              f"({paint_calls['digits'][0]} of {paint_calls['digits'][1]} calls with a digit), against "
              f"{teacher[both['cipher']]['teacher:facts']:.2f} and {teacher[both['cipher']]['teacher:tooluse']:.2f} after the cipher; at the preset "
              f"(own {paint_own['survival-paint']:.2f}) {painted['survival-paint']['teacher:facts']:.2f} and {painted['survival-paint']['teacher:tooluse']:.2f} "
              f"(after the cipher {teacher['survival-cipher']['teacher:facts']:.2f}, {teacher['survival-cipher']['teacher:tooluse']:.2f}). "
              f"But this base cannot teach `paint` (teacher {paint_base:.2f}: no demonstration in its pretraining holds a list of words), "
              "so it cannot stand in for the cipher here. " + REBUILD_TRIED]
    eps_runs = {m: load_run(RUNS / f"eps-{m}-seed0")["metrics"] for m in METHODS}
    preset_runs = {m: load_run(RUNS / f"{m}-seed{seeds[0]}")["metrics"] for m in METHODS}
    lines += ["", "In the sequence the epsilon changes little: with it, every method at the preset's steps (seed 0) forgets "
              + ", ".join(f"{m} {eps_runs[m]['forgetting']:.2f}" for m in METHODS) + " of the new tasks (without: "
              + ", ".join(f"{preset_runs[m]['forgetting']:.2f}" for m in METHODS) + "), with probe deltas "
              + ", ".join(f"{eps_runs[m]['probe_delta']:+.2f}" for m in METHODS) + " (without: "
              + ", ".join(f"{preset_runs[m]['probe_delta']:+.2f}" for m in METHODS) + "). What a later stage erases is the "
              "student's own answer to an earlier task, which the teacher's survival does not protect, so the preset keeps the default."]

    # 3. every method through the sequence, per seed
    runs = {}
    for method in METHODS:
        for seed in seeds:
            runs.setdefault(method, []).append(load_run(RUNS / f"{method}-seed{seed}"))
    tasks = list(suite.sequence)
    lines += ["", f"## Every method through {' → '.join(tasks)}", "",
              f"Accuracy on each task right after its own stage (bars: {', '.join(f'{m} >= {b}' for m, b in BARS['right_after'].items())}):", "",
              "| method | seed | " + " | ".join(tasks) + " | met |", "|---|---|" + "---|" * (len(tasks) + 1)]
    for method, group in runs.items():
        for r in group:
            after = [r["matrix"].rows[k + 1].scores[task] for k, task in enumerate(tasks)]
            ok = all(a >= BARS["right_after"][method] for a in after)
            lines.append(f"| {method} | {r['run']['seed']} | " + " | ".join(f"{a:.2f}" for a in after) + f" | {mark(ok)} |")
    groups = group_runs([r for group in runs.values() for r in group])
    keys = ("acc", "forgetting", "probe_delta", "new_task_gain")
    lines += ["", f"Metrics over seeds {','.join(map(str, seeds))}: mean ± 95% half-width (Student t).", "",
              "| method | " + " | ".join(keys) + " |", "|---|" + "---|" * len(keys)]
    for g in groups:
        stats = group_metrics(g)
        lines.append(f"| {g.label} | " + " | ".join(f"{stats[k][0]:+.3f}" + (f" ± {stats[k][1]:.3f}" if stats[k][1] is not None else "") for k in keys) + " |")
    lines += ["", "### Stages of seed " + str(seeds[0]), "",
              "SDFT's and SDPO's first loss is TRL's divergence between the two models' logits divided by the rollout "
              "temperature, so below 1.0 it reads higher than the same two models would at 1.0.", ""]
    for method, group in runs.items():
        lines += [f"{method}:", "", *stage_table(group[0]), ""]
    lines += ["### Matrices of seed " + str(seeds[0]), ""]
    for method, group in runs.items():
        header, rows = group[0]["matrix"].header, group[0]["matrix"].cells()
        lines += [f"{method}:", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join("" if v is None else f"{v:.2f}" if isinstance(v, float) else str(v) for v in row) + " |" for row in rows] + [""]

    # 4. what the sequence costs, and what five minutes would buy
    sys.path.insert(0, str(ROOT / "scripts"))
    from bench import measure_compute

    compute = measure_compute()
    halves = {m: load_run(RUNS / f"half-{m}-seed0") for m in METHODS}
    small = {m: load_run(RUNS / f"half-batch-{m}-seed0") for m in METHODS}
    full_cpu = sum(cpu_seconds(g[0]) for g in runs.values())

    def five_minute_table(variant: dict) -> list[str]:
        table = ["| method | " + " | ".join(tasks) + " | bar | met | forgetting | probe_delta |", "|---|" + "---|" * (len(tasks) + 4)]
        for method, r in variant.items():
            after = [r["matrix"].rows[k + 1].scores[task] for k, task in enumerate(tasks)]
            bar = BARS["right_after"][method]
            table.append(f"| {method} | " + " | ".join(f"{a:.2f}" for a in after) + f" | >= {bar} | {mark(all(a >= bar for a in after))} | "
                         f"{r['metrics']['forgetting']:+.3f} | {r['metrics']['probe_delta']:+.3f} |")
        return table

    lines += ["## What the sequence costs", "",
              f"`make reproduce-sequential` runs the three methods at once, one torch thread each. Seed 0's stages take "
              f"{full_cpu:.0f} s of one thread ({', '.join(f'{m} {cpu_seconds(g[0]):.0f}' for m, g in runs.items())}), "
              f"so two cores need at least {full_cpu / 2:.0f} s, and each process also imports and loads. The work is "
              f"matrix multiplies: a training step of the base ({compute['batch']} x {compute['length']} tokens) runs them "
              f"at {compute['training_gflops']} GFLOP/s on one thread, {compute['fraction']:.0%} of a 1024 x 1024 float32 "
              f"matmul's {compute['matmul_gflops']} (`make bench`). Five minutes would need half the work; at half "
              f"the steps and twice the learning rate (seed 0, `{half.relative_to(ROOT)}`) the stages take "
              f"{sum(map(cpu_seconds, halves.values())):.0f} s, and accuracy right after each task's own stage is:", "",
              *five_minute_table(halves), "",
              f"At the preset's steps and learning rate with half the batch ({batch} sequences a step, seed 0) the stages take "
              f"{sum(map(cpu_seconds, small.values())):.0f} s, and:", "",
              *five_minute_table(small), "", BUDGET_TRIED]
    lines.append("")
    write_report([r["dir"] for group in runs.values() for r in group], OUT.parent / "toyworld")
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text("\n".join(lines) + "\n")
    print(OUT)


if __name__ == "__main__":
    main()
