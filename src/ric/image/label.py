"""`ric image label`: score (image, caption) rows with N image rewards and standardize them.

The text labeler's rules, for images: the same stats file (``RewardStats``, with each reward's
identity and a fingerprint of the data), the same shard cache for resume (a killed run, rerun,
loads the shards it finished), final files written atomically once every score is in and finite.
Output directory:

    scored.parquet   one row per image: row (its index in the data), image (where it comes
                     from), caption, reward_<name> (raw) and standardized_<name>
    stats.json       mean/std per objective, reward identities, data fingerprint, quantiles
    config.yaml      the resolved config; `ric image train` reads the data section from it
    .label-cache/    finished shards of raw scores, one folder per reward

The fingerprint hashes each row's caption and where its image comes from (path or dataset row),
not the pixels: after editing images in place, set ``label.reuse_scores: false``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from ric.config import dump_config, load_config, require_setting
from ric.core import RewardStats
from ric.data.io import (
    CONFIG_FILE,
    STATS_FILE,
    load_stats,
    reward_identity,
    save_stats,
    write_atomic,
    write_text_atomic,
)
from ric.data.label import (
    CACHE_DIR,
    LabelResult,
    check_rewards,
    raw_column,
    standardized_column,
)
from ric.data.shards import ShardCache
from ric.data.sources import fingerprint_pairs
from ric.image.config import ImageRicConfig
from ric.image.data import ImageRows, read_image_rows
from ric.image.rewards import ImageRewardFunction, create_image_reward

SCORED_FILE = "scored.parquet"


@dataclass(frozen=True)
class ImageLabels:
    """A `ric image label` output, read back."""

    frame: pd.DataFrame  # the scored table
    stats: RewardStats
    config: ImageRicConfig  # the labeling run's config (its data section says where images are)

    @property
    def captions(self) -> list[str]:
        return self.frame["caption"].tolist()

    def standardized(self) -> np.ndarray:
        """(B, N) standardized rewards, in objective order."""
        return self.frame[[standardized_column(n) for n in self.stats.names]].to_numpy(float)


def score_shard(
    scorer: ImageRewardFunction, captions: list[str], images: list, start: int
) -> np.ndarray:
    """One shard's scores (every scorer checks its output: one finite value per image); an
    error names the shard's rows, and nothing is written."""
    try:
        return scorer.score(captions, images)
    except ValueError as error:
        last = start + len(images) - 1
        raise ValueError(f"{error} (rows {start}-{last}); no output was written") from error


def label_images(config: ImageRicConfig, show_progress: bool = True) -> LabelResult:
    """Score ``config.data`` with ``config.rewards`` into ``config.label.output``; return what
    was written and how many shard scores were computed or reused."""
    require_setting("label.output", config.label.output, "output directory")
    check_rewards(config.rewards)
    rows = read_image_rows(config.data)  # validates paths and columns before any work
    scorers = [create_image_reward(reward.type, reward.options) for reward in config.rewards]
    sources = [rows.describe(index) for index in range(len(rows))]
    fingerprint = fingerprint_pairs(rows.captions, sources)
    output = Path(config.label.output)
    shard_size = config.label.shard_size
    raw = np.empty((len(rows), len(scorers)))
    scored = reused = 0
    progress = tqdm(
        total=len(rows) * len(scorers), desc="label", unit="image", disable=not show_progress
    )
    for column, (reward, scorer) in enumerate(zip(config.rewards, scorers, strict=True)):
        name = reward.resolved_name
        progress.set_postfix_str(name)
        cache = ShardCache.under(
            output / CACHE_DIR,
            name,
            {"reward": reward_identity(reward), "data": fingerprint, "shard_size": shard_size},
        )
        for shard, start in enumerate(range(0, len(rows), shard_size)):
            stop = min(start + shard_size, len(rows))

            def score(start: int = start, stop: int = stop, scorer=scorer) -> pd.DataFrame:
                images = [rows.image(index) for index in range(start, stop)]
                scores = score_shard(scorer, rows.captions[start:stop], images, start)
                return pd.DataFrame({"score": scores})

            scores, was_reused = cache.compute(shard, score, config.label.reuse_scores)
            raw[start:stop, column] = scores["score"].to_numpy()
            reused += was_reused
            scored += not was_reused
            progress.update(stop - start)
    progress.close()

    names = [reward.resolved_name for reward in config.rewards]
    stats = RewardStats.fit(
        raw, names, [reward_identity(r) for r in config.rewards], data_fingerprint=fingerprint
    )
    frame = pd.DataFrame({"row": np.arange(len(rows)), "image": sources, "caption": rows.captions})
    for column, (name, standardized) in enumerate(
        zip(names, stats.standardize(raw).T, strict=True)
    ):
        frame[raw_column(name)] = raw[:, column]
        frame[standardized_column(name)] = standardized
    write_atomic(output / SCORED_FILE, lambda tmp: frame.to_parquet(tmp, index=False))
    save_stats(stats, output / STATS_FILE)
    write_text_atomic(output / CONFIG_FILE, dump_config(config))
    return LabelResult(
        scored_path=output / SCORED_FILE,
        stats_path=output / STATS_FILE,
        config_path=output / CONFIG_FILE,
        stats=stats,
        shards_scored=scored,
        shards_reused=reused,
    )


def read_image_labels(directory: str | Path) -> ImageLabels:
    """A `ric image label` output; a folder whose table and stats disagree is refused."""
    folder = Path(directory)
    missing = [
        name for name in (SCORED_FILE, STATS_FILE, CONFIG_FILE) if not (folder / name).is_file()
    ]
    if missing:
        raise ValueError(
            f"{str(folder)!r} is not a `ric image label` output: it has no {missing[0]}"
        )
    frame = pd.read_parquet(folder / SCORED_FILE)
    if not {"row", "image", "caption"} <= set(frame.columns):
        raise ValueError(
            f"{str(folder)!r} is not a `ric image label` output: its {SCORED_FILE} has no "
            "row, image and caption columns (a text `ric label` output?)"
        )
    stats = load_stats(folder / STATS_FILE)
    fingerprint = fingerprint_pairs(frame["caption"].tolist(), frame["image"].tolist())
    if stats.data_fingerprint and fingerprint != stats.data_fingerprint:
        raise ValueError(
            f"{SCORED_FILE} and {STATS_FILE} in {str(folder)!r} come from different data: "
            "rerun `ric image label` into that folder"
        )
    config = load_config(folder / CONFIG_FILE, cls=ImageRicConfig)
    return ImageLabels(frame=frame, stats=stats, config=config)


def labeled_rows(labels: ImageLabels) -> ImageRows:
    """The labeled images, read again from where the labeling run read them."""
    rows = read_image_rows(labels.config.data)
    if len(rows) != len(labels.frame) or rows.captions != labels.captions:
        raise ValueError(
            f"the data at {labels.config.data.path!r} changed since it was labeled "
            f"({len(rows)} rows now, {len(labels.frame)} labeled): label it again"
        )
    return rows
