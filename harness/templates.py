"""Prompt templates shared by the task cards and the toy world."""

# The SDFT paper's teacher prompt (reference code), in TRL's placeholders: the
# teacher is the model itself shown the prompt plus an expert demonstration.
TEACHER_TEMPLATE = (
    "{prompt}\n\nThis is an example for a response to the question:\n{privileged_context}\n\n"
    "Now answer with a response of your own, including the thinking process."
)
