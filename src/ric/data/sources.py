"""Reading (prompt, response) pairs from JSONL, Parquet, CSV or a Hugging Face dataset."""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from ric.config import DataConfig, require_setting

if TYPE_CHECKING:
    import datasets

SUFFIX_FORMATS = {".jsonl": "jsonl", ".json": "jsonl", ".parquet": "parquet", ".csv": "csv"}


def resolve_format(config: DataConfig) -> str:
    """The format to read ``config.path`` with: explicit, from the suffix, or a HF dataset."""
    if config.format != "auto":
        return config.format
    path = Path(config.path)
    if path.suffix.lower() in SUFFIX_FORMATS:
        return SUFFIX_FORMATS[path.suffix.lower()]
    if path.is_file():
        raise ValueError(
            f"cannot tell the format of {config.path!r} from its suffix; use a suffix among "
            f"{', '.join(SUFFIX_FORMATS)} or set data.format to jsonl, parquet or csv"
        )
    return "hf"  # a saved dataset directory or a hub name


SAVED_DATASET_MARKERS = ("dataset_dict.json", "state.json")  # what save_to_disk writes


def is_saved_dataset(path: Path) -> bool:
    """Whether ``path`` is a folder written by ``datasets``' save_to_disk."""
    return path.is_dir() and any((path / marker).exists() for marker in SAVED_DATASET_MARKERS)


def load_hf_dataset(path: str, split: str) -> datasets.Dataset:
    """``split`` of a saved dataset folder (a single saved split is taken whole) or of a hub
    dataset; the text and image readers share it so both accept the same sources."""
    import datasets  # heavy import, only for this source

    if is_saved_dataset(Path(path)):
        loaded = datasets.load_from_disk(path)
        if isinstance(loaded, datasets.DatasetDict):
            if split not in loaded:
                raise ValueError(f"split {split!r} not in {path!r}; available: {list(loaded)}")
            loaded = loaded[split]
        return loaded
    return datasets.load_dataset(path, split=split)


def _read_hf(config: DataConfig) -> pd.DataFrame:
    return load_hf_dataset(config.path, config.split).to_pandas()


def read_table(config: DataConfig) -> pd.DataFrame:
    """Load ``config.path`` as a frame (first ``limit`` rows), every column kept."""
    require_setting("data.path", config.path, "input data", flag="data")
    data_format = resolve_format(config)
    path = Path(config.path)
    if data_format != "hf" and not path.is_file():
        raise ValueError(f"input file {config.path!r} does not exist")
    readers = {
        "jsonl": lambda: pd.read_json(path, lines=True, dtype=False),
        "parquet": lambda: pd.read_parquet(path),
        "csv": lambda: pd.read_csv(path, keep_default_na=False, dtype=str),
        "hf": lambda: _read_hf(config),
    }
    frame = readers[data_format]()
    if config.limit is not None:
        frame = frame.head(config.limit)
    return frame.reset_index(drop=True)


def check_columns(available: Collection[object], columns: Sequence[str], source: str) -> None:
    """Raise ValueError naming the first of ``columns`` not in ``available``, and listing those
    that are, so a misspelt column is fixed in one go."""
    for column in columns:
        if column not in available:
            raise ValueError(
                f"column {column!r} not found in {source!r}; columns there: "
                f"{', '.join(map(str, available)) or '(none)'}"
            )


def check_text_columns(frame: pd.DataFrame, columns: Sequence[str], source: str) -> None:
    """Raise ValueError for a missing column (listing those there are), no rows, or rows whose
    value is not a string."""
    check_columns(frame.columns, columns, source)
    if len(frame) == 0:
        raise ValueError(f"input {source!r} holds no rows")
    for column in columns:
        not_text = [i for i, value in enumerate(frame[column]) if not isinstance(value, str)]
        if not_text:
            raise ValueError(
                f"column {column!r} must hold text; rows {not_text[:10]} do not "
                f"({len(not_text)} in all)"
            )


def read_pairs(config: DataConfig) -> pd.DataFrame:
    """Load (prompt, response) data; every column is kept, the two text columns are checked.
    Rows whose ``finished_column`` is false (a response cut by a generation budget, whose
    length-type rewards measure the budget and whose end is no answer's end) are left out."""
    frame = read_table(config)
    check_text_columns(frame, [config.prompt_column, config.response_column], config.path)
    if config.finished_column in frame.columns:
        finished = boolean_column(frame, config.finished_column, config.path)
        frame = frame[finished].reset_index(drop=True)
        if len(frame) == 0:
            raise ValueError(
                f"every row of {config.path!r} is unfinished ({config.finished_column} false)"
            )
    return frame


BOOLEAN_TEXTS = {"true": True, "yes": True, "1": True, "false": False, "no": False, "0": False}


def parse_boolean(value: object) -> bool | None:
    """``value`` as a bool: a bool, 0/1, or true/false, yes/no, 1/0 text in any case (CSV gives
    strings, and the string "False" is truthy); None for anything else."""
    if isinstance(value, str):
        return BOOLEAN_TEXTS.get(value.strip().lower())
    if isinstance(value, bool | np.bool_ | int | np.integer | float) and value in (0, 1):
        return bool(value)
    return None


def boolean_column(frame: pd.DataFrame, column: str, source: str) -> np.ndarray:
    """``frame[column]`` parsed by ``parse_boolean``, (B,); an error names the rows that are
    not true/false values."""
    parsed = [parse_boolean(value) for value in frame[column]]
    bad = [row for row, value in enumerate(parsed) if value is None]
    if bad:
        raise ValueError(
            f"column {column!r} of {source!r} must hold true/false values; rows {bad[:10]} "
            f"do not (e.g. {frame[column].iloc[bad[0]]!r})"
        )
    return np.array(parsed, dtype=bool)


def read_prompts(path: str, column: str = "prompt", limit: int | None = None) -> list[str]:
    """The prompts of a JSONL, Parquet, CSV or HF dataset (first ``limit``), checked."""
    frame = read_table(DataConfig(path=path, prompt_column=column, limit=limit))
    check_text_columns(frame, [column], path)
    return frame[column].tolist()


def fingerprint_pairs(prompts: Sequence[str], responses: Sequence[str]) -> str:
    """SHA-256 of the (prompt, response) pairs, independent of the file format they came in."""
    digest = hashlib.sha256()
    for prompt, response in zip(prompts, responses, strict=True):
        for text in (prompt, response):
            encoded = text.encode("utf-8")
            digest.update(len(encoded).to_bytes(8, "little"))  # length prefix: no ambiguity
            digest.update(encoded)
    return digest.hexdigest()
