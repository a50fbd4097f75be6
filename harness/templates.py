"""Prompt templates shared by the task cards and the toy world."""

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
