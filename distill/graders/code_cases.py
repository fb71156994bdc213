"""Programs labelled by what each code set's reference harness answers: the graders' own cases and rows in each
set's published layout. `distill verify --report` and the tests grade them both ways.

Each case: (set, reference row, program, the reference harness's verdict, why). The verdicts were read off the
harness sources named in distill.graders.rules.RULES (e.g. APPS's check5 compares lines as sets of tokens, so line
order is free; TACO compares the stripped whole output; LiveCodeBench sets builtins.exit to None).
"""

from __future__ import annotations

import base64
import json
import pickle
import zlib

ADD = "a, b = map(int, input().split())\n"

# ---------------------------------------------------------------- the graders' own cases, one problem per rule

# open-r1/codeforces layout; an input with CRLF line ends, as some codeforces tests have
CF_PARITY = {
    "id": "9999A",
    "time_limit": 2.0,
    "memory_limit": 64.0,
    "input_mode": "stdio",
    "generated_checker": None,
    "official_tests": [{"input": "1 3\r\n", "output": "YES\r\n"}, {"input": "2 3\n", "output": "NO\n"}],
}
PARITY = "print('YES' if (a + b) % 2 == 0 else 'NO')"
CF_DEEP = {
    **CF_PARITY,
    "id": "9999C",
    "memory_limit": 256.0,
    "official_tests": [{"input": "100000\n", "output": "100000\n"}],
}
DEEP = (  # lru_cache calls through C: each level a C stack frame, past the default 8 MB stack
    "import sys\nfrom functools import lru_cache\nsys.setrecursionlimit(10 ** 6)\n@lru_cache(None)\n"
    "def depth(n):\n    return 0 if n == 0 else 1 + depth(n - 1)\nprint(depth(int(input())))"
)
# a float answer judged by the problem's checker (checker text ours, called as the piston run script calls it:
# python checker.py input correct_output solution_output; "1" on stdout accepts)
CF_CHECKER = {
    "id": "9999B",
    "time_limit": 2.0,
    "memory_limit": 256.0,
    "input_mode": "stdio",
    "generated_checker": "import sys\n_, cor, out = sys.argv[1:]\n"
    "print(1 if abs(float(open(out).read()) - float(open(cor).read())) <= 1e-6 else 0)\n",
    "official_tests": [{"input": "3\n", "output": "0.3333333333\n"}],
}
APPS_IO = {"input_output": json.dumps({"inputs": ["1 2\n"], "outputs": ["1 2\n3\n"]})}
APPS_CALL = {"input_output": json.dumps({"fn_name": "f", "inputs": [[1, 2]], "outputs": [[3]]})}
LCB_ADD = {
    "public_test_cases": json.dumps([{"input": "1 2\n", "output": "3\n", "testtype": "stdin"}]),
    "private_test_cases": json.dumps([{"input": "1.5 2.25\n", "output": "3.75\n", "testtype": "stdin"}]),
    "metadata": "{}",
}
LCB_PAIR = {
    "public_test_cases": json.dumps([{"input": "1\n2", "output": "[1, 2]", "testtype": "functional"}]),
    "private_test_cases": "",
    "metadata": json.dumps({"func_name": "pair"}),
}
LCB_NESTED = {
    **LCB_PAIR,
    "public_test_cases": LCB_PAIR["public_test_cases"].replace('"[1, 2]"', '"[[1, 2]]"'),
}
GLOBAL_TOTAL = "total = 0\ndef add(x):\n    global total\n    total += x\nadd(3)\nprint('1 2')\nprint(total)"
MAIN = "def main():\n    a, b = map(float, input().split())\n    print(f'{a + b:g}')\n"
FLOAT_ADD = "a, b = map(float, input().split())\n"
PAIR = "class Solution:\n    def pair(self, a, b):\n        return "

OWN = [  # (set, row, program, reference verdict, why)
    ("codeforces", CF_PARITY, ADD + PARITY, "correct", "YES/NO"),
    ("codeforces", CF_PARITY, ADD + PARITY.replace("YES", "yes").replace("NO", "No"), "correct", "yes/No: any case"),
    ("codeforces", CF_PARITY, "s = input()\n" + ADD.replace("input()", "s") + "print('YES' if len(s) == 3 and (a + b) % 2 == 0 else 'NO')", "correct", "CRLF stripped from the input"),
    ("codeforces", CF_PARITY, ADD + PARITY + "\nimport sys\nsys.exit(1)", "wrong", "right answer, exit 1"),
    ("codeforces", CF_PARITY, ADD + "x = bytearray(200 << 20)\n" + PARITY, "wrong", "over memory_limit 64 MB"),
    ("codeforces", CF_DEEP, DEEP, "correct", "ulimit -s unlimited: deep recursion through C frames"),
    ("codeforces", CF_CHECKER, "print(1 / int(input()))", "correct", "checker: within 1e-6"),
    ("codeforces", CF_CHECKER, "print(0.333)", "wrong", "checker: off by 3e-4"),
    ("apps", APPS_IO, "print('1 2')\nprint(3)", "correct", "same lines"),
    ("apps", APPS_IO, "print('2 1')\nprint(3)", "correct", "check5: token order in a line is free"),
    ("apps", APPS_IO, "print(3)\nprint('1 2')", "correct", "check5: lines compared as a set"),
    ("apps", APPS_IO, "print('1.0001 2')\nprint(3)", "correct", "check6: numbers rounded to 3 decimals"),
    ("apps", APPS_IO, "print(1)\nprint('2 3')", "wrong", "a differently split line"),
    ("apps", APPS_IO, "if __name__ == '__main__':\n    print('1 2\\n3')", "wrong", "runs as module tmp_sol"),
    ("apps", APPS_IO, "print('1 2\\n3')\nimport sys\nsys.exit(1)", "correct", "SystemExit is caught"),
    ("apps", APPS_IO, "print('1 2\\n3')\nraise ValueError", "wrong", "an exception fails the case"),
    ("apps", APPS_IO, "import sys\nsys.stdin.buffer.read()\nprint('1 2\\n3')", "wrong", "sys.stdin is a StringIO: no .buffer"),
    ("apps", APPS_IO, "print(open('in.txt').read().strip())\nprint(3)", "correct", "open() is mocked to read the input"),
    ("apps", APPS_IO, GLOBAL_TOTAL, "wrong", "wrapped in code(): `global total` finds no total"),
    ("apps", APPS_CALL, "def f(a, b):\n    return a + b", "correct", "output == outputs[0]"),
    ("apps", APPS_CALL, "def f(a, b):\n    return (a + b,)", "correct", "a tuple read as a list"),
    ("apps", APPS_CALL, "def f(a, b):\n    return a - b", "wrong", "another value"),
    ("taco", APPS_IO, "print('1 2')\nprint(3)", "correct", "stripped whole output"),
    ("taco", APPS_IO, "print('1 2\\r\\n3\\r')", "correct", "universal newlines"),
    ("taco", APPS_IO, "print('2 1')\nprint(3)", "wrong", "token order counts (APPS would pass it)"),
    ("taco", APPS_IO, "print(3)\nprint('1 2')", "wrong", "line order counts"),
    ("taco", APPS_IO, "if __name__ == '__main__':\n    print('1 2\\n3')", "correct", "runs as a script"),
    ("taco", APPS_IO, "print('1 2\\n3')\nimport sys\nsys.exit(1)", "wrong", "non-zero exit fails"),
    ("taco", APPS_IO, "import sys\nsys.stdin.buffer.read()\nprint('1 2\\n3')", "correct", "a real stdin"),
    ("taco", APPS_IO, GLOBAL_TOTAL, "correct", "run as written: `global` works"),
    ("taco", APPS_IO, "stdin.readline()\nstdout.write('1 2\\n3')", "correct", "its stdin/stdout aliases"),
    ("taco", APPS_CALL, "def f(a, b):\n    return a + b", "correct", "output == outputs[0]"),
    ("livecodebench", LCB_ADD, FLOAT_ADD + "print(f'{a + b:g}')", "correct", "plain-JSON private cases read"),
    ("livecodebench", LCB_ADD, FLOAT_ADD + "print(f'{a + b:.2f}')", "correct", "3.00 == 3 as Decimals"),
    ("livecodebench", LCB_ADD, FLOAT_ADD + "print(a + b)", "correct", "Decimal('3.0') == Decimal('3')"),
    ("livecodebench", LCB_ADD, FLOAT_ADD + "print(a, b)", "wrong", "another output"),
    ("livecodebench", LCB_ADD, FLOAT_ADD + "print(f'{a + b:g}')\nimport sys\nsys.exit(1)", "correct", "sys.exit ends the call"),
    ("livecodebench", LCB_ADD, FLOAT_ADD + "print(f'{a + b:g}')\nexit(0)", "wrong", "builtins.exit is None"),
    ("livecodebench", LCB_ADD, "print(3)", "wrong", "hard-coded first answer"),
    ("livecodebench", LCB_ADD, "import sys\na, b = map(float, sys.stdin.buffer.read().split())\nprint(a + b)", "wrong", "no sys.stdin.buffer"),
    ("livecodebench", LCB_ADD, FLOAT_ADD.replace("input()", "open('in.txt').read()") + "print(a + b)", "wrong", "its module binds open at load, before the mock"),
    ("livecodebench", LCB_ADD, MAIN + "if __name__ == '__main__':\n    main()", "correct", "clean_if_name: a last __main__ block runs"),
    ("livecodebench", LCB_ADD, MAIN + "if __name__ == '__main__':\n    main()\nDONE = True", "wrong", "not last: runs as tmp_sol, prints nothing"),
    ("livecodebench", LCB_ADD, FLOAT_ADD + "def total():\n    global a, b\n    return a + b\nprint(f'{total():g}')", "wrong", "make_function: a and b are wrapped_function's locals"),
    ("livecodebench", LCB_PAIR, PAIR + "(a, b)", "correct", "a tuple read as a list"),
    ("livecodebench", LCB_NESTED, PAIR + "[(a, b)]", "wrong", "a tuple inside a list is not a list"),
    ("livecodebench", LCB_NESTED, PAIR + "[[a, b]]", "correct", "lists all the way"),
]  # fmt: skip

# ---------------------------------------------------------------- rows in each set's published layout


def lcb_blob(cases: list[dict]) -> str:
    """private_test_cases as code_generation_lite publishes most of them: base64(zlib(pickle(JSON text)))."""
    return base64.b64encode(zlib.compress(pickle.dumps(json.dumps(cases)))).decode()


# open-r1/codeforces, columns as on its card (id ... generated_tests); problem 4A "Watermelon", tests from its
# statement and official tests
CF_4A = {
    "id": "4A",
    "aliases": None,
    "contest_id": "4",
    "contest_name": "Codeforces Beta Round 4 (Div. 2 Only)",
    "contest_type": "ICPC",
    "contest_start": 1268395200,
    "contest_start_year": 2010,
    "index": "A",
    "time_limit": 1.0,
    "memory_limit": 64.0,
    "title": "Watermelon",
    "description": "One hot summer day Pete and his friend Billy decided to buy a watermelon...",
    "input_format": "The first (and the only) input line contains integer number w (1 ≤ w ≤ 100)",
    "output_format": "Print YES, if the boys can divide the watermelon into two parts, each of them weighing "
    "even number of kilos; and NO in the opposite case.",
    "interaction_format": None,
    "note": None,
    "examples": [{"input": "8\n", "output": "YES\n"}],
    "editorial": None,
    "rating": 800,
    "tags": ["brute force", "math"],
    "testset_size": 20,
    "official_tests": [
        {"input": "8\r\n", "output": "YES\r\n"},
        {"input": "5\r\n", "output": "NO\r\n"},
        {"input": "4\r\n", "output": "YES\r\n"},
        {"input": "2\r\n", "output": "NO\r\n"},
        {"input": "100\r\n", "output": "YES\r\n"},
    ],
    "official_tests_complete": True,
    "input_mode": "stdio",
    "generated_checker": None,
    "executable": True,
    "generated_tests": 31,  # a count: the generated tests are files of their own
}
# problem 120A "Elevator or not": School Regional Team Contest, Saratov 2011 read input.txt and wrote output.txt
CF_120A = {
    **CF_4A,
    "id": "120A",
    "contest_id": "120",
    "index": "A",
    "title": "Elevator",
    "time_limit": 1.0,
    "memory_limit": 256.0,
    "official_tests": [
        {"input": "front\n1\n", "output": "L\n"},
        {"input": "back\n1\n", "output": "R\n"},
        {"input": "back\n2\n", "output": "L\n"},
    ],
    "input_mode": "file",
}
# codeparrot/apps columns (problem_id, question, solutions, input_output, difficulty, url, starter_code)
APPS_ROW = {
    "problem_id": 4001,
    "question": "Given n and a list of n integers, print their sum.",
    "solutions": json.dumps(["n = int(input())\nprint(sum(map(int, input().split())))"]),
    "input_output": json.dumps({"inputs": ["3\n1 2 3\n", "1\n-5\n"], "outputs": ["6\n", "-5\n"]}),
    "difficulty": "introductory",
    "url": "https://codeforces.com/problemset/problem/0/A",
    "starter_code": "",
}
# BAAI/TACO columns (question ... input_output, time_limit, memory_limit, ...)
TACO_ROW = {
    "question": "Print the largest of n integers.",
    "solutions": json.dumps(["input()\nprint(max(map(int, input().split())))"]),
    "starter_code": "",
    "input_output": json.dumps({"inputs": ["3\n1 7 3\n"], "outputs": ["7\n"]}),
    "difficulty": "EASY",
    "raw_tags": "['Implementation']",
    "name": None,
    "source": "codeforces",
    "tags": ["Implementation"],
    "skill_types": [],
    "url": "https://codeforces.com/problemset/problem/0/B",
    "Expected Auxiliary Space": None,
    "time_limit": "1 second",
    "date": "2021-05-05",
    "picture_num": "0",
    "memory_limit": "256 megabytes",
    "Expected Time Complexity": None,
}
# livecodebench/code_generation_lite columns; a LeetCode problem with its private cases compressed
LCB_ROW = {
    "question_title": "Two Sum",
    "question_content": "Return the indices of the two numbers that add up to target.",
    "platform": "leetcode",
    "question_id": "1",
    "contest_id": "weekly-contest-1",
    "contest_date": "2024-09-01T00:00:00",
    "starter_code": "class Solution:\n    def twoSum(self, nums: List[int], target: int) -> List[int]:\n        ",
    "difficulty": "easy",
    "public_test_cases": json.dumps(
        [{"input": "[2, 7, 11, 15]\n9", "output": "[0, 1]", "testtype": "functional"}]
    ),
    "private_test_cases": lcb_blob([{"input": "[3, 2, 4]\n6", "output": "[1, 2]", "testtype": "functional"}]),
    "metadata": json.dumps({"func_name": "twoSum"}),
}
TWO_SUM = """class Solution:
    def twoSum(self, nums: List[int], target: int) -> List[int]:
        seen = {}
        for i, x in enumerate(nums):
            if target - x in seen:
                return RESULT
            seen[x] = i
"""

REAL = [  # (set, row, program, reference verdict, why)
    ("codeforces", CF_4A, "w = int(input())\nprint('YES' if w % 2 == 0 and w > 2 else 'NO')", "correct", "accepted solution"),
    ("codeforces", CF_4A, "w = int(input())\nprint('yes' if w % 2 == 0 and w > 2 else 'no')", "correct", "lower case"),
    ("codeforces", CF_4A, "w = int(input())\nprint('YES' if w % 2 == 0 else 'NO')", "wrong", "fails w = 2"),
    ("codeforces", CF_120A, "d, r = open('input.txt').read().split()\nopen('output.txt', 'w').write('L' if (d == 'front') == (r == '1') else 'R')", "correct", "input.txt / output.txt"),
    ("codeforces", CF_120A, "d, r = input(), input()\nprint('L' if (d == 'front') == (r == '1') else 'R')", "wrong", "reads stdin in file mode"),
    ("apps", APPS_ROW, "n = int(input())\nprint(sum(map(int, input().split())))", "correct", "the row's own solution"),
    ("apps", APPS_ROW, "n = int(input())\nprint(sum(map(int, input().split())) + (n == 1))", "wrong", "wrong on case 2"),
    ("taco", TACO_ROW, "input()\nprint(max(map(int, input().split())))", "correct", "the row's own solution"),
    ("taco", TACO_ROW, "input()\nprint(max(map(int, input().split())), end=' ')", "correct", "trailing space stripped"),
    ("taco", TACO_ROW, "input()\nprint(min(map(int, input().split())))", "wrong", "another answer"),
    ("livecodebench", LCB_ROW, TWO_SUM.replace("RESULT", "[seen[target - x], i]"), "correct", "accepted solution"),
    ("livecodebench", LCB_ROW, TWO_SUM.replace("RESULT", "(seen[target - x], i)"), "correct", "a tuple, read as a list"),
    ("livecodebench", LCB_ROW, TWO_SUM.replace("RESULT", "[i, seen[target - x]]"), "wrong", "indices swapped"),
]  # fmt: skip


def reference_of(bench: str, row: dict, where: str) -> dict:
    """The reference distill builds from a row of `bench`, with the set's own reader."""
    from distill.graders.stdio import from_apps, from_codeforces, from_livecodebench

    if bench == "codeforces":
        return from_codeforces(row, where)
    if bench == "livecodebench":
        return from_livecodebench(row, where)
    return from_apps(row, where, bench)
