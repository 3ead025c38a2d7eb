"""OpenAI's wire format for `ric serve`: reading a request body into its schema (413, 400 and
422 as OpenAI answers them), the model entry of ``/v1/models``, and an ``Answer``: one request's
JSON body or server-sent events, with the ``ric`` object that says how it was steered.

The format is OpenAI's (chat completions and legacy completions, chunks, ``data: [DONE]``, usage);
what ``ric`` adds travels in the ``ric`` object of each answer and model entry.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np
from fastapi import Request
from pydantic import BaseModel, ValidationError

from ric.serve.deployment import Deployment
from ric.serve.engines import Row
from ric.serve.errors import RequestError
from ric.serve.schema import CommonRequest, check_fields
from ric.serve.streaming import Stream

T = TypeVar("T", bound=BaseModel)

DECIMALS = 6  # the decimals of every preference, desired reward and range the answers echo


def rounded(values: Any) -> Any:
    """``values`` (a number or a sequence of them) rounded to ``DECIMALS`` as plain floats, so
    an answer says 0.7, not 0.7000000000000001; an infinite value (no bound) is null."""
    if isinstance(values, int | float | np.floating | np.integer):
        value = float(values)
        return round(value, DECIMALS) if np.isfinite(value) else None
    return [rounded(value) for value in values]


def mapping_info(deployment: Deployment) -> dict[str, Any]:
    """The mapping as ``Steering.describe`` says it (with a calibrated model's reach,
    ``reach_low`` and ``reach_high``: what ``rewards_obtained`` may ask), its ranges rounded."""
    info = deployment.steering.describe()
    ranges = ("r_min", "r_max", "reach_low", "reach_high")
    return info | {key: rounded(info[key]) for key in ranges if key in info}


def model_entry(deployment: Deployment) -> dict[str, Any]:
    steering, rails = deployment.steering, deployment.rails
    objectives = [
        {
            "name": name,
            "r_min": rounded(low),
            "r_max": rounded(high),
            "preference_bounds": rounded(weights),
            "reward_bounds": rounded(rewards),  # null: unbounded on that side
        }
        for name, low, high, weights, rewards in zip(
            deployment.names,
            steering.r_min,
            steering.r_max,
            zip(rails.preference_low, rails.preference_high, strict=True),
            zip(rails.reward_low, rails.reward_high, strict=True),
            strict=True,
        )
    ]
    return {
        "id": deployment.model_id,
        "object": "model",
        "created": deployment.created,
        "owned_by": "ric",
        "ric": {
            "objectives": objectives,
            "mapping": mapping_info(deployment),
            "default_preference": rounded(deployment.default),
        },
    }


def check_model(deployment: Deployment, name: str) -> None:
    if name != deployment.model_id:
        raise RequestError(
            f"The model `{name}` does not exist; this server serves `{deployment.model_id}`",
            param="model",
            code="model_not_found",
            status=404,
        )


async def read_request(request: Request, schema: type[T], limit: int) -> T:
    """The body as ``schema``: 413 past ``limit`` bytes (read to the end, so the connection
    stays usable), 400 if it is not a JSON object or holds a field this server refuses, 422 if a
    field is of the wrong type or range (``ric.serve.schema.check_fields``)."""
    body, size = bytearray(), 0
    async for chunk in request.stream():
        size += len(chunk)
        if size <= limit:
            body += chunk
    if size > limit:
        raise RequestError(
            f"request body of {size} bytes exceeds the limit of {limit} bytes",
            code="request_too_large",
            status=413,
        )
    try:
        values = json.loads(body)
    except ValueError as error:
        raise RequestError(
            f"We could not parse the JSON body of your request ({error}). The body must be "
            "a JSON object."
        ) from None
    if not isinstance(values, dict):
        raise RequestError("the request body must be a JSON object")
    check_fields(values, schema)
    try:
        return schema.model_validate(values)
    except ValidationError as error:
        first = error.errors()[0]
        param = ".".join(str(part) for part in first["loc"][:1]) or None
        where = ".".join(str(part) for part in first["loc"])
        raise RequestError(f"{where}: {first['msg']}", param=param, status=422) from None


@dataclass
class Answer:
    """One request's answer, built once its rows are generated (``generation``, the engine's
    task). ``record`` is what the request log and metrics read (``ric.serve.observability``)."""

    deployment: Deployment
    request: CommonRequest
    prompts: list[str]
    chat: bool
    info: dict[str, Any]
    prompt_tokens: list[int]  # per row (prompts x n)
    generation: asyncio.Task[list[Row]] | None = None
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    created: int = field(default_factory=lambda: int(time.time()))
    record: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        request = self.request
        self.record.update(
            id=self.envelope(chunk=False)["id"],
            steering=self.info["steering"],
            preference=self.info["preference"],
            rewards_obtained=self.info["rewards_obtained"],
            desired_rewards=self.info["desired_rewards"],
            prompt_tokens=sum(self.prompt_tokens[:: request.n]),
            stream=request.stream,
            n=request.n,
            prompts=self.prompts,
        )

    async def results(self) -> tuple[list[Row], dict[str, int]]:
        """The generated rows and usage; scores go into ``info`` when asked for."""
        assert self.generation is not None, "the answer's generation was never started"
        try:
            rows = await self.generation
        except RequestError:
            raise
        except Exception as error:
            raise RequestError(f"generation failed: {error}", status=503) from None
        if self.request.score:
            self.info["scores"] = await asyncio.to_thread(self.scores, rows)
        completion = sum(row.tokens for row in rows)
        prompt = self.record["prompt_tokens"]  # each prompt counted once, as OpenAI
        self.record.update(completion_tokens=completion, answers=[row.text for row in rows])
        usage = {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        }
        return rows, usage

    def scores(self, rows: list[Row]) -> list[dict[str, dict[str, float]]]:
        prompts = [prompt for prompt in self.prompts for _ in range(self.request.n)]
        try:
            raw = self.deployment.score(prompts, [row.text for row in rows])
        except Exception as error:
            raise RequestError(f"scoring failed: {error}", param="score", status=500) from None
        standardized = self.deployment.policy.stats.standardize(raw)
        names = self.deployment.names
        return [
            {
                "raw": dict(zip(names, map(float, raw_row), strict=True)),
                "standardized": dict(zip(names, map(float, std_row), strict=True)),
            }
            for raw_row, std_row in zip(raw, standardized, strict=True)
        ]

    def envelope(self, chunk: bool) -> dict[str, Any]:
        kind = "chat.completion" if self.chat else "text_completion"
        return {
            "id": f"{'chatcmpl' if self.chat else 'cmpl'}-{self.id}",
            "object": f"{kind}.chunk" if chunk and self.chat else kind,
            "created": self.created,
            "model": self.deployment.model_id,
        }

    async def body(self) -> dict[str, Any]:
        rows, usage = await self.results()
        choices = [
            {"index": index, "finish_reason": finish_reason(row.finished), "logprobs": None}
            | (
                {"message": {"role": "assistant", "content": row.text}}
                if self.chat
                else {"text": row.text}
            )
            for index, row in enumerate(rows)
        ]
        return self.envelope(chunk=False) | {"choices": choices, "usage": usage, "ric": self.info}

    async def events(self, stream: Stream) -> AsyncIterator[str]:
        """Server-sent events: OpenAI's chunks (the text as ``stream`` delivers it, then the rest
        of each final text), then ``data: [DONE]``. Closed early (the client left), it cancels
        the generation."""
        assert self.generation is not None, "the answer's generation was never started"
        count = len(self.prompts) * self.request.n
        piece = self.chunk_choice
        try:
            if self.chat:
                role = {"role": "assistant", "content": ""}
                yield self.event([piece(i, role) for i in range(count)])
            async for index, delta in stream.deltas():
                yield self.event([piece(index, delta)])
            if self.generation.cancelled():
                return  # the client left: nobody reads the end
            try:
                rows, usage = await self.results()
            except RequestError as error:
                yield sse(error.body())
            else:
                for index, row in enumerate(rows):
                    if rest := stream.rest(index, row.text):
                        yield self.event([piece(index, rest)])
                finals = [piece(i, "", finish_reason(row.finished)) for i, row in enumerate(rows)]
                yield self.event(finals, ric=self.info)
                options = self.request.stream_options
                if options is not None and options.include_usage:
                    yield self.event([], usage=usage)
            yield "data: [DONE]\n\n"
        finally:
            self.generation.cancel()  # a no-op once it is done

    def chunk_choice(self, index: int, text: Any, finish: str | None = None) -> dict[str, Any]:
        """One choice of a chunk: a chat delta (``text`` a dict is the role chunk) or text."""
        if not self.chat:
            return {"index": index, "text": text, "finish_reason": finish, "logprobs": None}
        delta = text if isinstance(text, dict) else ({"content": text} if text else {})
        return {"index": index, "delta": delta, "finish_reason": finish, "logprobs": None}

    def event(self, choices: list[dict[str, Any]], **extra: Any) -> str:
        return sse(self.envelope(chunk=True) | {"choices": choices} | extra)


def finish_reason(finished: bool) -> str:
    return "stop" if finished else "length"


def sse(payload: dict[str, Any]) -> str:
    return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n"
