"""One run as `ric serve` deploys it: the policy, its steering and guardrails, the batcher that
generates, the scorers of ``score: true``, and how a request's sampling fields become generation
settings over the run's own.

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
from ric.models.generation import generate_with_stats
from ric.rewards import create_reward
from ric.runs import TrainedPolicy
from ric.serve.batching import Batcher, OnToken
from ric.serve.errors import RequestError
from ric.serve.guardrails import SteeredRequest, guardrails, steer
from ric.serve.schema import CommonRequest
from ric.steering import Steering

MAX_STOP_STRINGS = 4  # as OpenAI


@dataclass
class Deployment:
    """One run served: its policy, settings, guardrails, batcher and (lazily) its scorers."""

    policy: TrainedPolicy
    config: RicConfig
    model_id: str
    created: int = field(default_factory=lambda: int(time.time()))

    def __post_init__(self) -> None:
        self.steering = Steering.for_run(self.policy, self.config.mapping)
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
        self.batcher = Batcher(
            self._prepare,
            self._generate,
            serve.max_batch_size,
            serve.max_wait_ms,
            serve.max_queue,
            self.config.generation.seed,
        )
        self._scorers: list[Any] | None = None
        self._scoring = threading.Lock()

    def steer(self, request: CommonRequest) -> SteeredRequest:
        return steer(request.preference, request.rewards, self.steering, self.default, self.rails)

    def _prepare(self, prompts: list[str], settings: GenerationConfig) -> list[int]:
        """Each prompt's token count; a prompt too long for the model fails its request."""
        counts = [len(ids) for ids in self.policy.tokenizer(prompts)["input_ids"]]
        limit = getattr(self.policy.model.config, "max_position_embeddings", None)
        if limit and max(counts) + settings.max_new_tokens > limit:
            raise RequestError(
                f"the prompt ({max(counts)} tokens) plus max_tokens ({settings.max_new_tokens}) "
                f"exceeds the model's context of {limit} tokens",
                param="max_tokens",
                code="context_length_exceeded",
            )
        return counts

    def _generate(
        self, prompts: list[str], settings: GenerationConfig, on_token: OnToken | None
    ) -> list[Any]:
        policy = self.policy
        result = generate_with_stats(
            policy.model, policy.tokenizer, prompts, settings, on_token=on_token
        )
        return list(zip(result.texts, result.num_new_tokens, result.finished, strict=True))

    def score(self, prompts: list[str], responses: list[str]) -> np.ndarray:
        """(B, N) raw rewards from the run's own reward models (built at first use)."""
        with self._scoring:
            if self._scorers is None:
                self._scorers = [
                    create_reward(reward.type, reward.options)
                    for reward in self.policy.reward_configs()
                ]
            return np.column_stack([s.score(prompts, responses) for s in self._scorers])


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
