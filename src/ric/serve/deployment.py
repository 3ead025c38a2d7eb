"""One run as `ric serve` deploys it: the policy, its steering and guardrails, the engine that
generates (``ric.serve.engines``), the scorers of ``score: true``, and how a request's sampling
fields become generation settings over the run's own.

Kept apart from the routes (``ric.serve.app``) and the OpenAI wire format (``ric.serve.wire``):
this is what a different engine or transport would reuse unchanged.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from ric.config import GenerationConfig, RicConfig
from ric.core import CALIBRATED
from ric.rewards import create_reward
from ric.runs import TrainedPolicy
from ric.serve.engines import create_engine
from ric.serve.errors import RequestError
from ric.serve.guardrails import SteeredRequest, guardrails, steer
from ric.serve.schema import CommonRequest
from ric.steering import Steering

MAX_STOP_STRINGS = 4  # as OpenAI


@dataclass
class Deployment:
    """One run served: its policy, settings, guardrails, engine and (lazily) its scorers."""

    policy: TrainedPolicy
    config: RicConfig
    model_id: str
    created: int = field(default_factory=lambda: int(time.time()))

    def __post_init__(self) -> None:
        self.steering = Steering.for_run(self.policy, self.config.mapping)
        if self.config.mapping.method == CALIBRATED:
            self.steering.fitted()  # no calibration: refused at startup, not at every request
        names = list(self.steering.names)
        self.names = names
        serve = self.config.serve
        default = serve.default_preference or [1 / len(names)] * len(names)
        if len(default) != len(names):
            raise ValueError(
                f"serve.default_preference has {len(default)} weights; the run has "
                f"{len(names)} objectives ({', '.join(names)})"
            )
        self.default = np.asarray(default, dtype=float)
        self.rails = guardrails(serve, names, self.steering.r_min, self.steering.r_max)
        self.engine = create_engine(
            self.policy.model, self.policy.tokenizer, serve, self.config.generation
        )
        self._scorers: list[Any] | None = None
        self._scoring = threading.Lock()

    def steer(self, request: CommonRequest) -> SteeredRequest:
        return steer(
            request.preference,
            request.rewards,
            self.steering,
            self.default,
            self.rails,
            request.rewards_obtained,
        )

    def tokenize(self, prompts: list[str], settings: GenerationConfig) -> list[list[int]]:
        """Each prompt's token ids, as ``ric generate`` tokenizes it; a prompt too long for the
        model (with ``max_tokens``) or one that tokenizes to nothing fails its request."""
        rows: list[list[int]] = self.policy.tokenizer(prompts)["input_ids"]
        longest = max(len(ids) for ids in rows)
        limits = [
            ("the model's context", model_context(self.policy.model), ""),
            ("the engine's KV cache", self.engine.capacity, " (serve.kv_cache_tokens)"),
        ]
        for what, limit, setting in limits:
            if limit and longest + settings.max_new_tokens > limit:
                raise RequestError(
                    f"the prompt ({longest} tokens) plus max_tokens ({settings.max_new_tokens}) "
                    f"exceeds {what} of {limit} tokens{setting}",
                    param="max_tokens",
                    code="context_length_exceeded",
                )
        if not all(rows):
            raise RequestError("a prompt tokenizes to no tokens: nothing to continue")
        return rows

    def score(self, prompts: list[str], responses: list[str]) -> np.ndarray:
        """(B, N) raw rewards from the run's own reward models (built at first use)."""
        with self._scoring:
            if self._scorers is None:
                self._scorers = [
                    create_reward(reward.type, reward.options)
                    for reward in self.policy.reward_configs()
                ]
            return np.column_stack([s.score(prompts, responses) for s in self._scorers])


def model_context(model: Any) -> int | None:
    """The most tokens ``model`` reads and writes in one sequence, where its config says."""
    return getattr(model.config, "max_position_embeddings", None)


def sampling(request: CommonRequest, base: GenerationConfig, max_tokens: int) -> GenerationConfig:
    """The request's generation settings over the run's: max_tokens, temperature (0: greedy),
    top_p, stop and seed."""
    tokens = getattr(request, "max_completion_tokens", None) or request.max_tokens
    if tokens is None:
        tokens = min(base.max_new_tokens, max_tokens)
    if tokens > max_tokens:
        raise RequestError(
            f"max_tokens is {tokens}; this deployment allows at most {max_tokens}",
            param="max_tokens",
        )
    stop = [request.stop] if isinstance(request.stop, str) else request.stop
    stops = base.stop_strings if stop is None else stop
    if len(stops) > MAX_STOP_STRINGS or any(not text for text in stops):
        raise RequestError(f"stop must be up to {MAX_STOP_STRINGS} non-empty strings", param="stop")
    settings = replace(base, max_new_tokens=tokens, stop_strings=list(stops))
    if request.temperature is not None:
        sample = request.temperature > 0
        settings = replace(
            settings,
            do_sample=sample,
            temperature=request.temperature if sample else base.temperature,
        )
    if request.top_p is not None:
        settings = replace(settings, top_p=request.top_p)
    if request.seed is not None:
        settings = replace(settings, seed=request.seed)
    return settings
