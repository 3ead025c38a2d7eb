"""Pareto utilities for maximization, via moocore (docs/design.md §1.5).

moocore's routines are exact (WFG-style hypervolume), written in C and maintained by the
multi-objective optimization community; we only fix the sense (maximize) and check inputs.
"""

from __future__ import annotations

import moocore
import numpy as np

from ric.core.checks import finite_matrix


def pareto_mask(points: np.ndarray) -> np.ndarray:
    """(K,) True for the non-dominated points of ``points`` (K, N); larger is better.

    Duplicates of a non-dominated point are all kept (each is on the front).
    """
    points = finite_matrix(points, "points")
    if points.shape[0] == 0:
        return np.zeros(0, dtype=bool)
    return np.asarray(moocore.is_nondominated(points, maximise=True, keep_weakly=True), dtype=bool)


def pareto_front(points: np.ndarray) -> np.ndarray:
    """The non-dominated points of ``points`` (K, N), in their original order."""
    points = finite_matrix(points, "points")
    return points[pareto_mask(points)]


def hypervolume(points: np.ndarray, reference: np.ndarray) -> float:
    """Volume dominated by ``points`` (K, N) and dominating ``reference`` (N,); larger is better.

    Points that do not strictly dominate the reference contribute nothing.
    """
    points = finite_matrix(points, "points")
    reference = np.asarray(reference, dtype=np.float64)
    if reference.shape != (points.shape[1],):
        raise ValueError(
            f"reference must have shape ({points.shape[1]},) to match points, got {reference.shape}"
        )
    if not np.all(np.isfinite(reference)):
        raise ValueError(f"reference must be finite, got {reference.tolist()}")
    beyond = points[np.all(points > reference, axis=1)]
    if beyond.shape[0] == 0:
        return 0.0
    return float(moocore.hypervolume(beyond, ref=reference, maximise=True))
