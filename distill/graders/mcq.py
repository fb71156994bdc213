"""Multiple choice (GPQA style): the chosen letter from the answer text against the correct letter.

Where the letter is looked for, last match first:
    \\boxed{C}, \\boxed{\\text{(C)}}, \\boxed{\\mathrm{C}} -> C
    \\boxed{C. x = 42}, \\boxed{(C) 42}         -> C (a letter followed by its choice's text)
    "Answer: C", "**Answer:** (C)", "answer is C" -> C
    "C", "(C)", "C) 10^-4 eV" as the whole answer  -> C
    "A) ...\nB) ...\nC) ..." (the choices repeated) -> unparseable: a list of options chooses none
    anything else                                 -> unparseable
"""

from __future__ import annotations

import re

from distill.data import last_boxed

GRADER = "mcq-letter"
LETTERS = "ABCDEFGHIJ"  # GPQA uses A-D; MMLU-Pro goes to J
_LETTER = rf"[{LETTERS}]"
# "answer" in any case; the letter itself only upper case ("the answer is a bit" chooses nothing)
ANSWER_RE = re.compile(
    rf"(?i:answer)(?:\s+(?i:is))?\s*[:：]?\s*(?:\*\*)?\s*[:：]?\s*(?:\$\s*)?(?:\\text\{{)?\(?({_LETTER})\)?"
    r"(?![A-Za-z])"
)
BARE_RE = re.compile(rf"^(?:\(?({_LETTER})\)?\.?$|\(?({_LETTER})[).:]\s)")
# inside a box: "C", "c", "(C)", "C. x = 42", "(C) 42", "C: 42", "\\text{(C) } 42"; not "CD", "C = 5", "a + b"
# a choice marker at a line start: two different ones mean the text lists the options (GPQA prompts end with them)
OPTION_LINE_RE = re.compile(rf"(?m)^\s*\(?({_LETTER})[).:]\s")
BOX_LETTER_RE = re.compile(rf"(?i:\(?({_LETTER})\)?\.?)$|\(({_LETTER})\)|({_LETTER})[.:)](?:\s|$)")


def letter_of(boxed: str) -> str | None:
    """The choice a box's content names: "C. x = 42" -> "C"; None when it names none."""
    inner = re.sub(r"\\(?:text|textbf|textrm|mathrm|mathbf)\{([^}]*)\}", r"\1", boxed).strip()
    found = BOX_LETTER_RE.match(inner)
    return next(g for g in found.groups() if g).upper() if found else None


def extract_letter(answer: str) -> str | None:
    """The letter the answer text chooses, or None."""
    boxed = last_boxed(answer)
    if boxed is not None and letter_of(boxed) is not None:
        return letter_of(boxed)
    matches = ANSWER_RE.findall(answer)
    if matches:
        return matches[-1]
    bare = BARE_RE.match(answer.strip().strip("$").strip())  # "$E$" as the whole answer
    if bare is None or len(set(OPTION_LINE_RE.findall(answer))) > 1:
        return None
    return bare.group(1) or bare.group(2)


def verify_mcq(reference: str, answer: str) -> tuple[str, str | None]:
    """(verdict, predicted letter): correct | wrong | unparseable | bad_reference."""
    gold = reference.strip().strip("()").upper()
    if len(gold) != 1 or gold not in LETTERS:
        return "bad_reference", None
    pred = extract_letter(answer or "")
    if pred is None:
        return "unparseable", None
    return ("correct" if pred == gold else "wrong"), pred
