"""Per-objective normalization statistics (docs/design.md §1.1).

One ``RewardStats`` object is computed when a dataset is labeled and then reused, unchanged, for
online relabeling, evaluation and serving: the defect it prevents is the reference code's mix of
raw and normalized reward columns and of different r_min/r_max samples per stage.

Everything downstream of labeling works in standardized units, z = (r - mean) / std, so the
r_min/r_max given to the preference mappings are standardized too.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np

# Quantiles of each standardized objective kept in the stats file, so that ranges from data
# quantiles can be asked for later without the data: 0, 0.001, ..., 1 (1,001 levels).
QUANTILE_LEVELS = np.linspace(0.0, 1.0, 1001)
PAPER_NORMAL_SAMPLES = 50_000


@dataclass(frozen=True)
class RewardStats:
    """Mean and standard deviation of each raw reward, with what they were computed from."""

    names: tuple[str, ...]
    mean: tuple[float, ...]  # (N,) raw units
    std: tuple[float, ...]  # (N,) raw units, > 0
    count: int = 0  # number of samples the stats were computed on
    reward_ids: tuple[str, ...] = ()  # (N,) identity of each reward model (type and options)
    data_fingerprint: str = ""  # hash of the (prompt, response) pairs
    quantiles: tuple[tuple[float, ...], ...] = field(default=())  # (N, 1001) standardized

    def __post_init__(self) -> None:
        n = len(self.names)
        if n == 0:
            raise ValueError("RewardStats needs at least one objective")
        if len(set(self.names)) != n:
            raise ValueError(f"reward names must be unique, got {list(self.names)}")
        for label, values in (("mean", self.mean), ("std", self.std)):
            if len(values) != n:
                raise ValueError(f"{label} has {len(values)} values for {n} rewards {self.names}")
        for name, std in zip(self.names, self.std, strict=True):
            if not np.isfinite(std) or std <= 0:
                raise ValueError(
                    f"reward {name!r} has standard deviation {std}; it must be finite and > 0 "
                    "(a constant reward carries no signal to condition on)"
                )
        if self.reward_ids and len(self.reward_ids) != n:
            raise ValueError(f"reward_ids has {len(self.reward_ids)} entries for {n} rewards")
        if self.quantiles and len(self.quantiles) != n:
            raise ValueError(f"quantiles has {len(self.quantiles)} rows for {n} rewards")

    @property
    def num_objectives(self) -> int:
        return len(self.names)

    @classmethod
    def fit(
        cls,
        rewards: np.ndarray,
        names: Sequence[str],
        reward_ids: Sequence[str] = (),
        data_fingerprint: str = "",
    ) -> RewardStats:
        """Compute the stats of raw rewards, shape (B, N), one column per name."""
        rewards = np.asarray(rewards, dtype=np.float64)
        if rewards.ndim != 2 or rewards.shape[1] != len(names):
            raise ValueError(f"rewards must have shape (B, {len(names)}), got {rewards.shape}")
        if rewards.shape[0] < 2:
            raise ValueError(f"need at least 2 samples to fit stats, got {rewards.shape[0]}")
        _check_finite(rewards, names)
        mean = rewards.mean(axis=0)
        std = rewards.std(axis=0)
        constant = [name for name, s in zip(names, std, strict=True) if s <= 0]
        if constant:
            raise ValueError(
                f"reward(s) {constant} are constant over the data; a constant reward carries "
                "no signal to condition on"
            )
        standardized = (rewards - mean) / std
        quantiles = np.quantile(standardized, QUANTILE_LEVELS, axis=0).T  # (N, 1001)
        return cls(
            names=tuple(names),
            mean=tuple(float(m) for m in mean),
            std=tuple(float(s) for s in std),
            count=int(rewards.shape[0]),
            reward_ids=tuple(reward_ids),
            data_fingerprint=data_fingerprint,
            quantiles=tuple(tuple(float(v) for v in row) for row in quantiles),
        )

    def standardize(self, rewards: np.ndarray) -> np.ndarray:
        """Raw (..., N) -> standardized (..., N)."""
        rewards = self._check_width(rewards)
        return (rewards - np.asarray(self.mean)) / np.asarray(self.std)

    def unstandardize(self, standardized: np.ndarray) -> np.ndarray:
        """Standardized (..., N) -> raw (..., N)."""
        standardized = self._check_width(standardized)
        return standardized * np.asarray(self.std) + np.asarray(self.mean)

    def reward_range(
        self,
        source: Literal["normal", "quantile"] = "normal",
        samples: int = PAPER_NORMAL_SAMPLES,
        seed: int = 0,
        lower: float = 0.0,
        upper: float = 1.0,
    ) -> tuple[np.ndarray, np.ndarray]:
        """(r_min, r_max), each (N,), in standardized units, for the preference mappings.

        ``normal``: extremes of ``samples`` seeded standard-normal draws per objective (the
        paper: 50,000, about +-4), so that outliers of the data do not set the range.
        ``quantile``: the ``lower`` and ``upper`` quantiles of the standardized training data.
        """
        if source == "normal":
            return normal_reward_range(self.num_objectives, samples=samples, seed=seed)
        if source == "quantile":
            if not self.quantiles:
                raise ValueError("these stats hold no data quantiles; use source='normal'")
            if not 0.0 <= lower < upper <= 1.0:
                raise ValueError(f"need 0 <= lower < upper <= 1, got lower={lower} upper={upper}")
            table = np.asarray(self.quantiles)
            r_min = np.array([np.interp(lower, QUANTILE_LEVELS, row) for row in table])
            r_max = np.array([np.interp(upper, QUANTILE_LEVELS, row) for row in table])
            return r_min, r_max
        raise ValueError(f"unknown range source {source!r}; valid: 'normal', 'quantile'")

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1)

    @classmethod
    def from_json(cls, text: str) -> RewardStats:
        data: dict[str, Any] = json.loads(text)
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown keys in stats file: {unknown}; valid: {sorted(known)}")
        for key in ("names", "mean", "std", "reward_ids"):
            if key in data:
                data[key] = tuple(data[key])
        if "quantiles" in data:
            data["quantiles"] = tuple(tuple(row) for row in data["quantiles"])
        return cls(**data)

    def _check_width(self, values: np.ndarray) -> np.ndarray:
        values = np.asarray(values, dtype=np.float64)
        if values.shape[-1:] != (self.num_objectives,):
            raise ValueError(
                f"expected last dimension {self.num_objectives} ({', '.join(self.names)}), "
                f"got shape {values.shape}"
            )
        return values


def normal_reward_range(
    num_objectives: int, samples: int = PAPER_NORMAL_SAMPLES, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Per-objective min and max of ``samples`` seeded standard-normal draws (the paper's rule)."""
    if samples < 2:
        raise ValueError(f"samples must be >= 2, got {samples}")
    draws = np.random.default_rng(seed).standard_normal((samples, num_objectives))
    return draws.min(axis=0), draws.max(axis=0)


def _check_finite(rewards: np.ndarray, names: Sequence[str]) -> None:
    bad_rows, bad_cols = np.nonzero(~np.isfinite(rewards))
    if bad_rows.size:
        columns = sorted({names[int(c)] for c in bad_cols})
        raise ValueError(
            f"non-finite rewards (NaN or inf) in {columns} at rows {bad_rows[:10].tolist()}"
            + (f" and {bad_rows.size - 10} more" if bad_rows.size > 10 else "")
        )
