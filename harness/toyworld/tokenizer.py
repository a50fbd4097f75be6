"""A character-level tokenizer for the toy world, trained with `tokenizers`.

One token per character makes copying a demonstration one token per step, which
a tiny model learns far more reliably than copying word pieces.
"""

from __future__ import annotations

import string
from collections.abc import Iterable

from tokenizers import Tokenizer, decoders, models, trainers
from transformers import PreTrainedTokenizerFast

PAD, UNK, USER, ASSISTANT, SYSTEM, END = "<|pad|>", "<|unk|>", "<|user|>", "<|assistant|>", "<|system|>", "<|end|>"
SPECIALS = [PAD, UNK, USER, ASSISTANT, SYSTEM, END]
ALPHABET = [c for c in string.printable if c not in "\t\r\x0b\x0c"]

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


def build_tokenizer(corpus: Iterable[str]) -> PreTrainedTokenizerFast:
    core = Tokenizer(models.BPE(unk_token=UNK))
    core.decoder = decoders.Fuse()
    # Capping the vocabulary at the alphabet leaves BPE no merges: characters only.
    trainer = trainers.BpeTrainer(
        vocab_size=len(SPECIALS) + len(ALPHABET),
        special_tokens=SPECIALS,
        initial_alphabet=ALPHABET,
        limit_alphabet=len(ALPHABET),
        show_progress=False,
    )
    core.train_from_iterator(corpus, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=core,
        eos_token=END,
        pad_token=PAD,
        unk_token=UNK,
        chat_template=CHAT_TEMPLATE,
        padding_side="left",
        model_max_length=512,
    )
