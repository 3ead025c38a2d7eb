"""Target rewards for the online stage (docs/design.md §1.3 step 1): where to ask the model to go.

The paper's rule (``front``) aims at the Pareto front: every objective at r_max except one,
chosen uniformly, whose target is drawn uniformly in [r_min, r_max] (the p = infinity mapping's
solutions). ``uniform`` draws every objective uniformly in its range, covering the interior too.
A strategy is a function ``(rng, count, r_min, r_max) -> (count, N)`` in standardized units;
``TARGET_STRATEGIES`` is the registry ``online.targets`` names.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ric.core.checks import finite_matrix

TargetStrategy = Callable[[np.random.Generator, int, np.ndarray, np.ndarray], np.ndarray]


def front_targets(
    rng: np.random.Generator, count: int, r_min: np.ndarray, r_max: np.ndarray
) -> np.ndarray:
    """(count, N): each row r_max except one objective, drawn uniformly in its range."""
    low, high = _check_range(r_min, r_max)
    targets = np.tile(high, (count, 1))
    free = rng.integers(0, low.size, size=count)  # the objective not held at r_max
    rows = np.arange(count)
    targets[rows, free] = rng.uniform(low[free], high[free])
    return targets


def uniform_targets(
    rng: np.random.Generator, count: int, r_min: np.ndarray, r_max: np.ndarray
) -> np.ndarray:
    """(count, N): every objective uniform in [r_min, r_max]."""
    low, high = _check_range(r_min, r_max)
    return rng.uniform(low, high, size=(count, low.size))


TARGET_STRATEGIES: dict[str, TargetStrategy] = {
    "front": front_targets,
    "uniform": uniform_targets,
}


def draw_targets(
    strategy: str, rng: np.random.Generator, count: int, r_min: np.ndarray, r_max: np.ndarray
) -> np.ndarray:
    """Targets (count, N) from the strategy registered as ``strategy``."""
    if strategy not in TARGET_STRATEGIES:
        raise ValueError(
            f"unknown target strategy {strategy!r}; valid: {', '.join(TARGET_STRATEGIES)}"
        )
    return TARGET_STRATEGIES[strategy](rng, count, r_min, r_max)


def _check_range(r_min: np.ndarray, r_max: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    low = finite_matrix(np.atleast_2d(r_min), "r_min")[0]
    high = finite_matrix(np.atleast_2d(r_max), "r_max")[0]
    if low.shape != high.shape:
        raise ValueError(f"r_min {low.shape} and r_max {high.shape} differ in length")
    if np.any(low > high):
        raise ValueError(f"need r_min <= r_max in every objective, got {low} and {high}")
    return low, high
