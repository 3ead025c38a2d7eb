"""The routes of the OpenAI-compatible HTTP API over one trained RiC run (FastAPI).

Routes: ``GET /`` (the playground, ``playground.html``: sliders per objective, streamed answers,
scores, a side-by-side compare mode), ``GET /health`` (with the engine's counters), ``GET
/metrics`` (Prometheus), ``GET /v1/models`` (and ``/v1/models/{id}``), ``POST
/v1/chat/completions``, ``POST /v1/completions``. The
model id is the run folder's name. Each request carries its own steering (``ric.serve.guardrails``,
over ``ric.steering``) and sampling settings; a run trained in the chat format
(``template.format: chat``) is given a chat's messages natively, through its own chat template
with the rewards in a system turn; the run's recorded ``mapping.*`` and ``generation.*``
settings are the defaults. Every answer has a ``ric`` object: the objectives, where the desired
rewards came from (``steering``: preference, rewards, rewards_obtained or default), the preference,
the rewards to obtain (``rewards_obtained``, a calibrated model's target), the desired rewards
written into the prompt, the obtained rewards they promise (``promised_rewards``), the mapping
method and range (and a calibrated model's reach), what a guardrail changed (``adjusted``), the
conditioned prompts, the seed and, with ``score: true``, each choice's rewards from the run's own
reward models (raw and standardized).

Streaming (``stream: true``) answers in OpenAI's server-sent chunk format ending with ``data:
[DONE]``; a chat stream opens with the role chunk at once, and the text follows token by token as
the engine generates it (``ric.serve.streaming``: settled text only, so each choice's deltas add up
to exactly its non-streamed answer); the last chunk with a ``finish_reason`` carries the ``ric``
object (with the scores when asked). Errors are OpenAI's JSON (``ric.serve.errors``,
``ric.serve.wire``): 400 (invalid steering, a guardrail refusal, a limit, an OpenAI field not
implemented or an unknown field: ``ric.serve.schema``), 401 (a missing or wrong API key:
``ric.serve.access``), 404 (unknown route or model), 413 (body over ``serve.max_body_bytes``), 422
(a field of the wrong type or range, a weight that is not a JSON number), 429 (queue full, with
``Retry-After``). Generation runs on the engine (``ric.serve.engines``, started and stopped with
the app); a client that disconnects, or closes its stream, takes its sequences out of it at its
next step. Scoring runs in a thread of its own, so the event loop stays free.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import asdict
from importlib import resources
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException

from ric.config import RicConfig
from ric.runs import TrainedPolicy
from ric.serve.access import install_access
from ric.serve.deployment import Deployment, sampling
from ric.serve.errors import RequestError, error_body
from ric.serve.guardrails import chat_prompt
from ric.serve.observability import Metrics, install_observability
from ric.serve.schema import ChatRequest, CommonRequest, CompletionRequest
from ric.serve.streaming import Stream
from ric.serve.wire import Answer, check_model, mapping_info, model_entry, read_request, rounded

CLIENT_CLOSED_REQUEST = 499  # nginx's status for a client that left before its answer


def create_app(policy: TrainedPolicy, config: RicConfig, model_id: str) -> FastAPI:
    """The FastAPI application serving ``policy`` (see the module docstring)."""
    deployment = Deployment(policy, config, model_id)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        deployment.engine.start()
        yield
        await asyncio.to_thread(deployment.engine.stop)

    app = FastAPI(title="ric serve", lifespan=lifespan, docs_url=None, redoc_url=None)
    engine = deployment.engine
    metrics = Metrics(
        queued=lambda: engine.waiting,
        running=lambda: engine.running,
        capacity=config.serve.max_batch_size,
    )
    install_access(app, config.serve)  # API keys, then CORS around them
    install_observability(app, metrics, config.serve.log_prompts)  # outermost: sees every answer
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
        engine = deployment.engine
        return {
            "status": "ok",
            "model": model_id,
            "engine": config.serve.engine,
            "waiting": engine.waiting,
            "running": engine.running,
            "peak_running": engine.peak_running,
            "generated_tokens": engine.generated,
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
        prompt = chat_prompt(body.messages)  # checks the messages; what the scorers read
        # A chat-format run renders the messages natively (its chat template, the rewards in a
        # system turn); a plain one is given the one prompt they make.
        chats = [body.messages] if deployment.steering.template.is_chat else None
        return await complete(request, deployment, body, [prompt], chat=True, chats=chats)

    @app.post("/v1/completions")
    async def completions(request: Request) -> Response:
        body = await read_request(request, CompletionRequest, config.serve.max_body_bytes)
        check_model(deployment, body.model)
        prompts = [body.prompt] if isinstance(body.prompt, str) else body.prompt
        if not prompts:
            raise RequestError("prompt must not be an empty list", param="prompt")
        return await complete(request, deployment, body, prompts, chat=False)

    return app


async def complete(
    http: Request,
    deployment: Deployment,
    request: CommonRequest,
    prompts: list[str],
    chat: bool,
    chats: list[Any] | None = None,
) -> Response:
    """Check, steer, generate and answer one request (JSON or a stream). ``prompts``: the texts
    the scorers read (a chat's one-prompt form); ``chats``: the messages a chat-format run
    renders instead (default: ``prompts``). A client that leaves takes its sequences out of the
    engine (``watch_disconnect``)."""
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
    conditioned = deployment.steering.chat_prompts(chats or prompts, steering.desired)
    rows = [text for text in conditioned for _ in range(request.n)]
    prompt_ids = deployment.tokenize(rows, settings)
    engine = deployment.engine
    if engine.waiting + len(rows) > serve.max_queue:
        raise RequestError(
            "the server's request queue is full; retry later",
            code="rate_limit_exceeded",
            status=429,
        )
    info = {
        "objectives": deployment.names,
        "steering": steering.source,
        "preference": None if steering.preference is None else rounded(steering.preference),
        "rewards_obtained": None if steering.obtained is None else rounded(steering.obtained),
        "desired_rewards": rounded(steering.desired),
        "promised_rewards": rounded(steering.promised),
        "mapping": mapping_info(deployment),
        "adjusted": [
            asdict(change) | {"requested": rounded(change.requested), "used": rounded(change.used)}
            for change in steering.adjustments
        ],
        "conditioned_prompts": conditioned,
        "seed": request.seed,
    }
    answer = Answer(deployment, request, prompts, chat, info, [len(ids) for ids in prompt_ids])
    http.state.ric = answer.record
    stream = (
        Stream(deployment.policy.tokenizer, settings.stop_strings, len(rows))
        if request.stream
        else None
    )

    def on_token(row: int, token: int) -> None:
        answer.record.setdefault("first_token_at", time.perf_counter())
        if stream is not None:
            stream.add(row, token)

    generation = asyncio.create_task(
        engine.generate(rows, prompt_ids, settings, request.seed is not None, on_token)
    )
    answer.generation = generation
    watch_disconnect(http, generation)
    if stream is not None:
        generation.add_done_callback(lambda _: stream.close())
        return StreamingResponse(answer.events(stream), media_type="text/event-stream")
    try:
        return JSONResponse(await answer.body())
    except asyncio.CancelledError:
        if asyncio.current_task().cancelling():  # type: ignore[union-attr]
            raise  # the server itself is cancelling this handler
        return Response(status_code=CLIENT_CLOSED_REQUEST)  # nobody is there to read it


def watch_disconnect(http: Request, generation: asyncio.Task[Any]) -> None:
    """Cancel ``generation`` when the client disconnects (the engine then drops its sequences
    at its next step); the watch ends with the generation. The request's body has been read, so
    the next ASGI message can only be the disconnect."""

    async def watch() -> None:
        while (await http.receive())["type"] != "http.disconnect":
            pass
        generation.cancel()

    watcher = asyncio.create_task(watch())
    generation.add_done_callback(lambda _: watcher.cancel())
