"""Numbers that summarize a preference sweep: the front's hypervolume and steerability.

Steerability is the paper's Figure 2: across the grid, the rank correlation (Spearman) between
what was asked for (the desired reward R_i, or the weight w_i) and what was obtained (the mean
reward r_i). A model that follows its conditioning scores close to 1.

Both come from one answer per (preference, prompt), so both are noisy on a few dozen prompts;
``resampled_intervals`` gives their 95% intervals by resampling the prompts.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import rankdata, spearmanr

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


def prompt_draws(prompts: int, resamples: int, seed: int = 0) -> np.ndarray:
    """(resamples, prompts): how often each held-out prompt is drawn in each of ``resamples``
    draws of ``prompts`` prompts with replacement. Sweeps of several models on the same prompts
    share the draws, so their differences are resampled pairwise."""
    uniform = np.full(prompts, 1 / prompts)
    return np.random.default_rng(seed).multinomial(prompts, uniform, size=resamples)


def resampled_means(per_prompt: np.ndarray, draws: np.ndarray) -> np.ndarray:
    """(resamples, K, N) per-preference means of raw rewards ``per_prompt`` (K, P, N) under each
    of ``prompt_draws``' draws."""
    return np.einsum("rp,kpn->rkn", draws, per_prompt) / per_prompt.shape[1]


def resampled_hypervolumes(means: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """(resamples,) hypervolume of each draw's means (``resampled_means``)."""
    return np.array([hypervolume(drawn, reference) for drawn in means])


def resampled_intervals(
    per_prompt: np.ndarray,
    preferences: np.ndarray,
    reference: np.ndarray,
    names: list[str],
    resamples: int,
    seed: int = 0,
) -> dict[str, object]:
    """95% percentile intervals of the hypervolume and of Spearman(w_1, mean r_i), from
    ``resamples`` draws of the held-out prompts with replacement: each draw keeps every
    preference's answers to the drawn prompts and recomputes the means (``per_prompt``: raw
    rewards (K, P, N), preference-major; ``preferences`` (K, N)). How much of a difference
    between two sweeps the prompts and the sampling can explain. A Spearman that is undefined
    in more than half the draws (a constant mean: one preference, say) has no interval."""
    means = resampled_means(per_prompt, prompt_draws(per_prompt.shape[1], resamples, seed))
    return {
        "resamples": resamples,
        "hypervolume": percentile_interval(resampled_hypervolumes(means, reference)),
        "w1_vs_obtained": {
            name: percentile_interval(_rank_correlations(preferences[:, 0], means[:, :, i]))
            for i, name in enumerate(names)
        },
    }


def _rank_correlations(asked: np.ndarray, obtained: np.ndarray) -> np.ndarray:
    """Spearman's rho of ``asked`` (K,) with each row of ``obtained`` (R, K), as
    ``rank_correlation`` (Pearson's r of average ranks) for all rows at once; NaN where
    undefined."""
    if not np.all(np.isfinite(asked)) or np.ptp(asked) == 0:
        return np.full(len(obtained), np.nan)
    asked_ranks = rankdata(asked)
    ranks = rankdata(obtained, axis=1)
    asked_centered = asked_ranks - asked_ranks.mean()
    centered = ranks - ranks.mean(axis=1, keepdims=True)
    spread = np.sqrt((centered**2).sum(axis=1) * (asked_centered**2).sum())
    with np.errstate(invalid="ignore", divide="ignore"):  # a constant row: 0 / 0, undefined
        return np.where(spread > 0, centered @ asked_centered / spread, np.nan)


def percentile_interval(values: np.ndarray) -> list[float] | None:
    """The 2.5th and 97.5th percentiles of the defined ``values``; None when fewer than half
    are defined."""
    known = values[np.isfinite(values)]
    if len(known) * 2 < len(values):
        return None
    return [float(v) for v in np.percentile(known, [2.5, 97.5])]
