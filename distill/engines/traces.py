"""Split a teacher completion into reasoning and answer, and flag truncated or malformed traces.

A thinking teacher writes "reasoning</think>answer" after a prompt that ends with "<think>\\n" (prefilled), or
"<think>reasoning</think>answer" when the prompt does not open the thought. Flags (curation drops them, nothing
is lost here):
  truncated  finish_reason is "length" (max_tokens or the context ran out) or the prompt did not fit
  malformed  no closing </think>, or a second <think> / </think> anywhere
Worked examples (prefilled):
  "x = 2.\\n</think>\\n\\nThe answer is 2."  -> reasoning "x = 2.", answer "The answer is 2.", flags []
  "x = 2. Let me"  (finish length)        -> reasoning "x = 2. Let me", answer "", [truncated, malformed]
  "a</think>b</think>c"                    -> reasoning "a", answer "b</think>c", [malformed]
A teacher that does not think (teacher.thinking false): reasoning "", the whole completion is the answer; but
after a prefilled "<think>\n" (the student's release template opens the thought for it), a completion that
closes it ("\n</think>\n\nThe answer is 2.") is split as a thinking teacher's (reasoning "", answer "The answer
is 2."): left whole, its answer would carry the </think> and training would wrap it in a second think block.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from distill.release import THINK, THINK_CLOSE

TRUNCATING_FINISH = ("length", "prompt_too_long")


@dataclass
class Trace:
    reasoning: str
    answer: str
    flags: list[str] = field(default_factory=list)


def parse_trace(text: str, finish_reason: str, thinking: bool, prefilled: bool) -> Trace:
    flags = ["truncated"] if finish_reason in TRUNCATING_FINISH else []
    if not thinking and not (prefilled and THINK_CLOSE in text):
        return Trace("", text.strip(), flags)
    body = text
    if not prefilled and body.lstrip().startswith(THINK):
        body = body.lstrip()[len(THINK) :]
    reasoning, closed, answer = body.partition(THINK_CLOSE)
    if not closed or THINK in body or THINK_CLOSE in answer:
        flags.append("malformed")
    return Trace(reasoning.strip(), answer.strip(), flags)
