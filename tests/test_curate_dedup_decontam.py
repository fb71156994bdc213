"""Dedup (exact + MinHash-LSH) and n-gram decontamination, on inline texts and the real benchmark files."""

from __future__ import annotations

import hashlib
import json
import random
import shutil
from collections import Counter

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


def naive_shingles(text: str, k: int = 5) -> set[str]:
    """k-word windows of a text of plain lower-case words (already normal); a shorter text is one window."""
    ws = text.split()
    return {" ".join(ws)} if len(ws) <= k else {" ".join(ws[i : i + k]) for i in range(len(ws) - k + 1)}


def naive_minhash(shingles: set[str], num_perm: int = 128) -> np.ndarray:
    """MinHash from its definition: num_perm independent hash functions (the i-th 8 bytes of each shingle's
    SHAKE-128 digest, hashlib), the minimum of each over the set."""
    digests = b"".join(hashlib.shake_128(s.encode()).digest(8 * num_perm) for s in shingles)
    return np.frombuffer(digests, np.uint64).reshape(len(shingles), num_perm).min(axis=0)


def greedy(n: int, similar) -> list[int | None]:
    """Each text names the lowest earlier kept text it is similar to (None: kept)."""
    out: list[int | None] = []
    kept: list[int] = []
    for i in range(n):
        out.append(next((j for j in kept if similar(i, j)), None))
        if out[-1] is None:
            kept.append(i)
    return out


def separated_corpus(threshold: float, margin: float = 0.15) -> list[str]:
    """Random 100-word texts, edited copies (1-12 scattered words changed, some of copies), verbatim copies and
    texts shorter than a shingle; a text is left out when its exact shingle Jaccard with an earlier one lies
    within `margin` of the threshold, so a 128-slot MinHash (sd ~0.04) decides every pair as the exact
    Jaccard does."""
    rng = random.Random(3)
    vocab = [f"w{i}" for i in range(5000)]
    pool = [" ".join(rng.choice(vocab) for _ in range(100)) for _ in range(120)]
    for _ in range(160):
        words = rng.choice(pool).split()
        for _ in range(rng.choice([1, 1, 2, 4, 6, 9, 12])):
            words[rng.randrange(len(words))] = rng.choice(vocab)
        pool.append(" ".join(words))
    pool += [pool[5]] * 3 + ["", "tiny", "two words", "tiny", ""]
    rng.shuffle(pool)
    texts: list[str] = []
    sets: list[set[str]] = []
    for text in pool:
        sh = naive_shingles(text)
        if all(abs(len(sh & o) / len(sh | o) - threshold) >= margin for o in sets):
            texts.append(text)
            sets.append(sh)
    return texts


@pytest.mark.parametrize("threshold", [0.5, 0.7])
def test_near_duplicates_equal_a_naive_minhash_and_the_exact_jaccard(threshold):
    """dedup.near_duplicates (rensa MinHash, index-free LSH) against all-pairs references written here: a
    hashlib MinHash, and the exact Jaccard of the shingle sets."""
    texts = separated_corpus(threshold)
    sets = [naive_shingles(t) for t in texts]
    sigs = [naive_minhash(s) for s in sets]
    exact = greedy(len(texts), lambda i, j: len(sets[i] & sets[j]) / len(sets[i] | sets[j]) >= threshold)
    naive = greedy(len(texts), lambda i, j: (sigs[i] == sigs[j]).mean() >= threshold)
    assert naive == exact
    out = dedup.near_duplicates(texts, threshold)
    assert out == exact
    assert 30 < sum(o is not None for o in out) < len(texts) - 100  # neither nothing nor everything


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


@pytest.mark.parametrize("threshold", [0.5, 0.7, 0.8, 0.9])
def test_pairs_at_the_threshold_become_candidates(threshold):
    """The banding's promise, measured: 300 pairs of word sets with exact Jaccard = threshold (one-word
    shingles) share an LSH bucket in >= 90% of cases."""
    union = 100
    common = round(threshold * union)
    own = (union - common) // 2
    texts = []
    for p in range(300):
        shared = [f"p{p}s{i}" for i in range(common)]
        texts += [" ".join(shared + [f"p{p}{side}{i}" for i in range(own)]) for side in "ab"]
    sigs = dedup.signatures(texts, 128, shingle=1, seed=0)
    text, bucket = dedup.band_buckets(sigs, dedup.lsh_bands(threshold, 128))
    buckets: dict[int, set[int]] = {}
    for t, b in zip(text.tolist(), bucket.tolist(), strict=True):
        buckets.setdefault(t, set()).add(b)
    found = sum(bool(buckets.get(2 * p, set()) & buckets.get(2 * p + 1, set())) for p in range(300))
    assert found >= 0.9 * 300


def test_docstring_example_n3():
    index = decontam.build_index(
        bench("Find the value of $x$ if $2x = 6$.", "Unrelated words about cats here."), 3
    )
    found, _ = decontam.find_contamination(
        ["Compute the value of x.", "A fresh problem about dogs."], index, 0.5
    )
    assert found[0]["benchmark"] == "bench" and found[0]["ngram"] in {"the value of", "value of x"}
    assert found[1] is None


def naive_words(text: str) -> list[str]:
    """Lower-cased runs of letters and digits: anything else (punctuation, LaTeX braces, spaces) separates."""
    return "".join(c if c.isalnum() else " " for c in text.lower()).split()


def naive_ngrams(text: str, n: int) -> list[tuple[str, ...]]:
    ws = naive_words(text)
    return [tuple(ws[i : i + n]) for i in range(len(ws) - n + 1)]


# words the two splitters must agree on: punctuation around words, LaTeX, digits, accents, CJK (2+ characters)
VOCAB = [
    "alpha",
    "beta,",
    "(gamma)",
    "delta",
    "x",
    "17",
    "Über",
    "数学",
    "sum",
    "of",
    "the",
    "\\frac{1}{2}",
    "Zeta!",
]


def random_docs(rng: random.Random, count: int, longest: int) -> list[str]:
    return [" ".join(rng.choice(VOCAB) for _ in range(rng.randint(0, longest))) for _ in range(count)]


def test_ngram_hashes_match_plain_word_ngrams():
    """Every document's window hashes, in order, line up with its plain-Python word n-grams: equal n-grams
    hash equal, different ones differently; whole-text hashes are equal exactly when the word lists are."""
    docs = random_docs(random.Random(1), 300, 30)
    n = 4
    h, doc, _ = decontam.ngram_hashes(decontam.tokenize(docs), n)
    by_doc: dict[int, list[int]] = {}
    for hv, d in zip(h.tolist(), doc.tolist(), strict=True):
        by_doc.setdefault(d, []).append(hv)
    hash_of: dict[tuple[str, ...], int] = {}
    for d, text in enumerate(docs):
        grams = naive_ngrams(text, n)
        assert len(by_doc.get(d, [])) == len(grams)
        for gram, hv in zip(grams, by_doc.get(d, []), strict=True):
            assert hash_of.setdefault(gram, hv) == hv
    assert len(set(hash_of.values())) == len(hash_of) > 1000
    full = decontam.full_text_hashes(decontam.tokenize(docs + ["b a", "a b", "A, b!"])).tolist()
    words = [naive_words(t) for t in docs + ["b a", "a b", "A, b!"]]
    for i in range(len(words)):
        for j in range(i + 1, len(words)):
            assert (full[i] == full[j]) == (words[i] == words[j]), (i, j)


def naive_contamination(docs: list[str], items: list[str], n: int) -> list[set[int]]:
    """For each doc, the benchmark items it leaks: a shared word n-gram that is no template (in fewer than 3
    items) and has at least half content words (2+ characters, not a number); or the item's whole text."""
    grams = [set(naive_ngrams(t, n)) for t in items]
    items_with = Counter(g for gs in grams for g in gs)

    def indexed(g: tuple[str, ...]) -> bool:
        content = sum(len(w) > 1 and not w.isdigit() for w in g)
        return items_with[g] < 3 and content >= (n + 1) // 2

    out = []
    for d in docs:
        mine = {g for g in naive_ngrams(d, n) if indexed(g)}
        leaks = {j for j, gs in enumerate(grams) if mine & gs}
        leaks |= {j for j, t in enumerate(items) if naive_words(t) and naive_words(t) == naive_words(d)}
        out.append(leaks)
    return out


def test_find_contamination_equals_plain_word_ngrams():
    """Random documents and benchmark items over a small vocabulary (many shared 4-grams, some templates,
    number-only windows, verbatim copies of short items); no boilerplate (max_corpus_df = 1)."""
    rng = random.Random(2)
    items = random_docs(rng, 40, 20) + ["alpha beta", "17 x 17"]
    docs = random_docs(rng, 300, 25) + ["Alpha, BETA!", "17 (x) 17", "alpha beta gamma"]
    n = 4
    index = decontam.build_index(
        {"bench": [{"prompt_id": f"b/{i}", "problem": t} for i, t in enumerate(items)]}, n
    )
    found, boiler = decontam.find_contamination(docs, index, max_corpus_df=1.0)
    expected = naive_contamination(docs, items, n)
    assert boiler == 0
    assert [f is not None for f in found] == [bool(e) for e in expected]
    assert 50 < sum(bool(e) for e in expected) < 250 and found[-3:-1] != [None, None] and found[-1] is None
    for d, (hit, leaks) in enumerate(zip(found, expected, strict=True)):
        if hit is not None:
            item = int(hit["item"].split("/")[1])
            assert item in leaks, d
            if naive_words(items[item]) != naive_words(docs[d]):  # an n-gram hit: the n-gram is in both
                assert tuple(hit["ngram"].split()) in set(naive_ngrams(docs[d], n)) & set(
                    naive_ngrams(items[item], n)
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
    assert [i for i, f in enumerate(found[110:]) if f is not None] == []  # none of 2000 GSM8K train
    hits = {name: b["hits"] for name, b in rep["benchmarks"].items()}
    assert hits == {"math500": 100, "aime24": 10, "gpqa_diamond": 0, "humaneval": 0}
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


def test_benchmark_digest_follows_each_item_text(data_dir, tmp_path, monkeypatch):
    """The curate input `benchmarks` changes when one item's text changes under the same benchmark name and
    item id (a corrected benchmark reruns curation), and not when the same files move."""
    from distill.curate.decontam import benchmarks_digest

    before = benchmarks_digest(["aime24", "math500"])
    shutil.copytree(data_dir / "aime24", tmp_path / "aime24")
    shutil.copytree(data_dir / "math500", tmp_path / "math500")
    monkeypatch.setenv("DISTILL_DATA_DIR", str(tmp_path))
    assert benchmarks_digest(["aime24", "math500"]) == before
    path = tmp_path / "aime24" / "test.jsonl"
    lines = path.read_text().splitlines()
    item = json.loads(lines[7])
    item["problem"] = item["problem"].replace("real numbers", "rational numbers", 1)  # one word of one item
    assert item["problem"] != json.loads(lines[7])["problem"]
    path.write_text("\n".join(lines[:7] + [json.dumps(item)] + lines[8:]) + "\n")
    assert json.loads(path.read_text().splitlines()[7])["id"] == json.loads(lines[7])["id"]
    assert benchmarks_digest(["aime24", "math500"]) != before
    assert benchmarks_digest(["arith:test"]) != benchmarks_digest(["arith:train"])
