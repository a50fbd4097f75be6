"""Background skills: many small instructions the base model learns besides the probed ones.

A model pretrained on three skills learns to answer *everything* the way its last
fine-tuning stage did; one pretrained on dozens of instructions learns to follow
the instruction, so a new task is one more instruction and fine-tuning on it
disturbs the others less. None of these is a new task of the sequence: no letter
shift, no tool list, no home towns.
"""

from __future__ import annotations

import json
import random
import string

LETTERS = string.ascii_lowercase
VOWELS = set("aeiou")
COLORS = ["red", "blue", "green", "yellow", "black", "white", "purple", "orange", "grey", "brown", "pink", "gold"]
OBJECTS = ["kettle", "lamp", "boat", "coat", "chair", "kite", "drum", "cup", "hat", "bell", "door", "sock", "vase",
           "bike", "rope", "tent", "flag", "ball", "box", "book", "key", "ring", "shoe", "fan", "map", "pen", "jar",
           "bowl", "brush", "clock"]


def _word(rng: random.Random, lo: int = 3, hi: int = 6) -> str:
    return "".join(rng.choice(LETTERS) for _ in range(rng.randint(lo, hi)))


def _consonant_word(rng: random.Random) -> str:
    while True:
        w = _word(rng)
        if any(c not in VOWELS for c in w):
            return w


WORD_RULES = {
    "copy": (["Copy: {w}", "Repeat exactly: {w}"], lambda w: w),
    "upper": (["Uppercase: {w}", "Write in capitals: {w}"], str.upper),
    "double": (["Double each letter: {w}", "Write every letter twice: {w}"], lambda w: "".join(c * 2 for c in w)),
    "novowel": (["Drop the vowels: {w}", "Remove every vowel from {w}"], lambda w: "".join(c for c in w if c not in VOWELS)),
    "first": (["First letter of {w}?", "Which letter does {w} start with?"], lambda w: w[0]),
    "last": (["Last letter of {w}?", "Which letter does {w} end with?"], lambda w: w[-1]),
    "count": (["How many letters are in {w}?", "Count the letters of {w}."], lambda w: str(len(w))),
    "sort": (["Sort the letters: {w}", "Put the letters of {w} in order."], lambda w: "".join(sorted(w))),
    "dashes": (["Spell with dashes: {w}", "Separate the letters of {w} with dashes."], "-".join),
    "twice": (["Say twice: {w}", "Write {w} two times."], lambda w: f"{w} {w}"),
    "mirror": (["Mirror each letter in the alphabet: {w}"], lambda w: "".join(LETTERS[25 - LETTERS.index(c)] for c in w)),
    "rotate": (["Move the first letter to the end: {w}"], lambda w: w[1:] + w[0]),
}


def word_rule(rng: random.Random) -> tuple[str, str]:
    phrasings, fn = WORD_RULES[rng.choice(sorted(WORD_RULES))]
    w = _consonant_word(rng)
    return rng.choice(phrasings).format(w=w), fn(w)


def number_rule(rng: random.Random) -> tuple[str, str]:
    a, b = rng.randint(0, 999), rng.randint(0, 999)
    kind = rng.randrange(5)
    if kind == 0:
        return rng.choice(["What comes after {a}?", "What number follows {a}?"]).format(a=a), str(a + 1)
    if kind == 1:
        a = max(a, 1)
        return rng.choice(["What comes before {a}?", "What number precedes {a}?"]).format(a=a), str(a - 1)
    if kind == 2:
        return rng.choice(["What is {a} times 2?", "Double {a}."]).format(a=a), str(2 * a)
    if kind == 3:
        while b == a:
            b = rng.randint(0, 999)
        return f"Which is larger, {a} or {b}?", str(max(a, b))
    return rng.choice(["Is {a} even?", "Is {a} an even number?"]).format(a=a), "yes" if a % 2 == 0 else "no"


def record_rule(rng: random.Random) -> tuple[str, str]:
    fields = {_word(rng, 2, 6): (rng.randint(0, 99) if rng.random() < 0.4 else _word(rng, 2, 7)) for _ in range(rng.randint(1, 3))}
    listing = ", ".join(f"{k}={v}" for k, v in fields.items())
    return rng.choice(["Write as JSON: {x}", "Format as a JSON object: {x}"]).format(x=listing), json.dumps(fields)


class Facts:
    """Background knowledge of one world: the colours of objects and the authors of books."""

    def __init__(self, rng: random.Random, name_maker):
        self.colors = {obj: rng.choice(COLORS) for obj in OBJECTS}
        self.authors = {f"The {name_maker(rng)} {rng.choice(['Tale', 'Song', 'Road', 'Winter', 'Garden'])}": name_maker(rng) for _ in range(30)}

    def question(self, rng: random.Random) -> tuple[str, str]:
        if rng.random() < 0.5:
            obj = rng.choice(OBJECTS)
            return rng.choice(["What color is the {o}?", "Which colour does the {o} have?"]).format(o=obj), self.colors[obj]
        book = rng.choice(sorted(self.authors))
        return rng.choice(["Who wrote {b}?", "Who is the author of {b}?"]).format(b=book), self.authors[book]
