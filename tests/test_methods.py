"""Each method's row conversion, option checking and reward, on hand-written rows."""

import pytest

from baselines import METHODS
from baselines.common import configure, option_names, scorer_reward, split_options
from harness.errors import HarnessError
from harness.registry import load_suite

ROWS = [
    {"prompt": [{"role": "user", "content": "Shift: ab"}], "demonstration": "bc", "answer": "bc"},
    {
        "prompt": [{"role": "system", "content": "Use tools."}, {"role": "user", "content": "Weather in Zolu?"}],
        "demonstration": 'Action: get_weather\nAction Input: {"city": "Zolu"}',
        "answer": [{"Action": "get_weather", "Action_Input": '{"city": "Zolu"}'}],
    },
]


sft, dft, sdft, sdpo, grpo = (METHODS[m] for m in ("sft", "dft", "sdft", "sdpo", "grpo"))


def test_sft_rows_are_prompt_completion_pairs_on_the_demonstration():
    assert sft.rows(ROWS, {})[1] == dft.rows(ROWS, {})[1] == {
        "prompt": ROWS[1]["prompt"],
        "completion": [{"role": "assistant", "content": 'Action: get_weather\nAction Input: {"city": "Zolu"}'}],
    }


def test_sdft_rows_carry_the_demonstration_as_privileged_context():
    assert sdft.rows(ROWS, {})[0] == {"prompt": ROWS[0]["prompt"], "privileged_context": "bc"}


def test_sdpo_rows_carry_the_reference_and_optional_feedback():
    plain = sdpo.rows(ROWS, {"feedback": "none"})
    assert plain[0] == {"prompt": ROWS[0]["prompt"], "reference": '"bc"'} == grpo.rows(ROWS, {})[0]
    assert sdpo.rows(ROWS, {"feedback": "demonstration"})[0]["privileged_context"] == "bc"


def test_sdpo_reward_is_the_task_scorer():
    reward = scorer_reward("tool_call")
    rows = sdpo.rows(ROWS[1:] * 2, {})
    completions = [
        [{"role": "assistant", "content": 'Thought: easy\nAction: get_weather\nAction Input: {"city": "Zolu"}'}],
        [{"role": "assistant", "content": 'Action: get_weather\nAction Input: {"city": "Paris"}'}],
    ]
    assert reward(prompts=None, completions=completions, reference=[r["reference"] for r in rows]) == [1.0, 0.0]


def test_unknown_option_is_named_with_a_suggestion():
    with pytest.raises(HarnessError, match=r"unknown option 'learnig_rate' for method 'sft' \(did you mean 'learning_rate'\?\)"):
        split_options({"learnig_rate": 1e-5}, sft, "sft")


def test_harness_options_are_split_from_trl_fields():
    trl, ours = split_options({"teacher": "initial", "learning_rate": 1e-5}, sdft, "sdft")
    assert trl == {"learning_rate": 1e-5}
    assert ours == {"lora": None, "save_steps": 0, "merge_alpha": 1.0, "replay": 0.0, "teacher": "initial"}


def test_a_bad_choice_or_value_is_refused(tmp_path):
    card = load_suite("toy").card("cipher")
    with pytest.raises(HarnessError, match="option teacher='best' for method 'sdft': expected one of stage_start, ema, initial"):
        configure(METHODS["sdft"], {"teacher": "best"}, card, tmp_path, 0)
    with pytest.raises(HarnessError, match="invalid options for method 'sdft'"):
        configure(METHODS["sdft"], {"distillation_mode": "sampled_token", "distillation_alpha": 0.5}, card, tmp_path, 0)


def test_sdft_config_takes_the_card_template_and_teacher_kind(tmp_path):
    card = load_suite("toy").card("cipher")
    config, ours = configure(METHODS["sdft"], {"teacher": "initial"}, card, tmp_path, 3)
    assert config.teacher_model_kind == "base" and config.teacher_prompt_template == card.teacher_template
    assert config.seed == 3 and ours["teacher"] == "initial"


def test_sdpo_teacher_starts_from_the_stage_or_the_run_start(tmp_path):
    from baselines.contract import Stage

    model = type("M", (), {"config": type("C", (), {"_name_or_path": ""})()})()
    stage = Stage(2, "sdpo", None, [], tmp_path / "stage1", tmp_path / "base", tmp_path / "work")
    METHODS["sdpo"].prepare_model(model, stage, {"teacher": "initial"})
    assert model.config._name_or_path == str(tmp_path / "base")
    METHODS["sdpo"].prepare_model(model, stage, {"teacher": "stage_start"})
    assert model.config._name_or_path == str(tmp_path / "stage1")


def test_every_method_knows_its_option_names():
    for method in METHODS.values():
        assert {"learning_rate", "lora", "save_steps"} <= option_names(method)
    assert "teacher" in option_names(sdft) and "feedback" in option_names(sdpo)
    assert {m for m in METHODS if "replay" in option_names(METHODS[m])} == {"sft", "dft", "sft_reinvoke", "sdft"}
    assert {"merge_alpha"} <= set.intersection(*(option_names(m) for m in METHODS.values()))


def test_dft_is_sft_with_the_dft_loss(tmp_path):
    card = load_suite("toy").card("cipher")
    assert configure(METHODS["dft"], {}, card, tmp_path, 0)[0].loss_type == "dft"
    assert configure(METHODS["sft"], {}, card, tmp_path, 0)[0].loss_type == "nll"


@pytest.mark.parametrize(("method", "options", "message"), [
    ("sft", {"replay": "lots"}, "option replay='lots' for method 'sft': expected a number"),
    ("sft", {"replay": 1.0}, r"option replay=1.0 for method 'sft': expected a number in \[0.0, 1.0\)"),
    ("grpo", {"replay": 0.2}, "unknown option 'replay' for method 'grpo'"),
    ("sdpo", {"merge_alpha": 1.5}, r"option merge_alpha=1.5 for method 'sdpo': expected a number in \[0.0, 1.0\]"),
    ("sft_reinvoke", {"reinvoke_prompts": 3}, "option reinvoke_prompts=3 for method 'sft_reinvoke': expected a str"),
    ("sft_reinvoke", {"reinvoke_steps": 2.5}, "option reinvoke_steps=2.5 for method 'sft_reinvoke': expected an integer"),
    ("sdft", {"save_steps": True}, "option save_steps=True for method 'sdft': expected an integer"),
])
def test_harness_options_are_checked_before_training(method, options, message):
    with pytest.raises(HarnessError, match=message):
        split_options(options, METHODS[method])


@pytest.mark.parametrize("method", sorted(METHODS))
def test_toy_preset_trains_without_gradient_checkpointing(method, tmp_path):
    # TRL's default is on; on a 2M-parameter model it only costs time (the weights come out bitwise the same)
    from harness.config import load_preset, method_options

    options = method_options(load_preset("toy"), {}, method, "cipher", set(METHODS))
    config, _ = configure(METHODS[method], options, load_suite("toy").card("cipher"), tmp_path, 0)
    assert config.activation_checkpointing is False and config.gradient_checkpointing is False
