"""Small helpers every module that runs a Hugging Face model shares (rewards and policies)."""

from __future__ import annotations

from typing import Any


def default_device() -> str:
    """CUDA when available, else CPU."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def set_pad_token(model: Any, tokenizer: Any) -> None:
    """Make tokenizer and model agree on a pad token (eos when the tokenizer has none).

    Decoder classifiers locate the last token as the last id != config.pad_token_id, and refuse
    batches when it is None; generation and training pad too, so the model must know the id the
    tokenizer pads with.
    """
    if tokenizer.pad_token_id is None:
        if tokenizer.eos_token is None:
            raise ValueError("the tokenizer has neither a pad nor an eos token to pad batches with")
        tokenizer.pad_token = tokenizer.eos_token
    model.config.pad_token_id = tokenizer.pad_token_id


def describe_device() -> str:
    """The device a run used, for cost tables: the GPU's name, or the CPU and its core count."""
    import os

    import torch

    if torch.cuda.is_available():
        return f"cuda: {torch.cuda.get_device_name(0)}"
    return f"cpu: {len(os.sched_getaffinity(0))} cores"
