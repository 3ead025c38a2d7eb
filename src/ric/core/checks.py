"""Input checks shared by the core's array functions."""

from __future__ import annotations

import numpy as np


def finite_matrix(values: np.ndarray, label: str) -> np.ndarray:
    """``values`` as float64 of shape (B, N) with N >= 1 and no NaN or inf; else ValueError."""
    matrix = np.asarray(values, dtype=np.float64)
    if matrix.ndim != 2 or matrix.shape[1] == 0:
        raise ValueError(f"{label} must have shape (B, N) with N >= 1, got {matrix.shape}")
    if not np.all(np.isfinite(matrix)):
        raise ValueError(f"{label} must be finite (no NaN or inf)")
    return matrix
