"""A word-level tokenizer for the toy world, built with `tokenizers`.

Every word, digit, punctuation mark, space and newline is one token of a closed
vocabulary, so a sequence is ~40 tokens where characters made it ~300. A word is the
same token wherever it stands (spaces are tokens of their own, not part of the word),
so copying it out of a demonstration into any context is copying one token: with
space-prefixed words ("Zolu" vs " Zolu") a tiny model had to learn each name's two
forms, and copying stalled near 0.6. Decoding concatenates the tokens: text round-trips.
"""

from __future__ import annotations

import string
from collections.abc import Iterable

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

PAD, UNK, USER, ASSISTANT, SYSTEM, END = "<|pad|>", "<|unk|>", "<|user|>", "<|assistant|>", "<|system|>", "<|end|>"
SPECIALS = [PAD, UNK, USER, ASSISTANT, SYSTEM, END]
# A word, one digit, or a run of anything else (marks, spaces, newlines): `":"` and `.\n` are one token each.
PIECE = r"[A-Za-z_]+|[0-9]|[^A-Za-z0-9_]+"
MARKS = [c for c in string.digits + string.punctuation if c != "_"]

CHAT_TEMPLATE = (
    "{% for m in messages %}"
    "{% if m['role'] == 'system' %}<|system|>{{ m['content'] }}<|end|>"
    "{% elif m['role'] == 'user' %}<|user|>{{ m['content'] }}<|end|>"
    "{% else %}<|assistant|>{% generation %}{{ m['content'] }}<|end|>{% endgeneration %}{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def chat_prompt(user_text: str) -> str:
    """The chat template's rendering of one user turn plus the generation prompt."""
    return f"{USER}{user_text}{END}{ASSISTANT}"


def pieces(texts: Iterable[str]) -> set[str]:
    split = pre_tokenizers.Split(Regex(PIECE), behavior="isolated")
    return {piece for text in texts for piece, _ in split.pre_tokenize_str(text)}


def build_tokenizer(texts: Iterable[str], words: Iterable[str] = ()) -> PreTrainedTokenizerFast:
    """A closed vocabulary: every piece of `texts`, each of `words`, every digit and mark, a space and
    a newline, in a deterministic order."""
    vocab = set(pieces(texts)) | set(words) | set(MARKS) | {" ", "\n"}
    ids = {token: i for i, token in enumerate([*SPECIALS, *sorted(vocab - set(SPECIALS))])}
    core = Tokenizer(models.WordLevel(ids, unk_token=UNK))
    core.pre_tokenizer = pre_tokenizers.Split(Regex(PIECE), behavior="isolated")
    core.decoder = decoders.Fuse()
    core.add_special_tokens(SPECIALS)
    return PreTrainedTokenizerFast(
        tokenizer_object=core,
        eos_token=END,
        pad_token=PAD,
        unk_token=UNK,
        chat_template=CHAT_TEMPLATE,
        padding_side="left",
        model_max_length=256,
        clean_up_tokenization_spaces=False,
    )
