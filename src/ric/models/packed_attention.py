"""Attention for padding-free packed rows (``ric.models.samples.pack``): each sample attends to
itself only, at the cost of its own length.

Given a packed row and no attention mask, transformers builds a block-diagonal causal mask over
the whole row; with SDPA or eager attention that costs (total length)^2 per layer, a quarter of a
small model's training step on CPU for 8 samples of ~70 tokens, more than the padding that packing
saves. Registered through transformers' own ``AttentionInterface``, ``segment_sdpa`` instead
cuts the row where the position ids restart and runs causal SDPA on each sample. Flash-attention
implementations are left alone: their variable-length kernels already do this from the position
ids.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from itertools import pairwise
from typing import Any

import torch

ATTENTION = "ric_segments"
NATIVE_VARLEN = ("flash_attention_2", "flash_attention_3")  # already per-sample on packed rows


def segment_sdpa(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """Causal SDPA per sample of one packed row; query (1, heads, L, dim), key and value
    (1, kv heads, L, dim); returns (1, L, heads, dim) as transformers' attention functions do."""
    position_ids = kwargs.get("position_ids")
    if position_ids is None or query.shape[0] != 1:
        raise ValueError("packed attention needs one packed row and its position_ids")
    length = query.shape[2]
    starts = [*(position_ids[0] == 0).nonzero().flatten().tolist(), length]
    sizes = [end - start for start, end in pairwise(starts)]
    # split, not slicing: a slice's backward fills a zero tensor of the whole row per sample.
    parts = [
        torch.nn.functional.scaled_dot_product_attention(
            sample_query,
            sample_key,
            sample_value,
            is_causal=True,
            dropout_p=dropout if module.training else 0.0,
            scale=scaling,
            enable_gqa=query.shape[1] != key.shape[1],
        )
        for sample_query, sample_key, sample_value in zip(
            query.split(sizes, dim=2),
            key.split(sizes, dim=2),
            value.split(sizes, dim=2),
            strict=True,
        )
    ]
    return torch.cat(parts, dim=2).transpose(1, 2).contiguous(), None


def _no_mask(*args: Any, **kwargs: Any) -> None:
    """The mask ``segment_sdpa`` needs: none (the position ids say where samples start)."""
    return None


def _register() -> None:
    from transformers import AttentionInterface, AttentionMaskInterface

    AttentionInterface.register(ATTENTION, segment_sdpa)
    AttentionMaskInterface.register(ATTENTION, _no_mask)


@contextmanager
def packed_attention(model: torch.nn.Module) -> Iterator[None]:
    """Within the block, ``model`` (transformers, PEFT or DDP-wrapped) attends per sample of a
    packed row (``segment_sdpa``); its own attention implementation is restored afterwards, so
    generation with padded batches works as before. Flash attention is kept as it is."""
    from transformers import PreTrainedModel

    inner = next(m for m in model.modules() if isinstance(m, PreTrainedModel))
    before = inner.config._attn_implementation
    if before in NATIVE_VARLEN:
        yield
        return
    _register()
    inner.set_attn_implementation(ATTENTION)
    try:
        yield
    finally:
        inner.set_attn_implementation(before)
