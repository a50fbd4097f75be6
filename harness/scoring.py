"""Scorers: (completion, reference) -> 1.0 or 0.0.

The same functions serve as evaluation metrics and as SDPO rewards, so they are
pure, never raise on malformed model output, and return floats.
"""

from __future__ import annotations

import json
import logging
import re
import urllib.request
from collections import Counter
from collections.abc import Callable
from typing import Any

Scorer = Callable[[str, Any], float]

log = logging.getLogger(__name__)


def exact_match(completion: str, reference: Any) -> float:
    """Equal up to surrounding whitespace; a list reference accepts any of its answers."""
    answers = reference if isinstance(reference, list) else [reference]
    return float(completion.strip() in {str(a).strip() for a in answers})


def answer_problem(scorer: str, answer: Any) -> str | None:
    """Why a data row's reference answer cannot be scored by `scorer` (every completion would score 0), else None."""
    if scorer == "exact_match":
        bad = [a for a in (answer if isinstance(answer, list) else [answer]) if isinstance(a, bool) or not isinstance(a, str | int)]
        if bad:
            return f"{bad[0]!r} is not text, and exact_match compares text: write it as a string"
        if any(isinstance(a, str) and not a.strip() for a in (answer if isinstance(answer, list) else [answer])):
            return "a blank answer: an empty completion would score 1"
    if scorer == "answer_format":
        template = answer.get("format") if isinstance(answer, dict) else answer
        if not isinstance(template, str) or not template.strip():
            return "answer_format expects a format text: a string, or a mapping {format: ...} ({answer} marks each answer slot)"
    if scorer in ("tool_call", "tool_call_reference"):
        calls = _gold_list(answer) if isinstance(answer, str | dict | list) else [answer]
        if calls is None:  # the response format's text: it must name a call, or a reply calling nothing would match it
            return None if parse_tool_calls(answer)[0] else (f"{answer!r} names no tool call (no `Action:` line): {scorer} "
                                                              "expects the calls' text (Action: ... Action Input: {...})")
        if not calls or not all(isinstance(c, dict) and isinstance(c.get("Action"), str) for c in calls):
            return (f"{answer!r} is no tool call: {scorer} expects the calls' text (Action: ... Action Input: {{...}}), "
                    "a mapping {Action, Action_Input}, or a list of them")
    # One reference each: a list is compared as its printed form, and the authors' letter rule compares text only.
    one_text = {"answer_letter": str | int, "answer_letter_reference": str, "reference_overlap": str | int, "judge": str | int}
    if scorer in one_text and (isinstance(answer, bool) or not isinstance(answer, one_text[scorer]) or not str(answer).strip()):
        kind = "one letter as a string" if scorer.startswith("answer_letter") else "one reference answer as text"
        return f"{answer!r}: {scorer} expects {kind}" + (" (it reads no list of answers)" if isinstance(answer, list) else "")
    return None


# An answer slot holds one or more words: "Mal", "New Mal", "Saint-Mal".
_SEPARATORS = " '-"
_SLOT = re.compile(rf"\w+(?:[{_SEPARATORS}]\w+)*")


def answer_format(completion: str, reference: Any) -> float:
    """IFEval's kind of check: the completion is the reference's `format` with `{answer}` standing for an answer
    of one or more words (each `{answer}`, where a format has several). What the answer says is not scored: a knowledge
    probe scores that. A reference with no format text (no `format`, not a string, blank) matches nothing."""
    template = reference.get("format") if isinstance(reference, dict) else reference
    if not isinstance(template, str) or not template.strip() or not isinstance(completion, str):
        return 0.0
    return float(_fills(completion.strip(), template.strip().split("{answer}")))


def _fills(text: str, literals: list[str]) -> bool:
    """Whether text is literals[0] + slot + literals[1] + ... + literals[-1]. One pass per slot over the places a
    slot can end: a backtracking regex takes time growing as len(text) ** slots (4 slots, 200 words: 10 s)."""
    if not text.startswith(literals[0]):
        return False
    ends = {len(literals[0])}  # where the text so far can end
    for literal in literals[1:]:
        after, seen = set(), -1
        for start in sorted(ends):
            # A slot ends after any word of the run from its start; a start inside a run seen reaches no new end.
            words = _SLOT.match(text, start) if start > seen else None
            if words is None:
                continue
            for end in range(start + 1, words.end() + 1):
                if text[end - 1] not in _SEPARATORS and text.startswith(literal, end):
                    after.add(end + len(literal))
            seen = words.end()
        ends = after
    return len(text) in ends


# --------------------------------------------------------------- science (SciKnowEval)
def extract_answer_tag(text: str) -> str | None:
    """Stripped text between the last <answer> and the </answer> after it; None without both."""
    start = text.rfind("<answer>")
    if start < 0:
        return None
    start += len("<answer>")
    end = text.find("</answer>", start)
    return None if end < 0 else text[start:end].strip()


def answer_letter(completion: str, reference: Any) -> float:
    """The strict rule: the letter must stand between an <answer> and a </answer> after it."""
    found = extract_answer_tag(completion)
    return float(found is not None and found == str(reference).strip())


def extract_answer_reference(text: str) -> str:
    """The SDFT authors' extraction (eval_science.py): after the last <answer> (the whole text if there is
    none), up to the first </answer> (the rest of the text if there is none), stripped."""
    _, _, after = text.rpartition("<answer>")
    inside, _, _ = after.partition("</answer>")
    return inside.strip()


def answer_letter_reference(completion: str, reference: Any) -> float:
    """The authors' rule, to compare with published numbers. It scores what the strict rule scores, and also an
    answer missing a tag: a bare "B", "B</answer>", or "<answer>B" cut off before its closing tag. The reference
    letter is compared as given (the authors do not strip it; the data's letters have no spaces)."""
    return float(extract_answer_reference(completion) == reference)


# --------------------------------------------------------------- tool use (ToolAlpaca)
# A parsed call set is (action names, merged action inputs); correctness compares the
# names as a multiset and the merged inputs as dicts, exactly as the paper's rule does.
ToolCalls = tuple[list[str], dict]

# The authors' reference (SDFT eval_tooluse.py; the SDPO repo's
# verl/utils/reward_score/feedback/tooluse.py uses the same two regexes):
# names are `\w+` right after "Action:" (\s* may cross a newline), and each input
# is the shortest {...}, so a nested object is cut at its first "}".
_REF_ACTION = re.compile(r"Action:\s*(\w+)")
_REF_INPUT = re.compile(r"Action Input:\s*({.*?})", re.DOTALL)
# Corrected rule: the name is the rest of the "Action:" line (gold names such as
# "[Optional]updateUserProfile" are not \w+), and inputs are whole JSON values.
_ACTION_LINE = re.compile(r"Action:[^\S\n]*(.*)")
_INPUT_START = re.compile(r"Action Input:\s*")


def parse_tool_calls_reference(text: str) -> ToolCalls:
    """Names and merged inputs the way the authors' reference code extracts them."""
    merged: dict = {}
    for block in _REF_INPUT.findall(text):
        try:
            merged.update(json.loads(block))
        except json.JSONDecodeError:
            pass  # where a cut nested object ends up: skipped, as in the reference
    return _REF_ACTION.findall(text), merged


def parse_tool_calls(text: str) -> ToolCalls:
    """Names and merged inputs, decoding each whole JSON object after "Action Input:"."""
    names = [name.strip() for name in _ACTION_LINE.findall(text) if name.strip()]
    merged: dict = {}
    decoder = json.JSONDecoder()
    for match in _INPUT_START.finditer(text):
        try:
            value, _ = decoder.raw_decode(text, match.end())  # ignores whatever follows the value
        except json.JSONDecodeError:
            continue
        if isinstance(value, dict):
            merged.update(value)
    return names, merged


def _gold_list(gold: Any) -> list | None:
    """The gold as a list of {"Action", "Action_Input"} dicts, or None for response-format text."""
    if isinstance(gold, dict):
        return [gold]
    if isinstance(gold, str):
        if not gold.lstrip().startswith("["):
            return None
        try:  # SDPO passes the gold list JSON-encoded
            value = json.loads(gold)
        except json.JSONDecodeError:
            return None
        return value if isinstance(value, list) else None
    return list(gold)


def parse_gold(gold: Any) -> ToolCalls:
    """Gold calls, parsed the same way for both rules (never with the reference's cut)."""
    items = _gold_list(gold)
    if items is None:
        return parse_tool_calls(str(gold))
    names, merged = [], {}
    for item in items:
        names.append(item["Action"])
        value = item.get("Action_Input", {})
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except json.JSONDecodeError:
                continue  # the reference skips unparsable gold inputs too
        if isinstance(value, dict):
            merged.update(value)
    return names, merged


def same_calls(predicted: ToolCalls, gold: ToolCalls) -> bool:
    return Counter(predicted[0]) == Counter(gold[0]) and predicted[1] == gold[1]


def tool_call(completion: str, reference: Any) -> float:
    return float(same_calls(parse_tool_calls(completion), parse_gold(reference)))


def tool_call_reference(completion: str, reference: Any) -> float:
    """The reference rule, quirks included: use it to compare with published numbers."""
    return float(same_calls(parse_tool_calls_reference(completion), parse_gold(reference)))


def format_tool_calls(gold: Any) -> str:
    """A gold list (paper schema) in the response format: "Action: x\\nAction Input: {...}" pairs."""
    items = _gold_list(gold)
    if items is None:
        return str(gold)  # already in the response format
    lines = []
    for item in items:
        value = item.get("Action_Input", {})
        lines.append(f"Action: {item['Action']}")
        lines.append(f"Action Input: {value if isinstance(value, str) else json.dumps(value)}")
    return "\n".join(lines)


# --------------------------------------------------------------- medical (free text)
_PUNCTUATION = re.compile(r"[^\w\s]")
_ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalize_text(text: str) -> str:
    """Lowercase, punctuation and articles removed, whitespace collapsed (SQuAD-style)."""
    text = _PUNCTUATION.sub(" ", str(text).lower())  # a space, so "a,b" does not glue into "ab"
    return " ".join(_ARTICLES.sub(" ", text).split())


def token_f1(prediction: str, reference: str) -> float:
    pred, ref = normalize_text(prediction).split(), normalize_text(reference).split()
    common = sum((Counter(pred) & Counter(ref)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(ref)
    return 2 * precision * recall / (precision + recall)


def reference_overlap(completion: str, reference: Any) -> float:
    """Crude stand-in for the paper's LLM judge, used when no judge is configured.

    1.0 iff the normalized reference occurs (as whole words) in the normalized
    response, or token F1 >= 0.5. It is NOT the paper's metric: numbers made with
    it are not comparable to the published medical results.
    """
    ref = normalize_text(reference)
    if not ref:
        return 0.0
    if f" {ref} " in f" {normalize_text(completion)} ":
        return 1.0
    return float(token_f1(completion, reference) >= 0.5)


JUDGE_PROMPT = (
    "You are grading a response to a medical question against the reference answer.\n\n"
    "Reference answer:\n{reference}\n\n"
    "Response:\n{response}\n\n"
    "Does the response reach the same final answer as the reference? "
    "Reply with exactly one word: CORRECT or INCORRECT."
)
_VERDICT = re.compile(r"\b(INCORRECT|CORRECT)\b")


class JudgeError(RuntimeError):
    """The judge endpoint could not be reached or sent an unexpected reply."""


def chat_completions_url(url: str) -> str:
    """Accept a server root, a .../v1 base, or the full endpoint."""
    url = url.rstrip("/")
    if url.endswith("/chat/completions"):
        return url
    return url + ("/chat/completions" if url.endswith("/v1") else "/v1/chat/completions")


def make_judge(url: str, model: str, timeout: float = 60, api_key: str | None = None) -> Scorer:
    """A scorer asking an OpenAI-compatible chat endpoint for a CORRECT/INCORRECT verdict.

    Network failures raise JudgeError naming the endpoint: a dead judge must stop
    an evaluation, not silently score everything 0.
    """
    endpoint = chat_completions_url(url)
    headers = {"Content-Type": "application/json"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"

    def judge(completion: str, reference: Any) -> float:
        prompt = JUDGE_PROMPT.format(reference=reference, response=completion)
        body = {"model": model, "messages": [{"role": "user", "content": prompt}], "temperature": 0, "max_tokens": 16}
        request = urllib.request.Request(endpoint, json.dumps(body).encode(), headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=timeout) as reply:
                content = json.load(reply)["choices"][0]["message"]["content"] or ""
        except OSError as err:  # URLError, HTTPError, refused connections, timeouts
            raise JudgeError(f"LLM judge at {endpoint} failed: {err}") from err
        except (ValueError, KeyError, IndexError, TypeError) as err:
            raise JudgeError(f"LLM judge at {endpoint} sent an unexpected reply: {err!r}") from err
        verdicts = _VERDICT.findall(content.upper())
        if not verdicts:
            # An off-format reply is one ungraded item, not a broken judge: count it wrong.
            log.warning("LLM judge at %s gave no verdict: %r", endpoint, content[:200])
            return 0.0
        return float(verdicts[-1] == "CORRECT")  # the last verdict, after any preamble

    judge.__name__ = f"llm_judge[{model}]"
    return judge


SCORERS: dict[str, Scorer] = {
    "exact_match": exact_match,
    "answer_format": answer_format,
    "answer_letter": answer_letter,
    "answer_letter_reference": answer_letter_reference,
    "tool_call": tool_call,
    "tool_call_reference": tool_call_reference,
    "reference_overlap": reference_overlap,
}
