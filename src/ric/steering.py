"""The one place where a requested trade-off becomes what a model is given.

A user asks a trained model for a trade-off in one of two ways:

* a **preference** w: N weights >= 0 summing to 1, in objective order or as an object keyed by
  objective name (missing names 0). The run's recorded mapping (``mapping.*``: linear, p_norm,
  p_inf or convex, docs/design.md §1.4) turns it into desired rewards over the run's range
  [r_min, r_max] (``mapping.range_source``: the paper's normal draws or the data's quantiles);
* **desired rewards** themselves, in standardized units (a list or an object keyed by name,
  missing names 0: the training mean);
* **rewards to obtain** (``rewards_obtained``), for a calibrated model (`ric calibrate`): the
  desired rewards its calibration predicts will produce them (``ric.core.calibration``), and an
  error for a target beyond the model's reach.

With ``mapping.method: calibrated`` a preference is mapped with the model's calibration: the
paper's program on the obtained rewards the calibration predicts. Every mapping also says what it
promises (``promised``): the obtained rewards it expects, which the steering card compares with
what the model gives (the desired rewards themselves for the paper's mappings, which assume
obtained = desired).

For a RiC model the desired rewards are written into the prompt (``ric.core.build_prompt``, whose
neutralizer defuses marker text in user input). With a chat-format template (``template.format:
chat``, for instruct models) the prompt is the model's own chat template rendered over the messages,
the rewards in a system turn (``ric.core.build_chat_messages``): ``with_tokenizer`` (which
``for_run`` applies) gives the steering the tokenizer's renderer (``ric.models.chat``) and adds its
special tokens to the neutralized strings. The paper's baselines take no rewards: base, SFT and
MORLHF answer the plain prompt (a MORLHF model was trained for one preference and takes no other),
and a Rewarded Soups model turns the preference into the weights that interpolate its members
(``ric.models.interpolation``).

``Steering`` holds exactly what that needs (objective names, mapping settings, range, prompt
template, the model's method) and every caller goes through it: the CLI (`ric map`, `ric
generate`), the sweep and the probe, the online stage, the server, the image pipeline and the
export. So the preference -> desired rewards rule, its checks and its error messages exist once.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from ric.config import MappingConfig
from ric.core import (
    CALIBRATED,
    DEFAULT_TEMPLATE,
    Calibration,
    PromptTemplate,
    RewardStats,
    build_chat_messages,
    build_plain_prompt,
    build_prompt,
    chat_prompt,
    check_preference,
    normal_reward_range,
    preference_to_rewards,
)
from ric.core.calibration import REACH_TOLERANCE
from ric.runs import Method, TrainedPolicy, read_calibration

# Chat format: the model's chat template, messages -> text (``ric.models.chat``, imported when
# used: ``ric.models`` loads transformers).
Render = Callable[[Sequence[dict[str, str]]], str]

# A preference or desired rewards as a user gives them: N values, or an object keyed by name.
Values = Sequence[float] | Mapping[str, float]


class SteeringError(ValueError):
    """A preference or desired rewards this model cannot take. ``param`` is the field at fault
    ("preference", "rewards" or "rewards_obtained"); the message writes field names as
    ``{preference}``, ``{rewards}`` and ``{rewards_obtained}``, so each caller shows them in
    its own words (``naming``): the server as its JSON fields, the CLI as its flags."""

    FIELDS = ("preference", "rewards", "rewards_obtained")

    def __init__(self, message: str, param: str) -> None:
        self.template, self.param = message, param
        super().__init__(self.naming({}))

    def naming(self, labels: Mapping[str, str]) -> str:
        """The message with each field called ``labels[field]`` (default: its own name)."""
        text = self.template
        for name in self.FIELDS:
            text = text.replace("{" + name + "}", labels.get(name, name))
        return text


def mapping_range(
    mapping: MappingConfig, stats: RewardStats | None, num_objectives: int
) -> tuple[np.ndarray, np.ndarray]:
    """(r_min, r_max), each (N,), standardized units: the range the mapping spans, from the
    stats (normal draws or data quantiles), or normal draws alone where no stats are given."""
    if stats is not None:
        return stats.reward_range(
            mapping.range_source,  # type: ignore[arg-type]
            samples=mapping.normal_samples,
            seed=mapping.seed,
            lower=mapping.lower_quantile,
            upper=mapping.upper_quantile,
        )
    if mapping.range_source == "quantile":
        raise ValueError("mapping.range_source 'quantile' needs a stats file (--stats)")
    return normal_reward_range(num_objectives, samples=mapping.normal_samples, seed=mapping.seed)


def for_tokenizer(template: PromptTemplate, tokenizer: Any) -> tuple[PromptTemplate, Render | None]:
    """``template`` as a model with ``tokenizer`` reads it: in the chat format with the
    tokenizer's special tokens among the protected strings, and the tokenizer's chat template as
    the renderer; a plain template as it is, with no renderer."""
    if not template.is_chat:
        return template, None
    from ric.models.chat import chat_renderer, special_tokens

    extra = tuple(t for t in special_tokens(tokenizer) if t not in template.protected)
    return replace(template, protected=template.protected + extra), chat_renderer(tokenizer)


def write_prompts(
    prompts: Sequence[str | Sequence[Mapping[str, Any]]],
    rewards: np.ndarray | None,
    template: PromptTemplate,
    render: Render | None = None,
) -> list[str]:
    """The texts a model is given: each prompt (a string, or a chat's messages in the chat
    format) with the rewards of its row of ``rewards`` (B, N) written in, or without rewards
    (``rewards`` None, the baselines'). Plain format: ``build_prompt`` (a chat is first made one
    prompt, ``ric.core.chat_prompt``); chat format: ``render`` over ``build_chat_messages``."""
    rows: list[list[float] | None] = (
        [None] * len(prompts) if rewards is None else np.asarray(rewards, float).tolist()
    )
    if template.is_chat:
        if render is None:
            raise ValueError(
                "template.format chat renders prompts with the model's chat template: this "
                "steering has no tokenizer (build it with Steering.for_run or with_tokenizer)"
            )
        return [
            render(build_chat_messages(prompt, row, template))
            for prompt, row in zip(prompts, rows, strict=True)
        ]
    texts = [prompt if isinstance(prompt, str) else chat_prompt(prompt) for prompt in prompts]
    return [
        build_plain_prompt(text, template) if row is None else build_prompt(text, row, template)
        for text, row in zip(texts, rows, strict=True)
    ]


@dataclass(frozen=True)
class Steering:
    """How one model is asked for a trade-off (rules in the module docstring)."""

    names: tuple[str, ...]  # the objectives, in the order of every (N,) vector
    mapping: MappingConfig
    r_min: np.ndarray  # (N,) standardized
    r_max: np.ndarray  # (N,)
    template: PromptTemplate = DEFAULT_TEMPLATE
    method: Method = field(default_factory=Method)
    # Chat format: the model's chat template, messages -> text (``with_tokenizer``).
    render: Render | None = field(default=None, compare=False, repr=False)
    # What the model obtains when asked (`ric calibrate`); None: not calibrated.
    calibration: Calibration | None = field(default=None, compare=False, repr=False)

    @classmethod
    def for_stats(
        cls,
        stats: RewardStats,
        mapping: MappingConfig,
        template: PromptTemplate = DEFAULT_TEMPLATE,
        method: Method | None = None,
    ) -> Steering:
        """Steering over the objectives of ``stats``, with the range ``mapping`` takes from
        them."""
        r_min, r_max = mapping_range(mapping, stats, stats.num_objectives)
        return cls(tuple(stats.names), mapping, r_min, r_max, template, method or Method())

    @classmethod
    def for_run(cls, policy: TrainedPolicy, mapping: MappingConfig | None = None) -> Steering:
        """Steering of a trained run: its objectives, template and method, with ``mapping``
        (default: the run's recorded one; a command passes its resolved settings)."""
        steering = cls.for_stats(
            policy.stats, mapping or policy.config.mapping, policy.template, policy.method
        )
        steering = replace(steering, calibration=read_calibration(policy.folder))
        return steering.with_tokenizer(policy.tokenizer)

    def with_tokenizer(self, tokenizer: Any) -> Steering:
        """This steering for a model with ``tokenizer``: in the chat format, its chat template
        renders the prompts and its special tokens are neutralized in user text
        (``for_tokenizer``); a plain template is unchanged."""
        template, render = for_tokenizer(self.template, tokenizer)
        return replace(self, template=template, render=render)

    @property
    def num_objectives(self) -> int:
        return len(self.names)

    @property
    def takes_rewards(self) -> bool:
        """Whether prompts carry desired rewards (RiC) or not (every baseline)."""
        return self.method.conditioned

    @property
    def takes_preference(self) -> bool:
        """Whether a preference changes what the model does: RiC maps it, a soup mixes by it."""
        return self.method.conditioned or self.method.name == "soups"

    def by_objective(self, values: Values, param: str) -> np.ndarray:
        """(N,) floats from N values in objective order, or an object keyed by objective name
        (missing names 0); ``param`` names the field in errors."""
        names = self.names
        if isinstance(values, Mapping):
            unknown = sorted(set(values) - set(names))
            if unknown:
                raise SteeringError(
                    f"{{{param}}} names unknown objective {unknown[0]!r}; objectives: "
                    f"{', '.join(names)}",
                    param,
                )
            return np.array([float(values.get(name, 0.0)) for name in names])
        if len(values) != len(names):
            raise SteeringError(
                f"{{{param}}} has {len(values)} values; the model has {len(names)} objectives "
                f"({', '.join(names)})",
                param,
            )
        return np.asarray(values, dtype=float)

    def check(self, preference: Values) -> np.ndarray:
        """A valid preference (N,) for this model: N finite weights >= 0 summing to 1."""
        weights = self.by_objective(preference, "preference")
        try:
            return check_preference(weights, self.num_objectives, what="{preference}")
        except ValueError as error:
            raise SteeringError(str(error), "preference") from None

    def map_preference(self, preference: Values) -> np.ndarray:
        """Desired rewards (N,), standardized, for ``preference``: the mapping, once."""
        mapping = self.mapping
        if mapping.method == CALIBRATED:
            weights = self.check(preference)
            lam = None if mapping.lam is None else np.asarray(mapping.lam, dtype=float)
            return self.fitted().map_preference(weights, mapping.p, lam)[0]
        return preference_to_rewards(
            self.check(preference),
            self.r_min,
            self.r_max,
            method=mapping.method,
            p=mapping.p,
            lam=mapping.lam,
            ordered=mapping.ordered,
        )

    def fitted(self) -> Calibration:
        """The model's calibration; a ValueError saying how to make one when it has none."""
        if self.calibration is None:
            raise ValueError(
                "this model has no calibration (calibration.json), which mapping.method "
                "calibrated and rewards_obtained need: run `ric calibrate --model RUN --output "
                "DIR` and use DIR as the model, or set mapping.method to p_inf"
            )
        return self.calibration

    def promised(self, desired: np.ndarray) -> np.ndarray:
        """The obtained rewards (..., N) the mapping promises for desired rewards (..., N):
        the calibration's prediction under ``mapping.method: calibrated``, the desired rewards
        themselves under the paper's mappings (which assume obtained = desired)."""
        if self.mapping.method == CALIBRATED:
            return self.fitted().predict(desired)
        return np.asarray(desired, dtype=float)

    def obtained_target(self, rewards_obtained: Values) -> np.ndarray:
        """``rewards_obtained`` as (N,) in objective order (a list, or an object keyed by name:
        a missing name asks for the middle of that objective's reach), finite; a SteeringError
        for a model without a calibration, which says how to make one."""
        if self.calibration is None:
            raise SteeringError(
                "this model is not calibrated, so it cannot take {rewards_obtained} (rewards to "
                "obtain): calibrate it with `ric calibrate --model RUN --output DIR --prompts "
                "FILE` and use DIR, or ask with {preference} or {rewards}",
                "rewards_obtained",
            )
        lowest, highest = self.calibration.reach
        if isinstance(rewards_obtained, Mapping):  # unnamed objectives: the middle of the reach
            middle = dict(zip(self.names, ((lowest + highest) / 2).tolist(), strict=True))
            rewards_obtained = {**middle, **rewards_obtained}
        target = self.by_objective(rewards_obtained, "rewards_obtained")
        if not np.all(np.isfinite(target)):
            raise SteeringError(
                f"{{rewards_obtained}} must be finite, got {target.tolist()}", "rewards_obtained"
            )
        return target

    def for_obtained(self, rewards_obtained: Values) -> np.ndarray:
        """Desired rewards (N,) that the calibration predicts will obtain ``rewards_obtained``
        (``obtained_target``); a SteeringError for a target the model cannot reach."""
        target = self.obtained_target(rewards_obtained)
        calibration = self.fitted()
        lowest, highest = calibration.reach
        desired, miss = calibration.solve(target)
        if miss > REACH_TOLERANCE:
            reach = ", ".join(
                f"{name} {low:+.2f}..{high:+.2f}"
                for name, low, high in zip(self.names, lowest, highest, strict=True)
            )
            closest = ", ".join(f"{v:+.2f}" for v in calibration.predict(desired))
            raise SteeringError(
                f"{{rewards_obtained}} {[round(v, 4) for v in target.tolist()]} is beyond this "
                f"model's reach (the closest it obtains: {closest}); each objective's reach, "
                f"the others in their middle: {reach} (standardized)",
                "rewards_obtained",
            )
        return desired

    def map_preferences(self, preferences: np.ndarray) -> np.ndarray:
        """Desired rewards (K, N) for preferences (K, N); NaN for a model that takes none."""
        preferences = np.atleast_2d(np.asarray(preferences, dtype=float))
        if not self.takes_rewards:
            return np.full(preferences.shape, np.nan)
        return np.array([self.map_preference(w) for w in preferences])

    def desired(
        self,
        preference: Values | None = None,
        rewards: Values | None = None,
        rewards_obtained: Values | None = None,
    ) -> np.ndarray | None:
        """The desired rewards (N,) of a request that gives exactly one of ``preference``
        (mapped), ``rewards`` (explicit, finite) and ``rewards_obtained`` (a calibrated model's
        target, ``for_obtained``); None for a baseline, which takes no rewards (a soup's
        preference goes to ``model_for``, MORLHF, base and SFT take none)."""
        given = {
            name: value
            for name, value in (
                ("preference", preference),
                ("rewards", rewards),
                ("rewards_obtained", rewards_obtained),
            )
            if value is not None
        }
        if self.takes_rewards:
            if len(given) != 1:
                raise SteeringError(
                    "give exactly one of {preference} (mapped), {rewards} (explicit) or "
                    "{rewards_obtained} (what to obtain, calibrated models)",
                    next(iter(given), "preference") if len(given) < 2 else list(given)[1],
                )
            if preference is not None:
                return self.map_preference(preference)
            if rewards_obtained is not None:
                return self.for_obtained(rewards_obtained)
            desired = self.by_objective(rewards, "rewards")  # type: ignore[arg-type]
            if not np.all(np.isfinite(desired)):
                raise SteeringError(
                    f"{{rewards}} must be finite, got {desired.tolist()}", "rewards"
                )
            return desired
        name = self.method.name
        for field_name in ("rewards", "rewards_obtained"):
            if field_name in given:
                raise SteeringError(f"a {name} baseline takes no {{{field_name}}}", field_name)
        if name == "soups" and preference is None:
            raise SteeringError(
                "a Rewarded Soups model needs {preference} (its interpolation weights)",
                "preference",
            )
        if name != "soups" and preference is not None:
            trained = self.method.preference or "no preference"
            raise SteeringError(
                f"a {name} baseline was trained for {trained} and takes no {{preference}}",
                "preference",
            )
        return None

    def prompts(self, prompts: Sequence[str], desired: np.ndarray | None = None) -> list[str]:
        """The texts the model is given: for RiC, each prompt with desired rewards (N,) or
        (B, N) written in; for a baseline (``desired`` None), the plain prompts. In the chat
        format, each prompt is one user message rendered by the model's chat template."""
        return self.chat_prompts(prompts, desired)

    def chat_prompts(
        self,
        chats: Sequence[str | Sequence[Mapping[str, Any]]],
        desired: np.ndarray | None = None,
    ) -> list[str]:
        """``prompts`` for chats (each a list of messages, or one prompt string): in the chat
        format the messages are rendered as they are (a multi-turn chat stays one), in the plain
        format each chat is first made one prompt (``ric.core.chat_prompt``)."""
        rows = (
            None
            if desired is None or not self.takes_rewards
            else np.broadcast_to(np.asarray(desired, dtype=float), (len(chats), len(self.names)))
        )
        return write_prompts(chats, rows, self.template, self.render)

    def grid_prompts(self, prompts: Sequence[str], desired: np.ndarray) -> list[str]:
        """Every prompt under every row of ``desired`` (K, N), row-major: K * P texts."""
        return [text for row in desired for text in self.prompts(prompts, row)]

    def sweep_preferences(self, grid: np.ndarray) -> np.ndarray:
        """The preferences (K, N) a sweep evaluates: the grid for RiC and Rewarded Soups, a
        MORLHF model's own preference, one unknown point (NaN) for base and SFT."""
        if self.takes_preference:
            return np.asarray(grid, dtype=float)
        own = np.full((1, self.num_objectives), np.nan)
        if self.method.preference is not None:
            own[0] = self.method.preference
        return own

    def model_for(self, policy: TrainedPolicy, preference: Values | None = None) -> Any:
        """The model that answers ``preference``: a Rewarded Soups model's members mixed by it
        into a copy of the starting weights; every other model as it is."""
        if self.method.name != "soups":
            return policy.model
        from ric.models.interpolation import soup_model

        weights = self.check(preference)  # type: ignore[arg-type]
        return soup_model(copy.deepcopy(policy.model), policy.member_adapters(), weights)

    def describe(self) -> dict[str, Any]:
        """The mapping in the words every output uses (`ric map`, metrics, the server)."""
        info: dict[str, Any] = {
            "method": self.mapping.method,
            "names": list(self.names),
            "r_min": [float(v) for v in self.r_min],
            "r_max": [float(v) for v in self.r_max],
        }
        if self.mapping.method in ("p_norm", "convex", CALIBRATED):
            p = self.mapping.p  # JSON has no Infinity: p = inf is written "inf"
            info["p"] = p if math.isfinite(p) else "inf"
        if self.mapping.lam is not None:
            info["lam"] = list(self.mapping.lam)
        if self.calibration is not None:
            lowest, highest = self.calibration.reach
            info["reach_low"] = [float(v) for v in lowest]
            info["reach_high"] = [float(v) for v in highest]
        return info
