"""Dedup (exact + MinHash-LSH) and n-gram decontamination, on inline texts and the real benchmark files."""

from __future__ import annotations

import random

import numpy as np
import pytest

from distill.curate import decontam, dedup


def bench(*problems: str, name: str = "bench") -> dict[str, list[dict]]:
    return {name: [{"prompt_id": f"{name}/{i}", "problem": p} for i, p in enumerate(problems)]}


def test_exact_duplicates_normalise_formatting():
    texts = ["What is 2+2?", "what is  2 + 2 ?", "What is 2+3?", "WHAT IS 2+2?"]
    assert dedup.exact_duplicates(texts) == [None, 0, None, 0]


def test_near_duplicates():
    rng = random.Random(0)
    vocab = [f"word{i}" for i in range(3000)]
    base = [" ".join(rng.choice(vocab) for _ in range(60)) for _ in range(200)]
    one_word = [t.replace(t.split()[30], "changed", 1) for t in base[:50]]  # Jaccard ~0.85 on 5-word shingles
    rewritten = [" ".join(rng.choice(vocab) for _ in range(60)) for _ in range(50)]
    out = dedup.near_duplicates(base + one_word + rewritten, threshold=0.7)
    assert out[:200] == [None] * 200
    assert out[200:250] == list(range(50))  # each edited copy points at its original
    assert out[250:] == [None] * 50
    assert dedup.near_duplicates(["tiny", "tiny", "other"], 0.8) == [None, 0, None]  # shorter than a shingle


def rensa_lsh_reference(texts: list[str], threshold: float, num_perm: int = 128) -> list[int | None]:
    """The previous implementation: rensa's RMinHashLSH over the kept texts, candidates in index order."""
    from rensa import RMinHash, RMinHashLSH

    lsh = RMinHashLSH(threshold, num_perm, dedup.lsh_bands(threshold, num_perm))
    kept: dict[int, RMinHash] = {}
    out: list[int | None] = []
    for i, mh in enumerate(RMinHash.from_token_sets([dedup.shingles(t, 5) for t in texts], num_perm, 0)):
        out.append(next((c for c in sorted(lsh.query(mh)) if mh.jaccard(kept[c]) >= threshold), None))
        if out[-1] is None:
            lsh.insert(i, mh)
            kept[i] = mh
    return out


def test_near_duplicates_equal_the_rensa_lsh_reference():
    """Edits of 1-8 words (Jaccard ~0.3-0.95), chains of edits, a shared template (many kept texts in one
    bucket), 150 identical copies (one huge bucket), short and empty texts: same answer as rensa's LSH."""
    rng = random.Random(3)
    vocab = [f"w{i}" for i in range(400)]
    texts = [" ".join(rng.choice(vocab) for _ in range(40)) for _ in range(150)]
    for _ in range(250):
        words = rng.choice(texts).split()
        for _ in range(rng.randint(1, 8)):
            words[rng.randrange(len(words))] = rng.choice(vocab)
        texts.append(" ".join(words))
    template = "a farmer has some apples and sells them at the market every day of the week for"
    texts += [
        f"{template} {' '.join(rng.choice(vocab) for _ in range(rng.randint(1, 6)))}" for _ in range(80)
    ]
    texts += ["", "tiny", "two words", "tiny", ""]
    copies = [texts[7]] * 150 + [None] * (len(texts) - 150)  # interleaved: copy 0 (index 1) comes first
    texts = [t for pair in zip(texts, copies, strict=True) for t in pair if t is not None]
    for threshold in (0.5, 0.7, 0.8, 0.9):
        out = dedup.near_duplicates(texts, threshold)
        assert out == rensa_lsh_reference(texts, threshold), threshold
        assert 150 < sum(o is not None for o in out) < len(texts) - 150  # neither nothing nor everything
        assert out.count(1) >= 150  # the 149 later copies and the original (index 14) name copy 0


def test_band_keys_equal_exactly_when_bands_equal():
    rng = np.random.default_rng(0)
    band = rng.integers(0, 4, size=(2000, 5), dtype=np.uint32)  # 1024 possible bands: many repeats
    keys = dedup.band_keys(band).tolist()
    same_band = {tuple(r): k for r, k in zip(band.tolist(), keys, strict=True)}
    assert len(set(same_band.values())) == len(same_band)  # distinct bands, distinct keys
    assert all(same_band[tuple(r)] == k for r, k in zip(band.tolist(), keys, strict=True))


def test_normalize_equals_the_regex_definition():
    """The fast normalize (str.split, callable repl) is the original regex pipeline, char for char."""
    import re
    import unicodedata

    def reference(text: str) -> str:
        text = unicodedata.normalize("NFKC", text).lower()
        return re.sub(r"\s+", " ", re.sub(r"\s*([^\w\s])\s*", r"\1", text)).strip()

    rng = random.Random(4)
    alphabet = list(" \t\n\u00a0\u2003\u3000\x1c,.;:!?()-+=$\\{}aZ9é数ﬁ①_'\"")
    for _ in range(20_000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 12)))
        assert dedup.normalize(text) == reference(text), repr(text)


def test_lsh_bands_reach_recall():
    for threshold in (0.5, 0.7, 0.8, 0.9):
        bands = dedup.lsh_bands(threshold, 128)
        rows = 128 // bands
        assert 1 - (1 - threshold**rows) ** bands >= 0.9


def test_docstring_example_n3():
    index = decontam.build_index(
        bench("Find the value of $x$ if $2x = 6$.", "Unrelated words about cats here."), 3
    )
    found, _ = decontam.find_contamination(
        ["Compute the value of x.", "A fresh problem about dogs."], index, 0.5
    )
    assert found[0]["benchmark"] == "bench" and found[0]["ngram"] in {"the value of", "value of x"}
    assert found[1] is None


def naive_ngrams(text: str, n: int) -> set[tuple[str, ...]]:
    ws = decontam.words(text)
    return {tuple(ws[i : i + n]) for i in range(len(ws) - n + 1)}


def test_vectorised_hashes_match_a_naive_implementation():
    """Window hashes agree with plain-Python word tuples: equal windows equal, different windows different."""
    rng = random.Random(1)
    vocab = [
        "alpha",
        "beta,",
        "(gamma)",
        "delta",
        "x",
        "17",
        "über",
        "数学",
        "sum",
        "of",
        "the",
        "\\frac{1}{2}",
    ]
    docs = [" ".join(rng.choice(vocab) for _ in range(rng.randint(0, 30))) for _ in range(300)]
    n = 4
    tok = decontam.tokenize(docs)
    h, doc, start = decontam.ngram_hashes(tok, n)
    assert len(h) == sum(max(0, len(decontam.words(d)) - n + 1) for d in docs)
    by_tuple: dict[tuple, int] = {}
    for hv, d, s in zip(h.tolist(), doc.tolist(), start.tolist(), strict=True):
        key = tuple(tok.text(s, s + n - 1).split())
        assert len(key) == n and " ".join(key) in " ".join(decontam.words(docs[d]))  # inside its own document
        assert by_tuple.setdefault(key, hv) == hv
    assert len(set(by_tuple.values())) == len(by_tuple)
    full = decontam.full_text_hashes(tok).tolist()
    for i, j in [(0, 1), (2, 3), (5, 9)]:
        assert (full[i] == full[j]) == (decontam.words(docs[i]) == decontam.words(docs[j]))
    assert (
        decontam.full_text_hashes(decontam.tokenize(["b a", "a b", "A, b!"])).tolist()[1:]
        == [decontam.full_text_hashes(decontam.tokenize(["a b"])).tolist()[0]] * 2
    )


def test_boilerplate_in_the_training_corpus_does_not_count():
    index = decontam.build_index(
        bench("Let m and n be coprime; what is the value of the sum of all such m + n here"), 8
    )
    phrase = "what is the value of the sum of all"
    corpus = [f"Problem {i}: {phrase} integers below {i}?" for i in range(20)] + ["A fresh question."]
    found, boilerplate = decontam.find_contamination(corpus, index, max_corpus_df=0.001)
    assert found == [None] * 21 and boilerplate > 0  # in 20 of 21 prompts: phrasing, not a leak
    found, _ = decontam.find_contamination(corpus[:1] + ["A fresh question."], index, max_corpus_df=0.001)
    assert found[0] is not None  # the same n-gram in one prompt only: contamination


def test_benchmark_templates_and_notation_are_not_indexed():
    template = "Express your answer as a common fraction in lowest terms please"
    index = decontam.build_index(bench(*(f"Problem {w} is different. {template}" for w in "abc")), 8)
    assert decontam.find_contamination([f"My own question. {template}"], index, 0.001)[0] == [None]
    numbers = decontam.build_index(bench("List 0 1 2 3 4 5 6 7 8 9 10 11 and stop"), 8)
    assert decontam.find_contamination(["0 1 2 3 4 5 6 7 8 9"], numbers, 0.001)[0] == [None]


def test_verbatim_short_copy_counts():
    index = decontam.build_index(bench("Compute $\\dbinom{31}{28}$."), 8)
    found, _ = decontam.find_contamination(
        ["compute \\dbinom{31}{28}", "compute \\dbinom{31}{27}"], index, 0.001
    )
    assert found[0]["item"] == "bench/0" and found[1] is None


def test_trace_groups_count_prompts_not_samples():
    index = decontam.build_index(bench("alpha beta gamma delta epsilon zeta eta theta iota kappa"), 8)
    traces = ["we recall alpha beta gamma delta epsilon zeta eta theta now"] * 8  # 8 samples of one prompt
    hits, exact, n = decontam.scan([traces], index)
    by_row, _ = decontam.decide(hits, exact, n, index, 0.001)
    by_prompt, _ = decontam.decide(hits, exact, n, index, 0.001, groups=["p"] * 8)
    assert len(by_row) == 0 and len(by_prompt) == 8


def test_real_benchmarks(data_dir):
    """MATH-500 problems are caught, paraphrase-free GSM8K train is (nearly) clean; the report names versions."""
    from distill.data import load_prompts

    index = decontam.load_index(["math500", "aime24", "gpqa_diamond", "humaneval"], 8)
    leaked = load_prompts("math500", "test", limit=100) + load_prompts("aime24", "test", limit=10)
    clean = load_prompts("gsm8k", "train", limit=2000)
    rows = leaked + clean
    found, boiler = decontam.find_contamination([r["problem"] for r in rows], index, 0.001)
    rep = decontam.report(found, [r["prompt_id"] for r in rows], index, boiler)
    assert all(f is not None for f in found[:110])
    assert sum(f is not None for f in found[110:]) <= 2
    assert rep["benchmarks"]["math500"]["hits"] >= 100 and rep["benchmarks"]["aime24"]["hits"] >= 10
    assert len(rep["benchmarks"]["math500"]["sha256"]) == 16 and rep["benchmarks"]["math500"]["items"] == 500
    assert rep["benchmarks"]["math500"]["examples"][0]["ngram"]


def test_training_source_needs_a_held_out_split(data_dir):
    from distill.data import load_prompts
    from distill.errors import DistillError

    with pytest.raises(DistillError, match="'gsm8k:test'"):
        decontam.load_index(["gsm8k"], 8)
    index = decontam.load_index(["gsm8k:test"], 8)  # a held-out split named inline, as demo-cpu.yaml does
    assert index.versions["gsm8k:test"]["items"] == 1319
    rows = load_prompts("gsm8k", "test", limit=5) + load_prompts("gsm8k", "train", limit=200)
    found, _ = decontam.find_contamination([r["problem"] for r in rows], index, 0.001)
    assert (
        all(found[:5]) and sum(f is not None for f in found[5:]) <= 6
    )  # phrasing a 200-prompt corpus cannot tell


def test_benchmark_versions_are_part_of_curate_inputs(data_dir):
    from distill.curate.decontam import benchmarks_digest

    assert benchmarks_digest(["aime24", "math500"]) == benchmarks_digest(["aime24", "math500"])
    assert benchmarks_digest(["aime24"]) != benchmarks_digest(["aime25"])
    assert benchmarks_digest(["arith:test"]) != benchmarks_digest(["arith:train"])
