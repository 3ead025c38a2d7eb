"""`ric train`: the offline stage (DESIGN §1.2) on a `ric label` output directory.

Every labeled sample becomes (conditioned prompt, response): the prompt carries the sample's own
standardized rewards, so both good and bad responses teach the model what each reward level looks
like. Output directory:

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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from ric.config import DataConfig, RicConfig, dump_config, load_config
from ric.core import PromptTemplate, RewardStats, build_plain_prompt, build_prompt
from ric.data.io import STATS_FILE, load_stats, write_text_atomic
from ric.data.label import CONFIG_FILE, standardized_column
from ric.data.sources import boolean_column
from ric.runtime import describe_device
from ric.training.sft import CHECKPOINTS, TokenizedSample, TrainResult, tokenize_sample, train

ADAPTER_DIR = "adapter"
MODEL_DIR = "model"
LAYERS_DIR = "layers"
METRICS_FILE = "metrics.json"


def template_of(config: RicConfig) -> PromptTemplate:
    return PromptTemplate(
        config.template.text, config.template.marker, tuple(config.template.protected)
    )


@dataclass(frozen=True)
class LabeledData:
    """A `ric label` output: conditioned (prompt, response) texts and the stats."""

    prompts: list[str]  # conditioned prompts, rewards written in
    responses: list[str]
    stats: RewardStats


def read_labeled_frame(directory: str | Path) -> tuple[pd.DataFrame, RewardStats, DataConfig]:
    """The scored table, the stats and the column settings of a `ric label` output."""
    folder = Path(directory)
    if not folder.is_dir():
        raise ValueError(f"{str(folder)!r} is not a `ric label` output directory")
    scored = sorted(folder.glob("scored.*"))
    if not scored:
        raise ValueError(f"no scored.parquet or scored.jsonl in {str(folder)!r}")
    stats = load_stats(folder / STATS_FILE)
    columns = load_config(folder / CONFIG_FILE).data
    frame = (
        pd.read_parquet(scored[0])
        if scored[0].suffix == ".parquet"
        else pd.read_json(scored[0], lines=True, dtype=False)
    )
    return frame, stats, columns


def read_labeled(
    directory: str | Path, template: PromptTemplate, conditioned: bool = True, keep: str = ""
) -> LabeledData:
    """Read scored data + stats from a `ric label` output and build conditioned prompts (or,
    for the SFT baseline, the same prompts without reward values). ``keep``: a true/false
    column; only its true rows are used (the SFT baseline's preferred responses)."""
    frame, stats, columns = read_labeled_frame(directory)
    if keep:
        if keep not in frame.columns:
            raise ValueError(
                f"baseline.sft_column {keep!r} is not a column of the labeled data; "
                f"columns: {', '.join(map(str, frame.columns))}"
            )
        frame = frame[boolean_column(frame, keep, str(directory))]
    standardized = frame[[standardized_column(name) for name in stats.names]].to_numpy()
    prompts = [
        build_prompt(prompt, values.tolist(), template)
        if conditioned
        else build_plain_prompt(prompt, template)
        for prompt, values in zip(frame[columns.prompt_column], standardized, strict=True)
    ]
    return LabeledData(prompts, frame[columns.response_column].tolist(), stats)


def run_train(
    config: RicConfig, resume: bool = False, show_progress: bool = True, conditioned: bool = True
) -> Path:
    """Train on ``config.train.data``; write to ``config.train.output``; return that path.
    ``conditioned=False`` is the SFT baseline: the same loop on prompts without rewards."""
    from ric.models import attach_lora, load_policy, unfreeze_top_layers
    from ric.training.trained import write_method

    settings = config.train
    if not settings.output:
        raise ValueError("no output directory: set train.output (or pass --output)")
    output = Path(settings.output)
    if (output / METRICS_FILE).is_file():
        finished = json.loads((output / METRICS_FILE).read_text())["steps"]
        if resume and finished == settings.max_steps:
            return output  # nothing left to do
        raise ValueError(
            f"{str(output)!r} holds a finished run of {finished} steps; choose another --output "
            "(a finished schedule cannot be extended)"
        )
    has_checkpoints = any((output / CHECKPOINTS).glob("step-*"))
    if has_checkpoints and not resume:
        raise ValueError(
            f"{str(output)!r} holds checkpoints of an earlier run: pass --resume to continue it "
            "or choose another --output"
        )
    keep = "" if conditioned else config.baseline.sft_column
    data = read_labeled(settings.data, template_of(config), conditioned, keep)
    model, tokenizer = load_policy(config.model)
    samples = [
        sample
        for prompt, response in zip(data.prompts, data.responses, strict=True)
        if (sample := tokenize_sample(tokenizer, prompt, response, settings.max_length))
    ]
    torch.manual_seed(settings.seed)  # adapter initialization
    model = (
        attach_lora(model, config.lora)
        if config.lora.enabled
        else unfreeze_top_layers(model, config.lora.top_layers)
    )
    result = train(model, samples, settings, output, tokenizer.pad_token_id, resume, show_progress)
    save_weights(model, tokenizer, output)
    shutil.copyfile(Path(settings.data) / STATS_FILE, output / STATS_FILE)
    write_text_atomic(output / CONFIG_FILE, dump_config(config))
    if not conditioned:
        write_method(output, "sft")
    write_text_atomic(output / METRICS_FILE, json.dumps(_metrics(result, samples, data), indent=1))
    return output


def save_weights(model: Any, tokenizer: Any, output: Path) -> Path:
    """What training changed, with the tokenizer: ``adapter/`` (LoRA), ``layers/`` (the top
    layers fine-tuned, their weights alone) or ``model/`` (every weight). Returns the folder."""
    from peft import PeftModel

    from ric.models import save_adapter, save_layers

    if isinstance(model, PeftModel):
        folder = save_adapter(model, output / ADAPTER_DIR)
    elif all(parameter.requires_grad for parameter in model.parameters()):
        folder = output / MODEL_DIR
        model.save_pretrained(folder)
    else:
        folder = save_layers(model, output / LAYERS_DIR)
    tokenizer.save_pretrained(folder)
    return folder


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
        "device": describe_device(),
        "samples": len(samples),
        "samples_skipped_too_long": len(data.prompts) - len(samples),
        "objectives": list(data.stats.names),
    }
