"""What the server did: Prometheus metrics at ``GET /metrics`` and one JSON log line per request.

``install_observability`` adds the ``/metrics`` route and a pure ASGI middleware that watches
every request (but the scrapes and ``GET /health`` probes) to its very end: a streamed answer is
timed up to its last chunk, which Starlette's ``BaseHTTPMiddleware`` would not let it see. At
that end (or when the client goes away, or the app raises) it builds a ``RequestRecord``, feeds
it to ``Metrics`` (request counts, latency, time to first token, tokens) and logs it as one JSON
line on the logger ``ric.serve.requests``.

What only the route knows (the request id, its steering, token counts, when the first token
came) it leaves in the dict ``request.state.ric``; the keys are those of ``RequestRecord`` plus
``first_token_at`` (a ``time.perf_counter()`` time), all optional.

The route label of a metric is the matched route's path (its template, ``/v1/models/{name}``, where
it has parameters), and ``other`` for any path no route knows, so a scanner trying many paths
cannot make a series for each.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from fastapi import FastAPI
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from starlette.datastructures import MutableHeaders
from starlette.responses import Response
from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

REQUEST_LOG = logging.getLogger("ric.serve.requests")
# The middleware's own failures go here, apart from the stream of JSON request lines.
LOG = logging.getLogger(__name__)

UNKNOWN_ROUTE = "other"
# Requests neither counted nor logged: scrapes and probes would drown the real traffic.
UNRECORDED = frozenset({("GET", "/metrics"), ("GET", "/health")})
# From a cached short answer (10 ms) to a long generation on a CPU (minutes).
SECONDS_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300)


@dataclass
class RequestRecord:
    """One answered request: what the middleware saw and what the route told it."""

    id: str
    method: str
    route: str
    status: int
    latency_s: float
    ttft_s: float | None = None
    preference: list[float] | None = None
    rewards_obtained: list[float] | None = None
    desired_rewards: list[float] | None = None
    steering: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    stream: bool = False
    n: int = 1
    prompts: list[str] | None = None
    answers: list[str] | None = None

    def log_line(self, with_prompts: bool) -> str:
        """The record as one JSON line; the prompts and answers only ``with_prompts``."""
        fields = asdict(self)
        fields["latency_s"] = round(self.latency_s, 4)
        fields["ttft_s"] = None if self.ttft_s is None else round(self.ttft_s, 4)
        if not with_prompts:
            del fields["prompts"], fields["answers"]
        # default=str: a stray non-JSON value (a numpy float) must not cost the whole line.
        return json.dumps(fields, default=str)


class Metrics:
    """The server's Prometheus metrics, in a registry of their own (apps and tests never clash).

    ``queued`` and ``running`` are read at each scrape: the sequences waiting for their first
    token and those being decoded; ``capacity`` is the most the engine decodes together.
    """

    def __init__(self, queued: Callable[[], int], running: Callable[[], int], capacity: int):
        if capacity < 1:
            raise ValueError(f"capacity must be at least 1, got {capacity}")
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "ric_requests",
            "HTTP requests answered, by route and status",
            ["route", "status"],
            registry=self.registry,
        )
        self.tokens = Counter(
            "ric_tokens",
            "tokens read (prompt) and generated (completion)",
            ["kind"],
            registry=self.registry,
        )
        for kind in ("prompt", "completion"):
            self.tokens.labels(kind=kind)  # Both series exist from the start, at 0.
        self.latency = Histogram(
            "ric_request_latency_seconds",
            "time from a request's arrival to its answer's last byte",
            ["route"],
            buckets=SECONDS_BUCKETS,
            registry=self.registry,
        )
        self.ttft = Histogram(
            "ric_time_to_first_token_seconds",
            "time from a request's arrival to its first generated token",
            ["route"],
            buckets=SECONDS_BUCKETS,
            registry=self.registry,
        )
        self.gauge("ric_queue_depth", "sequences waiting for their first token", queued)
        self.gauge("ric_running_sequences", "sequences being decoded", running)
        self.gauge(
            "ric_batch_occupancy",
            "running sequences over the most the engine decodes together (0..1)",
            lambda: running() / capacity,
        )

    def gauge(self, name: str, documentation: str, read: Callable[[], float]) -> None:
        """A gauge whose value is ``read()`` at scrape time."""
        Gauge(name, documentation, registry=self.registry).set_function(read)

    def observe(self, record: RequestRecord) -> None:
        """Count ``record``'s request and tokens and time it."""
        self.requests.labels(route=record.route, status=str(record.status)).inc()
        self.latency.labels(route=record.route).observe(record.latency_s)
        if record.ttft_s is not None:
            self.ttft.labels(route=record.route).observe(record.ttft_s)
        self.tokens.labels(kind="prompt").inc(record.prompt_tokens)
        self.tokens.labels(kind="completion").inc(record.completion_tokens)

    def render(self) -> tuple[bytes, str]:
        """The metrics in Prometheus' text format: (body, content type)."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


def install_observability(app: FastAPI, metrics: Metrics, log_prompts: bool) -> None:
    """Add ``GET /metrics`` and the request-watching middleware to ``app``.

    Install it after any other middleware (``ric.serve.access`` included): it is then the
    outermost one and also counts and logs the requests those refuse.
    """

    async def scrape() -> Response:
        body, content_type = metrics.render()
        return Response(body, headers={"Content-Type": content_type})

    app.add_api_route("/metrics", scrape, methods=["GET"], include_in_schema=False)
    # The router's own list: routes declared after this call are known too.
    app.add_middleware(
        RequestWatch, metrics=metrics, routes=app.router.routes, log_prompts=log_prompts
    )


def route_label(routes: Sequence[BaseRoute], scope: Scope) -> str:
    """The path of the route ``scope`` asks for (405s included), or ``other``."""
    for route in routes:
        match, _ = route.matches(scope)
        if match is not Match.NONE:
            return str(getattr(route, "path", UNKNOWN_ROUTE))
    return UNKNOWN_ROUTE


def guarded(step: Callable[[], None]) -> None:
    """Run a bookkeeping ``step``; its failure is logged, never passed on to the response."""
    try:
        step()
    except Exception:
        LOG.exception("recording a request failed; the request itself goes on")


class Exchange:
    """One request on its way through the middleware: when it came, the status it got."""

    def __init__(self, scope: Scope) -> None:
        self.scope = scope
        self.start = time.perf_counter()
        self.status: int | None = None
        self.done = False

    def ric(self) -> Mapping[str, Any]:
        """What the route left in ``request.state.ric`` so far."""
        ric = self.scope.get("state", {}).get("ric")
        return ric if isinstance(ric, Mapping) else {}

    def started(self, message: Message) -> None:
        """Note the status; label the answer with the route's request id, if it set one."""
        self.status = message["status"]
        ric_id = self.ric().get("id")
        if ric_id is not None:
            message.setdefault("headers", [])
            MutableHeaders(scope=message).setdefault("x-request-id", str(ric_id))

    def record(self, route: str, failed: bool) -> RequestRecord:
        """The record of this request, ending now; ``failed``: the app raised."""
        latency_s = time.perf_counter() - self.start
        ric = self.ric()
        first_token_at = ric.get("first_token_at")
        return RequestRecord(
            id=str(ric.get("id") or uuid.uuid4().hex),
            method=self.scope["method"],
            route=route,
            # No answer at all: the app broke (500) or the client left first (499, as nginx).
            status=self.status or (500 if failed else 499),
            latency_s=latency_s,
            ttft_s=None if first_token_at is None else first_token_at - self.start,
            preference=ric.get("preference"),
            rewards_obtained=ric.get("rewards_obtained"),
            desired_rewards=ric.get("desired_rewards"),
            steering=ric.get("steering"),
            prompt_tokens=int(ric.get("prompt_tokens", 0)),
            completion_tokens=int(ric.get("completion_tokens", 0)),
            stream=bool(ric.get("stream", False)),
            n=int(ric.get("n", 1)),
            prompts=ric.get("prompts"),
            answers=ric.get("answers"),
        )


class RequestWatch:
    """ASGI middleware: one ``RequestRecord`` per HTTP request, to ``Metrics`` and the log."""

    def __init__(
        self, app: ASGIApp, *, metrics: Metrics, routes: Sequence[BaseRoute], log_prompts: bool
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.routes = routes
        self.log_prompts = log_prompts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or (scope["method"], scope["path"]) in UNRECORDED:
            await self.app(scope, receive, send)
            return
        # The route's request.state is this dict even where an inner layer copies the scope.
        scope.setdefault("state", {})
        exchange = Exchange(scope)

        async def watched_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                guarded(lambda: exchange.started(message))
            await send(message)
            # The last body message, not the app's return: background tasks run after it.
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                self.report(exchange, failed=False)

        try:
            await self.app(scope, receive, watched_send)
        except BaseException:
            self.report(exchange, failed=True)
            raise
        # The app returned without a last body: the client left mid-answer.
        self.report(exchange, failed=False)

    def report(self, exchange: Exchange, failed: bool) -> None:
        """Count and log ``exchange`` (once, however it ended)."""
        if exchange.done:
            return
        exchange.done = True
        guarded(lambda: self.emit(exchange, failed))

    def emit(self, exchange: Exchange, failed: bool) -> None:
        record = exchange.record(route_label(self.routes, exchange.scope), failed)
        self.metrics.observe(record)
        REQUEST_LOG.info(record.log_line(self.log_prompts))
