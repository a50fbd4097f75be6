"""The method contract: everything a training method declares, in one small class per file.

A method names its TRL trainer and config, its own options (default, type, choices), how a
task's normalized rows become the trainer's rows, and optionally hooks around a stage. The
shared training path (baselines/common.py) does the rest; the runner only ever talks to a
`Method` through this class, so adding a method is one file in baselines/ plus a preset entry.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from harness.errors import HarnessError


@dataclass(frozen=True)
class Option:
    """A harness option of a method (TRL config fields need no declaration: the config is the schema)."""

    default: Any
    choices: tuple | None = None
    kind: type | tuple | None = None  # the accepted type(s); None: the default's type (None default: anything)
    help: str = ""
    low: float | None = None  # inclusive bounds for numbers
    high: float | None = None
    high_open: bool = False  # the upper bound itself is refused

    def check(self, key: str, value, method: str) -> None:
        if self.choices is not None:
            if value not in self.choices:
                raise HarnessError(f"option {key}={value!r} for method {method!r}: expected one of {', '.join(map(str, self.choices))}")
            return
        kind = self.kind or (type(self.default) if self.default is not None else None)
        if kind is None or value is None and self.default is None:
            return
        number = isinstance(value, int | float) and not isinstance(value, bool)
        if kind is float:
            ok, expected = number, "a number"
        elif kind is int:
            ok, expected = number and isinstance(value, int), "an integer"
        elif kind is bool:
            ok, expected = isinstance(value, bool), "true or false"
        else:
            ok, expected = isinstance(value, kind), "a mapping" if kind is dict else f"a {getattr(kind, '__name__', kind)}"
        if not ok:
            raise HarnessError(f"option {key}={value!r} for method {method!r}: expected {expected}")
        above = self.high is not None and (value >= self.high if self.high_open else value > self.high)
        if (self.low is not None and value < self.low) or above:
            what = "an integer" if kind is int else "a number"
            if self.high is None:
                expected = f"{what} >= {self.low}"
            else:
                expected = f"{what} in [{self.low}, {self.high}{')' if self.high_open else ']'}"
            raise HarnessError(f"option {key}={value!r} for method {method!r}: expected {expected}")


@dataclass
class Stage:
    """One training stage, as the runner hands it to a method."""

    index: int
    method: str
    card: Any  # harness.registry.TaskCard
    rows: list[dict]  # this task's normalized train rows: prompt (chat), demonstration, answer
    start_model: Path | str  # the checkpoint this stage starts from (a folder: TRL rebuilds teachers from it)
    initial_model: Path | str  # the run's first model (for a teacher kept fixed across stages)
    work_dir: Path  # the trainer's own output (its checkpoints)
    options: dict = field(default_factory=dict)  # as resolved from preset and overrides, TRL fields and harness options
    seed: int = 0
    earlier_rows: dict[str, list[dict]] = field(default_factory=dict)  # train rows of every earlier task, in order
    callbacks: list = field(default_factory=list)  # extra transformers TrainerCallbacks (e.g. curves inside the stage)

    def teacher_start(self, teacher: str) -> Path | str:
        """The model a teacher starts from: the run's first one for `initial`, else this stage's."""
        return self.initial_model if teacher == "initial" else self.start_model


@dataclass
class StageEnv:
    """What a before-stage hook may use from the runner: the stage's folder and an evaluator."""

    stage_dir: Path
    main: bool  # the process that evaluates and writes (others return at once)
    say: Callable[[str], None]
    evaluate_teacher: Callable[[Any, Path | str, Path], float]  # (card, model path, out dir) -> teacher accuracy
    teacher_warn: float = 0.8


@dataclass
class TrainResult:
    model: Any
    tokenizer: Any
    history: list[dict]  # the trainer's log history (loss per logging step, ...)
    usage: dict = field(default_factory=dict)  # generation seconds, generated and trained tokens


def _import(path: str):
    module, _, name = path.rpartition(".")
    return getattr(importlib.import_module(module), name)


class Method:
    """Subclass per method; set `name`, `trainer`, `config`, override `rows` (and what else differs)."""

    name: ClassVar[str] = ""
    about: ClassVar[str] = ""
    trainer: ClassVar[str] = ""  # import path of the TRL trainer, e.g. "trl.SFTTrainer"
    config: ClassVar[str] = ""  # import path of its config, e.g. "trl.SFTConfig"
    options: ClassVar[dict[str, Option]] = {}  # the method's own harness options
    replay: ClassVar[bool] = False  # rows come from demonstrations, so earlier tasks' rows can be mixed in (`replay`)
    before_stage_seconds: ClassVar[str] = "before_stage"  # the name its before-stage hook's time is recorded under
    evaluates_teacher: ClassVar[bool] = False  # its before-stage hook scores the task with the demonstration in the prompt
    templates: ClassVar[dict[str, tuple[str, ...]]] = {}  # TRL config fields TRL formats mid-run, and their placeholders
    owned: ClassVar[dict[str, str]] = {}  # TRL config fields the method sets itself (trl_defaults): where a user sets them instead

    def config_class(self):
        return _import(self.config)

    def trainer_class(self):
        return _import(self.trainer)

    def check(self, opts: dict, card) -> None:
        """Check inputs the options name (files, say) when the run is planned, before anything runs; raise HarnessError."""

    def trl_defaults(self, opts: dict, card) -> dict:
        """TRL config fields this method sets from its options and the card (a user's --set still wins, except on `owned` fields)."""
        return {}

    def rows(self, task_rows: list[dict], opts: dict) -> list[dict]:
        """Normalized rows (prompt, demonstration, answer) -> the trainer's dataset rows."""
        raise NotImplementedError

    def build_rows(self, task_rows: list[dict], opts: dict, stage: Stage, model, tokenizer, config) -> list[dict]:
        """Override when building rows needs the stage-start model (e.g. rows the model writes itself)."""
        return self.rows(task_rows, opts)

    def trainer_kwargs(self, stage: Stage, opts: dict) -> dict:
        """Extra keyword arguments of the trainer (e.g. reward_funcs)."""
        return {}

    def prepare_model(self, model, stage: Stage, opts: dict) -> None:
        """Adjust the loaded stage-start model before the trainer is built (e.g. where TRL rebuilds a teacher from)."""

    def before_stage(self, stage: Stage, opts: dict, env: StageEnv) -> dict:
        """Runs before training (and before a found checkpoint is evaluated); returns fields for the stage's record."""
        return {}

    def after_stage(self, stage: Stage, opts: dict, result: TrainResult) -> TrainResult:
        """Runs after training, before the shared weight merge and the checkpoint save."""
        return result

    def has_before_stage(self) -> bool:
        return type(self).before_stage is not Method.before_stage
