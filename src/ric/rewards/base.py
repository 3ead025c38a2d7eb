"""The one interface every reward scorer implements, and the checks every scorer shares.

A reward function maps a batch of (prompt, response) pairs to one float per pair. Scorers are
plain objects with a ``score`` method (structural typing), so a user's class needs no base class.
Built-in and user scorers route their batches through :func:`score_checked`, so input validation,
the empty batch and the output contract (float64, shape (B,)) live in one place.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol, runtime_checkable

import numpy as np
from numpy.typing import ArrayLike

from ric import parallel


@runtime_checkable
class RewardFunction(Protocol):
    """Scores responses to prompts; higher is better."""

    def score(self, prompts: Sequence[str], responses: Sequence[str]) -> np.ndarray:
        """Return the rewards of a batch, shape (B,), float64, in the scorer's raw units."""
        ...


def check_batch(prompts: Sequence[str], responses: Sequence[str]) -> int:
    """Return the batch size B after checking that prompts and responses pair up as strings."""
    if len(prompts) != len(responses):
        raise ValueError(
            f"got {len(prompts)} prompts but {len(responses)} responses; "
            "they must pair up one to one"
        )
    for kind, texts in (("prompt", prompts), ("response", responses)):
        for index, text in enumerate(texts):
            if not isinstance(text, str):
                raise ValueError(f"{kind} {index} is {type(text).__name__}, not str: {text!r}")
    return len(prompts)


def score_checked(
    name: str,
    score: Callable[[list[str], list[str]], ArrayLike],
    prompts: Sequence[str],
    responses: Sequence[str],
) -> np.ndarray:
    """Run ``score`` on a validated batch; return float64 scores of shape (B,).

    An empty batch returns an empty array without calling ``score`` (several libraries, e.g.
    scikit-learn, reject empty input). ``name`` identifies the scorer in error messages.
    """
    batch = check_batch(prompts, responses)
    if batch == 0:
        return np.zeros(0, dtype=np.float64)
    return as_scores(name, score(list(prompts), list(responses)), batch, "(prompt, response)")


def as_scores(name: str, raw: ArrayLike, count: int, pair: str) -> np.ndarray:
    """A scorer's output as float64 of shape (count,), or a ValueError naming the scorer ``name``
    and what it was given (``count`` ``pair`` pairs)."""
    try:
        scores = np.asarray(raw, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise ValueError(
            f"reward {name!r} returned values that are not numbers: {error}"
        ) from error
    if scores.shape != (count,):
        raise ValueError(
            f"reward {name!r} returned shape {scores.shape} for {count} {pair} pairs; "
            f"expected ({count},)"
        )
    return scores


def score_split(
    scorer: RewardFunction, prompts: Sequence[str], responses: Sequence[str]
) -> np.ndarray:
    """``scorer.score`` of the batch, the pairs split between the processes of a multi-process
    run (``ric.parallel``) and gathered in order; every process calls it and gets every score.
    With one process it is ``scorer.score``."""
    pairs = list(zip(prompts, responses, strict=True))

    def score_share(share: list[tuple[str, str]]) -> list[float]:
        scores = scorer.score([p for p, _ in share], [r for _, r in share])
        return [float(value) for value in scores]

    return np.asarray(parallel.map_rows(pairs, score_share), dtype=np.float64)
