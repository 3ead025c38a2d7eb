"""`ric train`: the offline stage (docs/design.md §1.2) on a `ric label` output directory.

Every labeled sample becomes (conditioned prompt, response): the prompt carries the sample's own
standardized rewards, so both good and bad responses teach the model what each reward level looks
like. With ``template.format: chat`` the prompt is the model's own chat template with the rewards in
a system turn (``ric.steering.write_prompts``), exactly as ``ric generate`` writes it. Output
directory:

    adapter/ (LoRA, loads with plain peft), layers/ (full fine-tuning of the top lora.top_layers
                    layers: their weights only) or model/ (full fine-tune), plus the tokenizer
    stats.json      the label run's stats, reused unchanged at inference
    config.yaml     the resolved config (model source, template, training settings)
    metrics.json    steps, losses, response tokens/s, wall-clock seconds, samples used/skipped
    train_log.jsonl loss and learning rate every train.log_steps
    checkpoints/    resumable checkpoints (`ric train --resume` continues from the newest)
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from ric import parallel
from ric.config import RicConfig, dump_config, load_config, require_setting
from ric.core import PromptTemplate, RewardStats
from ric.data.io import CONFIG_FILE, STATS_FILE, write_text_atomic
from ric.data.label import read_labeled_frame, standardized_column
from ric.data.sources import boolean_column
from ric.models.samples import TokenizedSample, tokenize_sample
from ric.runs import (
    METRICS_FILE,
    RunResult,
    finished_run,
    load_trained,
    read_method,
    run_folder,
    save_weights,
    settings_of,
    write_method,
)
from ric.runtime import describe_device
from ric.steering import for_tokenizer, write_prompts
from ric.training.checkpoints import CHECKPOINTS
from ric.training.sft import TrainResult, train

# What determines an offline run's weights (a finished run is reused only by these settings).
TRAINED_BY = ("model", "lora", "template", "train")


@dataclass(frozen=True)
class LabeledData:
    """A `ric label` output: conditioned (prompt, response) texts and the stats."""

    prompts: list[str]  # conditioned prompts, rewards written in
    responses: list[str]
    stats: RewardStats


def read_labeled(
    directory: str | Path,
    template: PromptTemplate,
    conditioned: bool = True,
    keep: str = "",
    tokenizer: Any = None,
) -> LabeledData:
    """Read scored data + stats from a `ric label` output and build conditioned prompts (or,
    for the SFT baseline, the same prompts without reward values). ``keep``: a true/false
    column; only its true rows are used (the SFT baseline's preferred responses).
    ``tokenizer``: the model's, which a chat-format template renders with."""
    frame, stats, columns = read_labeled_frame(directory)
    if keep:
        if keep not in frame.columns:
            raise ValueError(
                f"baseline.sft_column {keep!r} is not a column of the labeled data; "
                f"columns: {', '.join(map(str, frame.columns))}"
            )
        frame = frame[boolean_column(frame, keep, str(directory))]
    standardized = frame[[standardized_column(name) for name in stats.names]].to_numpy()
    template, render = (
        for_tokenizer(template, tokenizer) if tokenizer is not None else (template, None)
    )
    prompts = write_prompts(
        frame[columns.prompt_column].tolist(),
        standardized if conditioned else None,
        template,
        render,
    )
    return LabeledData(prompts, frame[columns.response_column].tolist(), stats)


def run_train(
    config: RicConfig, resume: bool = False, show_progress: bool = True, conditioned: bool = True
) -> RunResult:
    """Train on ``config.train.data``; write to ``config.train.output``; return that folder and
    its metrics. ``conditioned=False`` is the SFT baseline: the same loop on prompts without
    rewards."""
    require_setting("train.output", config.train.output, "output directory")
    if config.train.init:
        config = _continuing(config, conditioned)
    settings = config.train
    output = Path(settings.output)
    sections = [*TRAINED_BY, *([] if conditioned else ["baseline.sft_column"])]
    if finished_run(output, settings_of(config, sections), "training run"):
        return RunResult.recorded(output)  # the same settings: nothing left to do
    has_checkpoints = any((output / CHECKPOINTS).glob("step-*"))
    if has_checkpoints and not resume:
        raise ValueError(
            f"{str(output)!r} holds checkpoints of an earlier run: pass --resume to continue it "
            "or choose another --output"
        )
    keep = "" if conditioned else config.baseline.sft_column
    model, tokenizer = _start_model(config)
    template = config.template.prompt_template()
    data = read_labeled(settings.data, template, conditioned, keep, tokenizer)
    samples = [
        sample
        for prompt, response in zip(data.prompts, data.responses, strict=True)
        if (sample := tokenize_sample(tokenizer, prompt, response, settings.max_length))
    ]
    result = train(model, samples, settings, output, tokenizer.pad_token_id, resume, show_progress)
    metrics = _metrics(result, samples, data)

    def write_run() -> None:
        save_weights(model, tokenizer, output)
        shutil.copyfile(Path(settings.data) / STATS_FILE, output / STATS_FILE)
        write_text_atomic(output / CONFIG_FILE, dump_config(config))
        if not conditioned:
            write_method(output, "sft")
        write_text_atomic(output / METRICS_FILE, json.dumps(metrics, indent=1))

    parallel.on_main(write_run)
    return RunResult(output, metrics)


def _start_model(config: RicConfig) -> tuple[Any, Any]:
    """The model to train, and its tokenizer: the ``train.init`` run's weights, trainable, or
    ``model.source`` with a new adapter (or its top layers unfrozen)."""
    from ric.models import attach_lora, load_policy, unfreeze_top_layers

    if config.train.init:
        start = load_trained(
            config.train.init, trainable=True, dtype=config.model.dtype, device=config.model.device
        )
        return start.model, start.tokenizer
    model, tokenizer = load_policy(config.model)
    torch.manual_seed(config.train.seed)  # adapter initialization
    if config.lora.enabled:
        return attach_lora(model, config.lora), tokenizer
    return unfreeze_top_layers(model, config.lora.top_layers), tokenizer


def _continuing(config: RicConfig, conditioned: bool) -> RicConfig:
    """``config`` with the model, adapter and template settings of the RiC run ``train.init``
    names: the run learned to read its rewards through exactly those."""
    if not conditioned:
        raise ValueError(
            "train.init continues a RiC run; the SFT baseline starts from model.source"
        )
    folder = run_folder(config.train.init)
    if not (folder / METRICS_FILE).is_file():
        raise ValueError(
            f"train.init {config.train.init!r} is not a finished trained run (no "
            f"{METRICS_FILE}); give a `ric train` or `ric online` output, or a shipped run "
            "such as embedded-ric"
        )
    method = read_method(folder).name
    if method != "ric":
        raise ValueError(
            f"train.init {config.train.init!r} is a {method!r} run: it continues a RiC run "
            "(`ric train`, `ric online` or a shipped one such as embedded-ric)"
        )
    start = load_config(folder / CONFIG_FILE)
    return replace(config, model=start.model, lora=start.lora, template=start.template)


def _metrics(result: TrainResult, samples: list[TokenizedSample], data: LabeledData) -> dict:
    return {
        "steps": result.steps,
        "resumed_from_step": result.resumed_from,
        "losses": [{"step": step, "loss": loss} for step, loss in result.losses],
        "first_loss": result.losses[0][1] if result.losses else None,
        "last_loss": result.losses[-1][1] if result.losses else None,
        "response_tokens": result.response_tokens,
        "seconds": result.seconds,
        "response_tokens_per_second": result.response_tokens / max(result.seconds, 1e-9),
        "frozen_cache": result.frozen_cache,
        "device": describe_device(),
        "processes": parallel.num_processes(),
        "samples": len(samples),
        "samples_skipped_too_long": len(data.prompts) - len(samples),
        "objectives": list(data.stats.names),
    }
