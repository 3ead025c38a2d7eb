"""Numbers that summarize a preference sweep: the front's hypervolume and steerability.

Steerability is the paper's Figure 2: across the grid, the rank correlation (Spearman) between
what was asked for (the desired reward R_i, or the weight w_i) and what was obtained (the mean
reward r_i). A model that follows its conditioning scores close to 1.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import spearmanr

from ric.core import hypervolume, pareto_mask


def rank_correlation(asked: np.ndarray, obtained: np.ndarray) -> float | None:
    """Spearman's rho of two (K,) vectors; None when either is constant or unknown (NaN: a
    baseline that was not asked for a preference), where rho is undefined."""
    if not np.all(np.isfinite(asked)) or np.ptp(asked) == 0 or np.ptp(obtained) == 0:
        return None
    return float(spearmanr(asked, obtained).statistic)


def steerability(
    preferences: np.ndarray, desired: np.ndarray, obtained: np.ndarray, names: list[str]
) -> dict[str, dict[str, float | None]]:
    """Per objective: Spearman(desired R_i, mean r_i) and Spearman(w_i, mean r_i) over the grid.

    Also Spearman(w_1, mean r_i) for every i, the form of the demo's target (obtained r_1 rises
    and r_2 falls as w_1 grows). Inputs are (K, N).
    """
    return {
        name: {
            "desired_vs_obtained": rank_correlation(desired[:, i], obtained[:, i]),
            "weight_vs_obtained": rank_correlation(preferences[:, i], obtained[:, i]),
            "w1_vs_obtained": rank_correlation(preferences[:, 0], obtained[:, i]),
        }
        for i, name in enumerate(names)
    }


def front_summary(points: np.ndarray, reference: np.ndarray) -> dict[str, object]:
    """Hypervolume of the mean-reward points (K, N) against ``reference`` (N,), and which
    points are non-dominated."""
    return {
        "hypervolume": hypervolume(points, reference),
        "reference": [float(v) for v in reference],
        "non_dominated": pareto_mask(points).tolist(),
    }
