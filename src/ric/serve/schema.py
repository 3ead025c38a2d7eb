"""The request bodies the server reads: OpenAI's fields it supports, plus RiC's steering fields
(``preference``, ``rewards``, ``rewards_obtained``) and ``score``, read strictly (``check_fields``,
before the schema):

* a field of the wrong type or range is a 422 naming it; steering weights must be JSON numbers
  (a string such as ``"0.5"`` or a boolean is refused, never converted);
* an OpenAI field this server does not implement is a 400 naming it (``code``
  ``unsupported_parameter``), unless it holds its no-op value (``presence_penalty: 0``,
  ``logprobs: false``, ``response_format: {"type": "text"}``, ...): accepting it silently would
  answer something other than what was asked;
* OpenAI's bookkeeping fields, which never change an answer (``user``, ``metadata``, ...), are
  accepted and ignored (``IGNORED``);
* any other field is a 400 naming it (``unknown_parameter``), as OpenAI answers: a misspelt
  ``preferences`` is refused rather than answered with the default preference;
* ``stream_options`` is a 400 without ``stream: true`` (OpenAI's rule), and so is an option in it
  that OpenAI does not define (``unknown_parameter``): a misspelt ``include_usage`` would
  silently drop the usage chunk. ``include_obfuscation`` (padding against side channels) is
  accepted and ignored.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from ric.serve.errors import RequestError

Steer = list[float] | dict[str, float] | None

# OpenAI fields that never change what is generated: who asks (user, safety_identifier), tags
# (metadata), and how OpenAI bills, caches or queues it (service_tier, prompt_cache_key). They
# are accepted and ignored, so that clients which always send them keep working.
IGNORED = frozenset({"user", "safety_identifier", "metadata", "service_tier", "prompt_cache_key"})

# OpenAI fields this server does not implement, with the values that ask for nothing (accepted).
NO_OP: dict[str, tuple[Any, ...]] = {
    "frequency_penalty": (None, 0),
    "presence_penalty": (None, 0),
    "logit_bias": (None, {}),
    "logprobs": (None, False),
    "top_logprobs": (None,),
    "tools": (None, []),
    "tool_choice": (None, "none"),
    "parallel_tool_calls": (None,),
    "functions": (None, []),
    "function_call": (None, "none"),
    "response_format": (None, {"type": "text"}),
    "audio": (None,),
    "modalities": (None, ["text"]),
    "prediction": (None,),
    "reasoning_effort": (None,),
    "verbosity": (None,),
    "web_search_options": (None,),
    "store": (None, False),
    "echo": (None, False),  # completions
    "best_of": (None, 1),  # completions
    "suffix": (None, ""),  # completions
}

STEERING_FIELDS = ("preference", "rewards", "rewards_obtained")

# OpenAI's stream options this server accepts and ignores: padding chunks against side channels.
IGNORED_STREAM_OPTIONS = frozenset({"include_obfuscation"})


class StreamOptions(BaseModel):
    include_usage: bool = False


class CommonRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")  # check_fields has refused every unknown field

    model: str
    preference: Steer = None  # N weights, or {objective: weight}
    rewards: Steer = None  # desired standardized rewards, a list or {objective: reward}
    rewards_obtained: Steer = None  # standardized rewards to obtain (calibrated models)
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


def check_fields(values: dict[str, Any], schema: type[BaseModel]) -> None:
    """Refuse what ``schema`` would otherwise ignore or convert (rules in the module
    docstring): RequestError naming the field."""
    for name, value in values.items():
        if name in schema.model_fields or name in IGNORED:
            continue
        if name in NO_OP:
            allowed = NO_OP[name]
            if not any(same(value, ok) for ok in allowed):
                shown = " or ".join("null" if ok is None else repr(ok) for ok in allowed)
                raise RequestError(
                    f"{name} is not supported by this server (accepted only as {shown})",
                    param=name,
                    code="unsupported_parameter",
                )
            continue
        raise unknown_field(name)
    for name in STEERING_FIELDS:
        check_weights(name, values.get(name))
    check_stream_options(values)


def check_stream_options(values: dict[str, Any]) -> None:
    """``stream_options`` only with ``stream: true``, and only the options OpenAI defines
    (``StreamOptions``, ``IGNORED_STREAM_OPTIONS``): a RequestError naming the field otherwise."""
    options = values.get("stream_options")
    if options is None:
        return
    if values.get("stream") is not True:
        raise RequestError(
            "The 'stream_options' parameter is only allowed when 'stream' is enabled.",
            param="stream_options",
        )
    for name in options if isinstance(options, dict) else ():  # not an object: the schema's 422
        if name not in StreamOptions.model_fields and name not in IGNORED_STREAM_OPTIONS:
            raise unknown_field(f"stream_options.{name}")


def unknown_field(name: str) -> RequestError:
    """OpenAI's answer to a field it does not define (``name``: its dotted path)."""
    return RequestError(
        f"Unrecognized request argument supplied: {name}", param=name, code="unknown_parameter"
    )


def same(value: Any, allowed: Any) -> bool:
    """``value == allowed`` without True == 1 and 0 == False passing for each other."""
    if isinstance(value, bool) or isinstance(allowed, bool):
        return type(value) is type(allowed) and value == allowed
    return value == allowed


def check_weights(name: str, value: Any) -> None:
    """A steering field is null, a list of JSON numbers or an object of JSON numbers: a string or
    a boolean is a 422 naming the field and the value (never converted)."""
    if value is None:
        return
    if isinstance(value, list):
        items = [(f"{name}[{i}]", v) for i, v in enumerate(value)]
    elif isinstance(value, dict):
        items = [(f"{name}.{key}", v) for key, v in value.items()]
    else:
        raise RequestError(
            f"{name} must be a list of numbers or an object of numbers by objective name, got "
            f"{type(value).__name__}",
            param=name,
            status=422,
        )
    for where, v in items:
        if isinstance(v, bool) or not isinstance(v, int | float):
            raise RequestError(
                f"{where} must be a number, got {v!r} ({json_type(v)})", param=name, status=422
            )


def json_type(value: Any) -> str:
    names = {bool: "a boolean", str: "a string", list: "an array", dict: "an object"}
    return "null" if value is None else names.get(type(value), type(value).__name__)
