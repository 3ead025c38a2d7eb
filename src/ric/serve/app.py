"""The OpenAI-compatible HTTP API over one trained RiC run (FastAPI).

Routes: ``GET /`` (the playground, ``playground.html``: sliders per objective, streamed answers,
scores, a side-by-side compare mode), ``GET /health`` (with the batcher's counters),
``GET /v1/models`` (and ``/v1/models/{id}``), ``POST /v1/chat/completions``,
``POST /v1/completions``. The model id is the run folder's name. Each request carries its own
steering (``ric.serve.steering``) and sampling settings; the run's recorded ``mapping.*`` and
``generation.*`` settings are the defaults. Every answer has a ``ric`` object: the objectives,
where the desired rewards came from (``steering``), the preference, the desired rewards written
into the prompt, the mapping method and range, what a guardrail changed (``adjusted``), the
conditioned prompts, the seed and, with ``score: true``, each choice's rewards from the run's
own reward models (raw and standardized).

Streaming (``stream: true``) answers in OpenAI's server-sent chunk format ending with
``data: [DONE]``; a chat stream opens with the role chunk at once, and the text follows token by
token as its batch is generated (``ric.serve.streaming``: settled text only, so each choice's
deltas add up to exactly its non-streamed answer); the last chunk with a ``finish_reason`` carries
the ``ric`` object (with the scores when asked). Errors are OpenAI's JSON
(``ric.serve.errors``): 400 (invalid steering, a guardrail refusal, a limit), 404 (unknown route
or model), 413 (body over ``serve.max_body_bytes``), 422 (a field of the wrong type or range),
429 (queue full, with ``Retry-After``). Generation runs in the batcher's worker thread
(``ric.serve.batching``); scoring runs in a thread of its own, so the event loop stays free.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from collections.abc import AsyncIterator
from concurrent.futures import Future
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass, field, replace
from importlib import resources
from typing import Any, TypeVar

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException

from ric.config import GenerationConfig, RicConfig
from ric.models.generation import generate_with_stats
from ric.rewards import create_reward
from ric.runs import TrainedPolicy
from ric.serve.batching import Batcher, OnToken, QueueFull
from ric.serve.errors import RequestError, error_body
from ric.serve.schema import ChatRequest, CommonRequest, CompletionRequest
from ric.serve.steering import Steering, chat_prompt, guardrails, steer
from ric.serve.streaming import Stream

MAX_STOP_STRINGS = 4  # as OpenAI
T = TypeVar("T", bound=BaseModel)


@dataclass
class Deployment:
    """One run served: its policy, settings, guardrails, batcher and (lazily) its scorers."""

    policy: TrainedPolicy
    config: RicConfig
    model_id: str
    created: int = field(default_factory=lambda: int(time.time()))

    def __post_init__(self) -> None:
        names = list(self.policy.stats.names)
        self.names = names
        self.r_min, self.r_max = self.config.mapping.reward_range(self.policy.stats, len(names))
        serve = self.config.serve
        default = serve.default_preference or [1 / len(names)] * len(names)
        if len(default) != len(names):
            raise ValueError(
                f"serve.default_preference has {len(default)} weights; the run has "
                f"{len(names)} objectives ({', '.join(names)})"
            )
        self.default = np.asarray(default, dtype=float)
        self.rails = guardrails(serve, names)
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

    def mapping_info(self) -> dict[str, Any]:
        mapping = self.config.mapping
        info: dict[str, Any] = {
            "method": mapping.method,
            "r_min": self.r_min.tolist(),
            "r_max": self.r_max.tolist(),
        }
        if mapping.method in ("p_norm", "convex"):
            info["p"] = mapping.p
        return info

    def steer(self, request: CommonRequest) -> Steering:
        return steer(
            request.preference,
            request.rewards,
            self.names,
            self.default,
            self.rails,
            lambda w: self.config.mapping.desired_rewards(w, self.r_min, self.r_max),
        )

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


def create_app(policy: TrainedPolicy, config: RicConfig, model_id: str) -> FastAPI:
    """The FastAPI application serving ``policy`` (see the module docstring)."""
    deployment = Deployment(policy, config, model_id)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        deployment.batcher.start()
        yield
        await asyncio.to_thread(deployment.batcher.stop)

    app = FastAPI(title="ric serve", lifespan=lifespan, docs_url=None, redoc_url=None)
    page = resources.files("ric.serve").joinpath("playground.html").read_text(encoding="utf-8")

    @app.exception_handler(RequestError)
    async def request_error(_: Request, error: RequestError) -> Response:
        headers = {"Retry-After": str(config.serve.retry_after_s)} if error.status == 429 else None
        return JSONResponse(error.body(), status_code=error.status, headers=headers)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, error: HTTPException) -> Response:
        message = (
            f"Invalid URL ({request.method} {request.url.path})"
            if error.status_code in (404, 405)
            else str(error.detail)
        )
        return JSONResponse(error_body(message, error.status_code), status_code=error.status_code)

    @app.exception_handler(Exception)
    async def server_error(_: Request, error: Exception) -> Response:
        return JSONResponse(error_body(f"internal error: {error}", 500), status_code=500)

    @app.get("/", include_in_schema=False)
    async def playground() -> HTMLResponse:
        return HTMLResponse(page)

    @app.get("/health")
    async def health() -> dict[str, Any]:
        batcher = deployment.batcher
        return {
            "status": "ok",
            "model": model_id,
            "queued": batcher.queued,
            "generate_calls": batcher.calls,
            "sequences": batcher.sequences,
        }

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {"object": "list", "data": [model_entry(deployment)]}

    @app.get("/v1/models/{name}")
    async def model(name: str) -> dict[str, Any]:
        check_model(deployment, name)
        return model_entry(deployment)

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> Response:
        body = await read_request(request, ChatRequest, config.serve.max_body_bytes)
        check_model(deployment, body.model)
        return await complete(deployment, body, [chat_prompt(body.messages)], chat=True)

    @app.post("/v1/completions")
    async def completions(request: Request) -> Response:
        body = await read_request(request, CompletionRequest, config.serve.max_body_bytes)
        check_model(deployment, body.model)
        prompts = [body.prompt] if isinstance(body.prompt, str) else body.prompt
        if not prompts:
            raise RequestError("prompt must not be an empty list", param="prompt")
        return await complete(deployment, body, prompts, chat=False)

    return app


def model_entry(deployment: Deployment) -> dict[str, Any]:
    objectives = [
        {"name": name, "r_min": float(low), "r_max": float(high)}
        for name, low, high in zip(
            deployment.names, deployment.r_min, deployment.r_max, strict=True
        )
    ]
    return {
        "id": deployment.model_id,
        "object": "model",
        "created": deployment.created,
        "owned_by": "ric",
        "ric": {
            "objectives": objectives,
            "mapping": deployment.mapping_info(),
            "default_preference": deployment.default.tolist(),
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
    stays usable), 400 if it is not a JSON object, 422 if a field is wrong."""
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
    try:
        return schema.model_validate(values)
    except ValidationError as error:
        first = error.errors()[0]
        param = ".".join(str(part) for part in first["loc"][:1]) or None
        where = ".".join(str(part) for part in first["loc"])
        raise RequestError(f"{where}: {first['msg']}", param=param, status=422) from None


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


async def complete(
    deployment: Deployment, request: CommonRequest, prompts: list[str], chat: bool
) -> Response:
    """Check, steer, queue and answer one request (JSON or a stream)."""
    serve = deployment.config.serve
    param = "messages" if chat else "prompt"
    if any(len(prompt) > serve.max_prompt_chars for prompt in prompts):
        raise RequestError(
            f"the prompt is longer than this deployment's {serve.max_prompt_chars} characters",
            param=param,
            code="context_length_exceeded",
        )
    if request.n * len(prompts) > serve.max_n:
        raise RequestError(
            f"{request.n * len(prompts)} choices asked (n x prompts); this deployment allows at "
            f"most {serve.max_n}",
            param="n",
        )
    steering = deployment.steer(request)
    settings = sampling(request, deployment.config.generation, serve.max_tokens)
    conditioned = deployment.policy.conditioned_prompts(prompts, steering.desired)
    rows = [text for text in conditioned for _ in range(request.n)]
    stream = Stream(deployment.policy.tokenizer, settings.stop_strings, len(rows))
    try:
        future = deployment.batcher.submit(
            rows,
            settings,
            seeded=request.seed is not None,
            on_token=stream.add if request.stream else None,
        )
    except QueueFull:
        raise RequestError(
            "the server's request queue is full; retry later",
            code="rate_limit_exceeded",
            status=429,
        ) from None
    info = {
        "objectives": deployment.names,
        "steering": steering.source,
        "preference": None if steering.preference is None else steering.preference.tolist(),
        "desired_rewards": steering.desired.tolist(),
        "mapping": deployment.mapping_info(),
        "adjusted": [asdict(change) for change in steering.adjustments],
        "conditioned_prompts": conditioned,
        "seed": request.seed,
    }
    answer = Answer(deployment, request, prompts, chat, info, future)
    if request.stream:
        future.add_done_callback(lambda _: stream.close())
        return StreamingResponse(answer.events(stream), media_type="text/event-stream")
    return JSONResponse(await answer.body())


@dataclass
class Answer:
    """One request's answer, built once its rows are generated."""

    deployment: Deployment
    request: CommonRequest
    prompts: list[str]
    chat: bool
    info: dict[str, Any]
    future: Future
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    created: int = field(default_factory=lambda: int(time.time()))

    async def results(self) -> tuple[list[Any], dict[str, int]]:
        """The generated rows and usage; scores go into ``info`` when asked for."""
        try:
            prompt_tokens, rows = await asyncio.wrap_future(self.future)
        except RequestError:
            raise
        except ValueError as error:
            raise RequestError(str(error)) from None
        except Exception as error:
            raise RequestError(f"generation failed: {error}", status=503) from None
        if self.request.score:
            self.info["scores"] = await asyncio.to_thread(self.scores, rows)
        completion = sum(tokens for _, tokens, _ in rows)
        prompt = sum(prompt_tokens[:: self.request.n])  # each prompt counted once, as OpenAI
        usage = {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        }
        return rows, usage

    def scores(self, rows: list[Any]) -> list[dict[str, dict[str, float]]]:
        prompts = [prompt for prompt in self.prompts for _ in range(self.request.n)]
        try:
            raw = self.deployment.score(prompts, [text for text, _, _ in rows])
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
            {"index": index, "finish_reason": finish_reason(finished), "logprobs": None}
            | ({"message": {"role": "assistant", "content": text}} if self.chat else {"text": text})
            for index, (text, _, finished) in enumerate(rows)
        ]
        return self.envelope(chunk=False) | {"choices": choices, "usage": usage, "ric": self.info}

    async def events(self, stream: Stream) -> AsyncIterator[str]:
        """Server-sent events: OpenAI's chunks (the text as ``stream`` delivers it, then the rest
        of each final text), then ``data: [DONE]``."""
        count = len(self.prompts) * self.request.n
        piece = self.chunk_choice
        if self.chat:
            yield self.event([piece(i, {"role": "assistant", "content": ""}) for i in range(count)])
        async for index, delta in stream.deltas():
            yield self.event([piece(index, delta)])
        try:
            rows, usage = await self.results()
        except RequestError as error:
            yield sse(error.body())
        else:
            for index, (text, _, _) in enumerate(rows):
                if rest := stream.rest(index, text):
                    yield self.event([piece(index, rest)])
            finals = [piece(i, "", finish_reason(done)) for i, (_, _, done) in enumerate(rows)]
            yield self.event(finals, ric=self.info)
            options = self.request.stream_options
            if options is not None and options.include_usage:
                yield self.event([], usage=usage)
        yield "data: [DONE]\n\n"

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
