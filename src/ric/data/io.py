"""Atomic file writes, so a killed process never leaves half a file (or half a folder), and
what every output folder shares: the name of its config file, its stats file and the scorers the
stats record."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
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


def check_free_folder(target: Path) -> None:
    """Refuse an output folder that already holds something: what it holds would be mixed with,
    or lost under, what a command writes there."""
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise ValueError(f"{str(target)!r} exists and is not empty: choose another --output")


@contextmanager
def staged_folder(target: Path) -> Iterator[Path]:
    """A temporary folder beside ``target`` to write into; renamed to ``target`` when the block
    ends, removed when it raises, so ``target`` appears whole or not at all (an interrupted
    export never passes for a finished one). ``target`` must be absent or empty."""
    check_free_folder(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}."))
    try:
        yield staging
        _open_to_umask(staging)
        if target.exists():
            target.rmdir()  # empty (checked above)
        staging.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _open_to_umask(folder: Path) -> None:
    """Give ``folder`` and what it holds the modes a plain mkdir and open would: temporary
    folders and files are private (0700, 0600), and a folder meant for others (a model to
    serve from another account or container) must not stay so."""
    umask = os.umask(0)
    os.umask(umask)
    folder.chmod(0o777 & ~umask)
    for path in folder.rglob("*"):
        path.chmod((0o777 if path.is_dir() else 0o666) & ~umask)


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
