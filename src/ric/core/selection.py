"""Multi-objective rejection sampling (MORS, docs/design.md §1.3 step 4).

A sample is removed when it is at or below the threshold in *every* objective
(r_1 <= tau_1 and ... and r_N <= tau_N); it is kept when it beats the threshold in at least one.
Thresholds are per-objective quantiles of the samples (paper: q = 0.7).
"""

from __future__ import annotations

import numpy as np

from ric.core.checks import finite_matrix


def quantile_thresholds(rewards: np.ndarray, q: float = 0.7) -> np.ndarray:
    """Per-objective q-quantile of rewards (B, N) -> thresholds (N,)."""
    rewards = finite_matrix(rewards, "rewards")
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"quantile q must be in [0, 1], got {q}")
    if rewards.shape[0] == 0:
        raise ValueError("cannot compute thresholds of zero samples")
    return np.quantile(rewards, q, axis=0)


def mors_mask(rewards: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """Keep mask (B,): True where a sample exceeds its threshold in at least one objective."""
    rewards = finite_matrix(rewards, "rewards")
    thresholds = np.asarray(thresholds, dtype=np.float64)
    if thresholds.shape != (rewards.shape[1],):
        raise ValueError(
            f"thresholds must have shape ({rewards.shape[1]},) to match rewards, "
            f"got {thresholds.shape}"
        )
    return np.any(rewards > thresholds, axis=1)
