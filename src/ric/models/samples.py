"""Causal-LM training samples: prompt ids, then response ids and EOS, the loss on the latter.

Training (the SFT loop of both stages) and evaluation (the reward-sensitivity loss gap) build
their samples here, so the tokens a model is trained on and the ones it is measured on are the
same. The prompt is tokenized alone, exactly as generation tokenizes it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

IGNORE_INDEX = -100  # label value the loss skips (prompt and padding positions)


@dataclass(frozen=True)
class TokenizedSample:
    """A training sample: the loss covers ``input_ids[prompt_length:]`` (response + EOS)."""

    input_ids: tuple[int, ...]
    prompt_length: int


def tokenize_sample(
    tokenizer: Any, prompt: str, response: str, max_length: int
) -> TokenizedSample | None:
    """Prompt ids (tokenized alone, as at generation) + response ids + EOS, or None if the
    prompt leaves no room for a response token. A response cut by ``max_length`` gets no EOS,
    so the model is never taught to stop where the text did not end."""
    prompt_ids = tokenizer(prompt)["input_ids"]
    response_ids = tokenizer(response, add_special_tokens=False)["input_ids"]
    room = max_length - len(prompt_ids)
    if room < 1:
        return None
    completion = [*response_ids, tokenizer.eos_token_id]
    return TokenizedSample(tuple(prompt_ids + completion[:room]), len(prompt_ids))


def collate(samples: Sequence[TokenizedSample], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded input_ids, attention_mask and labels, each (B, T)."""
    width = max(len(sample.input_ids) for sample in samples)
    input_ids = torch.full((len(samples), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(samples), width), dtype=torch.long)
    labels = torch.full((len(samples), width), IGNORE_INDEX, dtype=torch.long)
    for row, sample in enumerate(samples):
        ids = torch.tensor(sample.input_ids, dtype=torch.long)
        input_ids[row, : len(ids)] = ids
        attention_mask[row, : len(ids)] = 1
        labels[row, sample.prompt_length : len(ids)] = ids[sample.prompt_length :]
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}
