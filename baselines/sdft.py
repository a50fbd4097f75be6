"""SDFT: on-policy self-distillation from the model shown a demonstration (trl.experimental.sdft).

The student sees the prompt and samples a completion; the teacher is the same
model shown the prompt plus the demonstration through the card's teacher
template; the loss is a per-token divergence between the two on the student's
own completion. Before each stage the teacher is measured: the stage's task with
the demonstration in the prompt (`teacher_acc`), a warning when it cannot use one.
With `replay`, earlier tasks' rows go through this stage's card's teacher template.
"""

from __future__ import annotations

import logging

from baselines.common import teacher_source
from baselines.contract import Method, Option, Stage, StageEnv
from harness import faults, storage
from harness.rundir import StageDir

log = logging.getLogger("harness")

# Which model the teacher is: TRL's "base" (the stage-start model), TRL's "ema"
# (an exponential average of the student; the paper's setting), or the run's
# initial model kept fixed across stages, which the harness supplies itself.
TEACHERS = {"stage_start": "base", "ema": "ema", "initial": "base"}


class SDFT(Method):
    name = "sdft"
    about = "self-distillation fine-tuning: on-policy, the model shown the demonstration is the teacher"
    trainer = "trl.experimental.sdft.SDFTTrainer"
    config = "trl.experimental.sdft.SDFTConfig"
    options = {"teacher": Option("ema", choices=tuple(TEACHERS), help="ema, stage_start or initial")}
    replay = True
    before_stage_seconds = "teacher_eval"  # the report counts it as evaluation
    evaluates_teacher = True
    owned = {"teacher_prompt_template": "a task card's `teacher_template` (or its suite's), which the teacher check and the evaluation read too",
             "teacher_model_kind": "the `teacher` option (ema, stage_start or initial)"}

    def trl_defaults(self, opts: dict, card) -> dict:
        return {"teacher_model_kind": TEACHERS[opts["teacher"]], "teacher_prompt_template": card.teacher_template}

    def rows(self, task_rows: list[dict], opts: dict) -> list[dict]:
        return [{"prompt": r["prompt"], "privileged_context": r["demonstration"]} for r in task_rows]

    def prepare_model(self, model, stage: Stage, opts: dict) -> None:
        teacher_source(model, stage.teacher_start(opts["teacher"]))

    def before_stage(self, stage: Stage, opts: dict, env: StageEnv) -> dict:
        """The teacher's accuracy with the demonstration in its prompt, measured once per stage (kept for a resume)."""
        folder = StageDir(env.stage_dir)
        path = folder.teacher
        if not env.main:
            return {"teacher_acc": None}
        if path.exists():
            return {"teacher_acc": storage.read_json(path)["teacher_acc"]}
        source = stage.teacher_start(opts["teacher"])
        env.say(f"measuring the teacher on {stage.card.name} (demonstration in the prompt)")
        acc = env.evaluate_teacher(stage.card, source, folder.teacher_eval)
        if acc is not None and acc < env.teacher_warn:
            later = stage.index > 1 and opts["teacher"] != "initial"  # the first stage's teacher is the initial model anyway
            advice = " (consider --set sdft.teacher=initial)" if later else ""
            log.warning(
                "teacher accuracy on %s is %.2f, below %.2f: SDFT distils from a teacher that cannot use the "
                "demonstration, so expect little learning%s",
                stage.card.name, acc, env.teacher_warn, advice,
            )
        faults.point("teacher")
        storage.write_json(path, {"teacher_acc": acc, "teacher": opts["teacher"], "source": str(source)})
        return {"teacher_acc": acc}
