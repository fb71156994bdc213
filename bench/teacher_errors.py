"""What the teacher's logits hold where its sample goes wrong, on `make demo-logit`'s arith traces.

    .venv/bin/python bench/teacher_errors.py [--run runs/demo-logit]

For every stored teacher sample (generate's shard, wrong traces included) each written result "a op b = z" is
checked against a op b. At the first digit of the first wrong result of a trace, and at the first digit of every
right result, it prints how often the teacher's top-1 is the right digit and the mean probability it gives it (raw,
and as sampled: the row's temperature and top_p, distill.logits.as_sampled). If the teacher ranked the right digit
first where its sample went wrong, its logits on wrong traces would hold what sft, which drops those traces, cannot
use; if it is confidently wrong there, a KL on those traces teaches the error.
"""

from __future__ import annotations

import argparse
import bisect
import json
import operator
import re
from pathlib import Path

import numpy as np

# ASCII operators only: the text is read in byte-level token form, where a non-ASCII "×" is two other characters
OPS = {"+": operator.add, "-": operator.sub, "*": operator.mul, "x": operator.mul}
EQUATION = re.compile(r"(\d+) ?([+\-*x]) ?(\d+) ?= ?(\d+)")


def token_text(tokenizer, ids: list[int]) -> tuple[list[str], list[int]]:
    """Each token's text (byte-level 'Ġ' / 'Ċ' as space / newline: digits and ASCII words only matter here) and
    its start offset in the joined completion."""
    toks = [t.replace("Ġ", " ").replace("Ċ", "\n") for t in tokenizer.convert_ids_to_tokens(ids)]
    return toks, [int(s) for s in np.cumsum([0] + [len(t) for t in toks])[:-1]]


def result_digits(text: str) -> list[tuple[int, str, bool]]:
    """(offset, right digit, is the written one right) at the first digit of each right result and at the first
    differing digit of the first wrong one, in order."""
    found = []
    for m in EQUATION.finditer(text):
        right = str(OPS[m[2]](int(m[1]), int(m[3])))
        z = m[4]
        if right.startswith("-"):
            continue
        if z == right:
            found.append((m.start(4), right[0], True))
            continue
        diff = next((i for i in range(min(len(z), len(right))) if z[i] != right[i]), None)
        if diff is not None:
            return [*found, (m.start(4) + diff, right[diff], False)]
    return found


def positions(row: dict, tokenizer):
    """(teacher signal, its as-sampled top-K, token index, right digit, written digit is right) per result."""
    from distill.logits import as_sampled, decode

    lp = decode(row)
    if lp is None:
        return
    s = json.loads(row["sampling"])
    sampled = as_sampled(lp.top_logprobs, s["temperature"], s["top_p"])
    toks, starts = token_text(tokenizer, lp.token_ids.tolist())
    for offset, digit, ok in result_digits("".join(toks)):
        t = bisect.bisect_right(starts, offset) - 1  # the token the offset falls in
        if toks[t].strip()[:1].isdigit():  # a token holding the digit (not one spanning a space and digits)
            yield lp, sampled, t, tokenizer.convert_tokens_to_ids(digit), ok


def summary(cases: list, name: str) -> str:
    top1 = np.mean([lp.top_ids[t][0] == d for lp, _, t, d in cases])
    raw = np.mean([np.exp(lp.top_logprobs[t][lp.top_ids[t] == d]).sum() for lp, _, t, d in cases])
    samp = np.mean([np.exp(s[t][lp.top_ids[t] == d]).sum() for lp, s, t, d in cases])
    return (
        f"{name}: {len(cases)} positions; teacher top-1 is the right digit {100 * top1:.1f}%; "
        f"p(right digit) raw {raw:.3f}, as sampled {samp:.3f}"
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", default="runs/demo-logit")
    args = p.parse_args()
    import pyarrow.parquet as pq

    from distill.models import load_tokenizer

    cases: dict[bool, list] = {True: [], False: []}
    for shard in sorted((Path(args.run) / "generate").glob("*.parquet")):
        rows = pq.read_table(shard).to_pylist()
        tokenizer = load_tokenizer(rows[0]["teacher"])  # the teacher's ids: its own tokenizer
        for row in rows:
            for lp, sampled, t, digit, ok in positions(row, tokenizer):
                cases[ok].append((lp, sampled, t, digit))
    print(summary(cases[False], "first wrong result digit of a trace"))
    print(summary(cases[True], "first digit of a right result"))


if __name__ == "__main__":
    main()
