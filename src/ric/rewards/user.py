"""User rewards named as ``"package.module:attribute"``, and the option check all scorers share.

The attribute may be
* a class: instantiated with the options; the instance must have a ``score`` method;
* a function ``f(prompts, responses, **options)``: wrapped so ``score`` calls it;
* an object that already has a ``score`` method (a configured instance; takes no options).
Every result goes through :func:`ric.rewards.base.score_checked`, so a user scorer returning a
list, ints or the wrong length is converted or rejected with its spec in the message.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from ric.rewards.base import RewardFunction, score_checked

_NAMED = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)


def check_options(
    label: str, factory: Callable[..., Any], options: Mapping[str, Any], leading: int = 0
) -> None:
    """Raise ValueError when ``options`` do not fit the signature of ``factory``.

    ``leading`` positional parameters are supplied by the caller (prompts and responses for a
    function) and are not options. Unknown keys are named with the valid ones listed; missing
    required options are named too.
    """
    signature = inspect.signature(factory)
    parameters = list(signature.parameters.values())[leading:]
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        valid = [p.name for p in parameters if p.kind in _NAMED]
        unknown = [key for key in options if key not in valid]
        if unknown:
            raise ValueError(
                f"reward {label!r}: unknown option {unknown[0]!r}; "
                f"valid options: {', '.join(valid) or 'none'}"
            )
    try:
        signature.bind(*[None] * leading, **options)
    except TypeError as error:
        raise ValueError(f"reward {label!r}: {error}") from error


class UserReward:
    """A user's scorer with the shared input and output checks around it."""

    def __init__(self, spec: str, score: Callable[[list[str], list[str]], ArrayLike]) -> None:
        self.spec = spec
        self._score = score

    def score(self, prompts: Sequence[str], responses: Sequence[str]) -> np.ndarray:
        return score_checked(self.spec, self._score, prompts, responses)


def load_user_function(spec: str, options: Mapping[str, Any] | None = None) -> RewardFunction:
    """Import ``"package.module:attribute"`` and make a reward scorer of it (see module doc)."""
    return UserReward(spec, load_user_score(spec, options))


def load_user_score(
    spec: str, options: Mapping[str, Any] | None = None, inputs: str = "prompts, responses"
) -> Callable[[list[Any], list[Any]], ArrayLike]:
    """Import ``"package.module:attribute"`` and return its unchecked ``score(a, b)`` callable
    (see module doc); ``inputs`` names its two arguments in errors. The image rewards wrap the
    same user code with their own checks."""
    options = dict(options or {})
    target = _import_attribute(spec)
    if inspect.isclass(target):
        check_options(spec, target, options)
        instance = target(**options)
        if not callable(getattr(instance, "score", None)):
            raise ValueError(f"reward {spec!r}: class {target.__name__} has no score method")
        return instance.score
    if callable(getattr(target, "score", None)):
        if options:
            raise ValueError(f"reward {spec!r} is an object, not a class: it takes no options")
        return target.score
    if callable(target):
        check_options(spec, target, options, leading=2)
        return lambda first, second: target(first, second, **options)
    raise ValueError(
        f"reward {spec!r} is of type {type(target).__name__}: expected a class, a function "
        f"f({inputs}) or an object with a score method"
    )


def _import_attribute(spec: str) -> Any:
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute or ":" in attribute:
        raise ValueError(f"reward {spec!r}: expected the form 'package.module:function'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise ValueError(
            f"reward {spec!r}: cannot import module {module_name!r} ({error}); "
            "is it installed or on sys.path?"
        ) from error
    try:
        return getattr(module, attribute)
    except AttributeError as error:
        raise ValueError(
            f"reward {spec!r}: module {module_name!r} has no attribute {attribute!r}"
        ) from error
