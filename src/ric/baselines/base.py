"""The base-model baseline: ``model.source`` untrained, asked without rewards."""

from __future__ import annotations

import shutil
from pathlib import Path

from ric import parallel
from ric.config import RicConfig, dump_config
from ric.data.io import CONFIG_FILE, STATS_FILE, write_text_atomic
from ric.runs import write_method


def write_base(config: RicConfig, output: Path) -> Path:
    """A model folder for the untrained ``model.source`` (no weights of its own): the config,
    the label run's stats (``train.data``) and ``method.json``; ``ric evaluate`` loads it."""
    if not config.train.data:
        raise ValueError("no stats: set train.data to the `ric label` output to evaluate with")

    def write_folder() -> None:
        output.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(Path(config.train.data) / STATS_FILE, output / STATS_FILE)
        write_text_atomic(output / CONFIG_FILE, dump_config(config))
        write_method(output, "base")

    parallel.on_main(write_folder)
    return output
