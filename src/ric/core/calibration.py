"""Calibrated steering: what a model obtains when asked for desired rewards, fitted from its own
answers, and the mapping that asks for what it can give (docs/design.md §1.4, "calibrated").

The paper derives its mappings assuming phi_i, the obtained reward as a function of the desired
one, is the linear map of [r_min_i, r_max_i] onto [0, 1], and names a fitted phi as future work.
``fit_calibration`` fits, from answers generated at a design of desired rewards (`ric
calibrate`), an additive model of every objective j, in standardized units:

    obtained_j(R) = g_j(R_j) + sum_{i != j} cross[j, i] * (R_i - centre_i)

g_j is isotonic (scikit-learn's ``IsotonicRegression``: non-decreasing, no shape assumed beyond
that) over the design's levels of R_j, each pooled run of levels placed at its centre and the
curve linear between centres (``through_block_centres``), so it rises strictly except at the
model's floor and ceiling; ``cross`` holds the side effects
(how asking for one more sd of objective i moves objective j), fitted by least squares and kept
where they stand out of the answers' noise (two standard errors); the two are fitted in turn
(backfitting) until they agree. A balanced design makes both unbiased.

The model's **reach** on objective j is [g_j(lowest level), g_j(highest level)]: what asking for
objective j's ends gives, the others asked at their centre. The calibrated mapping then solves the
paper's program (appendix A.1) in obtained terms: the normalized obtained rewards z maximize
sum_i w_i z_i subject to ||lam * z||_p <= 1 (``mapping.p``, ``mapping.lam``), are scaled back
along that ray until the model can reach them jointly (side effects included), and the desired
rewards that the fit predicts produce them are returned (``Calibration.solve``). So each
preference asks for a point the model reaches, distinct preferences get distinct points (for
finite p), and no point asks for more than the model gives. Asked for obtained rewards directly
(``rewards_obtained``), ``solve`` gives the desired rewards that produce them, and refuses a
target outside the reach.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from ric.core.mapping import check_preference, p_inf_z, p_norm_z, practical_p_inf_lam

CALIBRATED = "calibrated"
# A target counts as reached when the fit's prediction is within this many sd on each objective.
REACH_TOLERANCE = 0.01
BACKFIT_ROUNDS = 50
# A side effect is kept when it is at least this many standard errors from 0 (about 95%).
SIDE_EFFECT_T = 2.0
# Strictly increasing curves make the inverse a function: a level where the isotonic fit is flat
# gets this much more than the one below it (sd), far below any reward's resolution.
TIE_STEP = 1e-6


@dataclass(frozen=True)
class Calibration:
    """The fitted additive model of the module docstring; every array in standardized units."""

    names: tuple[str, ...]
    levels: np.ndarray  # (N, L) the desired values the design asked for, increasing per row
    curves: np.ndarray  # (N, L) g_j at each level: obtained j, the others at their centre
    cross: np.ndarray  # (N, N) cross[j, i]: obtained j per sd of desired i (diagonal 0)
    centre: np.ndarray  # (N,) the design's mean desired value: where the side effects are 0
    samples: int  # answers it was fitted on

    @property
    def num_objectives(self) -> int:
        return len(self.names)

    @property
    def low(self) -> np.ndarray:
        """(N,) the desired rewards the design's lowest level asked for."""
        return self.levels[:, 0]

    @property
    def high(self) -> np.ndarray:
        return self.levels[:, -1]

    @property
    def reach(self) -> tuple[np.ndarray, np.ndarray]:
        """(lowest, highest) obtained reward (N,) each objective reaches, the others asked at
        their centre."""
        return self.curves[:, 0].copy(), self.curves[:, -1].copy()

    def curve(self, objective: int, desired: np.ndarray) -> np.ndarray:
        """g_j at ``desired`` values of objective j (clipped to the design's range)."""
        return np.interp(desired, self.levels[objective], self.curves[objective])

    def predict(self, desired: np.ndarray) -> np.ndarray:
        """Obtained rewards (..., N) the fit predicts for desired rewards (..., N), each clipped to
        the design's range (beyond it nothing was measured)."""
        desired = np.clip(np.asarray(desired, dtype=float), self.low, self.high)
        own = np.stack(
            [self.curve(j, desired[..., j]) for j in range(self.num_objectives)], axis=-1
        )
        return own + (desired - self.centre) @ self.cross.T

    def solve(self, target: np.ndarray) -> tuple[np.ndarray, float]:
        """Desired rewards (N,) inside the design's range whose predicted obtained rewards are
        closest to ``target`` (N,), and the largest miss on any objective (0: reached).

        Each objective's curve is inverted in turn given the others (Gauss-Seidel); where the
        side effects are too strong for that to settle, a bounded least-squares solve finishes."""
        target = np.asarray(target, dtype=float)
        desired = self.centre.copy()
        for _ in range(100):
            previous = desired.copy()
            for j in range(self.num_objectives):
                side = (desired - self.centre) @ self.cross[j]
                desired[j] = np.interp(target[j] - side, self.curves[j], self.levels[j])
            if np.max(np.abs(desired - previous)) < 1e-9:
                break
        miss = float(np.max(np.abs(self.predict(desired) - target)))
        if miss > REACH_TOLERANCE / 10:
            from scipy.optimize import least_squares  # 0.4 s to import: only when needed

            fitted = least_squares(
                lambda d: self.predict(d) - target, desired, bounds=(self.low, self.high)
            )
            if fitted.cost * 2 < np.sum((self.predict(desired) - target) ** 2):
                desired = fitted.x
                miss = float(np.max(np.abs(self.predict(desired) - target)))
        return desired, miss

    def target_for(self, z: np.ndarray) -> np.ndarray:
        """Obtained rewards (N,) at normalized position ``z`` in the reach (0: lowest, 1:
        highest)."""
        lowest, highest = self.reach
        return lowest + np.asarray(z, dtype=float) * (highest - lowest)

    def map_preference(
        self, w: np.ndarray, p: float = 2.0, lam: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """(desired, predicted obtained), each (N,), for preference ``w``: the paper's program
        in obtained terms, scaled back along its ray to what the model reaches (module
        docstring). p = inf is the paper's practical p_inf rule on the fitted curves."""
        w = check_preference(w, self.num_objectives)
        if math.isinf(p):
            z = p_inf_z(practical_p_inf_lam(w) if lam is None else np.asarray(lam, float))
        else:
            z = p_norm_z(w, p, np.ones(w.size) if lam is None else np.asarray(lam, float))
        desired, miss = self.solve(self.target_for(z))
        if miss <= REACH_TOLERANCE:
            return desired, self.predict(desired)
        # Bisect the largest scale s in [0, 1] at which s * z is reached.
        reached, beyond = 0.0, 1.0
        start, start_miss = self.solve(self.target_for(0.0 * z))
        if start_miss > REACH_TOLERANCE:  # not even the ray's start: the closest point to z
            return desired, self.predict(desired)
        desired = start
        for _ in range(30):
            scale = (reached + beyond) / 2
            candidate, miss = self.solve(self.target_for(scale * z))
            if miss <= REACH_TOLERANCE:
                reached, desired = scale, candidate
            else:
                beyond = scale
        return desired, self.predict(desired)

    def to_json(self) -> dict[str, Any]:
        return {
            "names": list(self.names),
            "levels": self.levels.tolist(),
            "curves": self.curves.tolist(),
            "cross": self.cross.tolist(),
            "centre": self.centre.tolist(),
            "samples": self.samples,
        }

    @classmethod
    def from_json(cls, values: dict[str, Any]) -> Calibration:
        calibration = cls(
            names=tuple(values["names"]),
            levels=np.asarray(values["levels"], dtype=float),
            curves=np.asarray(values["curves"], dtype=float),
            cross=np.asarray(values["cross"], dtype=float),
            centre=np.asarray(values["centre"], dtype=float),
            samples=int(values["samples"]),
        )
        check_calibration(calibration)
        return calibration


def check_calibration(calibration: Calibration) -> None:
    """Raise ValueError naming what is inconsistent in a calibration read from a file."""
    n = calibration.num_objectives
    shapes = {
        "levels": (calibration.levels.ndim == 2 and calibration.levels.shape[0] == n),
        "curves": calibration.curves.shape == calibration.levels.shape,
        "cross": calibration.cross.shape == (n, n),
        "centre": calibration.centre.shape == (n,),
    }
    wrong = [name for name, ok in shapes.items() if not ok]
    if wrong:
        raise ValueError(
            f"calibration for {n} objectives has badly shaped {', '.join(wrong)}: levels and "
            "curves are (N, L), cross (N, N), centre (N,)"
        )
    if calibration.levels.shape[1] < 2 or np.any(np.diff(calibration.levels, axis=1) <= 0):
        raise ValueError("calibration levels must be at least 2 increasing values per objective")
    if np.any(np.diff(calibration.curves, axis=1) <= 0):
        raise ValueError("calibration curves must increase along the levels")


def design_levels(r_min: np.ndarray, r_max: np.ndarray, count: int) -> np.ndarray:
    """(N, count) evenly spaced desired values over [r_min_i, r_max_i]."""
    if count < 2:
        raise ValueError(f"a calibration needs at least 2 levels per objective, got {count}")
    return np.linspace(np.asarray(r_min, float), np.asarray(r_max, float), count, axis=1)


def fit_calibration(
    names: tuple[str, ...], levels: np.ndarray, desired: np.ndarray, obtained: np.ndarray
) -> Calibration:
    """Fit the module docstring's model to answers asked for ``desired`` (M, N), each value one
    of that objective's ``levels`` (N, L), which obtained ``obtained`` (M, N)."""
    from sklearn.isotonic import IsotonicRegression

    desired, obtained = np.asarray(desired, float), np.asarray(obtained, float)
    n = len(names)
    if desired.shape != obtained.shape or desired.ndim != 2 or desired.shape[1] != n:
        raise ValueError(
            f"desired {desired.shape} and obtained {obtained.shape} must both be (M, {n})"
        )
    centre = levels.mean(axis=1)
    offsets = desired - centre
    cross = np.zeros((n, n))
    curves = np.zeros_like(levels, dtype=float)
    for _ in range(BACKFIT_ROUNDS):
        previous = cross.copy()
        for j in range(n):
            others = [i for i in range(n) if i != j]
            isotonic = IsotonicRegression(increasing=True, out_of_bounds="clip")
            isotonic.fit(desired[:, j], obtained[:, j] - offsets @ cross[j])
            counts = np.isclose(desired[:, j, None], levels[j]).sum(axis=0)
            curves[j] = through_block_centres(levels[j], isotonic.predict(levels[j]), counts)
            if others:
                rest = obtained[:, j] - isotonic.predict(desired[:, j])
                cross[j, others] = side_effects(offsets[:, others], rest - rest.mean())
        if np.max(np.abs(cross - previous)) < 1e-10:
            break
    steps = np.arange(levels.shape[1]) * TIE_STEP
    curves = np.maximum.accumulate(curves, axis=1) + steps
    return Calibration(tuple(names), np.asarray(levels, float), curves, cross, centre, len(desired))


def side_effects(offsets: np.ndarray, rest: np.ndarray) -> np.ndarray:
    """Least-squares slopes of ``rest`` (M,) on ``offsets`` (M, K), each kept only where it is
    at least ``SIDE_EFFECT_T`` standard errors from 0: a slope within the answers' noise, inverted
    by the mapping, would move the desired rewards by more than the model moves (on a curve's
    flat top a side effect of 0.04 sd moved a desired value by 0.5 sd)."""
    slopes, *_ = np.linalg.lstsq(offsets, rest, rcond=None)
    dof = max(len(rest) - offsets.shape[1], 1)
    noise = float(np.sum((rest - offsets @ slopes) ** 2)) / dof
    errors = np.sqrt(noise * np.diag(np.linalg.pinv(offsets.T @ offsets)))
    return np.where(np.abs(slopes) >= SIDE_EFFECT_T * errors, slopes, 0.0)


def through_block_centres(levels: np.ndarray, fitted: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """An isotonic fit (``fitted`` at ``levels``, ``counts`` answers at each) made strictly
    increasing between its blocks: each run of levels pooled to one value keeps that value at its
    answers' mean level, and the curve runs straight between those centres (flat beyond the first
    and last: the model's floor and ceiling). A pooled run is noise where the model still rises;
    placing its value at its centre keeps the fit's means and makes the inverse a function."""
    centres, values = [], []
    start = 0
    for end in range(1, len(levels) + 1):
        if end == len(levels) or fitted[end] != fitted[start]:
            weights = np.maximum(counts[start:end], 1e-12)
            centres.append(float(np.average(levels[start:end], weights=weights)))
            values.append(float(fitted[start]))
            start = end
    return np.interp(levels, centres, values)


def calibration_error(promised: np.ndarray, obtained: np.ndarray) -> float:
    """Mean absolute difference (sd) between what a mapping promised, (K, N), and the mean
    rewards obtained there, (K, N)."""
    return float(np.mean(np.abs(np.asarray(obtained, float) - np.asarray(promised, float))))
