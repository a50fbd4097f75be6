"""Each method's row conversion, option checking and reward, on hand-written rows."""

import pytest

from baselines import METHODS, sdft, sdpo, sft
from baselines.common import configure, option_names, split_options
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


def test_sft_rows_are_prompt_completion_pairs_on_the_demonstration():
    assert sft.rows(ROWS)[1] == {
        "prompt": ROWS[1]["prompt"],
        "completion": [{"role": "assistant", "content": 'Action: get_weather\nAction Input: {"city": "Zolu"}'}],
    }


def test_sdft_rows_carry_the_demonstration_as_privileged_context():
    assert sdft.rows(ROWS)[0] == {"prompt": ROWS[0]["prompt"], "privileged_context": "bc"}


def test_sdpo_rows_carry_the_reference_and_optional_feedback():
    plain = sdpo.rows(ROWS)
    assert plain[0] == {"prompt": ROWS[0]["prompt"], "reference": '"bc"'}
    assert sdpo.rows(ROWS, feedback="demonstration")[0]["privileged_context"] == "bc"


def test_sdpo_reward_is_the_task_scorer():
    reward = sdpo.reward_function("tool_call")
    rows = sdpo.rows(ROWS[1:] * 2)
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
    assert ours == {"lora": None, "save_steps": 0, "teacher": "initial"}


def test_a_bad_choice_or_value_is_refused(tmp_path):
    card = load_suite("toy").card("cipher")
    with pytest.raises(HarnessError, match="option teacher='best' for method 'sdft': expected one of stage_start, ema, initial"):
        configure("sdft", {"teacher": "best"}, card, tmp_path, 0)
    with pytest.raises(HarnessError, match="invalid options for method 'sdft'"):
        configure("sdft", {"distillation_mode": "sampled_token", "distillation_alpha": 0.5}, card, tmp_path, 0)


def test_sdft_config_takes_the_card_template_and_teacher_kind(tmp_path):
    card = load_suite("toy").card("cipher")
    config, ours = configure("sdft", {"teacher": "initial"}, card, tmp_path, 3)
    assert config.teacher_model_kind == "base" and config.teacher_prompt_template == card.teacher_template
    assert config.seed == 3 and ours["teacher"] == "initial"


def test_every_method_knows_its_option_names():
    for method in METHODS.values():
        assert {"learning_rate", "lora", "save_steps"} <= option_names(method)
    assert "teacher" in option_names(sdft) and "feedback" in option_names(sdpo)
