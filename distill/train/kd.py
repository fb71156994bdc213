"""Logit distillation losses against a teacher's stored top-K log-probs, chunked like the cross-entropy.

The teacher gives, per trained position, its top-K token ids and their log-probs (from generate.logprobs: K). The
two distributions are compared on K + 1 outcomes: the teacher's K ids and one "tail" bucket holding the rest of
the vocabulary (teacher: 1 − Σ top-K probability; student: 1 − Σ of its probability on those ids). This coarsened
divergence is exact on the ids the teacher ranks, is 0 when student == teacher (so training starts from 0 for a
self-distilled pair), and still penalises student mass outside the teacher's top K (the tail bucket). A worked
example, K = 1, teacher p("4") = 0.9, student q("4") = 0.6: forward KL = 0.9 log(0.9/0.6) + 0.1 log(0.1/0.4).

Temperature τ tempers both coarsened distributions (log-probs / τ, renormalised) and the term is scaled by τ², as
in Hinton et al. The loss of a chunk: α·CE(labels) + (1 − α)·τ²·D(teacher ‖ student), D one of
  forward  KL(p ‖ q)                     (mode-covering; the default, as in DistillKit and axolotl's KD)
  reverse  KL(q ‖ p)                     (mode-seeking, as on-policy distillation uses)
  jsd      β·KL(p ‖ m) + (1 − β)·KL(q ‖ m), m = β·p + (1 − β)·q   (GKD's generalised JSD)
Only the trained positions are projected, `chunk_tokens` rows at a time under activation checkpointing, so the
full [tokens × vocab] logits never exist (see loss.py for the memory argument).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from distill.train.loss import LossFn, chunk_starts, final_hidden, head_for_loss

DIVERGENCES = ("forward", "reverse", "jsd")
PAD_ID = -1  # a teacher row with fewer than K entries pads its ids with -1 (log-prob -inf)


@dataclass(frozen=True)
class KDSpec:
    alpha: float = 0.5  # weight of the cross-entropy on the sampled tokens; 1 − alpha on the divergence
    temperature: float = 1.0
    divergence: str = "forward"  # forward | reverse | jsd
    beta: float = 0.5  # jsd mixture weight of the teacher


def teacher_coarse(top_ids, top_logprobs):
    """[N, K] teacher ids / log-probs -> [N, K+1] log-probs over (top-K ids, tail), fp32."""
    import torch

    lp = top_logprobs.float().masked_fill(top_ids < 0, float("-inf"))
    mass = torch.logsumexp(lp, dim=-1, keepdim=True).clamp(max=0.0)
    tail = torch.log1p(-mass.exp().clamp(max=1 - 1e-7))  # log(1 − Σ p_k), finite
    return torch.cat([lp, tail], dim=-1)


def student_coarse(logits, top_ids):
    """[N, V] student logits, [N, K] teacher ids -> [N, K+1] student log-probs over (ids, tail), fp32."""
    import torch

    logp = torch.log_softmax(logits.float(), dim=-1)
    picked = logp.gather(-1, top_ids.clamp(min=0)).masked_fill(top_ids < 0, float("-inf"))
    mass = torch.logsumexp(picked, dim=-1, keepdim=True).clamp(max=0.0)
    tail = torch.log1p(-mass.exp().clamp(max=1 - 1e-7))
    return torch.cat([picked, tail], dim=-1)


def _temper(coarse, temperature: float):
    import torch

    return coarse if temperature == 1.0 else torch.log_softmax(coarse / temperature, dim=-1)


def _kl(logp, logq):
    """Σ_i p_i (log p_i − log q_i) per row, with 0·log 0 = 0."""
    p = logp.exp()
    zero = (
        p == 0
    )  # padded ids: masked before the subtraction, since -inf - -inf is a NaN gradient under where()
    return (p * (logp.masked_fill(zero, 0.0) - logq.masked_fill(zero, 0.0))).sum(-1)


def divergence(t_coarse, s_coarse, spec: KDSpec):
    """Per-row divergence [N] between coarsened teacher and student log-probs (already tempered)."""
    import math

    import torch

    if spec.divergence == "forward":
        return _kl(t_coarse, s_coarse)
    if spec.divergence == "reverse":
        return _kl(s_coarse, t_coarse)
    b = spec.beta
    if b in (0.0, 1.0):  # the JSD degenerates to a KL (GKD's convention)
        return _kl(s_coarse, t_coarse) if b == 0 else _kl(t_coarse, s_coarse)
    pad = torch.isinf(t_coarse) & torch.isinf(s_coarse)  # logaddexp(-inf, -inf) has a NaN gradient
    mix = torch.logaddexp(
        t_coarse.masked_fill(pad, 0.0) + math.log(b), s_coarse.masked_fill(pad, 0.0) + math.log(1 - b)
    )
    mix = mix.masked_fill(pad, float("-inf"))
    return b * _kl(t_coarse, mix) + (1 - b) * _kl(s_coarse, mix)


def _chunk_terms(logits, labels, top_ids, top_logprobs, spec: KDSpec):
    """(CE sum, divergence sum) of one chunk's logits, both fp32."""
    import torch.nn.functional as F

    logits = logits.float()
    ce = F.cross_entropy(logits, labels, reduction="sum")
    # an id the teacher gives probability 0 (cut by its sampling's top-p: kd.target sampled) is outside its
    # support, as padding is: the student's mass there joins its tail, else reverse KL is q·log(q/0) = inf
    ids = top_ids.masked_fill(top_logprobs.isneginf(), PAD_ID)
    t = _temper(teacher_coarse(ids, top_logprobs), spec.temperature)
    s = _temper(student_coarse(logits, ids), spec.temperature)
    return ce, divergence(t, s, spec).sum()


def _weighted(ce, kd, spec: KDSpec):
    return spec.alpha * ce + (1 - spec.alpha) * spec.temperature**2 * kd


def _fused_kd(hidden, weight, labels, top_ids, top_logprobs, spec: KDSpec, chunk_tokens: int):
    """Forward and backward of the chunked loss in one pass over the chunks (Liger's fused linear-loss idea):
    each chunk's logits are built, differentiated and freed at once, so the head costs 3 matmuls like the naive
    loss (not 4, as checkpointing's recompute does) and the [chunk x vocab] work stays in cache."""
    import torch

    grad_h = torch.zeros_like(hidden)
    grad_w = torch.zeros_like(weight, dtype=torch.float32)
    ce_sum = torch.zeros((), dtype=torch.float32, device=hidden.device)
    kd_sum = torch.zeros((), dtype=torch.float32, device=hidden.device)
    for start in range(0, len(labels), chunk_tokens):
        sl = slice(start, start + chunk_tokens)
        h = hidden[sl]
        logits = (h @ weight.T).detach().requires_grad_(True)
        with torch.enable_grad():
            ce, kd = _chunk_terms(logits, labels[sl], top_ids[sl], top_logprobs[sl], spec)
            (g,) = torch.autograd.grad(_weighted(ce, kd, spec), logits)
        g = g.to(weight.dtype)
        grad_h[sl] = g @ weight
        grad_w += (g.T @ h).float()
        ce_sum, kd_sum = ce_sum + ce.detach(), kd_sum + kd.detach()
    return ce_sum, kd_sum, grad_h, grad_w.to(weight.dtype)


def _fused_function():
    import torch

    class FusedKD(torch.autograd.Function):
        """loss = α·CE + (1 − α)·τ²·D with gradients computed in the forward; backward scales them."""

        @staticmethod
        def forward(ctx, hidden, weight, labels, top_ids, top_logprobs, spec, chunk_tokens):
            ce, kd, grad_h, grad_w = _fused_kd(
                hidden, weight, labels, top_ids, top_logprobs, spec, chunk_tokens
            )
            ctx.save_for_backward(grad_h, grad_w)
            ctx.mark_non_differentiable(ce, kd)
            return _weighted(ce, kd, spec), ce, kd

        @staticmethod
        def backward(ctx, grad_loss, _grad_ce, _grad_kd):
            grad_h, grad_w = ctx.saved_tensors
            return grad_h * grad_loss, grad_w * grad_loss, None, None, None, None, None

    return FusedKD


def _chunk_kd(lm_head, hidden, labels, top_ids, top_logprobs, spec: KDSpec):
    return _chunk_terms(lm_head(hidden), labels, top_ids, top_logprobs, spec)


def chunked_kd_loss(
    hidden, lm_head, positions, labels, top_ids, top_logprobs, spec: KDSpec, chunk_tokens: int
):
    """Summed α·CE + (1 − α)·τ²·D over the trained positions, plus the two sums (for logging).

    hidden: [..., H]; positions: [P] trained positions; labels: [P]; top_ids / top_logprobs: [P, K] teacher
    top-K at those positions (the collator aligns them). Returns (loss, ce_sum, kd_sum), all fp32 scalars.
    A plain bias-free linear head takes the fused path; a head whose weight is partitioned (DeepSpeed ZeRO-3:
    numel 0 outside its forward) or any other module is called per chunk under activation checkpointing.
    """
    import torch
    from torch.utils.checkpoint import checkpoint

    lm_head = head_for_loss(lm_head)  # an FSDP2 DTensor shard: the gathered full weight
    hidden = hidden.reshape(-1, hidden.shape[-1]).index_select(0, positions)
    if isinstance(lm_head, torch.nn.Linear) and lm_head.bias is None and lm_head.weight.numel() > 0:
        return _fused_function().apply(
            hidden, lm_head.weight, labels, top_ids, top_logprobs, spec, chunk_tokens
        )
    ce = torch.zeros((), dtype=torch.float32, device=hidden.device)
    kd = torch.zeros((), dtype=torch.float32, device=hidden.device)
    for start in chunk_starts(len(labels), chunk_tokens, lm_head):
        sl = slice(start, start + chunk_tokens)
        c, d = checkpoint(
            _chunk_kd,
            lm_head,
            hidden[sl],
            labels[sl],
            top_ids[sl],
            top_logprobs[sl],
            spec,
            use_reentrant=False,
        )
        ce, kd = ce + c, kd + d
    return _weighted(ce, kd, spec), ce.detach(), kd.detach()


def token_reverse_kl(student_logprobs, teacher_logprobs):
    """On-policy per-token reverse KL estimate on the student's own samples: log q(x_t) − log p(x_t), [T].

    With x_t ~ q, E[log q − log p] = KL(q ‖ p): the single-sample estimator Thinking Machines' on-policy
    distillation and GKD (λ = 1) use as a per-token negative advantage."""
    return student_logprobs.float() - teacher_logprobs.float()


def kd_loss(spec: KDSpec) -> LossFn:
    """kd's LossFn for a KDSpec: the summed α·CE + (1 − α)·τ²·D of a micro-batch, with its two sums."""

    def forward_kd(model, lm_head, batch: dict[str, Any], chunk_tokens: int, flash: bool):
        hidden = final_hidden(model, batch, flash)
        loss, ce, kd = chunked_kd_loss(
            hidden,
            lm_head,
            batch["positions"],
            batch["labels"],
            batch["top_ids"],
            batch["top_logprobs"],
            spec,
            chunk_tokens,
        )
        return loss, {"ce": ce, "kd": kd}

    return forward_kd
