"""The request bodies the server reads: OpenAI's fields it supports, plus RiC's steering fields
(``preference``, ``rewards``, ``score``). Fields it does not support are ignored, as OpenAI-
compatible servers do; a field of the wrong type or range is a 422 naming it."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

Steer = list[float] | dict[str, float] | None


class StreamOptions(BaseModel):
    include_usage: bool = False


class CommonRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: str
    preference: Steer = None  # N weights, or {objective: weight}
    rewards: Steer = None  # desired standardized rewards, a list or {objective: reward}
    score: bool = False  # also score the answers with the run's reward models
    max_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2, allow_inf_nan=False)
    top_p: float | None = Field(None, gt=0, le=1, allow_inf_nan=False)
    seed: int | None = Field(None, ge=0, lt=2**63)
    stop: str | list[str] | None = None
    n: int = Field(1, ge=1)
    stream: bool = False
    stream_options: StreamOptions | None = None


class ChatRequest(CommonRequest):
    messages: list[dict[str, Any]]
    max_completion_tokens: int | None = Field(None, ge=1)  # the newer name of max_tokens


class CompletionRequest(CommonRequest):
    prompt: str | list[str]
