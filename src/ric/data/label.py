"""`ric label`: score (prompt, response) data with N rewards and standardize them
(docs/design.md §1.1).

Output directory layout:

    scored.parquet (or scored.jsonl)  every input column, plus reward_<name> (raw) and
                                      standardized_<name> for each objective
    stats.json                        RewardStats: mean/std per objective, reward identities,
                                      data fingerprint, data quantiles
    config.yaml                       the resolved config of the run
    .label-cache/                     finished shards of raw scores, one folder per reward

Resume: each (reward, shard) is saved atomically as soon as it is scored, in a folder keyed by the
reward's identity (type and options), the data fingerprint and the shard size (``ShardCache``).
A killed run, rerun with the same command, loads finished shards instead of rescoring them;
adding a reward later scores only the new one. After changing a scorer's code (not its options), set
``label.reuse_scores: false`` to rescore. Final files are written atomically, only after every
score is in and finite.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from ric import parallel
from ric.config import (
    DataConfig,
    RewardConfig,
    RicConfig,
    dump_config,
    load_config,
    require_setting,
)
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
from ric.data.shards import ShardCache
from ric.data.sources import fingerprint_pairs, read_pairs
from ric.rewards import DataColumn, RewardFunction, create_reward, score_split

CACHE_DIR = ".label-cache"
CONTRAST_COLUMN = "contrast"  # true on the rows label.contrast_pairs added


def raw_column(name: str) -> str:
    return f"reward_{name}"


def standardized_column(name: str) -> str:
    return f"standardized_{name}"


def add_rewards(frame: pd.DataFrame, stats: RewardStats, raw: np.ndarray) -> pd.DataFrame:
    """Set the ``reward_<name>`` columns from ``raw`` (B, N; objectives in ``stats`` order) and
    their ``standardized_<name>`` ones (in place; also returned)."""
    for name, column in zip(stats.names, np.asarray(raw).T, strict=True):
        frame[raw_column(name)] = column
    return restandardize(frame, stats)


def restandardize(frame: pd.DataFrame, stats: RewardStats) -> pd.DataFrame:
    """Set the ``standardized_<name>`` columns from the raw ``reward_<name>`` ones with ``stats``
    (in place; also returned), e.g. to express other data in a model's units."""
    raw = frame[[raw_column(name) for name in stats.names]].to_numpy()  # (B, N)
    for name, column in zip(stats.names, stats.standardize(raw).T, strict=True):
        frame[standardized_column(name)] = column
    return frame


def read_labeled_frame(directory: str | Path) -> tuple[pd.DataFrame, RewardStats, DataConfig]:
    """The scored table, the stats and the column settings of a `ric label` output. A folder
    whose scored table and stats come from different data (another run's files) is refused."""
    folder = Path(directory)
    if not folder.is_dir():
        raise ValueError(f"{str(folder)!r} is not a `ric label` output directory")
    scored = sorted(folder.glob("scored.*"))
    if not scored:
        raise ValueError(f"no scored.parquet or scored.jsonl in {str(folder)!r}")
    if not (folder / CONFIG_FILE).is_file():
        raise ValueError(f"{str(folder)!r} is not a `ric label` output: it has no {CONFIG_FILE}")
    stats = load_stats(folder / STATS_FILE)
    columns = load_config(folder / CONFIG_FILE).data
    frame = (
        pd.read_parquet(scored[0])
        if scored[0].suffix == ".parquet"
        else pd.read_json(scored[0], lines=True, dtype=False)
    )
    missing = [c for c in (columns.prompt_column, columns.response_column) if c not in frame]
    if missing:
        raise ValueError(f"{str(scored[0])!r} has no column {missing[0]!r} (see {CONFIG_FILE})")
    fingerprint = fingerprint_pairs(
        frame[columns.prompt_column].tolist(), frame[columns.response_column].tolist()
    )
    if stats.data_fingerprint and fingerprint != stats.data_fingerprint:
        raise ValueError(
            f"{str(scored[0])!r} and {STATS_FILE} in {str(folder)!r} come from different data "
            f"(fingerprints {fingerprint[:12]} and {stats.data_fingerprint[:12]}): rerun "
            "`ric label` into that folder, or point at the folder the table came from"
        )
    return frame, stats, columns


@dataclass(frozen=True)
class LabelResult:
    """What a labeling run (`ric label`, `ric image label`) wrote, and how much it scored."""

    scored_path: Path  # the table with each objective's raw and standardized columns
    stats_path: Path  # stats.json: the fitted per-objective statistics
    config_path: Path  # the resolved config of the run
    stats: RewardStats  # what stats.json holds
    shards_scored: int  # (reward, shard) units scored in this run
    shards_reused: int  # units loaded from the cache of an earlier run


def check_rewards(rewards: list[RewardConfig]) -> None:
    if not rewards:
        raise ValueError(
            "no rewards configured: add e.g. `rewards: [{type: relevance}, {type: verbosity}]` "
            "to the config or pass --reward relevance --reward verbosity"
        )
    names = [reward.resolved_name for reward in rewards]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise ValueError(f"reward names must be unique; repeated: {duplicates} (set `name`)")


def data_column(frame: pd.DataFrame, column: str, name: str, source: str) -> np.ndarray:
    """A numeric data column as reward ``name``'s raw values; a missing, non-numeric or
    non-finite column is refused, naming the rows."""
    if column not in frame.columns:
        raise ValueError(
            f"reward {name!r} reads column {column!r}, which {source!r} does not have; "
            f"columns there: {', '.join(map(str, frame.columns))}"
        )
    values = pd.to_numeric(frame[column], errors="coerce").to_numpy(dtype=float)
    bad = np.flatnonzero(~np.isfinite(values))
    if bad.size:
        raise ValueError(
            f"reward {name!r}: column {column!r} must hold finite numbers; rows "
            f"{bad[:10].tolist()} do not (e.g. {frame[column].iloc[bad[0]]!r})"
        )
    return values


def _score_shard(
    scorer: RewardFunction, name: str, prompts: list[str], responses: list[str], start: int
) -> np.ndarray:
    """Score one shard; non-finite scores raise, naming the reward and the rows.

    (Shape and dtype are already checked by every scorer, see ric.rewards.base.score_checked.)
    """
    scores = score_split(scorer, prompts, responses)
    bad = np.nonzero(~np.isfinite(scores))[0]
    if bad.size:
        rows = (bad + start).tolist()
        raise ValueError(
            f"reward {name!r} gave non-finite scores (NaN or inf) at rows {rows[:10]}"
            + (f" and {len(rows) - 10} more" if len(rows) > 10 else "")
            + "; no output was written"
        )
    return scores


def with_contrast_pairs(
    frame: pd.DataFrame, columns: DataConfig, per_row: float, seed: int = 0
) -> pd.DataFrame:
    """``frame``, then ``per_row`` rows per row (on average: 0.25 adds one to a quarter of the
    rows, drawn with ``seed``) that pair its prompt with the response of a row whose prompt
    differs (drawn with ``seed``), marked true in ``CONTRAST_COLUMN``. Other columns come from
    the response's row. Why: in data where every response answers its own prompt, a
    prompt-dependent reward such as relevance moves with length alone; an off-topic answer at
    each length shows a model what a low value of it looks like, the others held."""
    if CONTRAST_COLUMN in frame.columns:
        raise ValueError(
            f"the data already has a column {CONTRAST_COLUMN!r}, which label.contrast_pairs "
            "writes: rename it"
        )
    marked = frame.assign(**{CONTRAST_COLUMN: False})
    prompts = frame[columns.prompt_column].to_numpy()
    if len(set(prompts)) < 2:
        raise ValueError("label.contrast_pairs needs at least 2 distinct prompts in the data")
    rng = np.random.default_rng(seed)
    whole, fraction = divmod(per_row, 1.0)
    shares = [1.0] * int(whole) + ([fraction] if fraction else [])
    added = []
    for share in shares:
        count = round(share * len(frame))
        every = share == 1.0
        rows = np.arange(count) if every else np.sort(rng.choice(len(frame), count, replace=False))
        donors = rng.integers(0, len(frame), size=count)
        while (same := prompts[donors] == prompts[rows]).any():  # redraw its own responses
            donors[same] = rng.integers(0, len(frame), size=int(same.sum()))
        contrast = marked.iloc[donors].reset_index(drop=True)
        contrast[columns.prompt_column] = prompts[rows]
        added.append(contrast.assign(**{CONTRAST_COLUMN: True}))
    return pd.concat([marked, *added], ignore_index=True)


def label_dataset(config: RicConfig, show_progress: bool = True) -> LabelResult:
    """Score ``config.data`` with ``config.rewards`` and write the labeled data to
    ``config.label.output`` (layout and resume rule in the module docstring)."""
    require_setting("label.output", config.label.output, "output directory")
    check_rewards(config.rewards)
    frame = read_pairs(config.data)  # validates columns and rows before anything is written
    if config.label.contrast_pairs:
        frame = with_contrast_pairs(frame, config.data, config.label.contrast_pairs)
    prompts = frame[config.data.prompt_column].tolist()
    responses = frame[config.data.response_column].tolist()
    fingerprint = fingerprint_pairs(prompts, responses)
    names = [reward.resolved_name for reward in config.rewards]
    clashes = sorted({raw_column(n) for n in names} | {standardized_column(n) for n in names})
    clashes = [column for column in clashes if column in frame.columns]
    if clashes:
        raise ValueError(f"input already has columns {clashes}; rename them or the rewards")
    scorers = [create_reward(reward.type, reward.options) for reward in config.rewards]
    columns_read = [
        reward.resolved_name
        for reward, scorer in zip(config.rewards, scorers, strict=True)
        if isinstance(scorer, DataColumn)
    ]
    if config.label.contrast_pairs and columns_read:
        raise ValueError(
            "label.contrast_pairs pairs prompts with other prompts' responses, whose rewards a "
            f"data column cannot hold: reward {columns_read[0]!r} reads one; set "
            "label.contrast_pairs: 0, or score it with a model"
        )

    output = Path(config.label.output)
    shard_size = config.label.shard_size
    starts = range(0, len(frame), shard_size)
    raw = np.empty((len(frame), len(config.rewards)))  # (B, N) raw units
    scored = reused = 0
    progress = tqdm(
        total=len(frame) * len(scorers), desc="label", unit="score", disable=not show_progress
    )
    for column, (reward, scorer) in enumerate(zip(config.rewards, scorers, strict=True)):
        name = reward.resolved_name
        if isinstance(scorer, DataColumn):  # the data carries this reward: nothing to score
            raw[:, column] = data_column(frame, scorer.column, name, config.data.path)
            progress.update(len(frame))
            continue
        cache = ShardCache.under(
            output / CACHE_DIR,
            name,
            {"reward": reward_identity(reward), "data": fingerprint, "shard_size": shard_size},
        )
        progress.set_postfix_str(name)
        for shard, start in enumerate(starts):
            stop = min(start + shard_size, len(frame))

            def score(
                start: int = start, stop: int = stop, scorer: RewardFunction = scorer, name=name
            ) -> pd.DataFrame:
                texts = prompts[start:stop], responses[start:stop]
                return pd.DataFrame({"score": _score_shard(scorer, name, *texts, start)})

            scores, was_reused = cache.compute(shard, score, config.label.reuse_scores)
            raw[start:stop, column] = scores["score"].to_numpy()
            reused += was_reused
            scored += not was_reused
            progress.update(stop - start)
    progress.close()

    stats = RewardStats.fit(
        raw, names, [reward_identity(r) for r in config.rewards], data_fingerprint=fingerprint
    )
    standardized = stats.standardize(raw)
    result = frame.copy()
    for column, name in enumerate(names):
        result[raw_column(name)] = raw[:, column]
        result[standardized_column(name)] = standardized[:, column]
    scored_path = output / f"scored.{config.label.output_format}"

    def write_labeled() -> None:
        write_atomic(scored_path, lambda tmp: _write_frame(result, tmp, config.label.output_format))
        save_stats(stats, output / STATS_FILE)
        write_text_atomic(output / CONFIG_FILE, dump_config(config))

    parallel.on_main(write_labeled)
    return LabelResult(
        scored_path=scored_path,
        stats_path=output / STATS_FILE,
        config_path=output / CONFIG_FILE,
        stats=stats,
        shards_scored=scored,
        shards_reused=reused,
    )


def _write_frame(frame: pd.DataFrame, path: Path, output_format: str) -> None:
    if output_format == "parquet":
        frame.to_parquet(path, index=False)
    else:
        frame.to_json(path, orient="records", lines=True, force_ascii=False)
