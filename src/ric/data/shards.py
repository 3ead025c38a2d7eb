"""Resumable work in shards, keyed by everything that produced them.

Labeling, bootstrapping and the online stage do long work one shard at a time and save each
shard atomically (it exists completely or not at all), so a killed run, rerun, redoes at most
the shard it was in. A shard is only reused by work with the same inputs: the shards of one
piece of work live in a folder named by a hash of its settings (data fingerprint, scorer,
shard size, seeds, model, generation settings: whatever the caller passes), so a rerun with
other settings writes a new folder instead of reading rows that are no longer its own.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from ric import parallel
from ric.data.io import write_atomic


def settings_key(settings: Any) -> str:
    """A short stable hash of JSON-able ``settings`` (dict key order does not matter)."""
    text = json.dumps(settings, sort_keys=True, default=str, ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class ShardCache:
    """The saved shards of one piece of work: ``root/<name>-<hash of settings>/shard-K.parquet``."""

    folder: Path

    @classmethod
    def under(cls, root: Path, name: str, settings: Any) -> ShardCache:
        return cls(root / f"{name}-{settings_key(settings)}")

    def path(self, index: int) -> Path:
        return self.folder / f"shard-{index:05d}.parquet"

    def compute(
        self, index: int, make: Callable[[], pd.DataFrame], reuse: bool = True
    ) -> tuple[pd.DataFrame, bool]:
        """Shard ``index``: read back when saved (and ``reuse``), else made and saved
        atomically. Returns it and whether it was reused. In a multi-process run every process
        calls it (``make`` may split its work between them); the main process saves."""
        path = self.path(index)
        saved = reuse and path.is_file()
        parallel.wait_for_everyone()  # all processes look before the main one may write it
        if saved:
            return pd.read_parquet(path), True
        frame = make()
        parallel.on_main(lambda: write_atomic(path, lambda tmp: frame.to_parquet(tmp, index=False)))
        return frame, False
