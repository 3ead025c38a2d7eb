"""Preference-to-reward mappings (docs/design.md §1.4, paper §3.4 and appendix A).

A user's preference w (on the simplex) becomes the desired rewards R written into the prompt.
With phi_i the linear map of [r_min_i, r_max_i] onto [0, 1], every method picks z = phi(R) in
[0, 1]^N and returns R_i = (r_max_i - r_min_i) * z_i + r_min_i:

* ``linear``: z_i = w_i (the paper's weaker ablation).
* ``p_norm``: the closed form of the appendix's equation (10) for 1 < p < inf,
  z_i = w_i^(1/(p-1)) / lam_i^(p/(p-1)) * [sum_j (w_j / lam_j)^(p/(p-1))]^(-1/p).
  The theorem in the main text misprints the sum when lam != 1; this is the solution of
  max w.z s.t. ||lam * z||_p <= 1, whose constraint is active at the optimum.
* ``p_inf``: the paper's practical rule, z_i = 1 if w_i >= 1/N else N * w_i, which is the
  p = inf solution z_i = 1/lam_i with lam_i = max(1, 1/(N w_i)). Passing ``lam`` uses the
  theorem's z_i = 1/lam_i with that lam instead.
* ``convex``: the appendix's program solved numerically, for any p in (1, inf], any lam >= 1 and
  with the ordering constraint z_(1) >= ... >= z_(N) along w sorted in descending order. It agrees
  with the closed forms wherever their ordering condition holds, and stays correct where it
  does not.
* ``calibrated``: the program solved on the obtained rewards a model's fitted calibration
  predicts (``ric.core.calibration``); it needs that calibration, so it is not computed here.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

SIMPLEX_TOLERANCE = 1e-6
MAPPING_METHODS = ("linear", "p_norm", "p_inf", "convex", "calibrated")

ArrayLike = Sequence[float] | np.ndarray


def check_preference(
    w: ArrayLike, num_objectives: int | None = None, what: str = "preference"
) -> np.ndarray:
    """Validate a preference vector (or other weights on the simplex, called ``what`` in the
    errors) and return it as float64 (N,).

    Raises ValueError naming the problem: wrong length, non-finite or negative entries, or a sum
    that differs from 1 by more than 1e-6.
    """
    w_array = np.asarray(w, dtype=np.float64)
    if w_array.ndim != 1 or w_array.size == 0:
        raise ValueError(f"{what} must be a non-empty 1-D vector, got shape {w_array.shape}")
    if num_objectives is not None and w_array.size != num_objectives:
        raise ValueError(
            f"{what} has {w_array.size} weights but there are {num_objectives} objectives"
        )
    if not np.all(np.isfinite(w_array)):
        raise ValueError(f"{what} weights must be finite, got {w_array.tolist()}")
    if np.any(w_array < 0):
        raise ValueError(f"{what} weights must be >= 0, got {w_array.tolist()}")
    total = float(w_array.sum())
    if abs(total - 1.0) > SIMPLEX_TOLERANCE:
        raise ValueError(
            f"{what} weights must sum to 1 (within {SIMPLEX_TOLERANCE}), "
            f"got sum {total!r} for {w_array.tolist()}"
        )
    return w_array


def linear_z(w: np.ndarray) -> np.ndarray:
    return w.copy()


def p_norm_z(w: np.ndarray, p: float, lam: np.ndarray) -> np.ndarray:
    """Closed form of max w.z s.t. ||lam * z||_p <= 1 (appendix equation 10).

    Computed in Python floats, one objective at a time and summed left to right, not with
    numpy's ``**`` and ``sum``: those differ from the C library's ``pow`` and from a plain sum in
    the last bit, by CPU (numpy's SIMD power) and by version (its pairwise summation). The
    exported chat template (``ric.export.chat_template``) repeats these very operations in
    Jinja, whose arithmetic is Python's, and must write the same one-decimal values.
    """
    q = p / (p - 1.0)  # the dual exponent
    weights, scales = w.tolist(), lam.tolist()
    total = 0.0
    for weight, scale in zip(weights, scales, strict=True):
        total = total + (weight / scale) ** q
    norm = total ** (-1.0 / p)
    return np.array(
        [
            weight ** (1.0 / (p - 1.0)) / scale**q * norm
            for weight, scale in zip(weights, scales, strict=True)
        ]
    )


def practical_p_inf_lam(w: np.ndarray) -> np.ndarray:
    """The paper's choice lam_i = 1 if w_i >= 1/N, else 1/(N w_i) (inf where w_i = 0)."""
    n = w.size
    with np.errstate(divide="ignore"):
        return np.where(w >= 1.0 / n, 1.0, 1.0 / (n * w))


def p_inf_z(lam: np.ndarray) -> np.ndarray:
    """Theorem 3.1 for p = inf: z_i = 1/lam_i."""
    return 1.0 / lam


def convex_z(w: np.ndarray, p: float, lam: np.ndarray, ordered: bool = True) -> np.ndarray:
    """Solve max w.z s.t. ||lam * z||_p <= 1, z >= 0 and, if ``ordered``, z ordered like w.

    The ordering constraint becomes bounds by writing z = M d with d >= 0, where M sums d over
    the objectives ranked at or below each one (so z_(1) >= ... >= z_(N) holds by construction);
    unordered, M is the identity. p = inf is then a linear program (HiGHS) and finite p a smooth
    program with one nonlinear constraint (SLSQP with exact gradients). z <= 1 follows from
    lam >= 1 and the norm constraint.
    """
    # Imported here: scipy.optimize costs 0.4 s, which every `ric` command would pay otherwise.
    from scipy.optimize import linprog, minimize

    n = w.size
    if ordered:
        ranking = np.argsort(-w, kind="stable")  # zeta: objectives by descending preference
        basis = np.zeros((n, n))
        for rank, objective in enumerate(ranking):
            basis[objective, rank:] = 1.0
    else:
        basis = np.eye(n)
    gain = w @ basis  # objective in d

    if math.isinf(p):
        result = linprog(
            -gain, A_ub=lam[:, None] * basis, b_ub=np.ones(n), bounds=(0, None), method="highs"
        )
        if not result.success:
            raise RuntimeError(f"the p = inf program failed: {result.message}")
        return np.clip(basis @ result.x, 0.0, 1.0)

    scale = lam**p

    def slack(d: np.ndarray) -> float:
        return float(1.0 - scale @ (basis @ d) ** p)

    def slack_gradient(d: np.ndarray) -> np.ndarray:
        return -(p * scale * (basis @ d) ** (p - 1.0)) @ basis

    start = np.zeros(n)
    start[-1] = 0.5 / float(scale.sum()) ** (1.0 / p)  # all z equal, strictly feasible
    result = minimize(
        lambda d: -gain @ d,
        start,
        jac=lambda d: -gain,
        bounds=[(0.0, None)] * n,
        constraints=[{"type": "ineq", "fun": slack, "jac": slack_gradient}],
        method="SLSQP",
        options={"ftol": 1e-12, "maxiter": 1000},
    )
    # Status 8 means the line search hit floating-point precision at the optimum; the point is
    # accepted when it is feasible (measured error vs the closed form: < 1e-6).
    if not (result.success or (result.status == 8 and slack(result.x) > -1e-9)):
        raise RuntimeError(f"the p-norm program failed: {result.message}")
    return np.clip(basis @ result.x, 0.0, 1.0)


def _check_lam(lam: ArrayLike | None, n: int) -> np.ndarray:
    if lam is None:
        return np.ones(n)
    lam_array = np.asarray(lam, dtype=np.float64)
    if lam_array.shape != (n,):
        raise ValueError(
            f"lam must have {n} values (one per objective), got shape {lam_array.shape}"
        )
    if not np.all(np.isfinite(lam_array)) or np.any(lam_array < 1.0):
        raise ValueError(f"lam values must be finite and >= 1, got {lam_array.tolist()}")
    return lam_array


def _check_p(p: float, method: str) -> float:
    p = float(p)
    if math.isnan(p) or p <= 1.0:
        raise ValueError(f"p must be > 1 for method {method!r}, got {p}")
    if method == "p_norm" and math.isinf(p):
        raise ValueError("p must be finite for method 'p_norm'; use method 'p_inf' for p = inf")
    return p


def preference_to_z(
    w: ArrayLike,
    method: str = "p_inf",
    p: float = 2.0,
    lam: ArrayLike | None = None,
    ordered: bool = True,
) -> np.ndarray:
    """The normalized desired rewards z = phi(R) in [0, 1]^N for preference ``w``."""
    w_array = check_preference(w)
    n = w_array.size
    solvers: dict[str, Callable[[], np.ndarray]] = {
        "linear": lambda: linear_z(w_array),
        "p_norm": lambda: p_norm_z(w_array, _check_p(p, method), _check_lam(lam, n)),
        "p_inf": lambda: p_inf_z(
            practical_p_inf_lam(w_array) if lam is None else _check_lam(lam, n)
        ),
        "convex": lambda: convex_z(w_array, _check_p(p, method), _check_lam(lam, n), ordered),
    }
    if method == "calibrated":  # ric.core.calibration: it needs the model's fitted calibration
        raise ValueError(
            "mapping method 'calibrated' maps with a model's fitted calibration: give a "
            "`ric calibrate` output as the model (or pick linear, p_norm, p_inf or convex)"
        )
    if method not in solvers:
        raise ValueError(f"unknown mapping method {method!r}; valid: {', '.join(MAPPING_METHODS)}")
    return solvers[method]()


def preference_to_rewards(
    w: ArrayLike,
    r_min: ArrayLike,
    r_max: ArrayLike,
    method: str = "p_inf",
    p: float = 2.0,
    lam: ArrayLike | None = None,
    ordered: bool = True,
) -> np.ndarray:
    """Desired rewards R (N,) for preference ``w``: R_i = (r_max_i - r_min_i) * z_i + r_min_i.

    ``r_min``/``r_max`` are in the units written into prompts (standardized, see RewardStats).
    ``p`` is used by ``p_norm`` and ``convex`` (``convex`` also takes ``p=inf``); ``lam`` (each
    >= 1) reweights the norm constraint; ``ordered`` adds the ordering constraint to ``convex``.
    """
    n = check_preference(w).size
    low = np.asarray(r_min, dtype=np.float64)
    high = np.asarray(r_max, dtype=np.float64)
    for label, bound in (("r_min", low), ("r_max", high)):
        if bound.shape != (n,):
            raise ValueError(
                f"preference has {n} weights but {label} has shape {bound.shape}; "
                "give one weight and one bound per objective"
            )
        if not np.all(np.isfinite(bound)):
            raise ValueError(f"{label} must be finite, got {bound.tolist()}")
    if np.any(high <= low):
        raise ValueError(
            f"r_max must exceed r_min everywhere, got {low.tolist()} / {high.tolist()}"
        )
    z = preference_to_z(w, method=method, p=p, lam=lam, ordered=ordered)
    return (high - low) * z + low
