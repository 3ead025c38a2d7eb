"""Rewarded Soups (docs/design.md §1.6): one RL model per reward, interpolated per preference.

The members are `ric baseline morlhf` runs at the one-hot preferences; the soup's folder names
them (``method.json``) and ``ric.models.interpolation.soup_model`` mixes their weights per
preference when the soup is evaluated or asked (``ric.steering.Steering.model_for``; the
interpolation's math is documented in ``ric.models.interpolation``).
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ric import parallel
from ric.config import RicConfig
from ric.data.io import CONFIG_FILE, STATS_FILE, load_stats
from ric.runs import read_method, write_method


def assemble_soup(output: Path, members: Sequence[str | Path]) -> Path:
    """Write a Rewarded Soups folder over finished RL runs, one per objective at its one-hot
    preference (``ric evaluate`` sweeps it: one soup per preference of the grid)."""
    runs = [Path(member) for member in members]
    methods = [read_method(run) for run in runs]
    for run, method in zip(runs, methods, strict=True):
        if method.name != "morlhf" or method.preference is None:
            raise ValueError(f"{str(run)!r} is not a finished `ric baseline morlhf` run")
    stats = load_stats(runs[0] / STATS_FILE)
    order = []
    for run, method in zip(runs, methods, strict=True):
        weights = np.asarray(method.preference)
        one_hot = sorted(weights.tolist()) == [0.0] * (len(runs) - 1) + [1.0]
        if len(weights) != len(runs) or not one_hot:
            raise ValueError(
                f"{str(run)!r} was trained for {method.preference}: a soup needs one run per "
                f"objective of {list(stats.names)}, each at a one-hot preference"
            )
        order.append(int(weights.argmax()))
    if sorted(order) != list(range(len(runs))):
        raise ValueError(f"two members were trained for the same objective: {order}")
    inits = {
        (run / method.init).resolve() if method.init else None
        for run, method in zip(runs, methods, strict=True)
    }
    if len(inits) != 1:
        raise ValueError(f"the members start from different models: {sorted(map(str, inits))}")
    ordered = [runs[order.index(i)] for i in range(len(runs))]
    start = inits.pop()

    def write_folder() -> None:
        output.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(runs[0] / STATS_FILE, output / STATS_FILE)
        shutil.copyfile(runs[0] / CONFIG_FILE, output / CONFIG_FILE)
        write_method(output, "soups", init=start, members=ordered)

    parallel.on_main(write_folder)
    return output


def train_soup(config: RicConfig, output: Path, show_progress: bool = True) -> Path:
    """One RL run per objective (its one-hot preference) under ``output/members/``, then the
    soup's folder at ``output`` (resumable: finished members are kept)."""
    from ric.baselines.rl import preference_folder, run_rl

    num_objectives = len(
        load_stats(Path(config.baseline.data or config.train.data) / STATS_FILE).names
    )
    members = [
        run_rl(config, w, output / "members" / preference_folder(w), show_progress).output
        for w in np.eye(num_objectives).tolist()
    ]
    return assemble_soup(output, members)
