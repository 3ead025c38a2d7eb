"""Preference grids: the paper's (11 points for N = 2, 13 vectors for N = 3) or a simplex lattice.

Every grid is a list of preference vectors on the simplex, checked by ``check_preference``.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np

from ric.core import check_preference

# The paper's 13 preference vectors for 3 objectives (docs/design.md §5).
PAPER_GRID_3 = (
    (0.0, 0.0, 1.0),
    (0.0, 1.0, 0.0),
    (0.1, 0.1, 0.8),
    (0.1, 0.8, 0.1),
    (0.2, 0.2, 0.6),
    (0.2, 0.4, 0.4),
    (0.2, 0.6, 0.2),
    (1 / 3, 1 / 3, 1 / 3),
    (0.4, 0.2, 0.4),
    (0.4, 0.4, 0.2),
    (0.6, 0.2, 0.2),
    (0.8, 0.1, 0.1),
    (1.0, 0.0, 0.0),
)


def simplex_lattice(num_objectives: int, divisions: int) -> list[tuple[float, ...]]:
    """Every w with entries in {0, 1/d, ..., 1} summing to 1 (``divisions`` = d), sorted so
    that w_1 rises along the list."""
    if num_objectives < 1 or divisions < 1:
        raise ValueError(
            f"need num_objectives >= 1 and divisions >= 1, got {num_objectives}, {divisions}"
        )
    points = [
        tuple(count / divisions for count in counts)
        for counts in itertools.product(range(divisions + 1), repeat=num_objectives)
        if sum(counts) == divisions
    ]
    return sorted(points)


def paper_grid(num_objectives: int) -> list[tuple[float, ...]]:
    """The paper's grid for 2 or 3 objectives; for N >= 4 a lattice small enough to evaluate
    (35 points for N = 4 and 5, then divisions of 2)."""
    if num_objectives == 2:
        return simplex_lattice(2, 10)
    if num_objectives == 3:
        return [tuple(w) for w in PAPER_GRID_3]
    return simplex_lattice(num_objectives, {4: 4, 5: 3}.get(num_objectives, 2))


def resolve_grid(
    num_objectives: int,
    kind: str = "paper",
    divisions: int = 10,
    explicit: Sequence[Sequence[float]] = (),
) -> np.ndarray:
    """The grid (K, N) for ``kind``: 'paper', 'lattice' (with ``divisions``) or 'explicit'."""
    if kind == "paper":
        grid = paper_grid(num_objectives)
    elif kind == "lattice":
        grid = simplex_lattice(num_objectives, divisions)
    elif kind == "explicit":
        if not explicit:
            raise ValueError("grid kind 'explicit' needs a list of preferences")
        grid = [tuple(w) for w in explicit]
    else:
        raise ValueError(f"unknown grid kind {kind!r}; valid: paper, lattice, explicit")
    return np.array([check_preference(w, num_objectives) for w in grid])
