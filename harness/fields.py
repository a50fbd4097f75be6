"""Field formatters: a card's field mapping may name them after bars, applied left to right
(`golden_answer|calls|tool_calls`). The registry checks the names when it loads a card; the
task data applies them to each record."""

from __future__ import annotations

import json

from harness.scoring import extract_answer_tag, format_tool_calls


def _calls(gold):
    """Tool calls as a list of {"Action", "Action_Input"}: datasets may decode a saved list of
    structs as one dict of parallel lists, depending on the features it was saved with."""
    if isinstance(gold, dict) and isinstance(gold.get("Action"), list):
        return [{"Action": a, "Action_Input": i} for a, i in zip(gold["Action"], gold.get("Action_Input") or [])]
    return gold


FORMATTERS = {
    "tool_calls": format_tool_calls,
    "answer_tag": lambda letter: f"<answer>\n{letter}\n</answer>",
    "tagged_answer": extract_answer_tag,  # the reverse: the letter inside a demonstration's <answer> tag
    "json": lambda value: json.dumps(value),
    "lines": lambda value: "\n".join(value) if isinstance(value, list) else value,
    "calls": _calls,
}
