"""Name -> scorer lookup: the built-in registry plus ``"package.module:function"`` user code.

The registry is a plain dict, edited here when a scorer is added; each entry's description is the
first line of its class docstring, so ``ric rewards`` and the code cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from ric.rewards.base import RewardFunction
from ric.rewards.builtin import (
    Conciseness,
    DataColumn,
    FleschKincaidGrade,
    Harmlessness,
    Positivity,
    Readability,
    Relevance,
    Verbosity,
)
from ric.rewards.hf import HFRewardModel
from ric.rewards.user import check_options, load_user_function
from ric.runtime import quiet_transformers

REWARDS: dict[str, Callable[..., RewardFunction]] = {
    "column": DataColumn,
    "conciseness": Conciseness,
    "fk_grade": FleschKincaidGrade,
    "harmlessness": Harmlessness,
    "hf": HFRewardModel,
    "positivity": Positivity,
    "readability": Readability,
    "relevance": Relevance,
    "verbosity": Verbosity,
}


def available_rewards() -> list[str]:
    """Registered reward names, sorted."""
    return sorted(REWARDS)


def describe_rewards() -> dict[str, str]:
    """Registered reward names (sorted) -> one-line description."""
    return {name: (REWARDS[name].__doc__ or "").strip().splitlines()[0] for name in sorted(REWARDS)}


def create_reward(type: str, options: Mapping[str, Any] | None = None) -> RewardFunction:
    """Build the scorer ``type`` (a registered name or ``"package.module:function"``).

    ``options`` are the scorer's keyword arguments; unknown or missing ones raise ValueError
    naming the key, before any model is loaded.
    """
    quiet_transformers()  # scorers built on transformers load without their bars
    options = dict(options or {})
    if type in REWARDS:
        factory = REWARDS[type]
        check_options(type, factory, options)
        return factory(**options)
    if ":" in type:
        return load_user_function(type, options)
    raise ValueError(
        f"unknown reward {type!r}; valid: {', '.join(available_rewards())} "
        "or 'package.module:function'"
    )
