"""Presets and overrides: precedence, parsing, and errors that name the option."""

import pytest

from harness.config import load_overrides, load_preset, method_options, parse_set
from harness.errors import HarnessError

METHODS = {"sft", "sdft", "sdpo"}


def test_set_values_are_read_as_yaml_scalars_and_scoped_by_method():
    assert parse_set(["learning_rate=1e-5", "sdft.teacher=initial", "bf16=true", "lora={r: 8}"]) == {
        "learning_rate": 1e-5,
        "sdft": {"teacher": "initial"},
        "bf16": True,
        "lora": {"r": 8},
    }


def test_set_without_equals_is_refused():
    with pytest.raises(HarnessError, match="--set 'learning_rate': expected KEY=VALUE"):
        parse_set(["learning_rate"])


def test_precedence_common_method_task_flat_scoped():
    preset = {
        "common": {"learning_rate": 1, "max_steps": 10, "by_task": {"facts": {"max_steps": 20}}},
        "sdft": {"learning_rate": 2, "by_task": {"facts": {"learning_rate": 3}}},
    }
    assert method_options(preset, {}, "sdft", "cipher", METHODS) == {"learning_rate": 2, "max_steps": 10}
    assert method_options(preset, {}, "sdft", "facts", METHODS) == {"learning_rate": 3, "max_steps": 20}
    assert method_options(preset, {}, "sft", "facts", METHODS) == {"learning_rate": 1, "max_steps": 20}
    overrides = {"learning_rate": 4, "sdft": {"learning_rate": 5}}
    assert method_options(preset, overrides, "sdft", "facts", METHODS)["learning_rate"] == 5
    assert method_options(preset, overrides, "sft", "facts", METHODS)["learning_rate"] == 4


def test_a_renamed_option_overrides_its_old_name_and_the_reverse():
    # transformers 5: gradient_checkpointing is a deprecated alias; with both names set, the new one would win silently
    preset = {"common": {"activation_checkpointing": False}, "sdft": {"by_task": {"facts": {"gradient_checkpointing": True}}}}
    assert method_options(preset, {}, "sdft", "cipher", METHODS) == {"activation_checkpointing": False}
    assert method_options(preset, {}, "sdft", "facts", METHODS) == {"activation_checkpointing": True}
    assert method_options(preset, {"sdft": {"gradient_checkpointing": False}}, "sdft", "facts", METHODS) == {"activation_checkpointing": False}
    assert method_options(preset, {"gradient_checkpointing": True}, "sft", "cipher", METHODS) == {"activation_checkpointing": True}
    with pytest.raises(HarnessError, match="options gradient_checkpointing and activation_checkpointing are one option"):
        method_options(preset, {"gradient_checkpointing": True, "activation_checkpointing": False}, "sft", "cipher", METHODS)


def test_set_beats_the_config_file_under_either_name(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("gradient_checkpointing: true\nsdft: {activation_checkpointing: true}\n")
    merged = load_overrides(str(config), ["activation_checkpointing=false", "sdft.gradient_checkpointing=false"])
    assert merged == {"activation_checkpointing": False, "sdft": {"gradient_checkpointing": False}}


def test_overrides_for_one_task_go_over_their_section():
    preset = {"common": {"max_steps": 10}, "sdft": {"by_task": {"facts": {"max_steps": 20}}}}
    flat = parse_set(["max_steps=30", "by_task.facts.max_steps=40"])
    assert flat == {"max_steps": 30, "by_task": {"facts": {"max_steps": 40}}}
    assert method_options(preset, flat, "sdft", "facts", METHODS) == {"max_steps": 40}
    assert method_options(preset, flat, "sdft", "cipher", METHODS) == {"max_steps": 30}
    scoped = {**flat, "sdft": {"max_steps": 50, "by_task": {"facts": {"max_steps": 60}}}}
    assert method_options(preset, scoped, "sdft", "facts", METHODS) == {"max_steps": 60}
    assert method_options(preset, scoped, "sdft", "cipher", METHODS) == {"max_steps": 50}
    assert method_options(preset, scoped, "sft", "facts", METHODS) == {"max_steps": 40}


def test_config_file_and_set_merge(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("sdft: {teacher: initial, learning_rate: 1e-4}\nmax_steps: 7\n")
    assert load_overrides(str(config), ["sdft.learning_rate=2e-4"]) == {
        "sdft": {"teacher": "initial", "learning_rate": 2e-4},
        "max_steps": 7,
    }
    config.write_text("sdft: {by_task: {facts: {max_steps: 5, learning_rate: 1e-4}}}\n")
    merged = load_overrides(str(config), ["sdft.by_task.facts.max_steps=8", "sdft.teacher=initial"])
    assert merged == {"sdft": {"by_task": {"facts": {"max_steps": 8, "learning_rate": 1e-4}}, "teacher": "initial"}}


def test_a_config_file_that_is_not_text_is_refused(tmp_path):
    binary = tmp_path / "weights.yaml"
    binary.write_bytes(b"lr: \xff\xfe\x00")
    with pytest.raises(HarnessError, match="weights.yaml: not UTF-8 text \\(byte 4\\)"):
        load_overrides(str(binary), [])


def test_bad_config_files(tmp_path):
    with pytest.raises(HarnessError, match="--config file not found"):
        load_overrides(str(tmp_path / "missing.yaml"), [])
    bad = tmp_path / "bad.yaml"
    bad.write_text("sdft: [1, 2\n")
    with pytest.raises(HarnessError, match="bad.yaml, line 2: malformed YAML"):
        load_overrides(str(bad), [])
    twice = tmp_path / "twice.yaml"
    twice.write_text("sft: {learning_rate: 1.0e-5}\nsdft: {by_task: {facts: {max_steps: 3}, facts: {max_steps: 4}}}\n")
    with pytest.raises(HarnessError, match=r"twice.yaml, line 2: malformed YAML \(key 'facts' appears twice in one mapping\)"):
        load_overrides(str(twice), [])
    scalar = tmp_path / "scalar.yaml"
    scalar.write_text("3\n")
    with pytest.raises(HarnessError, match="expected a mapping of options"):
        load_overrides(str(scalar), [])


def test_unknown_preset_suggests():
    with pytest.raises(HarnessError, match="unknown preset 'tyo'.*did you mean 'toy'"):
        load_preset("tyo")


def test_toy_preset_uses_the_published_sdft_divergence():
    sdft = method_options(load_preset("toy"), {}, "sdft", "cipher", METHODS)
    assert sdft["distillation_mode"] == "full_logits" and sdft["distillation_alpha"] == 0.0


def test_a_run_plan_gives_each_stage_its_task_overrides(tmp_path):
    from harness.plan import RunRequest, resolve

    request = RunRequest(tasks=["cipher", "facts", "tooluse"], methods=["sft", "sdft", "sft"],
                         set=["by_task.facts.max_steps=7", "sdft.by_task.facts.learning_rate=1e-4", "sft.by_task.tooluse.max_steps=9"])
    cipher, facts, tooluse = resolve(request).options
    assert cipher["max_steps"] == 400 and facts["max_steps"] == 7 and tooluse["max_steps"] == 9  # 400: the toy preset's
    assert facts["learning_rate"] == 1e-4 and cipher["learning_rate"] == tooluse["learning_rate"] == 3e-4
    empty = tmp_path / "empty.yaml"  # YAML's empty sections are null: as in the presets, nothing to override
    empty.write_text("by_task:\nsdft: {by_task: {facts: null}}\n")
    assert resolve(RunRequest(tasks=["cipher", "facts"], config=str(empty))).options[1]["max_steps"] == 200


def test_options_for_a_method_the_run_leaves_out_are_named_as_unused():
    from harness.plan import RunRequest, resolve

    plan = resolve(RunRequest(tasks=["cipher"], methods=["sft"], set=["grpo.temperature=0.7", "sft.max_steps=3"]))
    assert plan.options[0]["max_steps"] == 3 and "temperature" not in plan.options[0]
    assert plan.notes == ("options for grpo (--config/--set) unused: this run trains with sft only",)
    assert resolve(RunRequest(tasks=["cipher"], methods=["sft"], set=["sft.max_steps=3"])).notes == ()


def test_a_stage_shorter_than_eval_every_is_named_as_drawing_no_curve():
    from harness.plan import RunRequest, resolve

    plan = resolve(RunRequest(tasks=["cipher", "facts"], methods=["sft"], set=["by_task.facts.max_steps=3"], eval_every=5))
    assert plan.notes == ("--eval-every 5: stage(s) 2 (sft on facts, 3) train fewer steps, so they draw no curve",)
    assert resolve(RunRequest(tasks=["cipher", "facts"], methods=["sft"], eval_every=5)).notes == ()
