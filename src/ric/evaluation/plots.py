"""The empirical front as a PNG, with each point labeled by its preference (paper, Figure 4).

Two objectives: one panel, r_1 against r_2. N >= 3: one panel per pair of objectives. Several
fronts (e.g. methods or iterations) can share the figure, one colour each.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")  # one per front, so overlapping ones show


def format_preference(w: np.ndarray) -> str:
    """'0.3' for two objectives (w_1), '(0.2,0.4,0.4)' otherwise."""
    if w.size == 2:
        return f"{w[0]:.1f}"
    return "(" + ",".join(f"{v:.2g}" for v in w) + ")"


def plot_fronts(
    fronts: Mapping[str, tuple[np.ndarray, np.ndarray]],
    names: list[str],
    path: Path,
    title: str = "",
) -> Path:
    """Save a front plot. ``fronts``: label -> (preferences (K, N), mean rewards (K, N))."""
    import matplotlib

    matplotlib.use("Agg")  # files only; never needs a display
    import matplotlib.pyplot as plt

    pairs = list(itertools.combinations(range(len(names)), 2))
    if not pairs:
        raise ValueError("a front plot needs at least two objectives")
    columns = min(3, len(pairs))
    rows = -(-len(pairs) // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(5.2 * columns, 4.6 * rows), squeeze=False)
    for axis, (i, j) in zip(axes.flat, pairs, strict=False):
        for (label, (preferences, points)), marker in zip(
            fronts.items(), itertools.cycle(MARKERS), strict=False
        ):
            order = np.argsort(preferences[:, i], kind="stable")
            axis.plot(
                points[order, i],
                points[order, j],
                marker=marker,
                markersize=9 if len(points) == 1 else 6,  # a lone point (base, SFT) stands out
                label=label,
            )
            for w, point in zip(preferences, points, strict=True):
                if not np.all(np.isfinite(w)):
                    continue  # a baseline asked for no preference (base, SFT): no label
                axis.annotate(
                    format_preference(w),
                    (point[i], point[j]),
                    fontsize=7,
                    textcoords="offset points",
                    xytext=(3, 3),
                )
        axis.set_xlabel(names[i])
        axis.set_ylabel(names[j])
        axis.grid(alpha=0.3)
        if len(fronts) > 1:
            axis.legend(fontsize=8)
    for axis in list(axes.flat)[len(pairs) :]:
        axis.set_visible(False)
    return save_figure(figure, path, title)


def plot_calibration(
    names: list[str],
    asked: np.ndarray,
    obtained: np.ndarray,
    path: Path,
    title: str = "",
    curves: tuple[np.ndarray, np.ndarray] | None = None,
) -> Path:
    """Save the calibration curves: per objective (one panel each), what was asked or promised
    (x, standardized) against the mean obtained (y), with the identity line that a perfectly
    calibrated model would follow. ``asked``, ``obtained``: (K, N); ``curves``: a fitted
    calibration's (levels, curves), each (N, L), drawn as a line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    count = len(names)
    figure, axes = plt.subplots(1, count, figsize=(4.4 * count, 4.2), squeeze=False)
    for i, (axis, name) in enumerate(zip(axes.flat, names, strict=True)):
        known = np.isfinite(asked[:, i]) & np.isfinite(obtained[:, i])
        values = np.concatenate([asked[known, i], obtained[known, i]])
        if curves is not None:
            values = np.concatenate([values, curves[0][i], curves[1][i]])
        low, high = (float(values.min()), float(values.max())) if values.size else (-1.0, 1.0)
        axis.plot([low, high], [low, high], color="grey", linestyle="--", label="obtained = asked")
        if curves is not None:
            axis.plot(curves[0][i], curves[1][i], color="tab:orange", label="fitted calibration")
        axis.plot(asked[known, i], obtained[known, i], "o", color="tab:blue", label="measured")
        axis.set_xlabel(f"{name}: asked (sd)")
        axis.set_ylabel(f"{name}: obtained (sd)")
        axis.grid(alpha=0.3)
        axis.legend(fontsize=7)
    return save_figure(figure, path, title)


def save_figure(figure: Any, path: Path, title: str = "") -> Path:
    """Title, lay out, write ``path`` (its folder made) at 120 dpi, and close ``figure``."""
    import matplotlib.pyplot as plt

    if title:
        figure.suptitle(title)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path
