"""Vocabulary identity for logit objectives: teacher and student must map the same ids to the same strings.

A teacher's top-K ids index the student's logits directly (no cross-tokenizer mapping), so before any logit
training distill compares the two id -> token tables. The student may extend the teacher's table (the demo's
SmolLM2 release appends the six R1 tokens after id 49151; teacher ids never point there), but every teacher id
must mean the same token in the student. Each manifest records its tokenizer's table hash.
"""

from __future__ import annotations

import hashlib
from typing import Any

from distill.errors import DistillError


def id_table(tokenizer: Any) -> list[str]:
    """Token string of every id 0 .. len(tokenizer) − 1 (added tokens included; a gap in the ids is "")."""
    tokens = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
    return [t if t is not None else "" for t in tokens]


def table_hash(table: list[str]) -> str:
    """sha256 of the id -> token table (ids implied by position); 16 hex digits, as the manifests show hashes."""
    h = hashlib.sha256()
    for token in table:
        h.update(token.encode("utf-8", "surrogatepass") + b"\x00")
    return h.hexdigest()[:16]


def vocab_hash(tokenizer: Any) -> str:
    return table_hash(id_table(tokenizer))


def first_difference(teacher: list[str], student: list[str]) -> int | None:
    """The first teacher id the student maps elsewhere (or lacks); None when the student extends the teacher."""
    for i, token in enumerate(teacher):
        if i >= len(student) or student[i] != token:
            return i
    return None


def check_same_vocab(
    teacher_tok: Any, student_tok: Any, teacher_name: str, student_name: str
) -> dict[str, str]:
    """Both table hashes, for the manifests; DistillError naming both tokenizers and the first differing id."""
    teacher, student = id_table(teacher_tok), id_table(student_tok)
    i = first_difference(teacher, student)
    if i is not None:
        found = repr(student[i]) if i < len(student) else "nothing (its vocabulary ends there)"
        raise DistillError(
            f"vocabularies differ: teacher {teacher_name} ({len(teacher)} ids) and student {student_name} "
            f"({len(student)} ids): id {i} is {teacher[i]!r} in the teacher, {found} in the student; logit "
            "objectives (train.objective kd | on_policy) need one vocabulary"
        )
    return {"teacher_vocab": table_hash(teacher), "student_vocab": table_hash(student)}
