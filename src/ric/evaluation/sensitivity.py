"""Does the model read the rewards in its prompt? Response loss with true vs shuffled rewards.

On a sample of training pairs, the mean response NLL per token is computed with each sample's
own standardized rewards written in the prompt, then again with objective i's values permuted
across the samples. A model that uses objective i's value predicts the responses worse when it
is shuffled: ``gap_i = shuffled - true > 0``. A gap near 0 means the conditioning is ignored,
and then no preference mapping can steer the model. This separates "the model did not learn the
conditioning" from "the mapping or the reward ranges are off" when a front looks flat.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from ric.training.sft import IGNORE_INDEX, collate, tokenize_sample
from ric.training.trained import TrainedPolicy


def response_loss(
    policy: TrainedPolicy,
    prompts: Sequence[str],
    responses: Sequence[str],
    values: np.ndarray,
    max_length: int,
    batch_size: int = 16,
) -> float:
    """Mean NLL per response token (and EOS) of ``responses`` given prompts conditioned on
    ``values`` (B, N), standardized units."""
    conditioned = policy.conditioned_prompts(prompts, values)
    samples = [
        sample
        for prompt, response in zip(conditioned, responses, strict=True)
        if (sample := tokenize_sample(policy.tokenizer, prompt, response, max_length))
    ]
    if not samples:
        raise ValueError("every sample is longer than max_length")
    total, tokens = 0.0, 0
    device = next(policy.model.parameters()).device
    policy.model.eval()
    with torch.no_grad():
        for start in range(0, len(samples), batch_size):
            batch = collate(samples[start : start + batch_size], policy.tokenizer.pad_token_id)
            batch = {key: value.to(device) for key, value in batch.items()}
            count = int((batch["labels"][:, 1:] != IGNORE_INDEX).sum())  # shifted, as the loss
            total += float(policy.model(**batch).loss) * count
            tokens += count
    return total / tokens


def reward_sensitivity(
    policy: TrainedPolicy,
    prompts: Sequence[str],
    responses: Sequence[str],
    values: np.ndarray,
    max_length: int,
    seed: int = 0,
) -> dict[str, dict[str, float]]:
    """Per objective: response loss with true values, with that objective's values shuffled,
    and the gap (shuffled - true; > 0 when the model reads the objective)."""
    values = np.asarray(values, dtype=float)  # (B, N) standardized
    rng = np.random.default_rng(seed)
    true_loss = response_loss(policy, prompts, responses, values, max_length)
    result = {}
    for i, name in enumerate(policy.stats.names):
        shuffled = values.copy()
        shuffled[:, i] = rng.permutation(shuffled[:, i])
        loss = response_loss(policy, prompts, responses, shuffled, max_length)
        result[name] = {"loss_true": true_loss, "loss_shuffled": loss, "gap": loss - true_loss}
    return result
