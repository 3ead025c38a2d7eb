"""What one request asks the model: its prompt, and the desired rewards written into it.

Pure functions, no model and no HTTP:

* **Steering.** A request sets at most one of ``preference``, ``rewards`` and
  ``rewards_obtained`` (the rewards to obtain, for a calibrated model: ``ric calibrate``); with
  none, the deployment's default preference applies. ``ric.steering.Steering`` reads and checks
  them (lists in objective order or objects keyed by name), maps a preference with the run's
  ``mapping.*`` settings and range, and solves a target for the desired rewards its calibration
  predicts will obtain it, as everywhere else in ``ric``. Each request also gets the obtained
  rewards its steering promises (``promised``): the calibration's prediction where the desired
  rewards came from it (``rewards_obtained``, or ``mapping.method: calibrated``), else the desired
  rewards themselves (the paper's mappings assume obtained = desired).
* **Guardrails.** Per objective, bounds on the preference weight and on the desired reward
  (``serve.preference_bounds``, ``serve.reward_bounds``; an objective without reward bounds is
  bounded to the run's mapping range [r_min, r_max] widened by ``serve.reward_margin`` standard
  deviations, what the model saw in training). Outside them a request is refused or
  clamped (``serve.out_of_bounds``): a preference is moved to the nearest allowed one (the Euclidean
  projection onto the simplex within the bounds, so it still sums to 1), desired rewards are
  clipped; reward bounds apply to the desired rewards however they were obtained (a refusal names
  the field the request set, a clip is listed as ``rewards``, and the promise follows the clipped
  rewards). Preference bounds apply to preferences only: ``rewards`` and ``rewards_obtained``
  give none. Every change is listed (``Adjustment``) and reported in the answer.
* **Chat messages to a prompt.** A chat becomes one prompt by ``ric.core.chat``'s rule (a lone
  user message verbatim, else a ``Role: text`` transcript ending with the user's turn), the rule
  the exported chat template applies too; here its errors become the 400 answers that name the
  message at fault. The prompt then goes through ``Steering.prompts`` like every other prompt,
  whose neutralizer (``ric.core.sanitize_prompt``) defuses reward markers and template text in
  it: no message can set or shift the rewards the model is asked for. A chat-format run
  (``template.format: chat``) is given the messages themselves (``Steering.chat_prompts``), each
  neutralized, under its own chat template; the one prompt is then what the scorers read.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ric.config import ServeConfig
from ric.core import ChatError
from ric.core import chat_prompt as core_chat_prompt
from ric.serve.errors import RequestError
from ric.steering import Steering, SteeringError, Values


@dataclass(frozen=True)
class Guardrails:
    """Bounds per objective, in objective order, and what happens outside them."""

    preference_low: np.ndarray  # (N,)
    preference_high: np.ndarray  # (N,)
    reward_low: np.ndarray  # (N,) standardized; -inf where unbounded
    reward_high: np.ndarray  # (N,)
    refuse: bool  # True: 400 outside the bounds; False: clamp


@dataclass(frozen=True)
class Adjustment:
    """One value a guardrail changed."""

    param: str  # "preference" or "rewards"
    objective: str
    requested: float
    used: float


@dataclass(frozen=True)
class SteeredRequest:
    """The desired rewards one request gets, and how they were obtained."""

    source: str  # "preference", "rewards", "rewards_obtained" or "default"
    preference: np.ndarray | None  # (N,) the weights used; None when none was mapped
    desired: np.ndarray  # (N,) standardized, as written into the prompt
    adjustments: tuple[Adjustment, ...]
    promised: np.ndarray  # (N,) the obtained rewards the steering expects for ``desired``
    obtained: np.ndarray | None = None  # (N,) the rewards_obtained target, names filled in


def guardrails(
    config: ServeConfig,
    names: Sequence[str],
    r_min: Sequence[float] | None = None,
    r_max: Sequence[float] | None = None,
) -> Guardrails:
    """The bounds of ``config`` in objective order; unknown objective names and bounds that
    leave no valid preference are errors (at startup). An objective without
    ``serve.reward_bounds`` is bounded to [r_min - margin, r_max + margin] (standardized units,
    so the margin is in standard deviations); without a range, it is unbounded."""
    for key in ("preference_bounds", "reward_bounds"):
        unknown = sorted(set(getattr(config, key)) - set(names))
        if unknown:
            raise ValueError(
                f"serve.{key} names objective {unknown[0]!r}; the run's objectives are "
                f"{', '.join(names)}"
            )

    def bounds(table: dict[str, list[float]], low: Any, high: Any) -> np.ndarray:
        low, high = np.broadcast_to(low, len(names)), np.broadcast_to(high, len(names))
        pairs = [table.get(name, [lo, hi]) for name, lo, hi in zip(names, low, high, strict=True)]
        return np.array(pairs, dtype=float).reshape(len(names), 2).T

    preference_low, preference_high = bounds(config.preference_bounds, 0.0, 1.0)
    if preference_low.sum() > 1.0 or preference_high.sum() < 1.0:
        raise ValueError(
            "serve.preference_bounds admit no preference: the minimums must sum to <= 1 and "
            f"the maximums to >= 1, got {preference_low.tolist()} and {preference_high.tolist()}"
        )
    margin = config.reward_margin
    if r_min is None or r_max is None or not np.isfinite(margin):
        reward_low, reward_high = bounds(config.reward_bounds, -np.inf, np.inf)
    else:
        low = np.asarray(r_min, dtype=float) - margin
        reward_low, reward_high = bounds(
            config.reward_bounds, low, np.asarray(r_max, dtype=float) + margin
        )
    return Guardrails(
        preference_low,
        preference_high,
        reward_low,
        reward_high,
        refuse=config.out_of_bounds == "refuse",
    )


def project_preference(w: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """The point nearest ``w`` (Euclidean) with weights summing to 1 and ``low <= w <= high``:
    ``clip(w - t, low, high)`` for the shift t that makes the sum 1 (found by bisection; the
    sum falls as t grows). Needs ``sum(low) <= 1 <= sum(high)``."""
    below, above = float(np.min(w - high)), float(np.max(w - low))  # sums >= 1 and <= 1
    for _ in range(200):
        middle = (below + above) / 2
        if np.clip(w - middle, low, high).sum() > 1.0:
            below = middle
        else:
            above = middle
    return np.clip(w - (below + above) / 2, low, high)


def bound(
    values: np.ndarray,
    low: np.ndarray,
    high: np.ndarray,
    names: Sequence[str],
    param: str,
    refuse: bool,
    clamp: Callable[[np.ndarray], np.ndarray],
    field: str | None = None,
) -> tuple[np.ndarray, tuple[Adjustment, ...]]:
    """``values`` if within [low, high]; else refused (RequestError) or ``clamp(values)``,
    with the changes made. ``field``: the request's field a refusal names, where ``values``
    (``param``) were derived from it."""
    outside = [i for i in range(len(names)) if not low[i] <= values[i] <= high[i]]
    if not outside:
        return values, ()
    if refuse:
        i = outside[0]
        what = param if field is None else f"the desired {param} that {field} needs"
        raise RequestError(
            f"{what} for objective {names[i]!r} is {values[i]:g}, outside the allowed "
            f"[{low[i]:g}, {high[i]:g}] of this deployment",
            param=field or param,
            code="out_of_bounds",
        )
    used = clamp(values)
    changes = tuple(
        Adjustment(param, name, float(before), float(after))
        for name, before, after in zip(names, values, used, strict=True)
        if before != after
    )
    return used, changes


def steer(
    preference: Values | None,
    rewards: Values | None,
    steering: Steering,
    default: np.ndarray,
    rails: Guardrails,
    rewards_obtained: Values | None = None,
) -> SteeredRequest:
    """The desired rewards of one request (rules in the module docstring)."""
    given = [
        name
        for name, value in (
            ("preference", preference),
            ("rewards", rewards),
            ("rewards_obtained", rewards_obtained),
        )
        if value is not None
    ]
    if len(given) > 1:
        raise RequestError(
            f"give one of preference, rewards or rewards_obtained, not {' and '.join(given)}",
            param=given[1],
        )
    names = steering.names
    weights: np.ndarray | None = None
    target: np.ndarray | None = None
    changes: tuple[Adjustment, ...] = ()
    try:
        if rewards_obtained is not None:
            source, target = "rewards_obtained", steering.obtained_target(rewards_obtained)
            desired = steering.desired(rewards_obtained=target.tolist())
        elif rewards is not None:
            source, desired = "rewards", steering.desired(rewards=rewards)
        else:
            source = "default" if preference is None else "preference"
            weights = default if preference is None else steering.check(preference)
            weights, changes = bound(
                weights,
                rails.preference_low,
                rails.preference_high,
                names,
                "preference",
                rails.refuse,
                lambda w: project_preference(w, rails.preference_low, rails.preference_high),
            )
            desired = steering.map_preference(weights)
    except SteeringError as error:
        raise RequestError(str(error), param=error.param) from None
    desired, reward_changes = bound(
        desired,
        rails.reward_low,
        rails.reward_high,
        names,
        "rewards",
        rails.refuse,
        lambda r: np.clip(r, rails.reward_low, rails.reward_high),
        field="rewards_obtained" if target is not None else None,
    )
    promised = (
        steering.promised(desired)
        if target is None
        else steering.fitted().predict(desired)  # chosen by the calibration, whatever mapping
    )
    return SteeredRequest(source, weights, desired, changes + reward_changes, promised, target)


def chat_prompt(messages: Sequence[Mapping[str, Any]]) -> str:
    """The one prompt a chat becomes (``ric.core.chat``); bad messages raise a RequestError that
    names the field at fault."""
    try:
        return core_chat_prompt(messages)
    except ChatError as error:
        raise RequestError(str(error), param=error.param) from None
