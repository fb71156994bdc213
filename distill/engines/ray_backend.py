"""teacher.executor: ray — the teacher as Ray Data's LLM batch API (`ray.data.llm`) over a Ray cluster.

    pip install 'distill[ray]'; ray start --head (then `ray start --address=HEAD:6379` on each other node)
    RAY_ADDRESS=HEAD:6379 distill generate RECIPE --set teacher.executor=ray    # unset: a local Ray instance

Ray does the spreading of requests over the cluster, load balancing, retries and autoscaling; distill keeps its
part: it builds every request (R1 rules, token ids, seed + j, exactly the bodies the openai backend sends), keeps
its shard plan, row schema and completion markers. Each shard is one Ray Data job (one row per sample): the shard
and then its marker are written when the job returns, so a run that loses its driver or a node resumes from the
markers with nothing lost or written twice. Make shards large on a cluster (generate.shard_size: thousands of
prompts) so a job keeps every replica busy.

Processors:
- teacher.backend openai -> HttpRequestProcessorConfig against teacher.base_url (one URL: a `vllm serve`, SGLang,
  or a load balancer in front of a fleet), `teacher.concurrency` actors, `teacher.max_retries` retries.
- teacher.backend vllm -> vLLMEngineProcessorConfig (GPU clusters): `data_parallel_size` vLLM replicas inside the
  cluster, each with tensor_parallel_size x pipeline_parallel_size GPUs, fed distill's token ids (no chat-template
  or tokenize stage: distill rendered the prompt). finish_reason: "length" when max_tokens were generated.
"""

from __future__ import annotations

import json
from typing import Any

from distill.config import TeacherConfig
from distill.engines.backends import (
    Completion,
    GenRequest,
    OnDone,
    OpenAIBackend,
    SamplingSpec,
    parse_response,
)
from distill.errors import DistillError

INSTALL = "pip install 'distill[ray]' (ray[data] with ray.data.llm, Ray >= 2.44)"


def require_ray() -> Any:
    """ray with ray.data.llm, or one clear error before anything is written."""
    try:
        import ray
        import ray.data.llm  # noqa: F401
    except ImportError as err:
        raise DistillError(f"teacher.executor: ray needs Ray Data's LLM API ({err}): {INSTALL}") from None
    return ray


class RayBackend:
    """Backend protocol (generate, close) over a Ray Data LLM processor."""

    def __init__(self, teacher: TeacherConfig):
        self.ray, self.teacher = require_ray(), teacher
        if teacher.backend == "openai" and not isinstance(teacher.base_url, str):
            raise DistillError(
                "teacher.executor: ray sends to one teacher.base_url (a server, or a load balancer in front of a "
                f"fleet); got {teacher.base_url}: for a list of endpoints use executor: local (the fleet client)"
            )
        # builds request bodies only (the openai backend's own): nothing is sent through it
        self.bodies = OpenAIBackend(teacher.base_url or "http://unused/v1", teacher.model)

    @classmethod
    def from_config(cls, teacher: TeacherConfig) -> RayBackend:
        backend = cls(teacher)
        if not backend.ray.is_initialized():
            backend.ray.init(log_to_driver=False)  # RAY_ADDRESS joins a running cluster; unset: a local one
        quiet_ray_data()
        return backend

    def generate(
        self, requests: list[GenRequest], sampling: SamplingSpec, on_done: OnDone | None = None
    ) -> list[list[Completion]]:
        if sampling.logprobs:
            raise DistillError(
                "generate.logprobs with teacher.executor: ray is not supported: use executor: local"
            )
        items = [self._item(i, req, j, sampling) for i, req in enumerate(requests) for j in range(sampling.n)]
        processor = build_processor(self.teacher, sampling, items[0]["path"])
        results: list[list[Any]] = [[None] * sampling.n for _ in requests]
        try:
            for r in processor(self.ray.data.from_items(items)).iter_rows():
                results[r["i"]][r["j"]] = Completion(
                    r["text"], r["finish_reason"], r["prompt_tokens"], r["completion_tokens"]
                )
        except Exception as err:  # a Ray task failed after its retries; finished shards stay, this one reruns
            raise DistillError(f"ray executor: {type(err).__name__}: {str(err)[:800]}") from None
        if on_done:
            on_done(len(requests), sum(c.completion_tokens for out in results for c in out))
        return results

    def _item(self, i: int, req: GenRequest, j: int, sampling: SamplingSpec) -> dict[str, Any]:
        """One sample's Ray row: where its result goes, and distill's request (JSON text: Arrow-safe)."""
        path, body = self.bodies._body(req, j, sampling)
        return {"i": i, "j": j, "path": path, "body": json.dumps(body)}

    def close(self) -> None:
        pass  # the Ray instance outlives a run (a local one ends with the process)


def quiet_ray_data() -> None:
    """distill's progress bar is the one shown: Ray Data's own bars and per-operator INFO lines are off."""
    import logging

    from ray.data import DataContext

    DataContext.get_current().enable_progress_bars = False
    logging.getLogger("ray.data").setLevel(logging.WARNING)


def build_processor(teacher: TeacherConfig, sampling: SamplingSpec, path: str) -> Any:
    from ray.data.llm import build_processor as build

    if teacher.backend == "openai":
        return build(http_config(teacher, path), preprocess=_http_in, postprocess=_http_out)
    limit = sampling.max_tokens
    return build(vllm_config(teacher), preprocess=_vllm_in, postprocess=lambda row: _vllm_out(row, limit))


def http_config(teacher: TeacherConfig, path: str) -> Any:
    from ray.data.llm import HttpRequestProcessorConfig

    return HttpRequestProcessorConfig(
        url=teacher.base_url.rstrip("/") + path,
        batch_size=1,  # the stage awaits a batch's requests one by one: concurrency comes from the actors
        concurrency=teacher.concurrency,
        max_retries=teacher.max_retries,
        http_request_stage={
            "num_cpus": 0.01
        },  # I/O-bound actors: a whole CPU each would cap them at the cores
    )


def vllm_config(teacher: TeacherConfig) -> Any:
    """GPU clusters: data_parallel_size replicas of tensor_parallel_size x pipeline_parallel_size GPUs each."""
    from ray.data.llm import vLLMEngineProcessorConfig

    engine = {
        "tensor_parallel_size": teacher.tensor_parallel_size,
        "pipeline_parallel_size": teacher.pipeline_parallel_size,
        "max_model_len": teacher.max_model_len,
        "gpu_memory_utilization": teacher.gpu_memory_utilization,
        "enable_prefix_caching": teacher.enable_prefix_caching,
        "enforce_eager": teacher.enforce_eager,
        "dtype": teacher.dtype,
        "distributed_executor_backend": "ray",
    }
    return vLLMEngineProcessorConfig(
        model_source=teacher.model,
        engine_kwargs={k: v for k, v in engine.items() if v is not None},
        concurrency=teacher.data_parallel_size,
        batch_size=64,
        chat_template_stage=False,
        tokenize_stage=False,
        detokenize_stage=True,
    )


# Pre/postprocess run inside Ray workers: plain module functions over one row.
def _http_in(row: dict) -> dict:
    return {"payload": json.loads(row["body"]), "i": row["i"], "j": row["j"]}


def _http_out(row: dict) -> dict:
    try:
        c = parse_response(row["http_response"])
    except (KeyError, TypeError, IndexError) as err:
        raise RuntimeError(
            f"teacher reply without a completion ({type(err).__name__}): {row['http_response']}"
        ) from None
    return {"i": row["i"], "j": row["j"], **_fields(c)}


def _vllm_in(row: dict) -> dict:
    body = json.loads(row["body"])
    if "prompt" not in body:
        raise RuntimeError(
            "teacher.executor: ray with backend vllm needs a rendered prompt (teacher.tokenizer)"
        )
    keys = ("max_tokens", "temperature", "top_p", "seed")
    params = {k: body[k] for k in keys if k in body}
    return {"tokenized_prompt": body["prompt"], "sampling_params": params, "i": row["i"], "j": row["j"]}


def _vllm_out(row: dict, max_tokens: int) -> dict:
    made = int(row["num_generated_tokens"])
    c = Completion(
        row["generated_text"], "length" if made >= max_tokens else "stop", int(row["num_input_tokens"]), made
    )
    return {"i": row["i"], "j": row["j"], **_fields(c)}


def _fields(c: Completion) -> dict:
    return {
        "text": c.text,
        "finish_reason": c.finish_reason,
        "prompt_tokens": c.prompt_tokens,
        "completion_tokens": c.completion_tokens,
    }
