"""`ric online`: the online stage (docs/design.md §1.3), iterated and crash-safe.

Each iteration k continues the policy of iteration k - 1 (iteration 0 is the offline run):

1. **plan**: sample ``online.samples`` prompts and give each target rewards near the front
   (``online.targets``; the paper's rule by default), with r_min/r_max from the same mapping
   settings evaluation uses;
2. **generate and score** in shards of ``online.shard_size``: each shard is generated with the
   targets in its prompts, scored by the reward models the stats were computed with, and saved
   atomically, so a shard exists completely or not at all;
3. **relabel and select**: the online buffer (every shard of iterations 1..k) is standardized with
   the offline stats and relabeled with the rewards it *obtained*; responses cut by
   ``generation.max_new_tokens`` (not ``finished``) are left out; MORS drops samples at or below
   the ``mors_quantile`` threshold in every objective;
4. **mix** MORS-filtered original samples (``original_fraction`` per kept online sample);
5. **fine-tune** the same adapter (or full model) on the kept samples with
   ``online.learning_rate`` / ``lr_schedule`` for ``online.max_steps``, with the SFT loop's
   resumable checkpoints.

Output, one folder per iteration (each is a `ric train`-style output that `ric generate` and
`ric evaluate` load):

    iter-01/plan-<key>/       prompts and targets of this iteration (fixed before generating)
    iter-01/parts-<key>/      generated and scored shards (the unit of resume)
    iter-01/buffer.parquet    the buffer so far: targets, obtained rewards, finished and kept
                              flags, iteration
    iter-01/thresholds.json   MORS thresholds (online buffer and original data)
    iter-01/adapter/, layers/ or model/, stats.json, config.yaml, train_log.jsonl, checkpoints/
    iter-01/metrics.json      written last: its presence marks the iteration finished

Crash safety: a rerun of the same command skips finished iterations, reuses the plan and every
saved shard (no sample is generated twice, none is lost), and resumes fine-tuning from the newest
checkpoint. Plan and shards are kept in folders keyed by a hash of what produced them (prompts,
``online.*`` sampling settings, mapping, stats, shard size, generation settings, the model
continued; ``ric.data.shards``), so a rerun with other settings never reads rows that another
setting made; a finished iteration made with other settings is refused, naming them. Prompt
sampling, targets, generation seeds and the original-sample draw are all functions of
(online.seed, iteration, shard), so a resumed run makes what an uninterrupted one would.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from ric import parallel
from ric.config import (
    GenerationConfig,
    OnlineConfig,
    RicConfig,
    dump_config,
    load_config,
    require_setting,
)
from ric.core import RewardStats, draw_targets, mors_mask, quantile_thresholds
from ric.data.io import CONFIG_FILE, STATS_FILE, load_stats, write_atomic, write_text_atomic
from ric.data.label import raw_column, read_labeled_frame, restandardize, standardized_column
from ric.data.shards import ShardCache
from ric.data.sources import read_prompts
from ric.models.samples import tokenize_sample
from ric.rewards import create_reward, score_split
from ric.runs import (
    METRICS_FILE,
    TrainedPolicy,
    finished_run,
    load_trained,
    run_folder,
    save_weights,
    settings_of,
)
from ric.runtime import describe_device
from ric.steering import Steering
from ric.training.sft import train

BUFFER_FILE = "buffer.parquet"
# What determines an iteration's result (a finished one is reused only by these settings).
ITERATION_MADE_BY = ("online", "generation", "mapping", "train.max_length")
THRESHOLDS_FILE = "thresholds.json"
# Per generated row: its shard's generation and scoring seconds over the shard's rows.
SECONDS_COLUMN = "shard_seconds_per_row"


def iteration_folder(output: Path, iteration: int) -> Path:
    return output / f"iter-{iteration:02d}"


def target_column(name: str) -> str:
    return f"target_{name}"


def plan_iteration(
    prompts: list[str], settings: OnlineConfig, steering: Steering, iteration: int
) -> pd.DataFrame:
    """Prompts (sampled with replacement) and their targets (standardized units), drawn over
    the steering's range: the one evaluation and serving map preferences over."""
    rng = np.random.default_rng([settings.seed, iteration])
    chosen = rng.integers(0, len(prompts), size=settings.samples)
    targets = draw_targets(settings.targets, rng, settings.samples, steering.r_min, steering.r_max)
    plan = pd.DataFrame({"prompt": [prompts[i] for i in chosen]})
    for i, name in enumerate(steering.names):
        plan[target_column(name)] = targets[:, i]
    return plan


def select(
    standardized: np.ndarray, mors: bool, quantile: float
) -> tuple[np.ndarray, np.ndarray | None]:
    """MORS keep mask (B,) and thresholds (N,) of standardized rewards (B, N); all kept when
    ``mors`` is off (thresholds None)."""
    if not mors:
        return np.ones(len(standardized), dtype=bool), None
    thresholds = quantile_thresholds(standardized, quantile)
    return mors_mask(standardized, thresholds), thresholds


@dataclass(frozen=True)
class OnlineResult:
    """The online stage's output, as its callers compare the iterations."""

    output: Path  # online.output, holding one folder per iteration
    iterations: tuple[Path, ...]  # every iteration's finished run, iteration 1 first


def run_online(config: RicConfig, show_progress: bool = True) -> OnlineResult:
    """Run (or resume) every online iteration; return the output directory and its iterations."""
    settings = config.online
    require_setting("online.model", settings.model, "model", hint=" to a `ric train` output")
    require_setting("online.output", settings.output, "output directory")
    offline = run_folder(settings.model)
    if not (offline / CONFIG_FILE).is_file():
        raise ValueError(f"{str(offline)!r} is not a `ric train` output (no {CONFIG_FILE})")
    offline_config = load_config(offline / CONFIG_FILE)
    stats = load_stats(offline / STATS_FILE)
    settings = replace(settings, data=settings.data or offline_config.train.data)
    if not settings.data:  # a shared run (ric export-lora --portable) records no data path
        raise ValueError(
            f"{settings.model!r} records no training data: set online.data to a `ric label` "
            f"output with its objectives ({', '.join(stats.names)})"
        )
    config = replace(config, online=settings)
    original, original_stats, columns = read_labeled_frame(settings.data)
    if original_stats.names != stats.names:
        raise ValueError(
            f"the original data's objectives {list(original_stats.names)} differ from the "
            f"model's {list(stats.names)}"
        )
    original = original.rename(
        columns={columns.prompt_column: "prompt", columns.response_column: "response"}
    )
    restandardize(original, stats)  # in the model's units, whatever the data's
    prompts = (
        read_prompts(settings.prompts, settings.prompt_column)
        if settings.prompts
        else list(dict.fromkeys(original["prompt"]))
    )
    output = Path(settings.output)
    requested = settings_of(config, ITERATION_MADE_BY)
    requested.pop("online.iterations")  # adding iterations later keeps the finished ones
    previous = offline
    for iteration in range(1, settings.iterations + 1):
        folder = iteration_folder(output, iteration)
        if not finished_run(folder, requested, f"online iteration {iteration}"):
            _run_iteration(
                config,
                offline_config,
                stats,
                original,
                prompts,
                previous,
                folder,
                iteration,
                show_progress,
            )
        previous = folder
    iterations = range(1, settings.iterations + 1)
    return OnlineResult(output, tuple(iteration_folder(output, k) for k in iterations))


def _run_iteration(
    config: RicConfig,
    offline_config: RicConfig,
    stats: RewardStats,
    original: pd.DataFrame,
    prompts: list[str],
    previous: Path,
    folder: Path,
    iteration: int,
    show_progress: bool,
) -> None:
    settings = config.online
    seconds: dict[str, float] = {}
    plan_settings = {
        "prompts": prompts,
        "online": {k: getattr(settings, k) for k in ("samples", "seed", "targets")},
        "mapping": asdict(config.mapping),
        "stats": stats.to_json(),
        "iteration": iteration,
    }
    policy = load_trained(
        previous, trainable=True, dtype=config.model.dtype, device=config.model.device
    )
    steering = Steering.for_run(policy, config.mapping)
    plan, _ = ShardCache.under(folder, "plan", plan_settings).compute(
        0, lambda: plan_iteration(prompts, settings, steering, iteration)
    )
    shards = ShardCache.under(
        folder,
        "parts",
        {
            "plan": plan_settings,
            "shard_size": settings.shard_size,
            "generation": asdict(config.generation),
            "model": str(previous.resolve()),
            "dtype": config.model.dtype,
        },
    )
    generated = generate_and_score(
        policy,
        steering,
        plan,
        config.generation,
        shards,
        settings.shard_size,
        config.generation.seed + 1_000 * iteration,
        f"online {iteration}",
        show_progress,
    )
    generated["iteration"] = iteration
    # Each shard recorded its own time: a run killed and resumed counts every process's work.
    # (Shards saved before this column existed count 0.)
    shard_seconds = generated.get(SECONDS_COLUMN, pd.Series(0.0, index=generated.index))
    seconds["generate_and_score"] = float(shard_seconds.fillna(0.0).sum())
    generated = generated.drop(columns=SECONDS_COLUMN, errors="ignore")  # bookkeeping, not data

    began = time.perf_counter()
    buffer = _buffer(generated, previous, iteration, stats)
    names = list(stats.names)
    obtained = buffer[[standardized_column(n) for n in names]].to_numpy()  # (B, N)
    # A response cut by the generation budget is no answer's end, and its length-type rewards
    # measure the budget: it neither sets the MORS thresholds nor is trained on.
    finished = buffer["finished"].to_numpy(dtype=bool)
    if not finished.any():
        raise ValueError(
            f"none of the {len(buffer)} online responses ended within generation.max_new_tokens="
            f"{config.generation.max_new_tokens}: raise it (or set generation.stop_strings)"
        )
    buffer["kept"] = False
    kept_finished, online_thresholds = select(
        obtained[finished], settings.mors, settings.mors_quantile
    )
    buffer.loc[finished, "kept"] = kept_finished
    mixed = _mix_original(original, names, settings, int(buffer["kept"].sum()), iteration)
    thresholds = {
        "mors": settings.mors,
        "quantile": settings.mors_quantile,
        "objectives": names,
        "online": _as_list(online_thresholds),
        "original": _as_list(mixed.thresholds),
    }

    def write_selection() -> None:
        write_atomic(folder / BUFFER_FILE, lambda tmp: buffer.to_parquet(tmp))
        write_text_atomic(folder / THRESHOLDS_FILE, json.dumps(thresholds, indent=1))

    parallel.on_main(write_selection)
    kept = buffer[buffer["kept"]]
    train_rows = pd.concat([kept[["prompt", "response"]], mixed.rows[["prompt", "response"]]])
    train_values = np.concatenate(
        [
            kept[[standardized_column(n) for n in names]].to_numpy(),
            mixed.rows[[standardized_column(n) for n in names]].to_numpy(),
        ]
    )  # (B, N) obtained rewards: hindsight relabeling
    conditioned = steering.prompts(train_rows["prompt"].tolist(), train_values)
    train_settings = replace(
        config.train,
        max_steps=settings.max_steps,
        learning_rate=settings.learning_rate,
        lr_schedule=settings.lr_schedule,
        warmup_steps=0,
        data=settings.data,
        output=str(folder),
    )
    samples = [
        sample
        for prompt, response in zip(conditioned, train_rows["response"], strict=True)
        if (
            sample := tokenize_sample(policy.tokenizer, prompt, response, train_settings.max_length)
        )
    ]
    seconds["select"] = time.perf_counter() - began

    began = time.perf_counter()
    result = train(
        policy.model,
        samples,
        train_settings,
        folder,
        policy.tokenizer.pad_token_id,
        resume=True,
        show_progress=show_progress,
    )
    seconds["train"] = time.perf_counter() - began
    record = replace(offline_config, online=settings, train=train_settings)
    record = replace(record, generation=config.generation, mapping=config.mapping)
    this_iteration = buffer[buffer["iteration"] == iteration]
    metrics = {
        "iteration": iteration,
        "continued_from": str(previous),
        "generated": len(this_iteration),
        "unfinished": int((~this_iteration["finished"]).sum()),
        "buffer": len(buffer),
        "kept_online": int(buffer["kept"].sum()),
        "original_mixed": len(mixed.rows),
        "training_samples": len(samples),
        "mean_target": {n: float(this_iteration[target_column(n)].mean()) for n in names},
        "mean_obtained": {n: float(this_iteration[standardized_column(n)].mean()) for n in names},
        "mean_obtained_raw": {n: float(this_iteration[raw_column(n)].mean()) for n in names},
        "losses": [{"step": step, "loss": loss} for step, loss in result.losses],
        "steps": result.steps,
        "resumed_from_step": result.resumed_from,
        "seconds": seconds,
        "frozen_cache": result.frozen_cache,
        "device": describe_device(),
        "processes": parallel.num_processes(),
    }

    def write_iteration() -> None:
        _save_policy(policy, previous, folder)
        write_text_atomic(folder / CONFIG_FILE, dump_config(record))
        write_text_atomic(folder / METRICS_FILE, json.dumps(metrics, indent=1))

    parallel.on_main(write_iteration)


def generate_and_score(
    policy: TrainedPolicy,
    steering: Steering,
    plan: pd.DataFrame,
    generation: GenerationConfig,
    shards: ShardCache,
    shard_size: int,
    seed: int,
    description: str,
    show_progress: bool,
) -> pd.DataFrame:
    """Every shard of ``plan`` (a prompt and its desired rewards, ``target_column``, per row)
    generated and scored with the model's rewards (saved shards read back), in plan order;
    shard K samples with seed ``seed + K``. Each row holds its shard's wall-clock seconds shared
    among the shard's rows (``SECONDS_COLUMN``), so their sum is the work's time however often
    it resumed. `ric online` and `ric calibrate` generate this way."""
    from ric.models.generation import generate_with_stats

    names = list(policy.stats.names)
    scorers = [create_reward(r.type, r.options) for r in policy.reward_configs()]
    progress = tqdm(total=len(plan), desc=description, disable=not show_progress)
    frames = []
    for index, start in enumerate(range(0, len(plan), shard_size)):
        shard = plan.iloc[start : start + shard_size].reset_index(drop=True)

        def generate_and_score(shard: pd.DataFrame = shard, index: int = index) -> pd.DataFrame:
            began = time.perf_counter()
            targets = shard[[target_column(n) for n in names]].to_numpy()
            conditioned = steering.prompts(shard["prompt"].tolist(), targets)
            settings = replace(generation, seed=seed + index)
            result = generate_with_stats(policy.model, policy.tokenizer, conditioned, settings)
            shard["response"], shard["finished"] = result.texts, result.finished
            prompts, responses = shard["prompt"].tolist(), shard["response"].tolist()
            for name, scorer in zip(names, scorers, strict=True):
                shard[raw_column(name)] = score_split(scorer, prompts, responses)
            shard[SECONDS_COLUMN] = (time.perf_counter() - began) / len(shard)
            return shard

        frames.append(shards.compute(index, generate_and_score)[0])
        progress.update(len(shard))
    progress.close()
    return pd.concat(frames, ignore_index=True)


def _buffer(
    generated: pd.DataFrame, previous: Path, iteration: int, stats: RewardStats
) -> pd.DataFrame:
    """The online buffer of iterations 1..``iteration``: the previous iteration's buffer, then
    this one's samples, standardized with the offline stats."""
    frames = [generated]
    if iteration > 1:
        frames.insert(0, pd.read_parquet(previous / BUFFER_FILE).drop(columns="kept"))
    return restandardize(pd.concat(frames, ignore_index=True), stats)


@dataclass(frozen=True)
class MixedOriginal:
    rows: pd.DataFrame  # the original samples mixed in
    thresholds: np.ndarray | None  # (N,) MORS thresholds on the original data; None: MORS off


def _mix_original(
    original: pd.DataFrame,
    names: list[str],
    settings: OnlineConfig,
    kept_online: int,
    iteration: int,
) -> MixedOriginal:
    """MORS-filtered original samples, ``original_fraction`` per kept online sample (seeded)."""
    values = original[[standardized_column(n) for n in names]].to_numpy()
    keep, thresholds = select(values, settings.mors, settings.mors_quantile)
    pool = np.flatnonzero(keep)
    count = min(len(pool), round(settings.original_fraction * kept_online))
    rng = np.random.default_rng([settings.seed, iteration, 1])
    chosen = np.sort(rng.choice(pool, size=count, replace=False))
    return MixedOriginal(original.iloc[chosen].reset_index(drop=True), thresholds)


def _as_list(values: np.ndarray | None) -> list[float] | None:
    return None if values is None else [float(v) for v in values]


def _save_policy(policy: TrainedPolicy, previous: Path, folder: Path) -> None:
    """The fine-tuned weights and the stats, laid out like `ric train`'s."""
    save_weights(policy.model, policy.tokenizer, folder)
    shutil.copyfile(previous / STATS_FILE, folder / STATS_FILE)
