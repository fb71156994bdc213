"""Training losses: the chunked cross-entropy over a 32k-token x 152k-vocab batch without ever holding its
full logits, and sft's loss of one micro-batch (forward_ce, a `LossFn`: the loop calls it; kd's is
distill.train.kd.kd_loss, built on this module's heads)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

# (model, lm_head, micro-batch, chunk_tokens, flash) -> the summed (fp32) loss of the micro-batch's trained tokens,
# or (that loss, {term: summed detached value}) when the objective logs its parts (kd: ce, kd)
LossFn = Callable[[Any, Any, dict[str, Any], int, bool], Any]


def _chunk_loss(lm_head, hidden, labels):
    """Summed CE of one chunk; logits in the compute dtype, softmax in fp32 (bf16 log-probs lose ~3 digits)."""
    import torch.nn.functional as F

    return F.cross_entropy(lm_head(hidden).float(), labels, reduction="sum")


def head_for_loss(lm_head):
    """lm_head as the losses call it after the model's forward, whatever holds its weight:
    - a plain tensor (one process, DDP, and FSDP2's root unit, which stays unsharded from forward to backward):
      the module itself;
    - a DTensor shard (an FSDP2 unit resharded after its forward): the full weight gathered once per micro-batch,
      its gradient reduce-scattered back as an average over ranks (what FSDP does with the rest of the model);
    - a ZeRO-3 partition (numel 0 outside a forward): the module itself, whose ZeRO hooks gather the weight at
      every call.
    """
    import torch
    from torch.distributed.tensor import DTensor, Partial

    weight = getattr(lm_head, "weight", None)  # a head module without one (tests, wrappers) is called as is
    if not isinstance(weight, DTensor):
        return lm_head
    full = torch.nn.Linear(weight.shape[1], weight.shape[0], bias=False, device="meta")
    del full.weight, full.bias  # the gathered tensors are not leaves: plain attributes, not Parameters
    full.weight = weight.full_tensor(grad_placements=[Partial("avg")])
    full.bias = None if lm_head.bias is None else lm_head.bias.full_tensor(grad_placements=[Partial("avg")])
    return full


def chunk_starts(rows: int, chunk_tokens: int, lm_head) -> range:
    """Where each chunk of `rows` trained positions starts. Under DeepSpeed ZeRO-3 every call of lm_head is an
    all-gather of its weight, so every rank makes as many calls as the rank with the most chunks (the extra
    chunks are empty): a rank that stopped early would leave the others inside a collective (gloo: "Received
    data size doesn't match expected size")."""
    import math

    import torch

    n = math.ceil(rows / chunk_tokens)
    if hasattr(getattr(lm_head, "weight", None), "ds_numel"):  # a ZeRO-3 partitioned parameter
        most = torch.tensor([n], device=lm_head.weight.device)
        torch.distributed.all_reduce(most, op=torch.distributed.ReduceOp.MAX)
        n = int(most.item())
    return range(0, n * chunk_tokens, chunk_tokens)


def chunked_cross_entropy(hidden, lm_head, positions, labels, chunk_tokens: int):
    """Sum (fp32) of the cross-entropies of `labels` predicted from hidden states at `positions`.

    hidden: [..., H] final hidden states, flattened to [T, H]; positions: [K] indices of the trained positions
    (computed by the collator on the host, so the GPU never syncs to find them); labels: [K] next tokens.
    Only trained positions are projected (prompt tokens cost nothing), `chunk_tokens` rows at a time, and
    each chunk is checkpointed: its [chunk x vocab] logits are freed after the forward and recomputed in
    the backward, so peak loss memory is a few chunk-sized logit buffers instead of several full ones
    (32k tokens x 152k vocab in fp32 is 20 GB per buffer). lm_head is called as a module (head_for_loss) so
    DeepSpeed ZeRO-3 gathers its weight for every chunk.
    """
    import torch
    from torch.utils.checkpoint import checkpoint

    lm_head = head_for_loss(lm_head)
    hidden = hidden.reshape(-1, hidden.shape[-1]).index_select(0, positions)
    total = torch.zeros((), dtype=torch.float32, device=hidden.device)
    for start in chunk_starts(len(labels), chunk_tokens, lm_head):
        end = start + chunk_tokens
        total = total + checkpoint(
            _chunk_loss, lm_head, hidden[start:end], labels[start:end], use_reentrant=False
        )
    return total


def final_hidden(model, batch: dict[str, Any], flash: bool):
    """The final hidden states of a micro-batch. The model runs whole (so DDP/FSDP/ZeRO hooks fire) but
    computes logits for one position only; the losses project the hidden states in chunks."""
    extra = {}
    if flash and "cu_seq_lens" in batch:  # packed: hand flash-attn its varlen boundaries directly
        cu, longest = batch["cu_seq_lens"], batch["max_seq_len"]
        extra = {"cu_seq_lens_q": cu, "cu_seq_lens_k": cu, "max_length_q": longest, "max_length_k": longest}
    out = model(
        input_ids=batch["input_ids"],
        position_ids=batch["position_ids"],
        attention_mask=batch.get("attention_mask"),
        use_cache=False,
        output_hidden_states=True,
        logits_to_keep=1,
        **extra,
    )
    # The one logit kept enters the graph with weight 0 so that its backward (which runs FSDP2's pre-backward
    # hook on the root unit) comes before lm_head's weight gradient is accumulated: without it a loss that
    # projects outside the forward writes that gradient into a parameter FSDP2 is not tracking (a segfault on
    # gloo, torch 2.13). Its cost: a [batch, 1, vocab] sum and one copy of the hidden states.
    return out.hidden_states[-1] + 0.0 * out.logits.sum()


def forward_ce(model, lm_head, batch: dict[str, Any], chunk_tokens: int, flash: bool):
    """Summed CE of one micro-batch (sft)."""
    hidden = final_hidden(model, batch, flash)
    return chunked_cross_entropy(hidden, lm_head, batch["positions"], batch["labels"], chunk_tokens)
