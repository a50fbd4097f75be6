"""The toy world: prior skills, new tasks and a demonstration-use pretraining mix.

Everything is a pure function of a seed, so two builds with the same seed write
byte-identical files. Prior skills are what the base model is pretrained on (and
what the forgetting probes measure); new tasks are never shown in pretraining.
The pretraining mix also teaches the model to use a demonstration placed in its
prompt with the SDFT teacher template, over many answer formats, so that the
base model can act as its own SDFT teacher on tasks it has never seen.
"""

from __future__ import annotations

import json
import random
import string
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from harness.templates import TEACHER_TEMPLATE
from harness.toyworld import background

LETTERS = string.ascii_lowercase
ONSETS = ["b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "br", "dr", "kl", "qu", "st", "tr", "vr", "zh"]
VOWELS = ["a", "e", "i", "o", "u", "ai", "ou", "y"]
CODAS = ["", "", "", "n", "l", "r", "x", "th", "m", "sk"]

PRIOR_SKILLS = ("addition", "reversal", "capitals", "incontext")
NEW_TASKS = ("cipher", "facts", "tooluse", "swap")

# Tools for the tool-use task: name, parameters, request phrasings.
TOOLS = {
    "get_weather": (["city"], ["What is the weather in {city}?", "Tell me the forecast for {city}.", "Is it raining in {city}?"]),
    "send_email": (["to", "subject"], ["Email {to} about {subject}.", "Send a mail to {to} with subject {subject}.", "Write to {to} regarding {subject}."]),
    "book_table": (["place", "people"], ["Book a table at {place} for {people}.", "Reserve {place} for {people} people.", "Get us a table for {people} at {place}."]),
    "convert_currency": (["amount", "source", "target"], ["Convert {amount} {source} to {target}.", "How much is {amount} {source} in {target}?", "Change {amount} {source} into {target}."]),
    "set_alarm": (["time"], ["Wake me up at {time}.", "Set an alarm for {time}.", "Ring at {time} please."]),
    "find_song": (["title", "artist"], ["Play {title} by {artist}.", "Find the song {title} from {artist}.", "Put on {title} by {artist}."]),
}
CURRENCIES = ["EUR", "USD", "GBP", "JPY", "CHF", "ZRB", "QEL"]

MAX_ANSWER_CHARS = 120
MAX_EXAMPLE_CHARS = 460  # keeps every sequence within the model's 512 positions

FACT_QUESTIONS = ["Where does {person} live?", "In which town does {person} live?", "Which town is home to {person}?"]


@dataclass(frozen=True)
class WorldSpec:
    """The generator's settings: part of the base model's recipe."""

    seed: int = 0
    countries: int = 30
    people: int = 30
    train_items: int = 1000
    test_items: int = 100


class World:
    """The entities of one seeded world and the items drawn from them."""

    def __init__(self, spec: WorldSpec = WorldSpec()):
        self.spec = spec
        rng = self._rng("entities")
        self._used: set[str] = set()
        self.capitals = {self._name(rng): self._name(rng) for _ in range(spec.countries)}
        self.homes = {f"{self._name(rng)} {self._name(rng)}": self._name(rng) for _ in range(spec.people)}
        self.facts = background.Facts(rng, self._name)
        self.reserved = set(self._used)  # names junk questions must never reuse

    def _rng(self, stream: str) -> random.Random:
        return random.Random(f"{self.spec.seed}:{stream}")

    def _name(self, rng: random.Random) -> str:
        while True:
            word = "".join(rng.choice(ONSETS) + rng.choice(VOWELS) + rng.choice(CODAS) for _ in range(rng.choice([1, 2, 2])))
            if 3 <= len(word) <= 9 and word not in self._used:
                self._used.add(word)
                return word.capitalize()

    # ----------------------------------------------------------- prior skills
    def addition(self, rng: random.Random) -> tuple[str, str]:
        a, b = rng.randint(10, 99), rng.randint(10, 99)
        return f"What is {a} + {b}?", str(a + b)

    def reversal(self, rng: random.Random) -> tuple[str, str]:
        word = random_letters(rng, 3, 6)
        return f"Reverse the letters: {word}", word[::-1]

    def capital(self, rng: random.Random) -> tuple[str, str]:
        country = rng.choice(sorted(self.capitals))
        return f"What is the capital of {country}?", self.capitals[country]

    def incontext(self, rng: random.Random) -> tuple[str, str]:
        """A question only its demonstration can answer, in formats pretraining never shows."""
        question = f"What is the {random_letters(rng, 4, 7)} code of {junk_name(rng, self.reserved)}?"
        answer = rng.choice(HELD_OUT_FORMATS)(rng)
        return teacher_prompt(question, answer), answer

    # -------------------------------------------------------------- new tasks
    def cipher(self, rng: random.Random) -> tuple[str, str]:
        """A shift cipher on digits (9 wraps to 0): new, but close enough to counting to learn in a stage."""
        digits = "".join(rng.choice(string.digits) for _ in range(rng.randint(3, 6)))
        return f"Shift each digit up by one: {digits}", "".join(str((int(d) + 1) % 10) for d in digits)

    def swap(self, rng: random.Random) -> tuple[str, str]:
        """A second new skill, close to copying: learned fast, and it disturbs little else."""
        word = random_letters(rng, 3, 6)
        return f"Swap the first two letters: {word}", word[1] + word[0] + word[2:]

    def fact(self, rng: random.Random) -> tuple[str, str]:
        person = rng.choice(sorted(self.homes))
        return rng.choice(FACT_QUESTIONS).format(person=person), self.homes[person]

    def tool_call(self, rng: random.Random) -> tuple[str, str]:
        names = rng.sample(sorted(TOOLS), 3)
        chosen = rng.choice(names)
        params, phrasings = TOOLS[chosen]
        args = {p: tool_argument(p, rng, self.reserved) for p in params}
        listing = "; ".join(f"{n}({', '.join(TOOLS[n][0])})" for n in names)
        request = rng.choice(phrasings).format(**args)
        answer = f"Action: {chosen}\nAction Input: {json.dumps(args)}"
        return f"Tools: {listing}\nRequest: {request}", answer

    # ------------------------------------------------------------------ items
    def skills(self) -> dict[str, Callable[[random.Random], tuple[str, str]]]:
        return {
            "addition": self.addition,
            "reversal": self.reversal,
            "capitals": self.capital,
            "incontext": self.incontext,
            "cipher": self.cipher,
            "facts": self.fact,
            "tooluse": self.tool_call,
            "swap": self.swap,
        }

    def splits(self, task: str) -> dict[str, list[dict]]:
        """Train and test rows of a task; test prompts never occur in train.

        Closed-world knowledge (capitals, facts) is the exception: a fact can only
        be tested by asking it, so the test asks every fact once and train holds
        every fact in every phrasing.
        """
        make = self.skills()[task]
        rng = self._rng(f"split:{task}")
        if task == "capitals":
            test = [self._row(f"What is the capital of {c}?", self.capitals[c]) for c in sorted(self.capitals)]
            return {"train": [], "test": test}
        if task == "facts":
            train = [self._row(q.format(person=p), h) for p, h in sorted(self.homes.items()) for q in FACT_QUESTIONS]
            rng.shuffle(train)
            test = [self._row(rng.choice(FACT_QUESTIONS).format(person=p), h) for p, h in sorted(self.homes.items())]
            return {"train": train, "test": test}
        test = unique_rows(make, rng, self.spec.test_items, exclude=set())
        n_train = self.spec.train_items if task in NEW_TASKS else 0
        train = unique_rows(make, rng, n_train, exclude={p for p, _ in test})
        return {"train": [self._row(p, a) for p, a in train], "test": [self._row(p, a) for p, a in test]}

    @staticmethod
    def _row(prompt: str, answer: str) -> dict:
        # The demonstration an expert would give is the answer itself in this world.
        return {"prompt": prompt, "demonstration": answer, "answer": answer}

    def held_out_prompts(self) -> set[str]:
        """Prior-skill test prompts, kept out of pretraining so the probes test skills, not recall."""
        return {r["prompt"] for t in ("addition", "reversal") for r in self.splits(t)["test"]}

    # ------------------------------------------------------------ pretraining
    def pretraining_stream(self, seed: int, demo_share: float = 0.6) -> Iterator[tuple[str, str]]:
        """An endless, seeded stream of (prompt, answer) pretraining examples.

        About `demo_share` of the examples carry a demonstration in the teacher
        template; of those most are junk questions only the demonstration can
        answer, the rest prior-skill questions whose demonstration is either the
        true answer or a counterfactual one (the demonstration wins either way).
        """
        rng = random.Random(f"{self.spec.seed}:pretrain:{seed}")
        held_out = self.held_out_prompts()
        probed = [self.addition, self.reversal, self.capital]
        others = [background.word_rule, background.number_rule, background.record_rule, self.facts.question]
        while True:
            if rng.random() < 0.5:
                skill = rng.choices(probed, weights=[0.4, 0.3, 0.3])[0]
            else:
                skill = rng.choices(others, weights=[0.5, 0.25, 0.1, 0.15])[0]
            question, answer = skill(rng)
            if question in held_out:
                continue
            if rng.random() >= demo_share:
                yield question, answer
                continue
            roll = rng.random()
            if roll < 0.6:
                answer = rng.choices(ANSWER_FORMATS, FORMAT_WEIGHTS)[0](rng)
                question = junk_question(rng, self.reserved, answer)
            elif roll < 0.85:
                _, answer = skill(rng)  # counterfactual: the demonstration beats what the model knows
            prompt = teacher_prompt(question, answer)
            if len(answer) <= MAX_ANSWER_CHARS and len(prompt) + len(answer) <= MAX_EXAMPLE_CHARS:
                yield prompt, answer


def teacher_prompt(question: str, demonstration: str) -> str:
    return TEACHER_TEMPLATE.format(prompt=question, privileged_context=demonstration)


def unique_rows(make, rng: random.Random, n: int, exclude: set[str]) -> list[tuple[str, str]]:
    rows, seen = [], set(exclude)
    for _ in range(n * 50):
        if len(rows) == n:
            break
        prompt, answer = make(rng)
        if prompt not in seen:
            seen.add(prompt)
            rows.append((prompt, answer))
    return rows


# ---------------------------------------------------------------- junk world
def random_letters(rng: random.Random, lo: int, hi: int) -> str:
    return "".join(rng.choice(LETTERS) for _ in range(rng.randint(lo, hi)))


def random_ident(rng: random.Random) -> str:
    """An identifier in one of the shapes keys and function names take: snake, camel, dotted."""
    parts = [random_letters(rng, 1, 6) for _ in range(rng.randint(1, 3))]
    style = rng.random()
    if style < 0.4:
        return "_".join(parts)
    if style < 0.7:
        return parts[0] + "".join(p.capitalize() for p in parts[1:])
    return rng.choice(["", "x", "v2", "get"]) + "".join(parts) + str(rng.randint(0, 9)) * rng.randint(0, 1)


def random_chars(rng: random.Random) -> str:
    """Random printable characters: copying them needs a copy circuit that works for any character."""
    chars = string.ascii_letters + string.digits + string.punctuation + "  "
    return "".join(rng.choice(chars) for _ in range(rng.randint(1, 60))).strip() or "x"


def junk_name(rng: random.Random, reserved: set[str]) -> str:
    while True:
        name = "".join(rng.choice(ONSETS) + rng.choice(VOWELS) + rng.choice(CODAS) for _ in range(rng.randint(1, 3)))
        if name.capitalize() not in reserved:
            return name.capitalize()


JUNK_QUESTIONS = [
    "What is the {attr} of {name}?",
    "Give the {attr} for {name}.",
    "Which {attr} belongs to {name}?",
    "Tell me the {attr} that {name} uses.",
    "Write down the {attr} of the {name} record.",
    "What should I enter as the {attr} for {name}?",
]


def junk_question(rng: random.Random, reserved: set[str], answer: str) -> str:
    question = rng.choice(JUNK_QUESTIONS).format(attr=random_letters(rng, 3, 8), name=junk_name(rng, reserved))
    if rng.random() < 0.5:
        # A preamble puts the demonstration at many distances; pieces of the answer in it
        # are distractors, so copying must track its place in the demonstration.
        words = [random_letters(rng, 2, 7) for _ in range(rng.randint(4, 20))]
        for _ in range(rng.randint(0, 3)):
            i = rng.randrange(len(answer))
            words.insert(rng.randrange(len(words) + 1), answer[i : i + rng.randint(2, 8)])
        question = f"Context: {' '.join(words)}.\n{question}"
    return question


def tool_argument(param: str, rng: random.Random, reserved: set[str]) -> str:
    """Argument values kept short and free of patterns that make copying ambiguous (like `5:30`, or an
    e-mail address, whose `@` and `.org` the toy base copied badly: teacher accuracy 0.86 with them, 0.98 without)."""
    if param == "people":
        return str(rng.randint(2, 12))
    if param == "amount":
        return str(rng.randint(1, 999))
    if param in ("source", "target"):
        return rng.choice(CURRENCIES)
    if param == "time":
        return f"{rng.randint(1, 12)} {rng.choice(['am', 'pm'])}"
    if param == "title":
        return " ".join(short_name(rng, reserved) for _ in range(rng.randint(1, 2)))
    return short_name(rng, reserved)  # city, place, artist, subject, to


def short_name(rng: random.Random, reserved: set[str]) -> str:
    while True:
        name = "".join(rng.choice(ONSETS) + rng.choice(VOWELS) + rng.choice(CODAS) for _ in range(rng.randint(1, 2)))
        if name.capitalize() not in reserved:
            return name.capitalize()


def _json_value(rng: random.Random, depth: int = 0):
    kind = rng.random()
    if kind < 0.35:
        return rng.choice([random_letters(rng, 2, 8), random_ident(rng), junk_name(rng, set())])
    if kind < 0.55:
        return rng.randint(0, 9999)
    if kind < 0.65:
        return rng.choice([True, False])
    if kind < 0.8:
        return [rng.randint(0, 99) for _ in range(rng.randint(1, 3))]
    if depth == 0:
        return {random_ident(rng): _json_value(rng, 1) for _ in range(rng.randint(1, 2))}
    return random_letters(rng, 2, 6)


def fmt_json(rng):
    return json.dumps({random_ident(rng): _json_value(rng) for _ in range(rng.randint(1, 4))})


def fmt_labeled(rng):
    lines, stem = [], random_letters(rng, 2, 7).capitalize()
    shared = rng.random() < 0.5  # labels sharing a stem ("Mode", "Mode Input") make copying ambiguous
    for i in range(rng.randint(1, 3)):
        if shared:
            label = stem if i == 0 else f"{stem} {random_letters(rng, 2, 6).capitalize()}"
        else:
            label = rng.choice([random_letters(rng, 2, 7).capitalize() + rng.choice(["", " " + random_letters(rng, 2, 5).capitalize()]), random_ident(rng)])
        value = rng.choice([random_letters(rng, 2, 10), str(rng.randint(0, 999)), fmt_json(rng)])
        lines.append(f"{label}: {value}")
    return "\n".join(lines)


def fmt_repetitive(rng):
    """Few fragments, many repeats: copying must follow position, not just the last character."""
    pieces = [random_letters(rng, 1, 4) for _ in range(rng.randint(2, 3))]
    seps = rng.choice([[" "], [": ", ", "], ['": "', '", "'], ["_", "-"]])
    return "".join(rng.choice(pieces) + rng.choice(seps) for _ in range(rng.randint(3, 8))).strip(" ,-_:\"")  or "x"


ANSWER_FORMATS = [
    lambda rng: junk_name(rng, set()),
    lambda rng: str(rng.randint(0, 10 ** rng.randint(1, 6))),
    lambda rng: f"{rng.randint(-999, 999)}.{rng.randint(0, 99):02d}",
    lambda rng: random_letters(rng, 3, 10),
    fmt_json,
    fmt_labeled,
    lambda rng: f"{random_ident(rng)}({', '.join(f'{random_ident(rng)}={rng.randint(0, 99)}' for _ in range(rng.randint(1, 3)))})",
    lambda rng: f"The {random_letters(rng, 3, 6)} {random_letters(rng, 2, 6)} is {random_letters(rng, 3, 7)}.",
    lambda rng: "".join(rng.choice("#@%&*-+=~") for _ in range(rng.randint(3, 8))),
    lambda rng: ", ".join(random_letters(rng, 2, 6) for _ in range(rng.randint(2, 4))),
    lambda rng: rng.choice(["yes", "no", "true", "false"]),
    lambda rng: f"{rng.randint(2000, 2099)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}",
    lambda rng: f"{random_letters(rng, 1, 3)}{rng.randint(1, 99)}-{random_letters(rng, 2, 3)}{rng.randint(0, 9)}",
    lambda rng: f"{random_letters(rng, 2, 6)}@{random_letters(rng, 2, 6)}.{rng.choice(['org', 'com', 'net'])}",
    lambda rng: "\n".join(f"- {random_letters(rng, 2, 8)}" for _ in range(rng.randint(2, 4))),
    random_chars,
    lambda rng: random_ident(rng),
    lambda rng: fmt_repetitive(rng),
]

# Structured records are weighted up: they are the hardest to copy and the tool task needs them.
FORMAT_WEIGHTS = [1, 1, 1, 1, 3, 3, 2, 1, 1, 1, 1, 1, 1, 1, 1, 4, 1, 2]

# Formats the in-context probe uses and pretraining never shows.
HELD_OUT_FORMATS = [
    lambda rng: ";".join(f"{random_letters(rng, 1, 4)}={random_letters(rng, 1, 4)}" for _ in range(rng.randint(2, 3))),
    lambda rng: f"{''.join(rng.choice(string.ascii_uppercase) for _ in range(2))}-{rng.randint(10, 99)}-{rng.choice(string.ascii_uppercase)}",
    lambda rng: "|".join(random_letters(rng, 2, 5) for _ in range(rng.randint(2, 4))),
    lambda rng: "/" + "/".join(random_letters(rng, 2, 5) for _ in range(rng.randint(2, 3))) + ".txt",
]


def write_data(world: World, out_dir) -> list:
    """Write every task's splits as JSON Lines (sorted keys, ASCII): byte-identical for a seed."""
    from pathlib import Path

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for task in (*PRIOR_SKILLS, *NEW_TASKS):
        for split, rows in world.splits(task).items():
            if rows:
                path = out_dir / f"{task}_{split}.jsonl"
                path.write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in rows))
                written.append(path)
    return written
