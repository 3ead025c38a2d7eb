"""The generic configuration engine: YAML files mapped onto any dataclass, with overrides.

It knows nothing of RiC's sections: it checks and converts values by their type annotations,
reads YAML files (with ``base:`` chains) and ``key.sub=value`` overrides, and writes and
documents a config. Unknown keys and wrongly typed values are errors that name the key path
(``label.shard_size``), so a typo never silently falls back to a default. Kept apart from the
sections so that the text sections (``ric.config.sections``, ``ric.config.commands``) and the
image ones (``ric.image.config``) are read by the same code.
"""

from __future__ import annotations

import copy
import dataclasses
import re
import types
import typing
from collections.abc import Iterator, Sequence
from dataclasses import field
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")
_EXPONENT_NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


def check_choice(key: str, value: str, valid: Sequence[str]) -> None:
    """Raise ValueError naming ``key`` when ``value`` is not one of ``valid``."""
    if value not in valid:
        raise ValueError(f"{key}: {value!r} is not valid; choose one of {', '.join(valid)}")


def require_setting(key: str, value: Any, what: str, flag: str = "", hint: str = "") -> None:
    """Raise ValueError when a required setting is empty: "no ``what``: set ``key`` (or pass
    --``flag``, by default the key's last part)``hint``"."""
    if not value:
        flag = flag or key.rsplit(".", 1)[-1]
        raise ValueError(f"no {what}: set {key} (or pass --{flag}){hint}")


def doc_field(default: Any, doc: str) -> Any:
    """A dataclass field with a default (copied for mutable values) and a one-line doc."""
    if isinstance(default, list | dict):
        return field(default_factory=lambda: type(default)(default), metadata={"doc": doc})
    return field(default=default, metadata={"doc": doc})


def fill_default_sections(config: Any) -> None:
    """Give every section left at None its own defaults (doc_field(None) keeps the docs in one
    place)."""
    for name, annotation in typing.get_type_hints(type(config)).items():
        if getattr(config, name) is None and dataclasses.is_dataclass(annotation):
            setattr(config, name, annotation())


def _describe(annotation: Any) -> str:
    return getattr(annotation, "__name__", None) or str(annotation).replace("typing.", "")


def _convert(value: Any, annotation: Any, path: str) -> Any:
    """Check and convert a YAML value to ``annotation``; errors name ``path``."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for option in (a for a in args if a is not type(None)):
            try:
                return _convert(value, option, path)
            except ValueError as error:
                errors.append(str(error))
        raise ValueError(errors[0])
    if dataclasses.is_dataclass(annotation):
        if not isinstance(value, dict):
            raise ValueError(f"{path}: expected a mapping, got {value!r}")
        return from_dict(annotation, value, path)  # type: ignore[arg-type]
    if origin is list:
        if not isinstance(value, list):
            raise ValueError(f"{path}: expected a list, got {value!r}")
        return [_convert(item, args[0], f"{path}[{i}]") for i, item in enumerate(value)]
    if origin is dict or annotation is dict:
        if not isinstance(value, dict):
            raise ValueError(f"{path}: expected a mapping, got {value!r}")
        return dict(value)
    if annotation is Any:
        return value
    if annotation is float:
        if isinstance(value, str) and value.strip().lower() in ("inf", "+inf", ".inf"):
            return float("inf")
        if isinstance(value, str) and _EXPONENT_NUMBER.fullmatch(value.strip()):
            return float(value)  # YAML 1.1 reads 1e-5 (no dot) as a string
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
    elif annotation is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif (annotation is bool or annotation is str) and isinstance(value, annotation):
        return value
    raise ValueError(f"{path}: expected {_describe(annotation)}, got {value!r}")


def from_dict(cls: type[T], values: dict[str, Any], path: str = "") -> T:
    """Build dataclass ``cls`` from a mapping; unknown keys and bad types name their path."""
    fields = typing.get_type_hints(cls)
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ValueError(
            f"unknown config key {path + '.' if path else ''}{unknown[0]}; "
            f"valid keys{' in ' + path if path else ''}: {', '.join(fields)}"
        )
    kwargs = {
        name: _convert(value, fields[name], f"{path}.{name}" if path else name)
        for name, value in values.items()
    }
    return cls(**kwargs)


def to_dict(config: Any) -> dict[str, Any]:
    return dataclasses.asdict(config)


def set_value(values: dict[str, Any], key: str, value: Any) -> None:
    """Set the dotted ``key`` (``label.shard_size``) of a nested mapping to ``value``, in place,
    making the sections on the way. A value that is already typed (a command-line flag's float
    ``inf``, an int) goes in as it is: nothing is written out and parsed back."""
    *sections, leaf = key.split(".")
    target = values
    for part in sections:
        target = target.setdefault(part, {})
        if not isinstance(target, dict):
            raise ValueError(f"cannot set {key}: {part} is not a section")
    target[leaf] = value


def apply_override(values: dict[str, Any], override: str) -> None:
    """Apply ``key.sub=value`` (value parsed as YAML) to a nested mapping, in place."""
    key, sep, raw = override.partition("=")
    if not sep or not key.strip():
        raise ValueError(f"override {override!r} must look like key.sub=value")
    set_value(values, key.strip(), yaml.safe_load(raw) if raw.strip() else "")


def read_values(path: str | Path | None = None, overrides: Sequence[str] = ()) -> dict[str, Any]:
    """The raw mapping of a YAML config file (empty without one) with ``overrides`` applied:
    exactly what the user set, before defaults. A file's top-level ``base: other.yaml`` (a path
    relative to the file) is read first and the file laid over it, section by section."""
    values = _read_file(Path(path), ()) if path is not None else {}
    return with_overrides(values, overrides)


def _read_file(file: Path, chain: tuple[Path, ...]) -> dict[str, Any]:
    if file.resolve() in chain:
        raise ValueError(f"config file {str(file)!r} is its own base (a cycle of base: keys)")
    if not file.is_file():
        raise ValueError(f"config file {str(file)!r} does not exist")
    try:
        loaded = yaml.safe_load(file.read_text()) or {}
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(error, "problem", None) or type(error).__name__
        raise ValueError(f"config file {str(file)!r} is not valid YAML{where}: {problem}") from None
    if not isinstance(loaded, dict):
        raise ValueError(f"config file {str(file)!r} must hold a mapping at the top level")
    base = loaded.pop("base", None)
    if base is None:
        return loaded
    if not isinstance(base, str):
        raise ValueError(f"base in {str(file)!r} must be a path to a YAML file, got {base!r}")
    return merge_values(_read_file(file.parent / base, (*chain, file.resolve())), loaded)


def merge_values(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """``over`` laid onto ``base``: mappings merge key by key, anything else is replaced."""
    merged = dict(base)
    for key, value in over.items():
        both = isinstance(value, dict) and isinstance(merged.get(key), dict)
        merged[key] = merge_values(merged[key], value) if both else value
    return merged


def with_overrides(values: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """A copy of ``values`` with every ``key.sub=value`` override applied."""
    values = copy.deepcopy(values)
    for override in overrides:
        apply_override(values, override)
    return values


def flatten(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``: nested sections as dotted keys (lists are values)."""
    flat: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, dict) and value:
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def dump_config(config: Any) -> str:
    return yaml.safe_dump(to_dict(config), sort_keys=False, allow_unicode=True)


def iter_field_docs(cls: type, prefix: str = "") -> Iterator[tuple[str, str, Any, str]]:
    """(key path, type, default, doc) for every field, depth first; used by `ric config`."""
    instance = cls()
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        key, annotation = f"{prefix}{f.name}", hints[f.name]
        if dataclasses.is_dataclass(annotation):
            yield from iter_field_docs(annotation, f"{key}.")  # type: ignore[arg-type]
            continue
        yield key, _describe(annotation), getattr(instance, f.name), f.metadata.get("doc", "")
        item = typing.get_args(annotation)[0] if typing.get_origin(annotation) is list else None
        if dataclasses.is_dataclass(item):
            yield from iter_field_docs(item, f"{key}[].")  # type: ignore[arg-type]
