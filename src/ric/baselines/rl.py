"""MORLHF (docs/design.md §1.6): RL on the scalarized reward w^T z(r), one model per preference.

z(r) are the rewards standardized with the label run's stats (the units RiC trains in), so a
preference weighs objectives on the same scale whatever their raw units. The scorers are the
same ``ric.rewards`` objects the stats were computed with. Training is TRL's GRPOTrainer (or
RLOOTrainer): group-relative advantages over ``num_generations`` completions per prompt and a KL
penalty (``beta``) to the starting model. The policy is a LoRA adapter on that starting model
(the SFT baseline, merged, when ``baseline.init`` is set), attached by the trainer from
``lora.*``: TRL then computes the reference log-probabilities with the adapter disabled, so no
second copy of the model is held.

A Rewarded Soups member is the same run at a one-hot preference. Output directory: the layout of
a `ric train` output (adapter/, stats.json, config.yaml, metrics.json, train_log.jsonl) plus
``method.json``; ``checkpoints/`` holds TRL's checkpoints, and a rerun resumes from the newest.

Several processes (``accelerate launch``): TRL's trainer is data-parallel; each process generates
and scores its share of the step's completions, the reward history gathers every share, and only
the main process writes ric's files.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ric import parallel
from ric.config import RicConfig, dump_config
from ric.core import RewardStats, check_preference
from ric.data.io import CONFIG_FILE, STATS_FILE, stats_rewards, write_atomic, write_text_atomic
from ric.data.label import read_labeled_frame
from ric.rewards import create_reward
from ric.runs import (
    ADAPTER_DIR,
    METRICS_FILE,
    RunResult,
    finished_run,
    load_start,
    settings_of,
    write_method,
)
from ric.runtime import describe_device, import_optional
from ric.training.checkpoints import CHECKPOINTS, LOG_FILE
from ric.training.optimization import resolve_mixed_precision

# What determines an RL run's weights, besides its preference (a finished run is reused only
# by these settings).
TRAINED_BY = ("model", "lora", "template", "generation", "baseline")

WINDOW = 5  # scored batches averaged for the start and end rewards in metrics.json
PROGRESS_FILE = "ric_progress.npz"  # in each checkpoint, written last: it marks it complete


def scalarize(raw: np.ndarray, stats: RewardStats, preference: np.ndarray) -> np.ndarray:
    """w^T z(r) per completion: raw rewards (B, N) -> (B,), z standardized with ``stats``."""
    return stats.standardize(raw) @ preference


def default_preferences(num_objectives: int) -> list[list[float]]:
    """Every one-hot vector, then the uniform one (for 2 objectives: (1,0), (0,1), (.5,.5))."""
    one_hot = np.eye(num_objectives).tolist()
    return [*one_hot, [1.0 / num_objectives] * num_objectives]


def preference_folder(preference: Sequence[float]) -> str:
    """A folder name for a preference: 'w-0.5-0.5'."""
    return "w-" + "-".join(f"{v:g}" for v in preference)


def run_rl(
    config: RicConfig, preference: Sequence[float], output: Path, show_progress: bool = True
) -> RunResult:
    """Train the MORLHF model of ``preference`` into ``output``; return it and its metrics. A
    rerun resumes from the newest complete checkpoint, with the reward history and seconds saved
    with it; a finished run with the same settings is returned as is (``ric.runs.finished_run``)."""
    import_optional("trl")  # before any work
    settings = config.baseline
    data = settings.data or config.train.data
    if not data:
        raise ValueError("no RL prompts: set baseline.data (or train.data) to a `ric label` output")
    frame, stats, columns = read_labeled_frame(data)
    weights = check_preference(np.asarray(preference, dtype=float), stats.num_objectives)
    requested = {**settings_of(config, TRAINED_BY), "preference": weights.tolist()}
    if finished_run(output, requested, "RL run"):
        return RunResult.recorded(output)
    if not config.generation.do_sample:
        raise ValueError(
            "RL compares sampled completions of a prompt: generation.do_sample must be true"
        )
    init = Path(settings.init) if settings.init else None
    if init is not None and not (init / CONFIG_FILE).is_file():
        raise ValueError(f"baseline.init {str(init)!r} is not a `ric baseline sft` output")
    per_process = _per_process_batch(settings.prompts_per_step * settings.num_generations)
    model, tokenizer = load_start(config, init)

    folder = output / CHECKPOINTS
    parallel.on_main(lambda: _drop_incomplete_checkpoints(folder))
    checkpoint = _latest_checkpoint(folder)
    progress = _Progress.read(checkpoint, stats.num_objectives)
    trainer = _trainer(
        config,
        model,
        tokenizer,
        _prompts(frame, columns.prompt_column, config, tokenizer),
        _reward_function(stats, weights, progress.history),
        output,
        per_process,
        show_progress,
    )
    trainer.add_callback(_save_progress_callback(progress))
    trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    seconds = progress.seconds()
    metrics = _metrics(trainer, progress.history, stats, weights, seconds, checkpoint is not None)

    def write_run() -> None:
        trainer.model.save_pretrained(output / ADAPTER_DIR)
        tokenizer.save_pretrained(output / ADAPTER_DIR)
        shutil.copyfile(Path(data) / STATS_FILE, output / STATS_FILE)
        write_text_atomic(output / CONFIG_FILE, dump_config(config))
        write_method(output, "morlhf", weights.tolist(), init)
        log = trainer.state.log_history
        write_text_atomic(output / LOG_FILE, "".join(json.dumps(entry) + "\n" for entry in log))
        write_text_atomic(output / METRICS_FILE, json.dumps(metrics, indent=1))

    parallel.on_main(write_run)
    return RunResult(output, metrics)


def _prompts(frame: Any, prompt_column: str, config: RicConfig, tokenizer: Any) -> Any:
    """The labeled data's distinct prompts as a dataset: ``prompt`` in the template without
    rewards (what the policy sees; in the chat format the model's chat template, no system
    turn) and ``raw_prompt`` (what the scorers see)."""
    from datasets import Dataset

    from ric.steering import for_tokenizer, write_prompts

    raw = list(dict.fromkeys(frame[prompt_column].tolist()))  # distinct, first-seen order
    template, render = for_tokenizer(config.template.prompt_template(), tokenizer)
    return Dataset.from_dict(
        {"prompt": write_prompts(raw, None, template, render), "raw_prompt": raw}
    )


@dataclass
class _Progress:
    """What ric's metrics need from the steps before a checkpoint: the raw rewards (B, N) of
    every scored batch and the training seconds; saved with each checkpoint, read on resume."""

    history: list[np.ndarray]
    seconds_before: float
    began: float = field(default_factory=time.perf_counter)

    def seconds(self) -> float:
        return self.seconds_before + time.perf_counter() - self.began

    @classmethod
    def read(cls, checkpoint: Path | None, num_objectives: int) -> _Progress:
        if checkpoint is None:
            return cls([], 0.0)
        saved = np.load(checkpoint / PROGRESS_FILE)
        rewards = saved["rewards"].reshape(-1, num_objectives)
        batches = np.split(rewards, np.cumsum(saved["lengths"])[:-1]) if len(rewards) else []
        return cls(list(batches), float(saved["seconds"]))

    def write(self, checkpoint: Path) -> None:
        rewards = np.concatenate(self.history) if self.history else np.empty((0, 0))
        lengths = [len(batch) for batch in self.history]
        write_atomic(
            checkpoint / PROGRESS_FILE,
            lambda tmp: _save_npz(tmp, rewards, lengths, self.seconds()),
        )


def _save_npz(path: Path, rewards: np.ndarray, lengths: list[int], seconds: float) -> None:
    with path.open("wb") as handle:  # a handle: np.savez would append .npz to a bare path
        np.savez(handle, rewards=rewards, lengths=np.asarray(lengths), seconds=seconds)


def _per_process_batch(global_batch: int) -> int:
    """Completions each process scores per step, so that K processes make the configured
    global batch (``baseline.prompts_per_step`` x ``num_generations``), as one process does."""
    processes = parallel.num_processes()
    if global_batch % processes:
        raise ValueError(
            f"baseline.prompts_per_step x baseline.num_generations = {global_batch} completions "
            f"per step do not split evenly over {processes} processes: make it a multiple of "
            f"{processes}, or launch a number of processes that divides {global_batch}"
        )
    return global_batch // processes


def _checkpoints(folder: Path) -> list[Path]:
    return sorted(folder.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[-1]))


def _drop_incomplete_checkpoints(folder: Path) -> None:
    """Remove the newest TRL checkpoints whose progress file was not written (TRL writes
    checkpoints in place, so a kill can leave one half-written)."""
    checkpoints = _checkpoints(folder)
    while checkpoints and not (checkpoints[-1] / PROGRESS_FILE).is_file():
        shutil.rmtree(checkpoints.pop())


def _latest_checkpoint(folder: Path) -> Path | None:
    """The newest checkpoint (complete once ``_drop_incomplete_checkpoints`` ran)."""
    checkpoints = _checkpoints(folder)
    return checkpoints[-1] if checkpoints else None


def _save_progress_callback(progress: _Progress) -> Any:
    from transformers import TrainerCallback

    class SaveProgress(TrainerCallback):  # type: ignore[misc]
        def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            checkpoint = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            parallel.on_main(lambda: progress.write(checkpoint))

    return SaveProgress()


def _reward_function(stats: RewardStats, weights: np.ndarray, history: list[np.ndarray]) -> Any:
    scorers = [create_reward(r.type, r.options) for r in stats_rewards(stats)]

    def scalarized_reward(
        prompts: list[str], completions: list[str], raw_prompt: list[str], **_: Any
    ) -> list[float]:
        raw = np.column_stack([scorer.score(raw_prompt, completions) for scorer in scorers])
        # The step's whole batch, from every process (TRL calls this on each one, for its part).
        history.append(np.concatenate(parallel.gather_objects(raw)))
        return scalarize(raw, stats, weights).tolist()

    return scalarized_reward


def _trainer(
    config: RicConfig,
    model: Any,
    tokenizer: Any,
    dataset: Any,
    reward_function: Any,
    output: Path,
    per_process: int,
    show_progress: bool,
) -> Any:
    """TRL's trainer for ``baseline.algorithm``; it puts a fresh LoRA adapter on ``model`` and
    takes the reference log-probabilities with the adapter disabled (the starting model).
    ``per_process``: completions per step in each process (``_per_process_batch``)."""
    from transformers import PrinterCallback

    trl = import_optional("trl")

    from ric.models.lora import peft_lora_config

    settings = config.baseline
    trainer_class, config_class = {
        "grpo": (trl.GRPOTrainer, trl.GRPOConfig),
        "rloo": (trl.RLOOTrainer, trl.RLOOConfig),
    }[settings.algorithm]
    on_cpu = next(model.parameters()).device.type == "cpu"
    arguments = config_class(
        output_dir=str(output / CHECKPOINTS),
        per_device_train_batch_size=per_process,
        num_generations=settings.num_generations,
        max_completion_length=config.generation.max_new_tokens,
        temperature=config.generation.temperature,
        top_p=config.generation.top_p,
        top_k=config.generation.top_k,
        learning_rate=settings.learning_rate,
        lr_scheduler_type="constant",
        beta=settings.beta,
        max_steps=settings.max_steps,
        logging_steps=1,
        save_strategy="steps",
        save_steps=settings.save_steps,
        save_total_limit=config.train.keep_checkpoints,
        seed=settings.seed,
        use_cpu=on_cpu,
        bf16=resolve_mixed_precision(config.train.mixed_precision) == "bf16",
        report_to=[],
        disable_tqdm=not show_progress,
    )
    torch.manual_seed(settings.seed)  # adapter initialization, inside the trainer
    trainer = trainer_class(
        model=model,
        reward_funcs=reward_function,
        args=arguments,
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=peft_lora_config(model, config.lora),
    )
    if not show_progress:
        trainer.remove_callback(PrinterCallback)  # the per-step log lines
    return trainer


def _metrics(
    trainer: Any,
    history: list[np.ndarray],
    stats: RewardStats,
    weights: np.ndarray,
    seconds: float,
    resumed: bool,
) -> dict:
    """Steps, seconds, device, and the mean rewards of the first and last scored batches
    (``WINDOW`` each: one batch of a few completions is too noisy to show a trend)."""

    def summary(batches: list[np.ndarray]) -> dict | None:
        if not batches:
            return None
        raw = np.concatenate(batches)
        return {
            "batches": len(batches),
            "mean_raw": dict(zip(stats.names, raw.mean(axis=0).tolist(), strict=True)),
            "mean_scalarized": float(scalarize(raw, stats, weights).mean()),
        }

    return {
        "algorithm": type(trainer).__name__,
        "preference": weights.tolist(),
        "steps": trainer.state.global_step,
        "processes": parallel.num_processes(),
        "resumed": resumed,
        "seconds": seconds,
        "device": describe_device(),
        "reward_start": summary(history[:WINDOW]),
        "reward_end": summary(history[-WINDOW:]),
        "kl_last": next(
            (entry["kl"] for entry in reversed(trainer.state.log_history) if "kl" in entry), None
        ),
    }
