"""Chunked cross-entropy: the loss over a 32k-token x 152k-vocab batch without ever holding its full logits."""

from __future__ import annotations


def _chunk_loss(lm_head, hidden, labels):
    """Summed CE of one chunk; logits in the compute dtype, softmax in fp32 (bf16 log-probs lose ~3 digits)."""
    import torch.nn.functional as F

    return F.cross_entropy(lm_head(hidden).float(), labels, reduction="sum")


def chunked_cross_entropy(hidden, lm_head, positions, labels, chunk_tokens: int):
    """Sum (fp32) of the cross-entropies of `labels` predicted from hidden states at `positions`.

    hidden: [..., H] final hidden states, flattened to [T, H]; positions: [K] indices of the trained positions
    (computed by the collator on the host, so the GPU never syncs to find them); labels: [K] next tokens.
    Only trained positions are projected (prompt tokens cost nothing), `chunk_tokens` rows at a time, and
    each chunk is checkpointed: its [chunk x vocab] logits are freed after the forward and recomputed in
    the backward, so peak loss memory is a few chunk-sized logit buffers instead of several full ones
    (32k tokens x 152k vocab in fp32 is 20 GB per buffer). lm_head is called as a module so DeepSpeed
    ZeRO-3 gathers its weight for every chunk.
    """
    import torch
    from torch.utils.checkpoint import checkpoint

    hidden = hidden.reshape(-1, hidden.shape[-1]).index_select(0, positions)
    total = torch.zeros((), dtype=torch.float32, device=hidden.device)
    for start in range(0, len(labels), chunk_tokens):
        end = start + chunk_tokens
        total = total + checkpoint(
            _chunk_loss, lm_head, hidden[start:end], labels[start:end], use_reentrant=False
        )
    return total
