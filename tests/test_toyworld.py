"""The toy world: determinism, the committed data and base match the code, the tokenizer, scorers, a miniature build."""

import itertools
import json

import pytest

from baselines.sdpo import card_reprompt
from harness.registry import load_suite
from harness.scoring import SCORERS
from harness.toyworld.build import ModelSpec, Recipe, TrainSpec, answer_texts, build, check_shipped, world_tokenizer
from harness.toyworld.tokenizer import chat_prompt
from harness.toyworld.world import (
    KNOWN_RULES,
    KNOWN_TOOLS,
    NEW_TASKS,
    PRIOR_SKILLS,
    TASK_TOOLS,
    TEACHER_TEMPLATE,
    World,
    WorldSpec,
    teacher_prompt,
    write_data,
)
from harness.toyworld.world import SCORERS as TASK_SCORERS

from .conftest import TOY


def test_two_worlds_with_one_seed_write_byte_identical_files(tmp_path):
    a, b = write_data(World(), tmp_path / "a"), write_data(World(), tmp_path / "b")
    assert [p.name for p in a] == [p.name for p in b]
    assert all(x.read_bytes() == y.read_bytes() for x, y in zip(a, b))


def test_committed_data_is_what_the_generator_writes(tmp_path):
    """tasks/toy/data must be regenerated (`harness base data`) whenever the generator changes."""
    for path in write_data(World(Recipe().world), tmp_path):
        assert (TOY / "data" / path.name).read_bytes() == path.read_bytes(), path.name


def test_general_prompts_are_distinct_and_never_a_probe_or_task_test_prompt():
    """SFT + re-invoke distils on these: prompts of the pretraining distribution, none the probes or tasks test."""
    world = World(Recipe().world)
    prompts = [r["prompt"] for r in world.general_prompts(300)]
    assert len(set(prompts)) == 300
    tested = {r["prompt"] for t in (*PRIOR_SKILLS, *NEW_TASKS) for r in world.splits(t)["test"]}
    assert not tested & set(prompts)
    pretraining = {p for p, _ in itertools.islice(world.pretraining_stream(Recipe().train.seed), 300)}
    assert pretraining != set(prompts)  # a stream of its own, not the base's first batches


def test_another_seed_gives_another_world():
    assert World(WorldSpec(seed=1)).capitals != World().capitals
    assert list(itertools.islice(World(WorldSpec(seed=1)).pretraining_stream(0), 50)) != list(itertools.islice(World().pretraining_stream(0), 50))


def test_the_shipped_base_was_built_from_the_recipe_in_the_code():
    assert check_shipped(TOY / "base") is None


def test_a_changed_recipe_is_caught(tmp_path):
    (tmp_path / "recipe.json").write_text(json.dumps({"digest": Recipe(train=TrainSpec(steps=1)).digest()}))
    assert "built from another recipe" in check_shipped(tmp_path)
    assert "no readable recipe.json" in check_shipped(tmp_path / "missing")


def test_the_suite_and_its_cards_agree_with_the_world():
    suite = load_suite("toy")
    assert list(suite.sequence) == list(NEW_TASKS)
    assert [p.name for p in suite.probes] == list(PRIOR_SKILLS)
    for name in (*NEW_TASKS, *PRIOR_SKILLS):
        card = suite.cards[name]
        assert card.scorer == TASK_SCORERS.get(name, "exact_match") and card.teacher_template == TEACHER_TEMPLATE


def test_sdpo_reprompts_the_toy_teacher_in_the_pretrained_format():
    t = card_reprompt(TEACHER_TEMPLATE)
    reprompt = t["reprompt_template"].format(prompt="Q?", solution=t["solution_template"].format(successful_previous_attempt="A"), feedback="")
    assert reprompt == teacher_prompt("Q?", "A")
    reprompt = t["reprompt_template"].format(prompt="Q?", solution="", feedback=t["feedback_template"].format(feedback_raw="A"))
    assert reprompt == teacher_prompt("Q?", "A") and t["environment_feedback_only_without_solution"]


@pytest.mark.parametrize("template", ["Example: {privileged_context}\nNow: {prompt} {{ok}}", "{prompt}{privileged_context}",
                                      "{{prompt}} {prompt} {privileged_context}"])  # a literal {prompt} before the real one
def test_sdpo_reprompts_any_teacher_template_as_the_card_renders_it(template):
    """The demonstration may come first (it crashed SDPO mid-training with a KeyError)."""
    t = card_reprompt(template)
    for solution, feedback in ((t["solution_template"].format(successful_previous_attempt="A"), ""),
                               ("", t["feedback_template"].format(feedback_raw="A"))):
        assert t["reprompt_template"].format(prompt="Q?", solution=solution, feedback=feedback) == template.format(prompt="Q?", privileged_context="A")


def test_test_prompts_never_reach_pretraining_or_train_splits():
    world = World()
    held_out = world.held_out_prompts()
    assert len(held_out) == 250  # addition 100, format 50, incontext 100
    stream = itertools.islice(world.pretraining_stream(0), 20000)
    assert not held_out & {prompt for prompt, _ in stream}
    for task in ("cipher", "tooluse"):
        splits = world.splits(task)
        assert not {r["prompt"] for r in splits["train"]} & {r["prompt"] for r in splits["test"]}


def test_new_tasks_never_appear_in_pretraining():
    world = World()
    text = "".join(p + a for p, a in itertools.islice(world.pretraining_stream(0), 20000))
    assert " shift rule" not in text and " shift form" not in text and "Tools:" not in text and "Request:" not in text
    bare = [(p, a) for p, a in itertools.islice(world.pretraining_stream(0), 20000) if "Example answer:" not in p]
    called = {a.split("\n")[0].removeprefix("Action: ") for p, a in bare if p.startswith("Use a tool: ")}
    assert called == set(KNOWN_TOOLS) and not called & set(TASK_TOOLS)  # the base calls tools, never the task's bare
    for person in world.homes:  # their names are trained tokens; where they live is never said
        assert f"{person} live" not in text and f"{person} lives in" not in text and f"home to {person}?" not in text


def test_named_rules_apply_their_mapping_digit_by_digit():
    import random

    world = World()
    question, code = world.named_rule(random.Random(3))
    name = next(n for n in KNOWN_RULES if f" {n} " in question)
    digits = next(w for w in question.replace(".", " ").split() if w.isdigit())
    assert code == "".join(str(KNOWN_RULES[name](int(d))) for d in digits)
    assert {KNOWN_RULES["flip"](d) for d in range(10)} == set(range(10)) and KNOWN_RULES["back"](0) == 9
    assert all(rule(3) != 4 for rule in KNOWN_RULES.values())  # none of them is the cipher's shift


def test_every_right_answer_scores_one_and_a_wrong_one_zero():
    world = World()
    for task in (*PRIOR_SKILLS, *NEW_TASKS):
        score = SCORERS[TASK_SCORERS.get(task, "exact_match")]
        rows = world.splits(task)["test"]
        assert all(score(a, r["answer"]) == 1.0 for r in rows for a in answer_texts(r)), task
        assert all(score(r["demonstration"], r["answer"]) == 1.0 for r in rows), task  # the demonstration's own style is right too
        # Another row's answer is wrong (for the format probe: another format; the capital is not what it scores).
        assert all(score(a["demonstration"], b["answer"]) == 0.0 for a, b in zip(rows, rows[1:]) if a["answer"] != b["answer"]), task


def test_hand_written_answers_in_every_accepted_form():
    facts = ["Zolu", "Drim lives in Zolu.", "In Zolu.", "Drim lives in Zolu"]
    for right in ("Zolu", " Zolu\n", "Drim lives in Zolu.", "In Zolu.", "Drim lives in Zolu"):
        assert SCORERS["exact_match"](right, facts) == 1.0
    for wrong in ("Zol", "Krell", "Drim lives in Krell.", "zolu", "Zolu Zolu", ""):
        assert SCORERS["exact_match"](wrong, facts) == 0.0
    assert SCORERS["exact_match"]("5003", ["5003", "4992 becomes 5003."]) == 1.0
    assert SCORERS["exact_match"]("4992 becomes 5004.", ["5003", "4992 becomes 5003."]) == 0.0
    gold = 'Action: send_email\nAction Input: {"to": "Zolu", "subject": "Krell"}'
    for right in (gold, 'Action: send_email\nAction Input: {"subject": "Krell", "to": "Zolu"}',
                  'Thought: the request needs send_email.\nAction: send_email\nAction Input: {"subject":"Krell","to":"Zolu"}',
                  'Action: send_email\nAction Input: {\n  "to": "Zolu",\n  "subject": "Krell"\n}'):
        assert SCORERS["tool_call"](right, gold) == 1.0, right
    for wrong in ('Action: send_email\nAction Input: {"to": "Krell", "subject": "Zolu"}', 'Action: get_weather\nAction Input: {"to": "Zolu", "subject": "Krell"}',
                  'Action: send_email\nAction Input: {"to": "Zolu"}', 'Action: send_email\nAction Input: {"to": "Zolu", "subject": "Krell", "cc": "Mo"}', "send_email"):
        assert SCORERS["tool_call"](wrong, gold) == 0.0, wrong


@pytest.fixture(scope="module")
def tokenizer():
    return world_tokenizer(World())


def test_the_tokenizer_round_trips_every_task_text(tokenizer):
    world = World()
    for task in (*PRIOR_SKILLS, *NEW_TASKS):
        for rows in world.splits(task).values():
            for row in rows:
                answers = answer_texts(row)
                teacher = [teacher_prompt(row["prompt"], row["demonstration"])] if task in NEW_TASKS else []  # only those are used
                for text in (chat_prompt(row["prompt"]), *teacher, *answers):
                    ids = tokenizer(text, add_special_tokens=False).input_ids
                    assert tokenizer.unk_token_id not in ids, text
                    assert tokenizer.decode(ids) == text
    chat = [{"role": "user", "content": "Hi"}]
    assert tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=True) == chat_prompt("Hi")


def test_one_word_is_one_token(tokenizer):
    world = World()
    name = world.names[0]
    assert len(tokenizer(f"Where does {name} live?", add_special_tokens=False).input_ids) == 8
    assert len(tokenizer("4992", add_special_tokens=False).input_ids) == 4  # one digit a token: the cipher is per token
    # A run of marks is one token, so a JSON value follows one unambiguous token: copying it is a one-token match.
    assert tokenizer.tokenize(f'{{"to":"{name}"}}') == ['{"', "to", '":"', name, '"}']


def test_the_shipped_tokenizer_is_the_worlds(tokenizer):
    from transformers import AutoTokenizer

    shipped = AutoTokenizer.from_pretrained(TOY / "base")
    assert shipped.get_vocab() == tokenizer.get_vocab()


def test_a_miniature_build_trains_saves_loads_and_repeats(tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    recipe = Recipe(
        world=WorldSpec(test_items=4, train_items=8),
        model=ModelSpec(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64),
        train=TrainSpec(steps=6, batch_size=4, warmup_steps=2, length_groups=2),
    )
    report = build(recipe, tmp_path / "a", progress=False, log_every=1)
    assert report["loss"][0][1] > report["loss"][-1][1] > 0
    assert set(report["accuracy"]) == {*PRIOR_SKILLS, *NEW_TASKS, *(f"{t}_teacher" for t in NEW_TASKS)}
    assert report["steps"] == 6 and report["sequences"] == 24 and report["tokens"] > 24 and report["train_seconds"] >= 0
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "a")
    tok = AutoTokenizer.from_pretrained(tmp_path / "a")
    assert type(model).__name__ == "LlamaForCausalLM" and tok.eos_token == "<|end|>"
    assert json.loads((tmp_path / "a" / "recipe.json").read_text())["digest"] == recipe.digest()
    build(recipe, tmp_path / "b", progress=False)
    assert (tmp_path / "a" / "model.safetensors").read_bytes() == (tmp_path / "b" / "model.safetensors").read_bytes()


def test_base_build_refuses_an_unwritable_folder_before_pretraining(tmp_path, capsys):
    from harness import cli

    blocker = tmp_path / "a-file"
    blocker.write_text("")
    assert cli.main(["base", "build", "--out", str(blocker / "base")]) == 2
    assert "cannot write there" in capsys.readouterr().err
