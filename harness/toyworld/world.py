"""The toy world: prior skills, new tasks, and a pretraining mix that teaches demonstration use.

Everything is a pure function of a seed, so two builds with one seed write
byte-identical files. The world is word-level: every name, word, digit and mark
is one token (see tokenizer.py), so a tiny model learns it on a laptop CPU.

Prior skills are what the base model is pretrained on and what the forgetting
probes measure: a skill (addition), knowledge (capitals), following an answer
format, and using a demonstration. New tasks are never shown in pretraining:
a new skill (a digit cipher), new knowledge (where people live) and tool use
(arguments copied from the request). Each new task's demonstration is written
in a style of its own (a sentence, a thought line, compact JSON), as GPT-written
reasoning or ToolAlpaca's traces are for Qwen, and its scorer accepts every right
answer. Pretraining shows demonstrations in many styles with the answer in the
model's own style, so the base can act as its own SDFT teacher on new tasks.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

# The demonstration format of the toy suite (its suite.yaml's teacher_template; SDPO's reprompt follows it).
TEACHER_TEMPLATE = "{prompt}\nExample answer: {privileged_context}\nNow answer in your own words."
GENERAL_PROMPTS_STREAM = "general"  # pretraining draws streams by integer seed: this one is never trained on
GENERAL_PROMPTS = 1000  # SFT + re-invoke's general-purpose prompts in tasks/toy/data/general_prompts.jsonl

PRIOR_SKILLS = ("addition", "capitals", "format", "incontext")
NEW_TASKS = ("cipher", "facts", "tooluse")
# Every other task: exact_match (against any listed answer); the cards agree.
SCORERS = {"tooluse": "tool_call", "format": "answer_format"}

ONSETS = ["b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "br", "dr", "kl", "st", "tr", "vr"]
VOWELS = ["a", "e", "i", "o", "u", "ai", "ou"]
CODAS = ["", "", "n", "l", "r", "x", "m", "sk"]
COLORS = ["red", "blue", "green", "yellow", "black", "white", "purple", "orange", "grey", "brown", "pink", "gold"]
OBJECTS = ["kettle", "lamp", "boat", "coat", "chair", "kite", "drum", "cup", "hat", "bell", "door", "sock", "vase",
           "bike", "rope", "tent", "flag", "ball", "box", "book"]
COLOR_QUESTIONS = ["What color is the {o}?", "Which colour does the {o} have?"]
THOUGHT_WORDS = ["this", "needs", "the", "one", "it", "so", "we", "use", "check", "first", "then", "answer", "look", "at", "request"]

# Tools: name -> (parameters, request phrasings). The task uses the first six (in pretraining only inside
# demonstrations, so every name and key is a trained token); pretraining calls the other six from bare requests.
TOOLS = {
    "get_weather": (["city"], ["What is the weather in {city}?", "Tell me the forecast for {city}.", "Is it raining in {city}?"]),
    "send_email": (["to", "subject"], ["Email {to} about {subject}.", "Send a mail to {to} about {subject}.", "Write to {to} on {subject}."]),
    "book_table": (["place", "people"], ["Book a table at {place} for {people}.", "Reserve {place} for {people} people.", "Get us a table for {people} at {place}."]),
    "set_alarm": (["hour"], ["Wake me up at {hour}.", "Set an alarm for {hour}.", "Ring at {hour} please."]),
    "play_song": (["title", "artist"], ["Play {title} by {artist}.", "Find the song {title} from {artist}.", "Put on {title} by {artist}."]),
    "call_person": (["name"], ["Call {name}.", "Phone {name} for me.", "Give {name} a call."]),
    "convert_money": (["amount", "source", "target"], ["Convert {amount} {source} to {target}.", "Change {amount} {source} into {target}."]),
    "add_note": (["text"], ["Note down {text}.", "Add a note saying {text}."]),
    "find_route": (["start", "end"], ["Find a way from {start} to {end}.", "How do I get from {start} to {end}?"]),
    "buy_item": (["item", "count"], ["Buy {count} of {item}.", "Order {count} of {item} for me."]),
    "check_stock": (["item"], ["Is {item} in stock?", "Check the stock of {item}."]),
    "open_file": (["path", "mode"], ["Open {path} in {mode} mode.", "Load the file {path} as {mode}."]),
}
TASK_TOOLS = list(TOOLS)[:6]
KNOWN_TOOLS = list(TOOLS)[6:]  # called bare in pretraining: the base knows tool calls, not the task's tools
CURRENCIES = ["EUR", "USD", "GBP", "JPY", "CHF"]
FORMATS = {  # answer-format instructions (the `format` probe) -> how the answer is wrapped
    "Answer in a sentence.": "The answer is {a}.",
    "Answer as JSON.": '{{"answer": "{a}"}}',
    "Answer in tags.": "<answer>{a}</answer>",
}
FACT_QUESTIONS = ["Where does {person} live?", "In which town does {person} live?", "Which town is home to {person}?"]
CIPHER_RULE = "shift"  # the cipher's rule name: never a rule word of pretraining
# Digit rules pretraining asks by name without a demonstration: applying a known rule digit by digit is a
# prior skill, so the cipher (shift: each digit up by one) is one more rule, as a new task is for a real model.
KNOWN_RULES = {"flip": lambda d: 9 - d, "hop": lambda d: (d + 2) % 10, "back": lambda d: (d - 1) % 10, "swap": lambda d: d ^ 1}
RULE_QUESTIONS = ["Apply the {rule} rule to {digits}.", "Map each digit of {digits} by the {rule} rule.",
                  "Turn {digits} into its {rule} form.", "Change every digit of {digits} with the {rule} rule."]
JUNK_QUESTIONS = ["What is the {attr} of {name}?", "Give the {attr} for {name}.", "Which {attr} belongs to {name}?",
                  "Tell me the {attr} that {name} uses."]


@dataclass(frozen=True)
class WorldSpec:
    """The generator's settings: part of the base model's recipe."""

    seed: int = 0
    countries: int = 30
    people: int = 30
    names: int = 300  # the pool junk questions and tool arguments draw from
    words: int = 60  # lowercase attribute words and JSON keys
    train_items: int = 1000
    test_items: int = 100


class World:
    """The entities of one seeded world and the items drawn from them."""

    def __init__(self, spec: WorldSpec = WorldSpec()):
        self.spec = spec
        rng = self._rng("entities")
        used: set[str] = set()
        self.capitals = {_name(rng, used): _name(rng, used) for _ in range(spec.countries)}
        self.homes = {_name(rng, used): _name(rng, used) for _ in range(spec.people)}
        self.names = [_name(rng, used) for _ in range(spec.names)]
        self.words = [_name(rng, used).lower() for _ in range(spec.words)]
        self.colors = {obj: rng.choice(COLORS) for obj in OBJECTS}
        # Junk may name anyone, the people of the facts task too (so their names are trained tokens),
        # but never says where they live.
        self.anyone = self.names + sorted(self.homes) + sorted(self.homes.values())

    def _rng(self, stream: str) -> random.Random:
        return random.Random(f"{self.spec.seed}:{stream}")

    def lexicon(self) -> list[str]:
        """Every word the world can write, for the closed vocabulary."""
        keys = [k for params, _ in TOOLS.values() for k in params]
        return sorted({*self.capitals, *self.capitals.values(), *self.anyone, *self.words, *COLORS, *OBJECTS,
                       *THOUGHT_WORDS, *TOOLS, *keys, *CURRENCIES, "am", "pm"})

    # ----------------------------------------------------------- prior skills
    def addition(self, rng: random.Random) -> tuple[str, str]:
        a, b = rng.randint(10, 99), rng.randint(10, 99)
        return f"What is {a} + {b}?", str(a + b)

    def capital(self, rng: random.Random) -> tuple[str, str]:
        country = rng.choice(sorted(self.capitals))
        return f"What is the capital of {country}?", self.capitals[country]

    def color(self, rng: random.Random) -> tuple[str, str]:
        obj = rng.choice(OBJECTS)
        return rng.choice(COLOR_QUESTIONS).format(o=obj), self.colors[obj]

    def formatted(self, rng: random.Random) -> tuple[str, str]:
        """A question the model knows the answer to, with an answer-format instruction."""
        question, answer = rng.choice([self.capital, self.color, self.addition])(rng)
        instruction = rng.choice(sorted(FORMATS))
        return f"{question} {instruction}", FORMATS[instruction].format(a=answer)

    def incontext(self, rng: random.Random) -> tuple[str, str]:
        """A question only its demonstration can answer, the demonstration in any of its styles."""
        question, answer, demo = self.junk(rng)
        return teacher_prompt(question, demo), answer

    # -------------------------------------------------------------- new tasks
    def cipher(self, rng: random.Random) -> dict:
        """A new skill: the `shift` rule, each digit up by one (9 wraps to 0).

        Asked as pretraining asks digit rules (whose names are arbitrary there), so the base's teacher
        meets a familiar question; only the rule is new. An unfamiliar phrasing ("Shift each digit of
        4257 up by one.") halved the teacher (0.51: it copied the code, then wrote one digit too many)."""
        digits = distinct_digits(rng, 3, 4)
        code = "".join(str((int(d) + 1) % 10) for d in digits)
        demo = f"{digits} becomes {code}."
        return _row(rng.choice(RULE_QUESTIONS).format(rule=CIPHER_RULE, digits=digits), demo, [code, demo])

    def fact(self, rng: random.Random, person: str | None = None) -> dict:
        """New knowledge: where a person lives, asked and answered in several phrasings."""
        person = person or rng.choice(sorted(self.homes))
        town = self.homes[person]
        demo = f"{person} lives in {town}."
        return _row(rng.choice(FACT_QUESTIONS).format(person=person), demo, [town, demo, f"In {town}.", f"{person} lives in {town}"])

    def tool_call(self, rng: random.Random) -> dict:
        """Pick the tool a request needs from a listing and copy the arguments out of the request."""
        listed = rng.sample(TASK_TOOLS, 3)
        tool = rng.choice(listed)
        request, args = self.request(tool, rng)
        listing = "; ".join(f"{t}({', '.join(TOOLS[t][0])})" for t in listed)
        prompt = f"Tools: {listing}\nRequest: {request}"
        demo = f"Thought: the request needs {tool}.\n{action(tool, args)}"
        return _row(prompt, demo, action(tool, args))

    def request(self, tool: str, rng: random.Random) -> tuple[str, dict]:
        """A request for `tool` in one of its phrasings, and the arguments it names."""
        params, phrasings = TOOLS[tool]
        args = {p: self.argument(p, rng) for p in params}
        return rng.choice(phrasings).format(**args), args

    def argument(self, param: str, rng: random.Random) -> str:
        if param in ("people", "amount", "count"):
            return str(rng.choice([n for n in range(2, 99) if n % 11]))  # no repeated digit (see distinct_digits)
        if param in ("source", "target"):
            return rng.choice(CURRENCIES)
        if param == "hour":
            return f"{rng.randint(1, 12)}{rng.choice(['am', 'pm'])}"
        return rng.choice(self.anyone)

    # ------------------------------------------------------------------ items
    def splits(self, task: str) -> dict[str, list[dict]]:
        """Train and test rows of a task; test prompts never occur in train or pretraining.

        Closed-world knowledge is the exception: a fact can only be tested by asking it, so
        capitals are tested as pretrained and the facts test asks every fact once while
        train holds every fact in every phrasing. The format probe asks known questions in
        formats pretraining never paired them with.
        """
        rng = self._rng(f"split:{task}")
        if task == "capitals":
            return {"test": [_row(f"What is the capital of {c}?", t, t) for c, t in sorted(self.capitals.items())]}
        if task == "format":
            known = [(f"What is the capital of {c}?", t) for c, t in sorted(self.capitals.items())]
            known += [(rng.choice(COLOR_QUESTIONS).format(o=o), self.colors[o]) for o in OBJECTS]
            rows = []
            for question, answer in known:
                instruction = rng.choice(sorted(FORMATS))
                # Scored on the format alone, as IFEval scores instructions: the capital is the capitals probe's.
                pattern = {"format": FORMATS[instruction].format(a="{answer}")}
                rows.append(_row(f"{question} {instruction}", FORMATS[instruction].format(a=answer), pattern))
            return {"test": rows}
        if task == "facts":
            train = [{**self.fact(rng, p), "prompt": q.format(person=p)} for p in sorted(self.homes) for q in FACT_QUESTIONS]
            rng.shuffle(train)
            return {"train": train, "test": [self.fact(rng, p) for p in sorted(self.homes)]}
        make = {"addition": lambda r: _row(*self.addition(r), None), "incontext": lambda r: _row(*self.incontext(r), None),
                "cipher": self.cipher, "tooluse": self.tool_call}[task]
        test = unique_rows(make, rng, self.spec.test_items, exclude=set())
        if task not in NEW_TASKS:
            return {"test": test}
        return {"train": unique_rows(make, rng, self.spec.train_items, exclude={r["prompt"] for r in test}), "test": test}

    def held_out_prompts(self) -> set[str]:
        """Prior-skill test prompts, kept out of pretraining so the probes test skills, not recall."""
        return {r["prompt"] for t in ("addition", "format", "incontext") for r in self.splits(t)["test"]}

    # ------------------------------------------------------------ pretraining
    def junk(self, rng: random.Random) -> tuple[str, str, str]:
        """(question, answer, demonstration) for a question only the demonstration can answer."""
        kind = rng.random()
        if kind < 0.15:
            name, town = rng.choice(self.names), rng.choice(self.anyone)
            question, answer, sentence = f"Where does {name} live?", town, f"{name} lives in {town}."
        elif kind < 0.5:
            # A digit rule unknown to the model (each digit mapped by a random shift or permutation): the answer
            # overlaps the input as a cipher's does, so copying must tell the demonstration's digits from the question's.
            digits = distinct_digits(rng, 2, 5)
            shift = rng.randrange(1, 10)
            mapping = {str(d): str((d + shift) % 10) for d in range(10)} if rng.random() < 0.5 else dict(zip("0123456789", rng.sample("0123456789", 10)))
            answer = "".join(mapping[d] for d in digits)
            question = rng.choice(RULE_QUESTIONS).format(rule=rng.choice(self.words), digits=digits)
            sentence = f"{digits} becomes {answer}."
        else:
            name, attr = rng.choice(self.anyone), rng.choice(self.words)
            answer = self.junk_answer(rng)
            question = rng.choice(JUNK_QUESTIONS).format(attr=attr, name=name)
            sentence = f"The {attr} of {name} is {answer}." if "\n" not in answer else None
        if rng.random() < 0.5:  # context lines before the question: long prompts, and distractors not to copy
            question = "".join(self.context_line(rng) + "\n" for _ in range(rng.randint(1, 2))) + question
        return question, answer, demo_style(rng, answer, sentence)

    def context_line(self, rng: random.Random) -> str:
        if rng.random() < 0.5:
            return f"Note: the {rng.choice(self.words)} of {rng.choice(self.anyone)} is {self.junk_value(rng)}."
        return "Known: " + "; ".join(f"{t}({', '.join(TOOLS[t][0])})" for t in rng.sample(sorted(TOOLS), rng.randint(2, 3)))

    def junk_answer(self, rng: random.Random) -> str:
        kind = rng.random()
        if kind < 0.3:
            return rng.choice(self.anyone)
        if kind < 0.5:
            return distinct_digits(rng, 1, 4)
        if kind < 0.6:
            return compact({k: self.junk_value(rng) for k in rng.sample(self.words, rng.randint(1, 2))})
        tool = rng.choice(sorted(TOOLS))
        return action(tool, {k: self.argument(k, rng) for k in TOOLS[tool][0]})

    def junk_value(self, rng: random.Random) -> str:
        return rng.choice([rng.choice(self.anyone), distinct_digits(rng, 1, 3), rng.choice(self.words)])

    def named_rule(self, rng: random.Random) -> tuple[str, str]:
        """A known digit rule asked by its name, no demonstration."""
        name = rng.choice(sorted(KNOWN_RULES))
        digits = distinct_digits(rng, 2, 5)
        code = "".join(str(KNOWN_RULES[name](int(d))) for d in digits)
        return rng.choice(RULE_QUESTIONS).format(rule=name, digits=digits), code

    def known_tool_call(self, rng: random.Random) -> tuple[str, str]:
        """A bare request to a tool the base knows, its arguments copied from the request."""
        tool = rng.choice(KNOWN_TOOLS)
        request, args = self.request(tool, rng)
        return f"Use a tool: {request}", action(tool, args)

    def known(self, rng: random.Random) -> tuple[str, str, Callable[[], str]]:
        """A question the model can answer from what it knows, and a maker of wrong answers of its kind."""
        kind = rng.random()
        if kind < 0.75:
            question, answer = self.addition(rng)
            return question, answer, lambda: str(rng.randint(20, 198))
        if kind < 0.9:
            question, answer = self.capital(rng)
            return question, answer, lambda: rng.choice(self.anyone)
        question, answer = self.color(rng)
        return question, answer, lambda: rng.choice(COLORS)

    def general_prompts(self, count: int) -> Iterator[dict]:
        """General-purpose prompts, as a chat model's prior data holds them (SFT + re-invoke distils on these):
        distinct prompts of the pretraining distribution under a stream of their own, no test prompt of a
        probe or task among them (pretraining itself asks the capitals probe's questions; these do not)."""
        stream, seen = self.pretraining_stream(GENERAL_PROMPTS_STREAM), set()
        tested = {r["prompt"] for task in (*PRIOR_SKILLS, *NEW_TASKS) for r in self.splits(task)["test"]}
        while len(seen) < count:
            prompt, _ = next(stream)
            if prompt not in seen and prompt not in tested:
                seen.add(prompt)
                yield {"prompt": prompt}

    def pretraining_stream(self, seed: int | str, demo_share: float = 0.27) -> Iterator[tuple[str, str]]:
        """An endless, seeded stream of (prompt, answer) pretraining examples.

        About `demo_share` carry a demonstration in the teacher template: mostly questions only
        the demonstration can answer, the rest known questions whose demonstration gives the true
        answer or a counterfactual one (the demonstration wins either way). Of the plain
        questions a quarter carry an answer-format instruction; some ask for a copy, a known digit
        rule by name, or a call of a known tool.
        """
        rng = random.Random(f"{self.spec.seed}:pretrain:{seed}")
        held_out = self.held_out_prompts()
        while True:
            roll = rng.random()
            if roll < 0.75 * demo_share:
                question, answer, demo = self.junk(rng)
                prompt = teacher_prompt(question, demo)
            elif roll < demo_share:
                question, answer, wrong = self.known(rng)
                answer = wrong() if rng.random() < 0.6 else answer
                prompt = teacher_prompt(question, demo_style(rng, answer, None))
            elif roll < demo_share + 0.06:
                # Plain copies build the copying circuit every demonstration use needs.
                answer = self.junk_answer(rng)
                prompt = f"Repeat exactly: {answer}"
            elif roll < demo_share + 0.11:
                prompt, answer = self.named_rule(rng)
            elif roll < demo_share + 0.16:
                prompt, answer = self.known_tool_call(rng)
            elif rng.random() < 0.25:
                prompt, answer = self.formatted(rng)
            else:
                prompt, answer, _ = self.known(rng)
            if prompt not in held_out:
                yield prompt, answer


def _name(rng: random.Random, used: set[str]) -> str:
    while True:
        word = "".join(rng.choice(ONSETS) + rng.choice(VOWELS) + rng.choice(CODAS) for _ in range(rng.choice([1, 2, 2])))
        if 3 <= len(word) <= 9 and word not in used:
            used.add(word)
            return word.capitalize()


def distinct_digits(rng: random.Random, shortest: int, longest: int) -> str:
    """A number without a repeated digit: copying "5003" needs a two-token match (which 0 came last?),
    a circuit a CPU-built model does not learn in minutes; every digit string the world copies is like this."""
    return "".join(rng.sample("0123456789", rng.randint(shortest, longest)))


def _row(prompt: str, demonstration: str, answer) -> dict:
    """A task row; `answer` is the reference the scorer reads (a list: any of them is right)."""
    return {"prompt": prompt, "demonstration": demonstration, "answer": demonstration if answer is None else answer}


def action(tool: str, args: dict) -> str:
    """A tool call in the response format, its JSON compact (every mark is a token: short is easy to copy)."""
    return f"Action: {tool}\nAction Input: {compact(args)}"


def compact(record: dict) -> str:
    return json.dumps(record, separators=(",", ":"))


def demo_style(rng: random.Random, answer: str, sentence: str | None) -> str:
    """The answer as a demonstration might write it: in a sentence (most of the time, when there is one),
    bare, or after a thought line (the tool-use task's own thought line, for tool calls)."""
    if sentence and rng.random() < 0.7:
        return sentence
    if rng.random() < 0.5:
        return answer
    if answer.startswith("Action: "):
        words = "the request needs " + answer.split("\n")[0].removeprefix("Action: ")
    else:
        words = " ".join(rng.choice(THOUGHT_WORDS) for _ in range(rng.randint(2, 4)))
    return f"Thought: {words}.\n{answer}"


def teacher_prompt(question: str, demonstration: str) -> str:
    return TEACHER_TEMPLATE.format(prompt=question, privileged_context=demonstration)


def unique_rows(make, rng: random.Random, n: int, exclude: set[str]) -> list[dict]:
    rows, seen = [], set(exclude)
    for _ in range(n * 50):
        if len(rows) == n:
            break
        row = make(rng)
        if row["prompt"] not in seen:
            seen.add(row["prompt"])
            rows.append(row)
    return rows


def write_data(world: World, out_dir) -> list[Path]:
    """Write every task's splits as JSON Lines (sorted keys, ASCII): byte-identical for a seed."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for task in (*PRIOR_SKILLS, *NEW_TASKS):
        for split, rows in world.splits(task).items():
            path = out_dir / f"{task}_{split}.jsonl"
            path.write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in rows))
            written.append(path)
    path = out_dir / "general_prompts.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in world.general_prompts(GENERAL_PROMPTS)))
    return [*written, path]
