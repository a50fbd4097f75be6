"""pass@k's unbiased estimator (Chen et al. 2021) against values worked out by hand."""

from math import comb

import pytest

from harness.errors import HarnessError
from harness.passk import parse_ks, pass_at_k, sampling_kwargs


@pytest.mark.parametrize(("n", "c", "k", "expected"), [
    (10, 0, 1, 0.0),            # nothing correct
    (10, 10, 5, 1.0),           # everything correct
    (10, 3, 1, 0.3),            # pass@1 is the fraction correct
    (5, 1, 2, 0.4),             # 1 - C(4,2)/C(5,2) = 1 - 6/10
    (10, 2, 5, 7 / 9),          # 1 - C(8,5)/C(10,5) = 1 - 56/252
    (4, 2, 3, 1.0),             # n - c < k: any 3 of 4 include a correct one
    (20, 5, 10, 1 - 3003 / 184756),  # 1 - C(15,10)/C(20,10)
])
def test_pass_at_k_matches_hand_computed_values(n, c, k, expected):
    assert pass_at_k(n, c, k) == pytest.approx(expected, abs=1e-12)


def test_pass_at_k_is_the_combinatorial_formula_everywhere():
    for n in range(1, 13):
        for c in range(n + 1):
            for k in range(1, n + 1):
                assert pass_at_k(n, c, k) == pytest.approx(1 - comb(n - c, k) / comb(n, k), abs=1e-12)


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError):
        pass_at_k(5, 1, 6)
    with pytest.raises(HarnessError, match="--pass-k '1,x'"):
        parse_ks("1,x")
    with pytest.raises(HarnessError, match="--pass-k '0'"):
        parse_ks("0")
    assert parse_ks("10,1,5,5") == [1, 5, 10]


def test_greedy_cards_are_sampled_at_temperature_one():
    greedy = {"until": ["<|end|>"], "do_sample": False, "max_gen_toks": 16}
    assert sampling_kwargs(greedy) == {"until": ["<|end|>"], "do_sample": True, "temperature": 1.0, "max_gen_toks": 16, "top_k": 0}
    assert sampling_kwargs({"top_k": 20})["top_k"] == 20  # a card's own limit stands
    assert sampling_kwargs({"temperature": 0.6})["temperature"] == 0.6
    assert sampling_kwargs({"temperature": 0.6}, temperature=0.5)["temperature"] == 0.5
    assert sampling_kwargs(greedy, temperature=0.5)["temperature"] == 0.5


def test_teacher_samples_see_the_demonstration(tmp_path):
    """The shipped base cannot do the cipher bare (0.01 greedy) but can with its demonstration (1.00): sampled at 0.5,
    the teacher variant must solve most items and the plain card almost none."""
    from baselines.common import load_model
    from harness.evaluation import EvalSettings
    from harness.passk import pass_at_k_scores
    from harness.registry import load_suite

    suite = load_suite("toy")
    model, tokenizer = load_model(suite.model_path())
    model.eval()
    settings, cards = EvalSettings(limit=8), [suite.card("cipher")]
    teacher = pass_at_k_scores(model, tokenizer, cards, [1], settings, None, tmp_path / "t", teacher=True, temperature=0.5)
    bare = pass_at_k_scores(model, tokenizer, cards, [1], settings, None, tmp_path / "b", temperature=0.5)
    assert teacher["cipher"]["temperature"] == 0.5
    assert teacher["cipher"]["pass@1"] >= 0.75 and bare["cipher"]["pass@1"] <= 0.25


def test_a_generative_card_without_generation_settings_is_still_sampled(toy_copy, tmp_path):
    """pass@k skips log-likelihood tasks only: a generate_until card that leaves generation to lm-eval's defaults
    is sampled too, not silently left out."""
    from baselines.common import load_model
    from harness.evaluation import EvalSettings
    from harness.passk import pass_at_k_scores
    from harness.registry import load_card, load_suite

    for name in ("_toy.yaml", "cipher.yaml"):
        path = toy_copy / name
        path.write_text("\n".join(line for line in path.read_text().splitlines()
                                  if not line.startswith(("generation_kwargs", "  until", "  do_sample", "  max_gen_toks"))))
    card = load_card(toy_copy / "cipher.yaml")
    assert card.protocol.gen_kwargs is None
    model, tokenizer = load_model(load_suite("toy").model_path())
    scores = pass_at_k_scores(model, tokenizer, [card], [1], EvalSettings(limit=2), None, tmp_path)
    assert set(scores["cipher"]) == {"pass@1", "temperature", "top_k"} and scores["cipher"]["top_k"] == 0
