"""Atomic file writes, so a killed process never leaves half a file, and what every output
folder shares: the name of its config file, its stats file and the scorers the stats record."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

from ric.config import RewardConfig
from ric.core import RewardStats

CONFIG_FILE = "config.yaml"  # the resolved config every output folder records
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


def reward_identity(reward: RewardConfig) -> str:
    """What makes two scorers the same: the type and the options (not the display name)."""
    return f"{reward.type} {json.dumps(reward.options, sort_keys=True, default=str)}"


def reward_from_identity(name: str, identity: str) -> RewardConfig:
    """Invert ``reward_identity``: the scorer a stats file was computed with."""
    kind, _, options = identity.partition(" ")
    return RewardConfig(type=kind, name=name, options=json.loads(options or "{}"))


def stats_rewards(stats: RewardStats) -> list[RewardConfig]:
    """The scorers ``stats`` were computed with, in objective order."""
    return [
        reward_from_identity(name, identity)
        for name, identity in zip(stats.names, stats.reward_ids, strict=True)
    ]
