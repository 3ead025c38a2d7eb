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

    @property
    def first_trained(self) -> int:
        """The first position whose token the loss covers: a sample's first token is never
        predicted (nothing of its own comes before it), even with an empty prompt."""
        return max(self.prompt_length, 1)

    @property
    def trained_tokens(self) -> int:
        """Tokens the loss covers: the response and EOS."""
        return len(self.input_ids) - self.first_trained


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


def pack(samples: Sequence[TokenizedSample]) -> dict[str, torch.Tensor]:
    """``samples`` end to end in one row, padding-free: input_ids, position_ids and labels, each
    (1, total tokens). The position ids restart at 0 with every sample, from which transformers
    builds a per-sample causal mask (block-diagonal; flash-attention's variable-length kernel on a
    GPU), so no sample attends to another. Each sample's first token is never a label, so no
    sample is predicted from the one before it."""
    input_ids = torch.tensor([token for sample in samples for token in sample.input_ids])
    position_ids = torch.cat([torch.arange(len(sample.input_ids)) for sample in samples])
    labels = torch.full_like(input_ids, IGNORE_INDEX)
    start = 0
    for sample in samples:
        end = start + len(sample.input_ids)
        labels[start + sample.first_trained : end] = input_ids[start + sample.first_trained : end]
        start = end
    return {
        "input_ids": input_ids[None],
        "position_ids": position_ids[None],
        "labels": labels[None],
    }


def response_loss_sum(
    model: Any, batch: dict[str, torch.Tensor], inputs_embeds: torch.Tensor | None = None
) -> torch.Tensor:
    """The summed cross-entropy of the labeled tokens of a ``collate`` or ``pack`` batch.

    Packed, the logits are computed only where a labeled token is predicted (``logits_to_keep``):
    with a large vocabulary the output layer is a good share of a small model's cost, and the
    prompt's positions need none of it. ``inputs_embeds``: the hidden states the model starts
    from, in place of the batch's token embeddings (``ric.models.frozen_layers``)."""
    labels = batch["labels"]
    given = {"inputs_embeds": inputs_embeds}
    if inputs_embeds is None:
        given = {"input_ids": batch["input_ids"]}
    if "position_ids" in batch:
        predicting = (labels[0, 1:] != IGNORE_INDEX).nonzero().squeeze(1)
        logits = model(
            **given,
            position_ids=batch["position_ids"],
            logits_to_keep=predicting,
            use_cache=False,  # with a cache, transformers does not look for packed sequences
        ).logits.flatten(0, 1)  # a view: indexing row 0 would fill a zero grad of the logits
        targets = labels[0, predicting + 1]
    else:
        output = model(**given, attention_mask=batch["attention_mask"], use_cache=False)
        logits = output.logits[:, :-1].flatten(0, 1)
        targets = labels[:, 1:].flatten()
    return torch.nn.functional.cross_entropy(
        logits.float(), targets, ignore_index=IGNORE_INDEX, reduction="sum"
    )
