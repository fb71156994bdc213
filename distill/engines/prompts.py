"""R1 usage rules: the directive in the user turn, no system prompt, chat-template rendering, `<think>\\n` prefill.

DeepSeek's README for R1: temperature 0.6, top-p 0.95, no system prompt (all instructions in the user turn),
"Please reason step by step, and put your final answer within \\boxed{}." for math, and force the response to
begin with "<think>\\n". The sampling numbers live in GenerateConfig; this module builds the prompt itself.

Templates that inject a default system prompt when the chat has none (SmolLM2's ChatML template adds
"You are a helpful AI assistant named SmolLM, ..."; Qwen2.5's adds "You are Qwen, ...") do so here too: we send no
system message, `prompt_text` records exactly what the template rendered, and `default_system_prompt(tok)`
reports the injected text. To suppress it, set `generate.system_prompt: ""`: an explicit empty system turn
replaces the default (for ChatML: "<|im_start|>system\\n<|im_end|>\\n"). The R1 template injects nothing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from distill.config import GenerateConfig, TeacherConfig
from distill.engines.backends import GenRequest
from distill.errors import DistillError
from distill.release import THINK, THINK_OPEN

DOMAINS = ("math", "code", "mcq", "general")
_PROBE_USER = "\x00distill-user-probe\x00"
_PROBE_SYSTEM = "\x00distill-system-probe\x00"


def directive(domain: str, cfg: GenerateConfig) -> str:
    """The instruction appended to a problem of this domain ("" for general prompts)."""
    return {"math": cfg.math_directive, "code": cfg.code_directive, "mcq": cfg.mcq_directive}.get(domain, "")


def user_content(problem: str, domain: str, cfg: GenerateConfig) -> str:
    """Problem plus its directive, separated by a blank line. A directive containing "{problem}" is a
    template instead (for instructions that must come first, as simple-evals' GPQA prompt does)."""
    text = directive(domain, cfg)
    if not text:
        return problem
    if "{problem}" in text:
        return text.replace("{problem}", problem)
    return f"{problem}\n\n{text}"


def build_messages(problem: str, domain: str, cfg: GenerateConfig) -> list[dict[str, str]]:
    """The exact chat sent to the teacher: one user turn; a system turn only if the recipe sets one."""
    messages = [{"role": "user", "content": user_content(problem, domain, cfg)}]
    if cfg.system_prompt is not None:
        messages.insert(0, {"role": "system", "content": cfg.system_prompt})
    return messages


def render(tokenizer: Any, messages: list[dict[str, str]], force_think: bool) -> str:
    """The chat template with the generation prompt, then "<think>\\n" unless the template already ends with it."""
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    if force_think and not text.endswith(THINK_OPEN):
        text += "\n" if text.endswith(THINK) else THINK_OPEN
    return text


def prefilled(prompt_text: str) -> bool:
    """True when the opening think tag is part of the prompt, so the completion starts inside the thought."""
    return prompt_text.endswith((THINK_OPEN, THINK))


def default_system_prompt(tokenizer: Any) -> str | None:
    """The system text the template injects when the chat has no system turn, or None.

    Render [user] and [system=S, user]; split the second at S into head + S + tail. A template that injects
    a default D renders the first as head + D + tail (ChatML); one that injects nothing renders head + tail
    (R1: "<bos>" + "<｜User｜>..." either way)."""
    user = {"role": "user", "content": _PROBE_USER}
    bare = tokenizer.apply_chat_template([user], tokenize=False, add_generation_prompt=False)
    with_sys = tokenizer.apply_chat_template(
        [{"role": "system", "content": _PROBE_SYSTEM}, user], tokenize=False, add_generation_prompt=False
    )
    if _PROBE_SYSTEM not in with_sys:  # the template drops system turns altogether
        return None
    head, tail = with_sys.split(_PROBE_SYSTEM, 1)
    if bare.startswith(head) and bare.endswith(tail) and len(bare) > len(head) + len(tail):
        return bare[len(head) : len(bare) - len(tail)]
    return None


def load_teacher_tokenizer(teacher: TeacherConfig) -> Any | None:
    """The tokenizer that renders prompts: teacher.tokenizer, else the model's own (vllm backend).
    None for an openai teacher without one: the server's chat template renders (chat API)."""
    from distill.models import load_tokenizer, resolve_model

    if teacher.tokenizer is None and teacher.backend != "vllm":
        return None
    tok = load_tokenizer(resolve_model(teacher.tokenizer or teacher.model))
    if teacher.chat_template is not None:
        path = Path(teacher.chat_template)
        if not path.is_file():
            raise DistillError(f"teacher.chat_template: file not found: {path}")
        tok.chat_template = path.read_text()
    if not tok.chat_template:
        raise DistillError(
            f"teacher tokenizer {teacher.tokenizer or teacher.model} has no chat template; "
            "set teacher.chat_template to a .jinja file"
        )
    return tok


def make_request(tokenizer: Any | None, messages: list[dict[str, str]], force_think: bool, seed: int | None):
    """A backend request; without a tokenizer the server's chat template renders `messages` (chat API)."""
    if tokenizer is None:
        return GenRequest(messages, seed=seed)
    text = render(tokenizer, messages, force_think)
    return GenRequest(messages, text, tokenizer.encode(text, add_special_tokens=False), seed)
