"""How often `ric evaluate`'s and `ric compare`'s 95% intervals hold the noise-free value, on
synthetic sweeps with a known truth (docs/results.md, "Interval coverage").

Each replication draws one sweep as `ric evaluate` sees it (tests/helpers.py,
``synthetic_sweeps``): 11 preferences x 48 prompts x 2 objectives, one sampled answer per
(preference, prompt), each reward its preference's noise-free mean plus the prompt's offset (sd
0.5, shared by every preference) plus the answer's noise (sd 0.5 or 1.5). The truth is what
the statistics are meant to measure: the hypervolume of the noise-free means against (0, 0),
Spearman(w_1, noise-free mean), and for `ric compare` one front's noise-free hypervolume minus
another's on the same prompts. Two interval methods are measured on the same sweeps and prompt
draws: ``old``, the percentile intervals of the resampled statistics (the method before), and
``new``, ``ric.evaluation.metrics.resampled_intervals`` and ``compare.hypervolume_intervals``
as they are now. A coverage measured on R replications is known to about +-2 sqrt(c (1 - c) / R)
(+-2.4 points at 94% and R = 400).

    python benchmarks/interval_coverage.py --replications 400
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).parent.parent / "tests"))  # the synthetic sweeps

from helpers import coverage, true_front

from ric.core import hypervolume
from ric.evaluation.compare import hypervolume_intervals
from ric.evaluation.metrics import (
    _rank_correlations,
    percentile_interval,
    prompt_draws,
    rank_correlation,
    resampled_hypervolumes,
    resampled_intervals,
    resampled_means,
)

NAMES = ["relevance", "conciseness"]
REFERENCE = np.zeros(2)
Intervals = dict[str, list[float] | None]


def sweep_intervals(preferences: np.ndarray, resamples: int, seen: dict[str, list]) -> Any:
    """Old and new intervals of one sweep's hypervolume and Spearman(w_1, mean r_i); each
    interval is also kept in ``seen`` (for their mean bounds)."""

    def intervals(sweeps: list[np.ndarray], replication: int) -> Intervals:
        (rewards,) = sweeps
        new = resampled_intervals(rewards, preferences, REFERENCE, NAMES, resamples, replication)
        means = resampled_means(rewards, prompt_draws(rewards.shape[1], resamples, replication))
        found = {
            "old hypervolume": percentile_interval(resampled_hypervolumes(means, REFERENCE)),
            "new hypervolume": new["hypervolume"],
        }
        for i, name in enumerate(NAMES):
            drawn = _rank_correlations(preferences[:, 0], means[:, :, i])
            found[f"old {name}"] = percentile_interval(drawn)
            found[f"new {name}"] = new["w1_vs_obtained"][name]
        return _kept(found, seen)

    return intervals


def gap_intervals(resamples: int, seen: dict[str, list]) -> Any:
    """Old and new intervals of the first front's hypervolume minus the second's, paired, as
    `ric compare` draws them."""

    def intervals(sweeps: list[np.ndarray], replication: int) -> Intervals:
        draws = prompt_draws(sweeps[0].shape[1], resamples)
        first, second = (
            resampled_hypervolumes(resampled_means(each, draws), REFERENCE) for each in sweeps
        )
        ((_, new), _) = hypervolume_intervals(sweeps, REFERENCE, resamples)
        return _kept({"old gap": percentile_interval(first - second), "new gap": new}, seen)

    return intervals


def _kept(found: Intervals, seen: dict[str, list]) -> Intervals:
    for name, interval in found.items():
        seen.setdefault(name, []).append(interval or [np.nan, np.nan])
    return found


def row(statistic: str, front: str, noise: float, truth: float, shares: dict, seen: dict) -> str:
    """One line of the table: coverage old and new, and the mean bounds of both."""
    bounds = {age: np.nanmean(seen[f"{age} {statistic}"], axis=0) for age in ("old", "new")}
    cells = [
        {"hypervolume": "hypervolume", "gap": "hypervolume gap (compare)"}.get(
            statistic, f"Spearman(w_1, {statistic})"
        ),
        front,
        f"{noise}",
        f"{truth:+.3g}",
        *(f"{shares[f'{age} {statistic}']:.0%}" for age in ("old", "new")),
        *(f"{bounds[age][0]:+.3g} to {bounds[age][1]:+.3g}" for age in ("old", "new")),
    ]
    return f"| {' | '.join(cells)} |"


def rows(replications: int, resamples: int) -> list[str]:
    """The table's lines: each statistic, front and noise sd, with its truth."""
    lines = []
    for shape in ("arc", "close", "hump"):
        preferences, front = true_front(shape)
        truths = {"hypervolume": hypervolume(front, REFERENCE)}
        for i, name in enumerate(NAMES):
            truths[name] = rank_correlation(preferences[:, 0], front[:, i])
        keyed = {f"{age} {name}": truth for name, truth in truths.items() for age in ("old", "new")}
        for noise in (0.5, 1.5):
            seen: dict[str, list] = {}
            intervals = sweep_intervals(preferences, resamples, seen)
            shares = coverage(intervals, keyed, [front], noise, replications)
            lines += [row(name, shape, noise, t, shares, seen) for name, t in truths.items()]
    for shape in ("close", "point"):
        fronts = [true_front("arc")[1], true_front(shape)[1]]
        truth = hypervolume(fronts[0], REFERENCE) - hypervolume(fronts[1], REFERENCE)
        for noise in (0.5, 1.5):
            seen = {}
            keyed = {"old gap": truth, "new gap": truth}
            shares = coverage(gap_intervals(resamples, seen), keyed, fronts, noise, replications)
            lines.append(row("gap", f"arc - {shape}", noise, truth, shares, seen))
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--replications", type=int, default=400, help="synthetic sweeps per row")
    parser.add_argument("--resamples", type=int, default=1000, help="prompt draws per sweep")
    args = parser.parse_args()
    start = time.perf_counter()
    lines = rows(args.replications, args.resamples)
    header = ["statistic", "front", "noise sd", "truth", "old", "new", "old mean", "new mean"]
    print(f"| {' | '.join(header)} |")
    print(f"| {' | '.join('---' for _ in header)} |")
    print("\n".join(lines))
    print(
        f"\n{args.replications} replications of 48 prompts x 11 preferences, {args.resamples} "
        f"resamples each; {time.perf_counter() - start:.0f} s"
    )


if __name__ == "__main__":
    main()
