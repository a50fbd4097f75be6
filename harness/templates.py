"""Prompt templates shared by the task cards and the toy world."""

import string

from harness.errors import HarnessError

# The SDFT paper's teacher prompt (reference code), in TRL's placeholders: the
# teacher is the model itself shown the prompt plus an expert demonstration.
TEACHER_TEMPLATE = (
    "{prompt}\n\nThis is an example for a response to the question:\n{privileged_context}\n\n"
    "Now answer with a response of your own, including the thinking process."
)


PROMPT_MARK, CONTEXT_MARK = "\0P", "\0C"


def marked(template: str) -> str:
    """The teacher template rendered with a marker for each placeholder: where they are, found by Python's own
    parse (a literal `{{prompt}}` holds the text "{prompt}" too); raises what str.format raises on stray braces."""
    return template.format(prompt=PROMPT_MARK, privileged_context=CONTEXT_MARK)


def template_fields(template, allowed: tuple[str, ...], where: str) -> list[str]:
    """The placeholders of a str.format template, in order and with repeats; HarnessError for what TRL's format call
    would only fail on mid-run: not a string, a stray brace, a placeholder other than `allowed`."""
    rule = f"its placeholders are {', '.join(f'{{{name}}}' for name in allowed)}, and a literal brace is written twice, {{{{ or }}}}"
    if not isinstance(template, str):
        raise HarnessError(f"{where}: expected a string (quote it)")
    try:
        fields = [field for _, field, _, _ in string.Formatter().parse(template) if field is not None]
    except ValueError as e:
        raise HarnessError(f"{where}: {e}; {rule}") from None
    unknown = [field for field in fields if field not in allowed]
    if unknown:
        raise HarnessError(f"{where}: unknown placeholder {{{unknown[0]}}}; {rule}")
    try:  # what parse leaves to format: a conversion ({prompt!x}), a format spec ({prompt:d}), a field inside one
        template.format(**dict.fromkeys(allowed, "text"))
    except (KeyError, IndexError, ValueError) as e:
        raise HarnessError(f"{where}: {type(e).__name__}: {e} (formatted with 'text' for each placeholder); {rule}") from None
    return fields
