"""The toy world: determinism, the committed data and base match the code, the tokenizer, a miniature build."""

import itertools
import json

from harness.scoring import SCORERS
from harness.toyworld.build import ModelSpec, Recipe, TrainSpec, build, check_shipped
from harness.toyworld.tokenizer import build_tokenizer, chat_prompt
from harness.toyworld.world import NEW_TASKS, PRIOR_SKILLS, World, WorldSpec, teacher_prompt, write_data

from .conftest import TOY


def test_two_worlds_with_one_seed_write_byte_identical_files(tmp_path):
    a, b = write_data(World(), tmp_path / "a"), write_data(World(), tmp_path / "b")
    assert [p.name for p in a] == [p.name for p in b]
    assert all(x.read_bytes() == y.read_bytes() for x, y in zip(a, b))


def test_committed_data_is_what_the_generator_writes(tmp_path):
    """tasks/toy/data must be regenerated (`harness base data`) whenever the generator changes."""
    for path in write_data(World(Recipe().world), tmp_path):
        assert (TOY / "data" / path.name).read_bytes() == path.read_bytes(), path.name


def test_another_seed_gives_another_world():
    assert World(WorldSpec(seed=1)).capitals != World().capitals


def test_the_shipped_base_was_built_from_the_recipe_in_the_code():
    assert check_shipped(TOY / "base") is None


def test_a_changed_recipe_is_caught(tmp_path):
    (tmp_path / "recipe.json").write_text(json.dumps({"digest": Recipe(train=TrainSpec(steps=1)).digest()}))
    assert "built from another recipe" in check_shipped(tmp_path)


def test_test_prompts_never_reach_pretraining_or_train_splits():
    world = World()
    held_out = world.held_out_prompts()
    stream = itertools.islice(world.pretraining_stream(0), 20000)
    assert not held_out & {prompt for prompt, _ in stream}
    for task in ("cipher", "tooluse"):
        splits = world.splits(task)
        assert not {r["prompt"] for r in splits["train"]} & {r["prompt"] for r in splits["test"]}


def test_new_tasks_never_appear_in_pretraining():
    stream = list(itertools.islice(World().pretraining_stream(0), 20000))
    text = "".join(p + a for p, a in stream)
    assert "Shift each digit" not in text and "Swap the first" not in text and "Tools:" not in text and "Action Input" not in text
    assert not any(person in text for person in World().homes)


def test_every_task_answer_scores_right_and_a_wrong_one_scores_zero():
    world = World()
    for task in (*PRIOR_SKILLS, *NEW_TASKS):
        scorer = SCORERS["tool_call" if task == "tooluse" else "exact_match"]
        rows = world.splits(task)["test"]
        assert all(scorer(r["answer"], r["answer"]) == 1.0 for r in rows), task
        assert all(scorer(a["answer"], b["answer"]) == 0.0 for a, b in zip(rows, rows[1:]) if a["answer"] != b["answer"]), task


def test_hand_written_toy_answers():
    assert SCORERS["exact_match"](" uif\n", "uif") == 1.0
    assert SCORERS["exact_match"]("uig", "uif") == 0.0
    gold = 'Action: set_alarm\nAction Input: {"time": "7 pm"}'
    assert SCORERS["tool_call"]('Action: set_alarm\nAction Input: {"time": "7 pm"}', gold) == 1.0
    assert SCORERS["tool_call"]('Action: set_alarm\nAction Input: {"time": "7 am"}', gold) == 0.0
    assert SCORERS["tool_call"]('Action: get_weather\nAction Input: {"time": "7 pm"}', gold) == 0.0


def test_the_tokenizer_round_trips_every_task_text():
    tok = build_tokenizer(["abc"])
    world = World()
    for task in (*PRIOR_SKILLS, *NEW_TASKS):
        for row in world.splits(task)["test"]:
            for text in (chat_prompt(row["prompt"]), teacher_prompt(row["prompt"], row["demonstration"]), row["answer"]):
                ids = tok(text, add_special_tokens=False).input_ids
                assert tok.unk_token_id not in ids
                assert tok.decode(ids) == text
    chat = [{"role": "user", "content": "Hi"}]
    assert tok.apply_chat_template(chat, tokenize=False, add_generation_prompt=True) == chat_prompt("Hi")


def test_a_miniature_build_trains_saves_and_loads(tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    recipe = Recipe(
        world=WorldSpec(test_items=4),
        model=ModelSpec(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64),
        train=TrainSpec(steps=6, batch_size=4, warmup_steps=2, data_workers=1),
    )
    report = build(recipe, tmp_path / "mini", device="cpu", progress=False)
    assert report["loss"][0][1] > report["loss"][-1][1] > 0
    assert set(report["accuracy"]) >= {*PRIOR_SKILLS, *NEW_TASKS}
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "mini")
    tok = AutoTokenizer.from_pretrained(tmp_path / "mini")
    assert type(model).__name__ == "LlamaForCausalLM" and tok.eos_token == "<|end|>"
    assert json.loads((tmp_path / "mini" / "recipe.json").read_text())["digest"] == recipe.digest()
