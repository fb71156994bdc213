"""Bench: stdin/stdout grading in the sandbox (cases forked in parallel) vs the same programs run serially with subprocess.

    .venv/bin/python bench/graders.py [--problems 8] [--cases 12] [--workers 2]

Both sides run the same programs on the same inputs with the same per-case limit and the same output rule
(distill.graders.stdio.same_output), and must reach the same verdicts. The baseline is what a plain harness
does: one `python -c PROGRAM` per case, stdin piped, `timeout=` the limit, one case after another, stop at the
first failure. distill runs one sandbox per program (namespaces, read-only host, rlimits) with `--workers`
programs at a time and the cases forked inside it. Prints the ratio baseline seconds / distill seconds
(goal >= 1x: the sandbox costs nothing in speed).
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# (name, correct program, buggy program, input maker, answer): a few typical competitive-programming shapes
SUM = "n = int(input())\nprint(sum(map(int, input().split())))"
SUM_BUG = "n = int(input())\nprint(sum(map(int, input().split()[1:])))"
SORT = "input()\nprint(*sorted(map(int, input().split())))"
SORT_BUG = "input()\nprint(*sorted(map(int, input().split()), reverse=True))"
PRIMES = (
    "n = int(input())\ns = bytearray([1]) * (n + 1)\ns[0:2] = b'\\x00\\x00'\n"
    "for i in range(2, int(n ** 0.5) + 1):\n    if s[i]:\n        s[i*i::i] = bytearray(len(s[i*i::i]))\nprint(sum(s))"
)
PRIMES_SLOW = "n = int(input())\nprint(sum(all(k % d for d in range(2, k)) for k in range(2, n + 1)))"
MEAN = "import sys\nxs = list(map(float, sys.stdin.read().split()[1:]))\nprint(f'{sum(xs) / len(xs):.6f}')"
MEAN_BUG = "import sys\nxs = list(map(float, sys.stdin.read().split()[1:]))\nprint(round(sum(xs) / len(xs)))"


def _numbers(rng: random.Random, n: int) -> list[int]:
    return [rng.randint(-1000, 1000) for _ in range(n)]


def problems(count: int, cases: int, seed: int = 0) -> list[tuple[dict, str, str]]:
    """(reference, correct program, other program) triples with `cases` random cases each."""
    from distill.graders.stdio import from_codeforces

    rng = random.Random(seed)
    shapes = [
        (SUM, SUM_BUG, lambda xs: f"{sum(xs)}\n"),
        (SORT, SORT_BUG, lambda xs: " ".join(map(str, sorted(xs))) + "\n"),
        (MEAN, MEAN_BUG, lambda xs: f"{sum(xs) / len(xs):.6f}\n"),
    ]
    out = []
    for p in range(count):
        if p % 4 == 3:  # a primes problem: the slow program runs out of time on the big cases
            tests = [{"input": f"{n}\n", "output": f"{_count_primes(n)}\n"} for n in _prime_sizes(rng, cases)]
            ref = from_codeforces(
                {"official_tests": tests, "time_limit": 1.0, "memory_limit": 256.0}, f"bench problem {p}"
            )
            out.append((ref, PRIMES, PRIMES_SLOW))
            continue
        good, bad, answer = shapes[p % len(shapes)]
        tests = []
        for _ in range(cases):
            xs = _numbers(rng, rng.randint(1, 2000))
            tests.append({"input": f"{len(xs)}\n{' '.join(map(str, xs))}\n", "output": answer(xs)})
        row = {
            "official_tests": tests,
            "time_limit": 1.0,
            "memory_limit": 256.0,
        }  # open-r1/codeforces columns
        out.append((from_codeforces(row, f"bench problem {p}"), good, bad))
    return out


def _prime_sizes(rng: random.Random, cases: int) -> list[int]:
    return [rng.randint(10, 200) for _ in range(cases - 1)] + [20000]


def _count_primes(n: int) -> int:
    return sum(all(k % d for d in range(2, int(k**0.5) + 1)) for k in range(2, n + 1))


def main() -> None:
    from distill.graders.report import plain_stdio_harness
    from distill.graders.sandbox import sandbox_available
    from distill.graders.stdio import grade_many

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--problems", type=int, default=8, help="problems, each with a right and a wrong program"
    )
    parser.add_argument("--cases", type=int, default=12, help="test cases per problem")
    parser.add_argument("--workers", type=int, default=2, help="sandboxes at once (the machine's cores)")
    args = parser.parse_args()
    if not sandbox_available():
        sys.exit("the sandbox cannot run here (no namespaces): nothing to compare")
    items = [(ref, code) for ref, good, bad in problems(args.problems, args.cases) for code in (good, bad)]
    start = time.perf_counter()
    base = [plain_stdio_harness(ref, code) for ref, code in items]
    base_s = time.perf_counter() - start
    start = time.perf_counter()
    ours = [r.verdict for r in grade_many(items, workers=args.workers)]
    ours_s = time.perf_counter() - start
    print(f"{len(items)} programs x {args.cases} cases, per-case limit 1 s, verdicts {dict(_count(ours))}")
    print(f"serial subprocess + timeout: {base_s:.2f} s")
    print(f"distill sandbox, {args.workers} workers, cases forked: {ours_s:.2f} s")
    same = base == ours
    print(f"same verdicts: {same}" + ("" if same else f" (baseline {base}, distill {ours})"))
    print(f"ratio (baseline / distill): {base_s / ours_s:.2f}x")
    if not same:
        sys.exit(1)


def _count(verdicts: list[str]) -> dict[str, int]:
    return {v: verdicts.count(v) for v in sorted(set(verdicts))}


if __name__ == "__main__":
    main()
