"""Atomic file writes and the stats file, so a killed process never leaves half a file."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

from ric.core import RewardStats

STATS_FILE = "stats.json"


def write_atomic(path: Path, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp)`` on a temporary file beside ``path``, then rename it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(handle)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        os.replace(tmp, path)
    except OSError as error:  # name the file the user knows, not the temporary one
        raise OSError(error.errno, f"{error.strerror}; could not write {str(path)!r}") from error
    finally:
        tmp.unlink(missing_ok=True)


def write_text_atomic(path: Path, text: str) -> None:
    write_atomic(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def save_stats(stats: RewardStats, path: str | Path) -> None:
    write_text_atomic(Path(path), stats.to_json())


def load_stats(path: str | Path) -> RewardStats:
    """Read a stats file; a directory means the stats.json written by `ric label` inside it."""
    file = Path(path)
    if file.is_dir():
        file = file / STATS_FILE
    if not file.is_file():
        raise ValueError(f"stats file {str(file)!r} does not exist (run `ric label` first)")
    try:
        return RewardStats.from_json(file.read_text(encoding="utf-8"))
    except (ValueError, TypeError) as error:
        raise ValueError(f"stats file {str(file)!r} is not valid: {error}") from error
