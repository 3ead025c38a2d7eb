"""Bad input to `ric serve` beyond tests/test_serve.py's lists: requests (against the real
server on the tiny run), API keys, CORS, and settings refused at startup. Each case is a row of
docs/bad-input.md's server table (``row``: its first cell, checked there): the status, OpenAI's
error JSON naming the field or value at fault, and a server that still answers afterwards."""

import http.client
import json
import sys

import pytest
from helpers import CHAT, ROOT, calibrated_copy, running

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

from ric.cli import main
from ric.runs import read_calibration

ERROR_KEYS = {"message", "type", "param", "code"}
COMPLETIONS = "/v1/completions"
MODELS = "/v1/models"
KEY = "sk-serve-test-4821"
ORIGIN = "https://app.example.com"
DOCS = "docs/bad-input.md"
ROWS: list[str] = []  # every case's row, checked against the docs' table at the end


def documented(row: str) -> str:
    ROWS.append(row)
    return row


def chat_body(**fields):
    base = {"model": "train", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4}
    return base | fields


def completion_body(**fields):
    return {"model": "train", "prompt": "Hi", "max_tokens": 4} | fields


def send(url, path, body=None, method="POST", headers=None):
    """(status, headers by lowercase name, raw body bytes) of one HTTP request with ``headers``;
    ``body`` a dict is sent as JSON, bytes as they are."""
    host, port = url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=60)
    data = json.dumps(body).encode() if isinstance(body, dict) else body
    sent = {"Content-Type": "application/json"} | (headers or {})
    connection.request(method, path, body=data, headers=sent)
    response = connection.getresponse()
    payload = response.read()
    connection.close()
    return response.status, {k.lower(): v for k, v in response.getheaders()}, payload


def openai_error(payload, status, param=None, code=None):
    """The ``error`` object of an OpenAI-shaped error body, checked."""
    body = json.loads(payload) if isinstance(payload, bytes) else payload
    error = body["error"]
    assert set(error) == ERROR_KEYS, body
    assert error["param"] == param and error["code"] == code, error
    assert error["message"] and error["type"] == "invalid_request_error", error
    return error


def healthy(url, headers=None):
    """The server still answers /health and a plain request after an error."""
    return (
        send(url, "/health", method="GET")[0] == 200
        and send(url, CHAT, chat_body(), headers=headers)[0] == 200
    )


@pytest.fixture(scope="module")
def run(tiny_offline):
    return tiny_offline / "train"


@pytest.fixture(scope="module")
def url(run):
    with running(run, max_tokens=16) as base:
        yield base


# --- requests: (row, route, body, status, param, code, what the message names) -----------------

NAN_TEMPERATURE = json.dumps(chat_body(temperature=float("nan"))).encode()  # writes NaN
LATIN_1 = json.dumps(chat_body(messages=[{"role": "user", "content": "café"}]), ensure_ascii=False)
IMAGE = {"type": "image_url", "image_url": {"url": "https://example.com/fox.png"}}
LONG_PROMPT = "word " * 600  # about 2400 tokens: past the tiny model's context of 512

STREAM_OPTIONS = documented("`stream_options` without `stream: true`")
STREAM_OPTION_NAME = documented(
    "a misspelt stream option such as `include_usag` (`param` `stream_options.include_usag`, "
    "code `unknown_parameter`)"
)
TOP_P = documented("`top_p: 0` (for greedy decoding send `temperature: 0`)")
SEED = documented("`seed: -1` (for a random seed leave `seed` out)")
ZERO = documented("`max_tokens: 0`, `max_completion_tokens: 0` or `n: 0`")
NAN = documented("`temperature: NaN` (the bare `NaN` Python's `json.dumps` writes for a float nan)")
STOP = documented("more than 4 `stop` strings")
NOT_UTF8 = documented("a body that is not UTF-8 (text encoded as Latin-1)")
NO_MESSAGES = documented("`messages: []`")
NOT_TEXT = documented(
    "a message that is not text: an image part, a number or no `content` "
    "(`param` `messages[0].content`)"
)
ROLE = documented(
    "a message `role` other than `system`, `developer`, `user`, `assistant` "
    "(`robot`, `function`, none)"
)
NOT_A_LIST = documented("`messages` as one string or one object instead of a list of messages")
NO_MODEL = documented("no `model`")
CONTEXT = documented(
    "a prompt plus `max_tokens` longer than the model's context (the message gives both counts; "
    "code `context_length_exceeded`)"
)
EMPTY_PROMPTS = documented("a completions `prompt` that is an empty list")
TOKEN_IDS = documented("a completions `prompt` of token ids (`[1, 2, 3]`): only text is taken")
REWARDS_LENGTH = documented(
    "`rewards` with another number of values than the run has objectives (`[1.0]` for 2)"
)
TWO_FIELDS = documented(
    "more than one of `preference`, `rewards` and `rewards_obtained` (`param` names the later one)"
)
NOT_CALIBRATED = documented(
    "`rewards_obtained` to a model without a calibration (the message says to calibrate it "
    "with `ric calibrate` and serve its output)"
)

REQUESTS = [
    (STREAM_OPTIONS, CHAT, chat_body(stream_options={"include_usage": True}), 400),
    (STREAM_OPTIONS, CHAT, chat_body(stream=False, stream_options={"include_usage": True}), 400),
    (STREAM_OPTIONS, COMPLETIONS, completion_body(stream_options={"include_usage": True}), 400),
    (STREAM_OPTION_NAME, CHAT, chat_body(stream=True, stream_options={"include_usag": True}), 400),
    (TOP_P, CHAT, chat_body(top_p=0), 422),
    (SEED, CHAT, chat_body(seed=-1), 422),
    (ZERO, CHAT, chat_body(max_tokens=0), 422),
    (ZERO, CHAT, chat_body(max_completion_tokens=0), 422),
    (ZERO, CHAT, chat_body(n=0), 422),
    (ZERO, COMPLETIONS, completion_body(max_tokens=0), 422),
    (NAN, CHAT, NAN_TEMPERATURE, 422),
    (STOP, CHAT, chat_body(stop=["a", "b", "c", "d", "e"]), 400),
    (NOT_UTF8, CHAT, LATIN_1.encode("latin-1"), 400),
    (NO_MESSAGES, CHAT, chat_body(messages=[]), 400),
    (NOT_TEXT, CHAT, chat_body(messages=[{"role": "user", "content": [IMAGE]}]), 400),
    (NOT_TEXT, CHAT, chat_body(messages=[{"role": "user", "content": 42}]), 400),
    (NOT_TEXT, CHAT, chat_body(messages=[{"role": "user"}]), 400),
    (ROLE, CHAT, chat_body(messages=[{"role": "robot", "content": "Hi"}]), 400),
    (ROLE, CHAT, chat_body(messages=[{"role": "function", "content": "Hi"}]), 400),
    (ROLE, CHAT, chat_body(messages=[{"content": "Hi"}]), 400),
    (NOT_A_LIST, CHAT, chat_body(messages="Hi"), 422),
    (NOT_A_LIST, CHAT, chat_body(messages={"role": "user", "content": "Hi"}), 422),
    (NO_MODEL, CHAT, {"messages": [{"role": "user", "content": "Hi"}]}, 422),
    (NO_MODEL, COMPLETIONS, {"prompt": "Hi"}, 422),
    (CONTEXT, COMPLETIONS, completion_body(prompt=LONG_PROMPT), 400),
    (CONTEXT, CHAT, chat_body(messages=[{"role": "user", "content": LONG_PROMPT}]), 400),
    (EMPTY_PROMPTS, COMPLETIONS, completion_body(prompt=[]), 400),
    (TOKEN_IDS, COMPLETIONS, completion_body(prompt=[1, 2, 3]), 422),
    (REWARDS_LENGTH, CHAT, chat_body(rewards=[1.0]), 400),
    (TWO_FIELDS, CHAT, chat_body(preference=[0.5, 0.5], rewards=[0, 0]), 400),
    (TWO_FIELDS, CHAT, chat_body(preference=[0.5, 0.5], rewards_obtained=[0, 0]), 400),
    (TWO_FIELDS, COMPLETIONS, completion_body(rewards=[0, 0], rewards_obtained=[0, 0]), 400),
    (NOT_CALIBRATED, CHAT, chat_body(rewards_obtained=[0.1, 0.1]), 400),
    (NOT_CALIBRATED, COMPLETIONS, completion_body(rewards_obtained={"positivity": 0.1}), 400),
]
# What each row's error says: (param, code, a piece of its message); the ZERO row's cases name
# the field each one sets to 0 (zero_error).
ERRORS = {
    STREAM_OPTIONS: ("stream_options", None, "only allowed when 'stream' is enabled"),
    STREAM_OPTION_NAME: (
        "stream_options.include_usag",
        "unknown_parameter",
        "stream_options.include_usag",
    ),
    TOP_P: ("top_p", None, "top_p: Input should be greater than 0"),
    SEED: ("seed", None, "seed: Input should be greater than or equal to 0"),
    NAN: ("temperature", None, "temperature: Input should be a finite number"),
    STOP: ("stop", None, "stop must be up to 4"),
    NOT_UTF8: (None, None, "'utf-8' codec can't decode byte 0xe9"),
    NO_MESSAGES: ("messages", None, "messages must hold at least one message"),
    NOT_TEXT: ("messages[0].content", None, "messages[0].content must be a string"),
    ROLE: ("messages[0].role", None, "use one of system, developer, user, assistant"),
    NOT_A_LIST: ("messages", None, "messages: Input should be a valid list"),
    NO_MODEL: ("model", None, "model: Field required"),
    CONTEXT: ("max_tokens", "context_length_exceeded", "exceeds the model's context of 512"),
    EMPTY_PROMPTS: ("prompt", None, "prompt must not be an empty list"),
    TOKEN_IDS: ("prompt", None, "prompt.str: Input should be a valid string"),
    REWARDS_LENGTH: ("rewards", None, "rewards has 1 values; the model has 2 objectives"),
    NOT_CALIBRATED: (
        "rewards_obtained",
        None,
        "not calibrated, so it cannot take rewards_obtained",
    ),
}


def zero_error(body):
    name = next(k for k in ("max_completion_tokens", "n", "max_tokens") if body.get(k) == 0)
    return name, None, f"{name}: Input should be greater than or equal to 1"


def two_fields_error(body):
    """The TWO_FIELDS row's cases name the later of the fields they set."""
    given = [k for k in ("preference", "rewards", "rewards_obtained") if k in body]
    return given[-1], None, f"not {' and '.join(given)}"


@pytest.mark.parametrize(
    ("row", "path", "body", "status"),
    [pytest.param(*case, id=f"{case[0][:40]}-{i}") for i, case in enumerate(REQUESTS)],
)
def test_a_bad_request_is_refused_naming_the_field(url, row, path, body, status):
    special = {ZERO: zero_error, TWO_FIELDS: two_fields_error}
    param, code, says = special[row](body) if row in special else ERRORS[row]
    got, _, payload = send(url, path, body)
    assert got == status, payload
    error = openai_error(payload, status, param, code)
    assert says in error["message"], error
    if row == NOT_CALIBRATED:  # and how to calibrate it
        assert "`ric calibrate --model RUN --output DIR" in error["message"], error
    if row == ROLE:  # the role sent is repeated: 'robot', 'function', None
        role = body["messages"][0].get("role")
        assert repr(role) in error["message"], error
    assert healthy(url)


def test_stream_options_with_a_stream_are_accepted(url):
    """The rule of ``stream_options`` refuses only what it should: with ``stream: true``, the
    usage chunk comes, and OpenAI's ``include_obfuscation`` is accepted (ignored)."""
    options = {"include_usage": True, "include_obfuscation": False}
    status, _, payload = send(url, CHAT, chat_body(stream=True, stream_options=options))
    assert status == 200, payload
    events = [e.removeprefix("data: ") for e in payload.decode().split("\n\n") if e]
    assert events[-1] == "[DONE]"
    assert json.loads(events[-2])["usage"]["completion_tokens"] > 0


# --- rewards_obtained to a calibrated model -----------------------------------------------------


@pytest.fixture(scope="module")
def calibrated(tiny_calibrated, tmp_path_factory):
    """(run, url): a calibrated run with a known calibration (obtained = 0.5 x desired), served."""
    run = calibrated_copy(tiny_calibrated, tmp_path_factory.mktemp("bad-input") / "cal")
    with running(run, max_tokens=16) as base:
        yield run, base


OUT_OF_REACH = documented(
    "`rewards_obtained` beyond the model's reach (the message gives each objective's reach)"
)
OBTAINED_VALUES = documented(
    "`rewards_obtained` that is not finite, has another number of values than the run has "
    "objectives, or names an unknown objective"
)


@pytest.mark.parametrize(
    ("row", "target", "says"),
    [
        (OUT_OF_REACH, [9.0, 0.0], "[9.0, 0.0] is beyond this model's reach"),
        (OUT_OF_REACH, {"positivity": -9.0}, "is beyond this model's reach"),
        (OBTAINED_VALUES, [float("nan"), 0.0], "rewards_obtained must be finite, got [nan, 0.0]"),
        (OBTAINED_VALUES, [0.1], "rewards_obtained has 1 values; the model has 2 objectives"),
        (OBTAINED_VALUES, {"nope": 0.1}, "rewards_obtained names unknown objective 'nope'"),
    ],
)
def test_a_bad_target_to_a_calibrated_model_is_refused(calibrated, row, target, says):
    run, base = calibrated
    status, _, payload = send(base, CHAT, chat_body(model="cal", rewards_obtained=target))
    assert status == 400, payload
    error = openai_error(payload, 400, "rewards_obtained")
    assert says in error["message"], error
    if row == OUT_OF_REACH:
        fitted = read_calibration(run)
        lowest, highest = fitted.reach
        for name, low, high in zip(fitted.names, lowest, highest, strict=True):
            assert f"{name} {low:+.2f}..{high:+.2f}" in error["message"], error
    assert send(base, "/health", method="GET")[0] == 200
    assert send(base, CHAT, chat_body(model="cal", rewards_obtained=[0.0, 0.0]))[0] == 200


WRONG_METHOD = documented(
    "the wrong HTTP method: `GET /v1/chat/completions` (a URL opened in a browser), "
    "`GET /v1/completions`, `POST /v1/models`, `POST /metrics`"
)


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", CHAT), ("GET", COMPLETIONS), ("POST", MODELS), ("POST", "/metrics")],
)
def test_the_wrong_method_is_a_405_naming_it(url, method, path):
    status, _, payload = send(url, path, chat_body() if method == "POST" else None, method)
    assert status == 405, payload
    error = openai_error(payload, 405)
    assert error["message"] == f"Invalid URL ({method} {path})"
    assert healthy(url)


KV_CACHE = documented(
    "a prompt plus `max_tokens` longer than the engine's KV cache (`serve.kv_cache_tokens`; code "
    "`context_length_exceeded`)"
)


def test_a_request_past_the_kv_cache_names_the_setting(run):
    # 256 tokens of cache (one page), within the tiny model's context of 512.
    with running(run, kv_cache_tokens=256, max_tokens=300) as base:
        status, _, payload = send(base, CHAT, chat_body(max_tokens=300))
        assert status == 400, payload
        error = openai_error(payload, 400, "max_tokens", "context_length_exceeded")
        assert "KV cache of 256 tokens (serve.kv_cache_tokens)" in error["message"]
        assert "max_tokens (300)" in error["message"]
        assert send(base, CHAT, chat_body(max_tokens=200))[0] == 200  # fits: answered
        assert healthy(base)


# --- API keys and CORS ----------------------------------------------------------------------------

NO_KEY = documented(
    "no API key when the server has keys (`serve.api_keys` or `RIC_API_KEYS`): no "
    "`Authorization` header, or the key in an `api-key` header"
)
WRONG_KEY = documented(
    "a wrong API key (code `invalid_api_key`; the message shows only the key's first 3 and last "
    "2 characters)"
)
NOT_BEARER = documented(
    "an API key sent without the `Bearer` scheme: `Authorization: KEY` or `Basic KEY` (code "
    "`invalid_api_key`)"
)
PROTECTED = [("POST", CHAT, chat_body()), ("POST", COMPLETIONS, completion_body())]
PROTECTED += [("GET", MODELS, None), ("GET", f"{MODELS}/train", None)]


@pytest.fixture(scope="module")
def keyed_url(run):
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("RIC_API_KEYS", raising=False)
        with running(run, api_keys=[KEY], max_tokens=16) as base:
            yield base


@pytest.mark.parametrize(
    ("row", "headers", "code", "says"),
    [
        (NO_KEY, {}, None, "You didn't provide an API key"),
        (NO_KEY, {"api-key": KEY}, None, "You didn't provide an API key"),
        (WRONG_KEY, {"Authorization": "Bearer sk-wrong-key-0000"}, "invalid_api_key", "sk-***00"),
        (NOT_BEARER, {"Authorization": KEY}, "invalid_api_key", "sk-***21"),
        (NOT_BEARER, {"Authorization": f"Basic {KEY}"}, "invalid_api_key", "Bas***21"),
    ],
)
def test_a_request_without_the_right_key_is_a_401_on_every_api_route(
    keyed_url, row, headers, code, says
):
    for method, path, body in PROTECTED:
        status, answer_headers, payload = send(keyed_url, path, body, method, headers)
        assert status == 401, (path, payload)
        assert answer_headers["www-authenticate"] == "Bearer"
        error = openai_error(payload, 401, None, code)
        assert says in error["message"], error
        assert KEY not in error["message"] and "sk-wrong-key-0000" not in error["message"]
    right = {"Authorization": f"Bearer {KEY}"}
    for method, path, body in PROTECTED:  # the right key passes everywhere
        assert send(keyed_url, path, body, method, right)[0] == 200
    assert healthy(keyed_url, right)  # /health itself is open


def test_keys_from_the_environment_are_required_too(run, monkeypatch):
    monkeypatch.setenv("RIC_API_KEYS", "env-key-0001, env-key-0002")
    with running(run, max_tokens=16) as base:
        status, _, payload = send(base, CHAT, chat_body())
        assert status == 401 and "You didn't provide an API key" in payload.decode()
        status, _, payload = send(base, CHAT, chat_body(), headers={"Authorization": "Bearer x"})
        openai_error(payload, 401, None, "invalid_api_key")
        assert healthy(base, {"Authorization": "Bearer env-key-0002"})


CORS = documented(
    "a browser's preflight from an origin not in `serve.cors_origins` (Starlette's plain-text "
    "`Disallowed CORS origin`, no `access-control-allow-origin`)"
)


def test_a_page_from_another_origin_gets_no_cors_headers(run):
    preflight = {"Access-Control-Request-Method": "POST"}
    preflight["Access-Control-Request-Headers"] = "authorization,content-type"
    with running(run, cors_origins=[ORIGIN], max_tokens=16) as base:
        other = preflight | {"Origin": "https://evil.example.com"}
        status, headers, payload = send(base, CHAT, method="OPTIONS", headers=other)
        assert status == 400 and payload == b"Disallowed CORS origin"
        assert "access-control-allow-origin" not in headers
        # The request itself is answered, unlabeled, so the browser keeps it from the page.
        status, headers, _ = send(base, CHAT, chat_body(), headers={"Origin": other["Origin"]})
        assert status == 200 and "access-control-allow-origin" not in headers
        status, headers, _ = send(
            base, CHAT, method="OPTIONS", headers=preflight | {"Origin": ORIGIN}
        )
        assert status == 200 and headers["access-control-allow-origin"] == ORIGIN
        assert healthy(base)


# --- settings refused at startup: one `ric: error:` line, exit status 2 -----------------------

CORS_ORIGINS = documented(
    "a `serve.cors_origins` entry with a path (`https://app.example.com/chat`), or one string "
    "instead of a list"
)
EMPTY_KEYS = documented(
    "an empty key in `serve.api_keys`, or `RIC_API_KEYS` set to commas and spaces only (the "
    "server would be open)"
)
STARTUP = [
    (
        documented("`serve.engine` that is not `transformers` or `vllm` (the error lists them)"),
        ["serve.engine=nope"],
        ["serve.engine: 'nope' is not valid; choose one of transformers, vllm"],
    ),
    (
        documented(
            "`serve.engine: vllm` where vLLM is not installed (the error gives the install command)"
        ),
        ["serve.engine=vllm"],
        ["optional dependency 'vllm', which is not installed", 'pip install "ric[vllm]"'],
    ),
    (
        documented(
            "`serve.max_wait_ms`, a retired setting (the error says why: batching is continuous)"
        ),
        ["serve.max_wait_ms=5"],
        ["serve.max_wait_ms is no longer a setting", "batches continuously"],
    ),
    (
        CORS_ORIGINS,
        ["serve.cors_origins=[https://app.example.com/chat]"],
        ["serve.cors_origins: 'https://app.example.com/chat' is not an origin", "no path"],
    ),
    (
        CORS_ORIGINS,
        ["serve.cors_origins=https://app.example.com"],
        ["serve.cors_origins: expected a list, got 'https://app.example.com'"],
    ),
    (
        EMPTY_KEYS,
        ['serve.api_keys=["sk-1", " "]'],
        ["serve.api_keys must not contain an empty key"],
    ),
    (
        documented("a negative `serve.kv_cache_tokens`"),
        ["serve.kv_cache_tokens=-1"],
        ["serve.kv_cache_tokens must be >= 0, got -1"],
    ),
    (
        documented(
            "`mapping.method: calibrated` for a run without a calibration (the error says to "
            "run `ric calibrate`)"
        ),
        ["mapping.method=calibrated"],
        ["this model has no calibration (calibration.json)", "run `ric calibrate --model RUN"],
    ),
    (
        documented(
            "`serve.default_preference` with another number of weights than the run has objectives"
        ),
        ["serve.default_preference=[0.2,0.3,0.5]"],
        ["serve.default_preference has 3 weights; the run has 2 objectives"],
    ),
]


@pytest.mark.parametrize(
    ("row", "settings", "expected"),
    [pytest.param(*case, id=case[1][0]) for case in STARTUP],
)
def test_a_bad_setting_stops_ric_serve_with_one_line(
    run, monkeypatch, capsys, row, settings, expected
):
    import uvicorn

    def served(*_, **__):
        raise AssertionError("ric serve started serving despite a bad setting")

    monkeypatch.setattr(uvicorn, "run", served)
    monkeypatch.setitem(sys.modules, "vllm", None)  # not installed, whatever this machine has
    flags = [arg for setting in settings for arg in ("--set", setting)]
    capsys.readouterr()
    assert main(["serve", "--model", str(run), "--port", "8123", *flags]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("ric: error: ") and "Traceback" not in "\n".join(err), err
    for piece in expected:
        assert piece in err[-1], (piece, err[-1])


def test_keys_variable_without_a_key_stops_ric_serve(run, monkeypatch, capsys):
    """EMPTY_KEYS: RIC_API_KEYS set to commas and spaces would leave the server open."""
    import uvicorn

    monkeypatch.setattr(uvicorn, "run", lambda *_, **__: pytest.fail("served with no key"))
    monkeypatch.setenv("RIC_API_KEYS", " , ")
    capsys.readouterr()
    assert main(["serve", "--model", str(run), "--port", "8123"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("ric: error: RIC_API_KEYS is set to ' , ', which holds no key"), err


# --- the docs ---------------------------------------------------------------------------------


def test_every_row_is_in_the_docs_table():
    table = (ROOT / DOCS).read_text().split("## The server", 1)[1]
    missing = [row for row in ROWS if f"| {row} |" not in table]
    assert not missing, f"add to {DOCS}'s server table: {missing}"
    assert len(set(ROWS)) >= 20
