"""Numbers that summarize a preference sweep: the front's hypervolume and steerability.

Steerability is the paper's Figure 2: across the grid, the rank correlation (Spearman) between
what was asked for (the desired reward R_i, or the weight w_i) and what was obtained (the mean
reward r_i). A model that follows its conditioning scores close to 1.

Both come from one answer per (preference, prompt), so both are noisy on a few dozen prompts,
and both are biased by that noise: it pushes some points out of the front (the hypervolume of
noisy means runs high) and shuffles close means (Spearman runs toward 0). ``resampled_intervals``
gives 95% intervals for their noise-free values, those of the expected per-preference means over
the prompts (what infinitely many prompts and answers would give), by resampling the prompts.
docs/results.md ("Interval coverage") measures how often they hold it on synthetic sweeps with a
known truth (benchmarks/interval_coverage.py).
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import linear_sum_assignment
from scipy.stats import rankdata, spearmanr

from ric.core import hypervolume, pareto_mask

LEVEL = 0.95  # of every interval here
# Partial orderings the exact Spearman bound may keep at one step (about K = 14 means with no
# order known); beyond, a wider bound that is quick for any K (``_assigned_extremes``).
MAX_PLACEMENTS = 5000


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
    """95% intervals of the noise-free hypervolume and Spearman(w_1, mean r_i), from
    ``resamples`` draws of the held-out prompts with replacement: each draw keeps every
    preference's answers to the drawn prompts and recomputes the means (``per_prompt``: raw
    rewards (K, P, N), preference-major; ``preferences`` (K, N)).

    Noise-free: of the expected per-preference means over the prompts, not of this sweep's
    noisy ones, whose statistics are biased (module docstring). ``hypervolume``: the basic
    bootstrap interval (``basic_interval``), which takes the bias off. ``w1_vs_obtained``: per
    objective, the lowest and highest Spearman of the orderings of the means the prompts allow
    (``spearman_interval``); the point value, a noisy ordering's, lies inside but toward 0. None
    where Spearman is undefined (one preference, a constant w_1 or constant means)."""
    means = resampled_means(per_prompt, prompt_draws(per_prompt.shape[1], resamples, seed))
    observed = per_prompt.mean(axis=1)  # (K, N)
    return {
        "resamples": resamples,
        "hypervolume": basic_interval(
            hypervolume(observed, reference), resampled_hypervolumes(means, reference), floor=0.0
        ),
        "w1_vs_obtained": {
            name: spearman_interval(preferences[:, 0], observed[:, i], means[:, :, i])
            for i, name in enumerate(names)
        },
    }


def basic_interval(
    estimate: float, values: np.ndarray, floor: float | None = None
) -> list[float] | None:
    """The basic bootstrap interval: ``estimate`` reflected about the 2.5th and 97.5th
    percentiles of the resampled ``values`` (2 x estimate - 97.5th, 2 x estimate - 2.5th), kept
    at or above ``floor`` (0 for a hypervolume); None when fewer than half are defined.

    Why not the percentiles themselves: a resample adds the answers' noise a second time, so
    its values sit about as far beyond ``estimate`` as ``estimate`` sits beyond the noise-free
    value; the percentile interval carries that bias (on a synthetic front it held the noise-free
    hypervolume 69% of the time at noise sd 1.5), reflecting takes it off (94%)."""
    interval = percentile_interval(values)
    if interval is None:
        return None
    low, high = 2 * estimate - interval[1], 2 * estimate - interval[0]
    if floor is not None:
        low, high = max(low, floor), max(high, floor)
    return [float(low), float(high)]


def spearman_interval(
    asked: np.ndarray, means: np.ndarray, resampled: np.ndarray, level: float = LEVEL
) -> list[float] | None:
    """An interval for Spearman(``asked``, noise-free means): the lowest and highest Spearman
    over every ordering of the means that keeps the orders the prompts support
    (``supported_orders``; ``means`` (K,) observed, ``resampled`` (R, K) under the prompt
    draws). None where Spearman of ``means`` is undefined (``rank_correlation``).

    Why not resample Spearman itself: noise swaps close means, so every resample ranks worse
    than the noise-free means do, and an interval of resampled values leaves out a noise-free
    +1 once the noise is large (on a synthetic front it held it 16% of the time). This one
    holds the noise-free value whenever every supported order is right (about ``level`` of the
    time, more in practice: it is conservative), and it widens where close means leave their
    order open instead of sliding toward 0."""
    if rank_correlation(asked, means) is None:
        return None
    ranks = rankdata(asked)
    weights = ranks - ranks.mean()
    slots = np.arange(len(asked)) - (len(asked) - 1) / 2  # ranks of the means, centred
    scale = np.sqrt((weights**2).sum() * (slots**2).sum())
    above = supported_orders(means, resampled, level)
    low, high = _placed_extremes(weights, slots, above) or _assigned_extremes(weights, slots, above)
    return [float(np.clip(low / scale, -1, 1)), float(np.clip(high / scale, -1, 1))]


def supported_orders(means: np.ndarray, resampled: np.ndarray, level: float = LEVEL) -> np.ndarray:
    """(K, K) bool, True at [j, k] where the prompts support noise-free mean j above mean k,
    for all pairs at once (``means`` (K,) observed, ``resampled`` (R, K) under the draws).

    Each pair's difference is resampled on the same prompts (how hard a prompt is cancels),
    and the pairs are called by a bootstrap max-t step-down (Romano and Wolf 2005, as in
    confidence sets for ranks): with probability about ``level`` no called order is wrong,
    which is what a bound over orderings needs. A pair whose difference is the same in every
    draw is called by its sign (a tie: never)."""
    first, second = np.triu_indices(len(means), 1)
    difference = means[first] - means[second]
    drawn = resampled[:, first] - resampled[:, second]  # (R, pairs)
    spread = drawn.std(axis=0)
    varies = spread > 0
    unit = np.where(varies, spread, 1.0)
    deviations = np.where(varies, np.abs(drawn - difference) / unit, 0.0)
    statistic = np.abs(difference) / unit
    called = ~varies & (difference != 0)
    open_pairs = varies.copy()
    while open_pairs.any():  # call what exceeds the open pairs' max-t; repeat on those left
        critical = np.quantile(deviations[:, open_pairs].max(axis=1), level)
        new = open_pairs & (statistic > critical)
        if not new.any():
            break
        called |= new
        open_pairs &= ~new
    above = np.zeros((len(means), len(means)), dtype=bool)
    up = called & (difference > 0)
    down = called & (difference < 0)
    above[first[up], second[up]] = True
    above[second[down], first[down]] = True
    return above


def _placed_extremes(
    weights: np.ndarray, slots: np.ndarray, above: np.ndarray
) -> tuple[float, float] | None:
    """Lowest and highest sum of weights[m] x slots[place of m] over the orderings (lowest mean
    first) that place every mean after all those it is ``above``: exact, by placing one mean at
    a time and keeping each set of placed means' extremes; None when those sets outgrow
    ``MAX_PLACEMENTS`` (they double with each open order)."""
    needs = [sum(1 << int(m) for m in np.flatnonzero(row)) for row in above]
    placed = {0: (0.0, 0.0)}
    for slot in slots:
        grown: dict[int, tuple[float, float]] = {}
        for mask, (low, high) in placed.items():
            for mean, need in enumerate(needs):
                if mask >> mean & 1 or mask & need != need:
                    continue
                gain = weights[mean] * slot
                key = mask | 1 << mean
                seen = grown.get(key)
                grown[key] = (
                    (low + gain, high + gain)
                    if seen is None
                    else (min(seen[0], low + gain), max(seen[1], high + gain))
                )
        if len(grown) > MAX_PLACEMENTS:
            return None
        placed = grown
    return placed[(1 << len(slots)) - 1]


def _assigned_extremes(
    weights: np.ndarray, slots: np.ndarray, above: np.ndarray
) -> tuple[float, float]:
    """``_placed_extremes``' bounds, wider but quick for any K: each mean may take any place
    between the number of means known below it and K - 1 minus the number known above it
    (orders closed under transitivity), one mean a place (an assignment problem)."""
    known = above.copy()
    for middle in range(len(known)):  # Warshall: j above m above k -> j above k
        known |= known[:, middle : middle + 1] & known[middle : middle + 1, :]
    places = np.arange(len(slots))
    lowest, highest = known.sum(axis=1), places[-1] - known.sum(axis=0)
    allowed = (places >= lowest[:, None]) & (places <= highest[:, None])
    gain = weights[:, None] * slots[None, :]
    barred = 2 * np.abs(gain).sum() + 1  # more than any allowed assignment can make up
    extremes = []
    for sign in (-1.0, 1.0):
        rows, columns = linear_sum_assignment(np.where(allowed, -sign * gain, barred))
        extremes.append(float(gain[rows, columns].sum()))
    return extremes[0], extremes[1]


def _rank_correlations(asked: np.ndarray, obtained: np.ndarray) -> np.ndarray:
    """Spearman's rho of ``asked`` (K,) with each row of ``obtained`` (R, K), as
    ``rank_correlation`` (Pearson's r of average ranks) for all rows at once; NaN where
    undefined. The resampled Spearman values, of which the intervals before the noise-free
    ones took the percentiles (benchmarks/interval_coverage.py measures both)."""
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
    are defined. The spread of a statistic over resampled prompts, centred on its noisy value:
    not an interval for the noise-free value (``basic_interval`` is)."""
    known = values[np.isfinite(values)]
    if len(known) * 2 < len(values):
        return None
    return [float(v) for v in np.percentile(known, [2.5, 97.5])]
