"""API keys, CORS, Prometheus metrics and the per-request log line of `ric serve`
(``ric.serve.access``, ``ric.serve.observability``), on a small FastAPI app with real routes:
a JSON answer, a slowly streamed one, an error answer and a crash."""

import asyncio
import json
import logging
import time

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("prometheus_client")

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, StreamingResponse
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from ric.config import ServeConfig
from ric.serve.access import MISSING_KEY, api_keys, install_access
from ric.serve.errors import error_body
from ric.serve.observability import Metrics, install_observability

KEY = "sk-test-0123456789"
ORIGIN = "https://app.example.com"
CHUNK_DELAY_S = 0.05
CHUNKS = 3
COMPLETION_RIC = {
    "id": "cmpl-1",
    "preference": [0.25, 0.75],
    "desired_rewards": [0.5, 1.0],
    "steering": "preference",
    "prompt_tokens": 5,
    "completion_tokens": 3,
    "n": 2,
    "prompts": ["Hello"],
    "answers": ["Hi there", "Hey"],
}
LOG_KEYS = {
    "id",
    "method",
    "route",
    "status",
    "latency_s",
    "ttft_s",
    "steering",
    "preference",
    "rewards_obtained",
    "desired_rewards",
    "prompt_tokens",
    "completion_tokens",
    "stream",
    "n",
}


def build_app(serve: ServeConfig, metrics: Metrics | None = None) -> FastAPI:
    """An app with the server's kind of routes, wired as ``ric serve`` wires them."""
    app = FastAPI()

    @app.get("/")
    async def playground() -> HTMLResponse:
        return HTMLResponse("<html>playground</html>")

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/v1/models/{name}")
    async def model(name: str) -> JSONResponse:
        return JSONResponse(error_body(f"The model '{name}' does not exist", 404), 404)

    @app.post("/v1/completions")
    async def completions(request: Request) -> dict[str, str]:
        request.state.ric = {**COMPLETION_RIC, "first_token_at": time.perf_counter()}
        return {"id": "cmpl-1", "object": "text_completion"}

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> StreamingResponse:
        ric = {"id": "chatcmpl-2", "stream": True, "n": 1, "prompt_tokens": 4}
        request.state.ric = ric

        async def chunks():
            for index in range(CHUNKS):
                await asyncio.sleep(CHUNK_DELAY_S)
                ric.setdefault("first_token_at", time.perf_counter())
                ric["completion_tokens"] = index + 1
                yield f"data: {index}\n\n"
            yield "data: [DONE]\n\n"

        return StreamingResponse(chunks(), media_type="text/event-stream")

    @app.post("/v1/crash")
    async def crash() -> None:
        raise RuntimeError("the engine broke")

    @app.post("/v1/garbled")
    async def garbled(request: Request) -> dict[str, bool]:
        request.state.ric = {"prompt_tokens": "many"}
        return {"ok": True}

    install_access(app, serve)
    install_observability(app, metrics or Metrics(lambda: 0, lambda: 0, 1), serve.log_prompts)
    return app


@pytest.fixture
def no_env_keys(monkeypatch):
    monkeypatch.delenv("RIC_API_KEYS", raising=False)


@pytest.fixture
def request_log(caplog):
    """The JSON lines logged on ``ric.serve.requests``, parsed."""
    caplog.set_level(logging.INFO, logger="ric.serve.requests")

    def lines() -> list[dict]:
        records = [r for r in caplog.records if r.name == "ric.serve.requests"]
        return [json.loads(record.getMessage()) for record in records]

    return lines


def client(serve: ServeConfig, metrics: Metrics | None = None) -> TestClient:
    return TestClient(build_app(serve, metrics), raise_server_exceptions=False)


def samples(text: str) -> dict[tuple[str, frozenset], float]:
    """(sample name, its labels) -> value, from Prometheus' text format."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_api_keys_combine_config_and_environment():
    environ = {"RIC_API_KEYS": " env-1, ,env-2,"}
    assert api_keys(["conf-1"], environ) == {"conf-1", "env-1", "env-2"}
    assert api_keys([], {}) == frozenset()
    assert api_keys([], {"RIC_API_KEYS": ""}) == frozenset()  # set empty: no keys
    with pytest.raises(ValueError, match="holds no key"):  # not silently open
        api_keys([], {"RIC_API_KEYS": " , "})


@pytest.mark.parametrize(
    ("authorization", "message", "code"),
    [
        (None, MISSING_KEY, None),
        ("Bearer ", MISSING_KEY, None),
        ("Bearer sk-wrong-987654", "Incorrect API key provided: sk-***54.", "invalid_api_key"),
        ("Bearer abc", "Incorrect API key provided: ***.", "invalid_api_key"),
        (f"Basic {KEY}", "Incorrect API key provided: Bas***89.", "invalid_api_key"),
    ],
)
def test_a_request_without_a_right_key_gets_openais_401(no_env_keys, authorization, message, code):
    headers = {} if authorization is None else {"Authorization": authorization}
    answer = client(ServeConfig(api_keys=[KEY])).post("/v1/completions", headers=headers)
    assert answer.status_code == 401
    assert answer.headers["www-authenticate"] == "Bearer"
    assert answer.json() == {
        "error": {"message": message, "type": "invalid_request_error", "param": None, "code": code}
    }


def test_keys_from_config_and_environment_pass_and_probes_stay_open(monkeypatch):
    monkeypatch.setenv("RIC_API_KEYS", "env-key-0001")
    api = client(ServeConfig(api_keys=[KEY]))
    for key in (KEY, "env-key-0001"):
        answer = api.post("/v1/completions", headers={"Authorization": f"bearer {key}"})
        assert answer.status_code == 200
    for path in ("/", "/health", "/metrics"):
        assert api.get(path).status_code == 200
    assert api.post("/health").status_code == 401  # Only the GET probes are open.


def test_without_keys_the_server_is_open(no_env_keys):
    assert client(ServeConfig()).post("/v1/completions").status_code == 200


def test_cors_answers_preflights_before_the_key_check_and_labels_401s(no_env_keys):
    api = client(ServeConfig(api_keys=[KEY], cors_origins=[ORIGIN]))

    def preflight(origin: str):
        request = {"Access-Control-Request-Method": "POST", "Origin": origin}
        headers = {**request, "Access-Control-Request-Headers": "authorization,content-type"}
        return api.options("/v1/completions", headers=headers)

    allowed = preflight(ORIGIN)
    assert allowed.status_code == 200
    assert allowed.headers["access-control-allow-origin"] == ORIGIN
    assert "POST" in allowed.headers["access-control-allow-methods"]
    assert "access-control-allow-origin" not in preflight("https://evil.example.com").headers

    refused = api.post("/v1/completions", headers={"Origin": ORIGIN})
    assert refused.status_code == 401
    assert refused.headers["access-control-allow-origin"] == ORIGIN


def test_metrics_count_requests_tokens_and_read_the_batcher(no_env_keys):
    metrics = Metrics(queued=lambda: 3, running=lambda: 2, capacity=8)
    api = client(ServeConfig(api_keys=[KEY]), metrics)
    auth = {"Authorization": f"Bearer {KEY}"}
    for _ in range(2):
        api.post("/v1/completions", headers=auth)
    api.post("/v1/chat/completions", headers=auth)
    api.post("/v1/completions")  # 401
    api.get("/v1/models/nope", headers=auth)
    api.get("/wp-admin/setup.php", headers=auth)
    api.get("/.env", headers=auth)
    api.get("/health")

    scrape = api.get("/metrics")
    assert scrape.headers["content-type"].startswith("text/plain")
    values = samples(scrape.text)
    requests = {
        labels: value for (name, labels), value in values.items() if name == "ric_requests_total"
    }
    assert requests == {
        frozenset({("route", "/v1/completions"), ("status", "200")}): 2,
        frozenset({("route", "/v1/completions"), ("status", "401")}): 1,
        frozenset({("route", "/v1/chat/completions"), ("status", "200")}): 1,
        frozenset({("route", "/v1/models/{name}"), ("status", "404")}): 1,
        frozenset({("route", "other"), ("status", "404")}): 2,
    }
    assert values["ric_tokens_total", frozenset({("kind", "prompt")})] == 2 * 5 + 4
    assert values["ric_tokens_total", frozenset({("kind", "completion")})] == 2 * 3 + CHUNKS
    assert values["ric_queue_depth", frozenset()] == 3
    assert values["ric_running_sequences", frozenset()] == 2
    assert values["ric_batch_occupancy", frozenset()] == 0.25
    chat = frozenset({("route", "/v1/chat/completions")})
    assert values["ric_time_to_first_token_seconds_count", chat] == 1
    assert values["ric_request_latency_seconds_sum", chat] >= CHUNKS * CHUNK_DELAY_S


def test_a_stream_is_timed_to_its_last_chunk(no_env_keys, request_log):
    answer = client(ServeConfig()).post("/v1/chat/completions")
    assert answer.text.endswith("data: [DONE]\n\n")
    assert answer.headers["x-request-id"] == "chatcmpl-2"
    (line,) = request_log()
    assert line["latency_s"] >= CHUNKS * CHUNK_DELAY_S
    assert CHUNK_DELAY_S <= line["ttft_s"] < line["latency_s"]
    assert (line["stream"], line["completion_tokens"]) == (True, CHUNKS)


def test_one_log_line_per_request_with_prompts_only_when_asked(no_env_keys, request_log):
    api = client(ServeConfig())
    answer = api.post("/v1/completions")
    api.get("/health")
    api.get("/metrics")
    assert answer.headers["x-request-id"] == "cmpl-1"
    (line,) = request_log()
    assert set(line) == LOG_KEYS
    expected = {key: COMPLETION_RIC[key] for key in LOG_KEYS & set(COMPLETION_RIC)}
    assert {key: line[key] for key in expected} == expected
    seen = {"method": "POST", "route": "/v1/completions", "status": 200, "stream": False}
    assert {key: line[key] for key in seen} == seen

    client(ServeConfig(log_prompts=True)).post("/v1/completions")
    with_prompts = request_log()[-1]
    assert set(with_prompts) == LOG_KEYS | {"prompts", "answers"}
    assert with_prompts["answers"] == ["Hi there", "Hey"]


def test_a_route_without_a_record_gets_defaults_and_no_request_id_header(no_env_keys, request_log):
    answer = client(ServeConfig()).get("/")
    assert "x-request-id" not in answer.headers
    (line,) = request_log()
    assert len(line["id"]) == 32  # A fresh uuid4, in hex.
    defaults = {"ttft_s": None, "prompt_tokens": 0, "n": 1, "steering": None, "stream": False}
    assert {key: line[key] for key in defaults} == defaults


def test_a_crash_is_logged_as_500_and_bad_route_data_never_breaks_an_answer(
    no_env_keys, request_log, caplog
):
    api = client(ServeConfig())
    assert api.post("/v1/crash").status_code == 500
    assert request_log()[-1]["status"] == 500

    answer = api.post("/v1/garbled")
    assert (answer.status_code, answer.json()) == (200, {"ok": True})
    assert any("recording a request failed" in r.getMessage() for r in caplog.records)
