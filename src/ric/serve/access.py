"""Who may call the server: API keys (``Authorization: Bearer KEY``) and CORS for web pages.

``install_access`` adds both to a FastAPI app from ``serve.api_keys`` (plus the environment
variable ``RIC_API_KEYS``) and ``serve.cors_origins``. With no key the server is open, as before.
A refused request is answered the way OpenAI answers it (401, ``ric.serve.errors``), so OpenAI
clients show their usual message. ``GET /`` (the playground page, which then asks for the key
itself), ``GET /health`` and ``GET /metrics`` (probes and scrapers) stay open.

The key check is a pure ASGI middleware rather than ``app.middleware("http")``: it only reads the
request's headers, and a pure one passes every response (streams included) straight through,
where Starlette's ``BaseHTTPMiddleware`` would re-pipe each streamed body through a task of its own.
"""

from __future__ import annotations

import hmac
import os
from collections.abc import Mapping, Sequence

from fastapi import FastAPI
from starlette.datastructures import Headers
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from ric.config import ServeConfig
from ric.serve.errors import error_body

ENV_VAR = "RIC_API_KEYS"
# Requests answered without a key: (method, path).
OPEN_ROUTES = frozenset({("GET", "/"), ("GET", "/health"), ("GET", "/metrics")})
MISSING_KEY = (
    "You didn't provide an API key. You need to provide your API key in an Authorization header "
    "using Bearer auth (i.e. Authorization: Bearer YOUR_KEY)."
)


def api_keys(configured: Sequence[str], environ: Mapping[str, str] = os.environ) -> frozenset[str]:
    """The accepted keys: ``configured`` plus the comma-separated ones of ``RIC_API_KEYS``. A
    variable that is set but holds no key is an error: the server would silently be open."""
    raw = environ.get(ENV_VAR)
    from_env = [piece.strip() for piece in (raw or "").split(",") if piece.strip()]
    if raw is not None and raw.strip() and not from_env:
        raise ValueError(f"{ENV_VAR} is set to {raw!r}, which holds no key (comma-separated keys)")
    return frozenset((*configured, *from_env))


def install_access(app: FastAPI, serve: ServeConfig) -> None:
    """Add the key check (when there are keys) and CORS (when there are origins) to ``app``.

    CORS is added last, so it wraps the key check: it answers a browser's preflight (which never
    carries the key) itself, and it puts its headers on a 401 so the page can read the error.
    """
    keys = api_keys(serve.api_keys)
    if keys:
        app.add_middleware(BearerKeys, keys=keys)
    if serve.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=serve.cors_origins,
            allow_methods=["GET", "POST", "OPTIONS"],
            allow_headers=["*"],  # the openai JS client also sends its X-Stainless-* headers
        )


def mask(key: str) -> str:
    """``key`` as a refusal may repeat it: its first 3 and last 2 characters; a short one hidden."""
    return f"{key[:3]}***{key[-2:]}" if len(key) >= 8 else "***"


class BearerKeys:
    """ASGI middleware: an HTTP request outside ``OPEN_ROUTES`` needs one of ``keys``."""

    def __init__(self, app: ASGIApp, keys: frozenset[str]) -> None:
        self.app = app
        # Compared as bytes: hmac.compare_digest refuses str that is not ASCII.
        self.keys = [key.encode() for key in keys]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and (scope["method"], scope["path"]) not in OPEN_ROUTES:
            refusal = self.refusal(Headers(scope=scope).get("authorization", "").strip())
            if refusal is not None:
                await refusal(scope, receive, send)
                return
        await self.app(scope, receive, send)

    def refusal(self, authorization: str) -> JSONResponse | None:
        """The 401 answer to a request with this ``Authorization`` header; None: it may pass."""
        scheme, _, key = authorization.partition(" ")
        bearer = scheme.lower() == "bearer"
        # Another scheme (Basic ...): what was sent is wrong as a whole.
        sent = key.strip() if bearer else authorization
        if not sent:
            return unauthorized(MISSING_KEY, code=None)
        if bearer and self.accepts(sent):
            return None
        return unauthorized(f"Incorrect API key provided: {mask(sent)}.", code="invalid_api_key")

    def accepts(self, key: str) -> bool:
        # Starlette decodes header bytes as latin-1: encoding back gives the bytes as sent.
        sent = key.encode("latin-1")
        # Every key is compared (no early exit), so the time taken says nothing about a match.
        matches = [hmac.compare_digest(sent, known) for known in self.keys]
        return any(matches)


def unauthorized(message: str, code: str | None) -> JSONResponse:
    body = error_body(message, 401, code=code)
    return JSONResponse(body, status_code=401, headers={"WWW-Authenticate": "Bearer"})
