"""Does the model read the rewards in its prompt? Response loss with true vs shuffled rewards.

On a sample of training pairs, the response NLL is computed with each sample's own standardized
rewards written in the prompt, then again with objective i's values permuted across the samples.
A model that uses objective i's value predicts the responses worse when it is shuffled:
``gap_i = shuffled - true > 0``. A gap near 0 means the conditioning is ignored, and then no
preference mapping can steer the model. This separates "the model did not learn the
conditioning" from "the mapping or the reward ranges are off" when a front looks flat.

Two units: per response token (``gap``, the mean over every response token and EOS) and per
sequence (``sequence_gap``, the NLL summed over a response, averaged over responses). A reward
such as length shows in a few tokens of each response (mostly where EOS falls), so its
per-token gap is diluted by the response's length while the per-sequence gap is not.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ric.models.samples import IGNORE_INDEX, collate, tokenize_sample
from ric.runs import TrainedPolicy
from ric.steering import Steering


@dataclass(frozen=True)
class ResponseLoss:
    per_token: float  # mean NLL per response token (and EOS)
    per_sequence: float  # NLL summed over each response, averaged over responses


def response_loss(
    policy: TrainedPolicy,
    prompts: Sequence[str],
    responses: Sequence[str],
    values: np.ndarray,
    max_length: int | None = None,
    batch_size: int = 16,
) -> ResponseLoss:
    """NLL of ``responses`` given prompts conditioned on ``values`` (B, N), standardized units.
    ``max_length`` cuts samples as training does; None keeps every response whole, so that
    prompts of different lengths (other values written in) are scored on the same tokens."""
    conditioned = Steering.for_run(policy).prompts(prompts, values)
    limit = max_length if max_length is not None else sys.maxsize
    samples = [
        sample
        for prompt, response in zip(conditioned, responses, strict=True)
        if (sample := tokenize_sample(policy.tokenizer, prompt, response, limit))
    ]
    if not samples:
        raise ValueError("every sample is longer than max_length")
    total, tokens = 0.0, 0
    device = next(policy.model.parameters()).device
    was_training = policy.model.training
    policy.model.eval()
    with torch.no_grad():
        for start in range(0, len(samples), batch_size):
            batch = collate(samples[start : start + batch_size], policy.tokenizer.pad_token_id)
            batch = {key: value.to(device) for key, value in batch.items()}
            logits = policy.model(
                input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
            ).logits[:, :-1]  # (B, T-1, V): position t predicts token t+1
            labels = batch["labels"][:, 1:]
            nll = torch.nn.functional.cross_entropy(
                logits.float().transpose(1, 2),
                labels.clamp(min=0),
                reduction="none",
            )  # (B, T-1)
            total += float((nll * (labels != IGNORE_INDEX)).sum())
            tokens += int((labels != IGNORE_INDEX).sum())
    policy.model.train(was_training)
    return ResponseLoss(per_token=total / tokens, per_sequence=total / len(samples))


def reward_sensitivity(
    policy: TrainedPolicy,
    prompts: Sequence[str],
    responses: Sequence[str],
    values: np.ndarray,
    seed: int = 0,
) -> dict[str, dict[str, float]]:
    """Per objective: response loss with true values and with that objective's values
    shuffled, per token and per sequence, and both gaps (shuffled - true; > 0 when the model
    reads the objective). Responses are scored whole, whatever the training max_length."""
    values = np.asarray(values, dtype=float)  # (B, N) standardized
    rng = np.random.default_rng(seed)
    true = response_loss(policy, prompts, responses, values)
    result = {}
    for i, name in enumerate(policy.stats.names):
        shuffled_values = values.copy()
        shuffled_values[:, i] = rng.permutation(shuffled_values[:, i])
        shuffled = response_loss(policy, prompts, responses, shuffled_values)
        result[name] = {
            "loss_true": true.per_token,
            "loss_shuffled": shuffled.per_token,
            "gap": shuffled.per_token - true.per_token,
            "sequence_loss_true": true.per_sequence,
            "sequence_loss_shuffled": shuffled.per_sequence,
            "sequence_gap": shuffled.per_sequence - true.per_sequence,
        }
    return result
