"""Rows of the public R1 trace sets, written field by field after each set's own published description (its dataset
card's `dataset_info` features and sample rows, the dataset viewer, the publisher's processing code), not after
distill's adapters, and laid out on disk as `huggingface-cli download` / `snapshot_download` leave the set (subset
folders, Parquet shards named train-0000N-of-0000M, compressed JSONL). The texts are short stand-ins; every field
name, nesting, type, null and file layout is the publisher's. Each builder names its source.

Awkward cases kept on purpose: null verdict lists (OpenR1-Math correctness_llama / finish_reasons), a truncated
generation without </think>, a closed </think> with nothing after it, non-ASCII problems (Russian and Chinese, as
NuminaMath and AM ship them), subset folders (Mixture-of-Thoughts, OpenR1-Math), subset files (AM's .jsonl.zst).
"""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

# R1's completion format, as DeepSeek's model card and every R1 set below give it: <think>\n...\n</think>\n\nsummary
MATH_BOX = (
    "Please reason step by step, and put your final answer within \\boxed{}."  # OpenR1-Math's user prompt
)


def r1(reasoning: str, answer: str) -> str:
    return f"<think>\n{reasoning}\n</think>\n\n{answer}"


def openr1_math() -> dict[str, list[dict]]:
    """open-r1/OpenR1-Math-220k, README.md `dataset_info` (problem, solution, answer, problem_type, question_type,
    source, uuid, is_reasoning_complete: sequence bool, generations: sequence string, correctness_math_verify:
    sequence bool, correctness_llama: sequence bool, finish_reasons: sequence string, correctness_count: int64,
    messages: list {content, role}); configs default -> data/train-*, extended -> extended/train-*. The card: "we
    use Llama-3.3-70B-Instruct as a judge" only where math-verify failed, so correctness_llama and finish_reasons
    are null on many rows; 2 to 4 generations per problem."""
    first = r1("2x = 4 when x = 2.", "The answer is $\\boxed{4}$.")
    default = [
        {
            "problem": "Example 1. If $x = 2$, what is $2x$?",
            "solution": "$2x = 4$.",
            "answer": "4",
            "problem_type": "Algebra",
            "question_type": "math-word-problem",
            "source": "olympiads",
            "uuid": "c1a8f7e2-6a0e-5d8c-9a4b-3f2e1d0c9b8a",
            "is_reasoning_complete": [True, False],
            "generations": [first, "<think>\nLet x = 2. Then 2x is"],  # the second ran out of tokens
            "correctness_math_verify": [True, False],
            "correctness_llama": None,  # math-verify decided: the judge was not asked
            "finish_reasons": None,
            "correctness_count": 1,
            "messages": [{"content": "Example 1. If $x = 2$, what is $2x$?", "role": "user"},
                         {"content": first, "role": "assistant"}],
        },
        {
            "problem": "Задача 3. Найдите $n$, если $n^2 = 49$ и $n > 0$.",  # NuminaMath 1.5 keeps Russian olympiads
            "solution": "$n = 7$.",
            "answer": "7",
            "problem_type": "Algebra",
            "question_type": "math-word-problem",
            "source": "olympiads",
            "uuid": "8d3b2c1a-0f9e-5a7b-8c6d-5e4f3a2b1c0d",
            "is_reasoning_complete": [True, True, True],
            "generations": [r1("n = 7 since 7^2 = 49.", "Ответ: $\\boxed{7}$."),
                            r1("n^2 = 49, n = 7.", "$\\boxed{-7}$"),
                            r1("Taking the root: 7.", "")],  # a closed </think> with nothing after it
            "correctness_math_verify": [True, False, False],
            "correctness_llama": [True, False, None],
            "finish_reasons": ["stop", "stop", "stop"],
            "correctness_count": 1,
            "messages": [{"content": "Задача 3. Найдите $n$, если $n^2 = 49$ и $n > 0$.", "role": "user"},
                         {"content": r1("n = 7 since 7^2 = 49.", "Ответ: $\\boxed{7}$."), "role": "assistant"}],
        },
    ]  # fmt: skip
    extended = [
        {
            "problem": "Find the least positive integer $k$ with $3k \\equiv 1 \\pmod 7$.",
            "solution": "$k = 5$ since $15 = 2 \\cdot 7 + 1$.",
            "answer": "5",
            "problem_type": "Number Theory",
            "question_type": "math-word-problem",
            "source": "cn_contest",
            "uuid": "0e9d8c7b-6a5f-5e4d-9c3b-2a1f0e9d8c7b",
            "is_reasoning_complete": [True, True],
            "generations": [r1("3*5 = 15 = 2*7 + 1.", "$\\boxed{5}$"), r1("Try k = 5.", "$\\boxed{5}$")],
            "correctness_math_verify": [False, False],  # math-verify missed both; the judge said correct once
            "correctness_llama": [True, False],
            "finish_reasons": ["stop", "stop"],
            "correctness_count": 1,
            "messages": [],
        }
    ]
    return {"data/train-00000-of-00010.parquet": default, "extended/train-00000-of-00011.parquet": extended}


def mixture_of_thoughts() -> dict[str, list[dict]]:
    """open-r1/Mixture-of-Thoughts, README.md `dataset_info` (messages: list {content, role}, num_tokens: int64,
    source: string) and the viewer: code rows from open-r1/codeforces-cots (the prompt opens "You will be given a
    competitive programming problem."), math rows from open-r1/OpenR1-Math-220k, science rows from
    nvidia/Llama-Nemotron-Post-Training-Dataset (multiple choice, "A: ..."). Files: math/, code/, science/ and all/
    (every row again), each train-0000N-of-0000M.parquet. No gold answers: verified upstream."""

    def row(user: str, reasoning: str, answer: str, tokens: int, source: str) -> dict:
        return {"messages": [{"content": user, "role": "user"}, {"content": r1(reasoning, answer), "role": "assistant"}],
                "num_tokens": tokens, "source": source}  # fmt: skip

    cf = "You will be given a competitive programming problem. Please reason step by step about the solution, then "
    cf += "provide a complete implementation in C++17.\n\nYour solution must read input from standard input (cin), "
    cf += "write output to standard output (cout).\nDo not include any debug prints or additional output."
    math = [
        row(
            f"{MATH_BOX}\nIf $x = 2$, what is $2x$?",
            "2x = 4.",
            "$\\boxed{4}$",
            812,
            "open-r1/OpenR1-Math-220k",
        ),
        row(
            f"{MATH_BOX}\nLet f(x) = x² − 1. Find f(3) · ½.",
            "f(3) = 9 − 1 = 8, and 8 · ½ = 4.",
            "$\\boxed{4}$",
            640,
            "open-r1/OpenR1-Math-220k",
        ),  # non-ASCII, Latin script
        row(
            f"{MATH_BOX}\nWhat is $3^2$?", "3^2 = 9.", "", 233, "open-r1/OpenR1-Math-220k"
        ),  # nothing after </think>
    ]
    code = [
        row(f"{cf}\n\n# Problem\n\nPrint the sum of two integers a and b.", "Read a and b, print a+b.",
            "```cpp\n#include <iostream>\nint main(){long long a,b;std::cin>>a>>b;std::cout<<a+b;}\n```",
            22185, "open-r1/codeforces-cots"),
        row(f"{cf}\n\n# Problem\n\nPrint the maximum of n integers.", "Track the maximum while reading.",
            "```cpp\n#include <iostream>\nint main(){int n,x,m=-2e9;std::cin>>n;while(n--){std::cin>>x;"
            "if(x>m)m=x;}std::cout<<m;}\n```", 19066, "open-r1/codeforces-cots"),
    ]  # fmt: skip
    science = [
        row("Is it feasible to harness energy from anti-matter/matter annihilations?A: Maybe, with storage\n"
            "B: No\nC: Yes, in principle\nD: Only in stars", "Annihilation releases energy; producing antimatter "
            "costs more than it gives.", "C", 1957, "nvidia/Llama-Nemotron-Post-Training-Dataset"),
        {"messages": [{"content": "What is the upper limit of x in the integral for the triangular prism problem?",
                       "role": "user"},
                      {"content": "<think>\nThe prism's face runs from 0 to 1 - y, so", "role": "assistant"}],
         "num_tokens": 1494, "source": "nvidia/Llama-Nemotron-Post-Training-Dataset"},  # cut off: no </think>
    ]  # fmt: skip
    return {
        "math/train-00000-of-00004.parquet": math,
        "code/train-00000-of-00008.parquet": code,
        "science/train-00000-of-00002.parquet": science,
        "all/train-00000-of-00015.parquet": [*math, *code, *science],
    }


def openthoughts3() -> dict[str, list[dict]]:
    """open-thoughts/OpenThoughts3-1.2M, README.md `dataset_info` (difficulty: int64, source: string, domain:
    string, conversations: list {from, value}) and the viewer: from is "human" / "gpt", domain is math, code or
    science, the gpt turn is QwQ-32B's "<think>...</think>" text; files data/train-*.parquet. No gold answers."""

    def row(difficulty: int, source: str, domain: str, human: str, gpt: str) -> dict:
        chat = [{"from": "human", "value": human}, {"from": "gpt", "value": gpt}]
        return {"difficulty": difficulty, "source": source, "domain": domain, "conversations": chat}

    return {
        "data/train-00000-of-00120.parquet": [
            row(3, "ai2-adapt-dev/openmath-2-math", "math", "What is $2x$ if $x = 2$?", r1("2x = 4.", "$\\boxed{4}$")),
            row(7, "nvidia/OpenCodeReasoning", "code", "Write a program that prints the sum of a and b.",
                r1("Read both, add.", "```python\na, b = map(int, input().split())\nprint(a + b)\n```")),
            row(5, "organic-chemistry-questions", "science", "Which is more acidic, ethanol or phenol?",
                r1("The phenoxide ion is resonance-stabilised.", "Phenol is more acidic than ethanol.")),
            row(6, "stackexchange-physics", "science", "Why is the sky blue?", "<think>\nRayleigh scattering goes as"),
        ]
    }  # fmt: skip


def openthoughts() -> dict[str, list[dict]]:
    """open-thoughts/OpenThoughts-114k (and bespokelabs/Bespoke-Stratos-17k, the same layout), README.md
    `dataset_info` (system: string, conversations: list {from, value}); Sky-T1's system prompt and tags
    <|begin_of_thought|> / <|begin_of_solution|>; files data/train-*.parquet."""
    system = (
        "Your role as an assistant involves thoroughly exploring questions through a systematic long thinking "
        "process before providing the final precise and accurate solutions."
    )
    value = (
        "<|begin_of_thought|>\n\nx is 2, so 2x is 4.\n\n<|end_of_thought|>\n\n"
        "<|begin_of_solution|>\n\n$\\boxed{4}$\n\n<|end_of_solution|>"
    )
    chat = [
        {"from": "user", "value": "Return your final response within \\boxed{}. What is 2x if x = 2?"},
        {"from": "assistant", "value": value},
    ]
    return {"data/train-00000-of-00006.parquet": [{"system": system, "conversations": chat}]}  # fmt: skip


def s1k() -> dict[str, list[dict]]:
    """simplescaling/s1K-1.1, README.md `dataset_info` (solution, question, cot_type, source_type, metadata,
    gemini_thinking_trajectory, gemini_attempt, deepseek_thinking_trajectory, deepseek_attempt, gemini_grade,
    gemini_grade_reason, deepseek_grade, deepseek_grade_reason: all strings; grades "Yes" / "No")."""
    return {
        "data/train-00000-of-00001.parquet": [
            {"solution": "4", "question": "What is 2x if x = 2?", "cot_type": "math",
             "source_type": "AI-MO/NuminaMath-CoT/aops_forum", "metadata": "{}", "gemini_thinking_trajectory": "x=2",
             "gemini_attempt": "4", "deepseek_thinking_trajectory": "Let x = 2. Then 2x = 4.",
             "deepseek_attempt": "$\\boxed{4}$", "gemini_grade": "Yes", "gemini_grade_reason": "matches",
             "deepseek_grade": "No", "deepseek_grade_reason": "I judged it wrong."},
        ]
    }  # fmt: skip


def limo() -> dict[str, list[dict]]:
    """GAIR/LIMO, README.md (question, solution, answer; the solution is the whole chain, ending in the boxed
    answer); shipped as limo.jsonl."""
    solution = "Let x = 2.\n\nThen 2x = 4.\n\n**Final Answer**\n\\boxed{4}"
    return {"limo.jsonl": [{"question": "What is 2x if x = 2?", "solution": solution, "answer": "4"}]}


def am_r1() -> dict[str, list[dict]]:
    """a-m-team/AM-DeepSeek-R1-Distilled-1.4M, README.md "Unified Format" and its sample: messages [{role, content,
    info}], user info {source, reference_answer, test_case}, assistant info {source, think_content,
    answer_content}; the assistant content is "<think>...</think>\\n<answer>...</answer>"; configs am_0.5M ->
    am_0.5M.jsonl.zst, am_0.9M -> am_0.9M.jsonl.zst (zstd), am_0.9M_sample_1k.jsonl; Chinese and English."""

    def row(
        user: str, ref: str | None, think: str, answer: str, source: str, test_case: dict | None = None
    ) -> dict:
        content = f"<think>{think}</think>\n<answer>{answer}</answer>"
        info_user = {"source": source, "reference_answer": ref, "test_case": test_case}
        info_bot = {"source": "am-0309", "think_content": think, "answer_content": answer}
        return {"messages": [{"role": "user", "content": user, "info": info_user},
                             {"role": "assistant", "content": content, "info": info_bot}]}  # fmt: skip

    sample = row("Find the integral of \\(e^{-x} + e^{-2x} dx\\).", "-e^{-x} - \\frac{1}{2}e^{-2x} + C",
                 "Okay, let's see. Split the integral.\n", "\n\\(-e^{-x} - \\frac{1}{2}e^{-2x} + C\\)\n",
                 "natural_reasoning")  # fmt: skip
    code = row("Write a function add(a, b) that returns a + b.", None, "Just return the sum.",
               "```python\ndef add(a, b):\n    return a + b\n```", "KodCode",
               {"test_code": "assert add(1, 2) == 3", "test_entry_point": "add"})  # fmt: skip
    chinese = row(
        "写一首关于春天的短诗。", None, "用户想要一首短诗。", "春风拂面，花开满园。", "InfinityInstruct"
    )
    return {
        "am_0.9M.jsonl.zst": [sample, code],
        "am_0.5M.jsonl.zst": [chinese],
        "am_0.9M_sample_1k.jsonl": [sample],
    }


SETS = {  # adapter -> its published files
    "openr1-math": openr1_math,
    "mixture-of-thoughts": mixture_of_thoughts,
    "openthoughts3": openthoughts3,
    "openthoughts": openthoughts,
    "bespoke-stratos": openthoughts,
    "s1k": s1k,
    "limo": limo,
    "am-r1": am_r1,
}


def write_file(rows: list[dict], path: Path) -> Path:
    """rows as the file its name says: .parquet, .jsonl, .jsonl.gz or .jsonl.zst."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".parquet":
        pq.write_table(pa.Table.from_pylist(rows), path)
        return path
    data = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode()
    codec = {".gz": "gzip", ".zst": "zstd"}.get(path.suffix)
    with pa.OSFile(str(path), "wb") as f:
        if codec is None:
            f.write(data)
        else:
            with pa.CompressedOutputStream(f, codec) as out:
                out.write(data)
    return path


def train(path: str) -> list[dict]:
    return [{"split": "train", "path": path}]


# Each card's `configs` (README.md's YAML header), as published: the subsets `datasets` (and distill) read.
CONFIGS = {
    "openr1-math": [  # open-r1/OpenR1-Math-220k README.md
        {"config_name": "all", "data_files": [{"split": "default", "path": "all/default-*"},
                                              {"split": "extended", "path": "all/extended-*"}]},
        {"config_name": "default", "data_files": train("data/train-*")},
        {"config_name": "extended", "data_files": train("extended/train-*")},
    ],
    "mixture-of-thoughts": [  # open-r1/Mixture-of-Thoughts README.md
        {"config_name": name, "data_files": train(f"{name}/train-*")} for name in ("all", "code", "math", "science")
    ],
    "openthoughts3": [{"config_name": "default", "data_files": train("data/train-*")}],
    "openthoughts": [{"config_name": "default", "data_files": train("data/train-*")}],
    "bespoke-stratos": [{"config_name": "default", "data_files": train("data/train-*")}],
    "s1k": [{"config_name": "default", "data_files": train("data/train-*")}],
    "am-r1": [  # a-m-team/AM-DeepSeek-R1-Distilled-1.4M README.md
        {"config_name": "am_0.5M", "data_files": "am_0.5M.jsonl.zst"},
        {"config_name": "am_0.9M", "data_files": "am_0.9M.jsonl.zst"},
        {"config_name": "am_0.9M_sample_1k", "data_files": "am_0.9M_sample_1k.jsonl"},
    ],
}  # fmt: skip


def snapshot(adapter: str, root: Path, card: bool = True) -> Path:
    """The set's files under root, as snapshot_download leaves them (its .cache/ folder, its README.md with the
    card's configs where this file has them; card=False: a README without them); returns root."""
    import yaml

    for name, rows in SETS[adapter]().items():
        write_file(rows, root / name)
    (root / ".cache" / "huggingface").mkdir(parents=True, exist_ok=True)
    (root / ".cache" / "huggingface" / "download.metadata.json").write_text("{}")
    header = (
        f"---\n{yaml.safe_dump({'configs': CONFIGS[adapter]})}---\n" if card and adapter in CONFIGS else ""
    )
    (root / "README.md").write_text(f"{header}# {adapter}\n")
    return root
