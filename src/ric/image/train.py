"""`ric image train`: reward-conditioned fine-tuning of a text-to-image model (docs/design.md §1.7).

Each labeled image's caption gets its standardized rewards appended with the text pipeline's
template (``a red circle <R1> 0.3 <R2> -1.2``; ``ric.core.template``), a share
``train.caption_dropout`` of the captions is replaced by the empty caption so classifier-free
guidance has an unconditional model to push against, and the UNet learns to predict the noise
added at a random timestep (or the velocity, for a v-prediction scheduler): the standard
denoising loss. The whole UNet trains (the paper), or a LoRA adapter on its attention
projections; the text encoder trains too where ``train.train_text_encoder`` says so (the embedded
model, built from scratch, needs it; the paper keeps CLIP frozen).

Every random choice of a step (its images, noise, timesteps, dropped captions) is drawn from
(seed, step), and checkpoints hold the trainable weights, optimizer and schedule, so ``resume``
continues with exactly what an uninterrupted run would have done (the checkpoint format of
``ric.training.checkpoints``). Output directory:

    model/            the trained parts in the diffusers layout (the embedded model: all of
                      them), ``ric_pipeline.json`` naming what the rest is loaded from
    stats.json        the labeled data's reward stats (the model's units)
    config.yaml       the resolved config (template, model, generation settings of this run)
    metrics.json      steps, final loss, seconds, images per second
    train_log.jsonl   the loss every ``train.log_steps``
    checkpoints/      resumable state, the newest ``train.keep_checkpoints``
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from ric.config import dump_config, load_config, placed
from ric.core import RewardStats, build_prompt
from ric.data.io import CONFIG_FILE, STATS_FILE, load_stats, save_stats, write_text_atomic
from ric.image.config import EMBEDDED_IMAGE_MODEL, ImageRicConfig
from ric.image.label import labeled_rows, read_image_labels
from ric.image.pipeline import (
    PIPELINE_FILE,
    ImagePipeline,
    build_embedded,
    encode_captions,
    encode_images,
    fit_caption,
    load_pipeline,
    save_pipeline,
    to_pixels,
)
from ric.runtime import default_device
from ric.training.checkpoints import (
    CHECKPOINTS,
    append_log,
    load_latest_checkpoint,
    save_checkpoint,
    truncate_log,
)
from ric.training.optimization import adamw

MODEL_DIR = "model"
LORA_DIR = "unet_lora"
METRICS_FILE = "metrics.json"
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def batch_indices(num_rows: int, batch_size: int, seed: int, step: int) -> np.ndarray:
    """The rows of step ``step``: consecutive slices of a fresh permutation per epoch, seeded by
    (seed, epoch), so any step's batch is known without replaying the ones before it."""
    positions = np.arange(step * batch_size, (step + 1) * batch_size)
    epochs, offsets = np.divmod(positions, num_rows)
    orders = {
        epoch: np.random.default_rng([seed, int(epoch)]).permutation(num_rows)
        for epoch in np.unique(epochs)
    }
    return np.array([orders[e][o] for e, o in zip(epochs, offsets, strict=True)])


def drop_captions(captions: list[str], rate: float, generator: torch.Generator) -> list[str]:
    """Each caption replaced by the empty one with probability ``rate``: the unconditional
    model classifier-free guidance needs, trained in the same network (the paper: 0.05)."""
    dropped = torch.rand(len(captions), generator=generator) < rate
    return ["" if drop else caption for caption, drop in zip(captions, dropped, strict=True)]


def conditioned_captions(
    pipeline: ImagePipeline, config: ImageRicConfig, captions: list[str], rewards: np.ndarray
) -> list[str]:
    """Each caption with its (standardized) rewards appended, fitted to the text encoder."""
    template = config.template.prompt_template()
    return [
        fit_caption(pipeline, caption, lambda text, row=row: build_prompt(text, row, template))
        for caption, row in zip(captions, rewards.tolist(), strict=True)
    ]


def start_pipeline(
    config: ImageRicConfig, captions: list[str], num_objectives: int
) -> ImagePipeline:
    """The model training starts from: the embedded one built fresh, or a pretrained pipeline."""
    if config.model.source == EMBEDDED_IMAGE_MODEL:
        pipeline = build_embedded(captions, num_objectives, config.train.seed)
        for part in (pipeline.unet, pipeline.text_encoder):
            part.to(config.model.device or default_device())
            if config.model.dtype != "float32":
                part.to(dtype=DTYPES[config.model.dtype])
    else:
        pipeline = load_pipeline(
            config.model.source, DTYPES[config.model.dtype], config.model.device
        )
    if config.model.resolution:
        pipeline.resolution = config.model.resolution
    return pipeline


def trains_text_encoder(config: ImageRicConfig) -> bool:
    """``train.train_text_encoder``, or by default: only for the embedded model, whose text
    encoder starts random (a pretrained CLIP stays as released, as in the paper)."""
    if config.train.train_text_encoder is not None:
        return config.train.train_text_encoder
    return config.model.source == EMBEDDED_IMAGE_MODEL


def trainable_modules(pipeline: ImagePipeline, config: ImageRicConfig) -> torch.nn.ModuleDict:
    """Freeze what does not train, add the LoRA adapter if asked, and return the trained parts
    under fixed names (the checkpoint's parameter names)."""
    if pipeline.vae is not None:
        pipeline.vae.requires_grad_(False)
    pipeline.text_encoder.requires_grad_(trains_text_encoder(config))
    if config.lora.enabled:
        from peft import LoraConfig

        pipeline.unet.requires_grad_(False)
        pipeline.unet.add_adapter(
            LoraConfig(
                r=config.lora.r,
                lora_alpha=config.lora.alpha,
                target_modules=list(config.lora.target_modules),
                init_lora_weights="gaussian",
            )
        )
    else:
        pipeline.unet.requires_grad_(True)
    modules = {"unet": pipeline.unet}
    if trains_text_encoder(config):
        modules["text_encoder"] = pipeline.text_encoder
    return torch.nn.ModuleDict(modules)


def denoising_loss(
    pipeline: ImagePipeline, noise_scheduler, pixels: torch.Tensor, captions: list[str], generator
) -> torch.Tensor:
    """The diffusion loss of one batch: noise a clean sample at a random timestep and predict
    the noise (or the velocity, for v-prediction schedulers)."""
    clean = encode_images(pipeline, pixels, generator)
    noise = torch.randn(clean.shape, generator=generator).to(clean)
    steps = noise_scheduler.config.num_train_timesteps
    timesteps = torch.randint(0, steps, (clean.shape[0],), generator=generator).to(clean.device)
    noisy = noise_scheduler.add_noise(clean, noise, timesteps)
    if noise_scheduler.config.prediction_type == "v_prediction":
        target = noise_scheduler.get_velocity(clean, noise, timesteps)
    else:
        target = noise
    text = encode_captions(pipeline, captions)
    predicted = pipeline.unet(noisy, timesteps, encoder_hidden_states=text).sample
    return torch.nn.functional.mse_loss(predicted.float(), target.float())


@dataclass(frozen=True)
class ImageTrainResult:
    output: Path
    steps: int
    resumed_from: int
    final_loss: float
    seconds: float


def train_image_model(
    config: ImageRicConfig, resume: bool = False, show_progress: bool = True
) -> ImageTrainResult:
    """Train on ``config.train.data`` into ``config.train.output`` (see the module docstring)."""
    from diffusers import DDPMScheduler
    from transformers import get_scheduler

    settings = config.train
    if not settings.data or not settings.output:
        raise ValueError("set train.data (a `ric image label` output) and train.output")
    if config.lora.enabled and config.model.source == EMBEDDED_IMAGE_MODEL:
        raise ValueError(
            "lora.enabled needs a pretrained model.source: the embedded model is trained from "
            "scratch, every weight of it"
        )
    output = Path(settings.output)
    if resume and (output / METRICS_FILE).is_file():
        return _finished(output, settings.max_steps)
    if not resume and ((output / CHECKPOINTS).is_dir() or (output / MODEL_DIR).is_dir()):
        raise ValueError(
            f"{str(output)!r} already holds a training run: pass --resume to continue it, or "
            "choose another --output"
        )
    labels = read_image_labels(settings.data)
    rows = labeled_rows(labels)
    pipeline = start_pipeline(config, labels.captions, labels.stats.num_objectives)
    captions = conditioned_captions(pipeline, config, labels.captions, labels.standardized())
    trained = trainable_modules(pipeline, config)
    parameters = [p for p in trained.parameters() if p.requires_grad]
    optimizer = adamw(parameters, settings.learning_rate, settings.weight_decay)
    schedule = get_scheduler(
        settings.lr_schedule,
        optimizer,
        num_warmup_steps=settings.warmup_steps,
        num_training_steps=settings.max_steps,
    )
    start, seconds_before, images_seen = load_latest_checkpoint(
        output, trained, optimizer, schedule
    )
    truncate_log(output, start)
    noise_scheduler = DDPMScheduler.from_config(pipeline.scheduler_config)
    trained.train()
    began, window, loss_value = time.perf_counter(), [], float("nan")
    progress = tqdm(
        total=settings.max_steps, initial=start, desc="train", disable=not show_progress
    )
    for step in range(start, settings.max_steps):
        generator = torch.Generator().manual_seed(settings.seed * 1_000_003 + step)
        accumulation = settings.gradient_accumulation_steps
        indices = batch_indices(len(rows), settings.batch_size * accumulation, settings.seed, step)
        captions_of_step = drop_captions(
            [captions[i] for i in indices], settings.caption_dropout, generator
        )
        images = [rows.image(int(i)) for i in indices]
        if settings.random_flip:
            flips = torch.rand(len(images), generator=generator) < 0.5
            images = [
                image.transpose(Image.Transpose.FLIP_LEFT_RIGHT) if flip else image
                for image, flip in zip(images, flips, strict=True)
            ]
        step_loss = 0.0
        for first in range(0, len(indices), settings.batch_size):
            part = slice(first, first + settings.batch_size)
            pixels = to_pixels(images[part], pipeline.resolution)
            loss = denoising_loss(
                pipeline, noise_scheduler, pixels, captions_of_step[part], generator
            )
            (loss / accumulation).backward()  # the step's gradient: the micro-batches' mean
            step_loss += loss.item() / accumulation
        if settings.max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(parameters, settings.max_grad_norm)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        images_seen += len(indices)
        window.append(step_loss)
        done = step + 1
        progress.update(1)
        if done % settings.log_steps == 0 or done == settings.max_steps:
            loss_value = float(np.mean(window))
            append_log(output, done, loss_value, schedule.get_last_lr()[0], began)
            progress.set_postfix(loss=f"{loss_value:.4f}")
            window = []
        if done % settings.save_steps == 0 and done < settings.max_steps:
            seconds = seconds_before + time.perf_counter() - began
            save_checkpoint(
                output,
                (done, seconds, images_seen),
                trained,
                optimizer,
                schedule,
                settings.keep_checkpoints,
            )
    progress.close()
    seconds = seconds_before + time.perf_counter() - began
    save_trained(pipeline, config, labels.stats, output)
    metrics = {
        "steps": settings.max_steps,
        "resumed_from": start,
        "final_loss": loss_value,
        "seconds": seconds,
        "images_per_second": images_seen / seconds if seconds else None,
        "images_seen": images_seen,
    }
    write_text_atomic(output / METRICS_FILE, json.dumps(metrics, indent=2) + "\n")
    return ImageTrainResult(output, settings.max_steps, start, loss_value, seconds)


def _finished(output: Path, max_steps: int) -> ImageTrainResult:
    """The result of the finished run in ``output``, if it ran ``max_steps`` steps."""
    recorded = json.loads((output / METRICS_FILE).read_text())
    if recorded["steps"] != max_steps:
        raise ValueError(
            f"{str(output)!r} holds a finished run of {recorded['steps']} steps, not "
            f"train.max_steps={max_steps}: choose another --output"
        )
    return ImageTrainResult(
        output, max_steps, max_steps, recorded["final_loss"], recorded["seconds"]
    )


def save_trained(
    pipeline: ImagePipeline, config: ImageRicConfig, stats: RewardStats, output: Path
) -> None:
    """The run's model folder (every part for the embedded model; for a pretrained one only the
    parts that trained), its stats and config. Written to a temporary folder, then renamed."""
    from peft.utils import get_peft_model_state_dict
    from safetensors.torch import save_file

    partial = output / f".partial-{MODEL_DIR}"
    shutil.rmtree(partial, ignore_errors=True)
    embedded = config.model.source == EMBEDDED_IMAGE_MODEL
    # The embedded model exists nowhere else: every part is saved, trained or not.
    parts = ["tokenizer", "scheduler"] if embedded else []
    if trains_text_encoder(config) or embedded:
        parts.append("text_encoder")
    if config.lora.enabled:
        (partial / LORA_DIR).mkdir(parents=True)
        save_file(
            get_peft_model_state_dict(pipeline.unet),
            str(partial / LORA_DIR / "adapter.safetensors"),
        )
        pipeline.unet.peft_config["default"].save_pretrained(str(partial / LORA_DIR))
    else:
        parts.append("unet")
    save_pipeline(pipeline, partial, parts)
    shutil.rmtree(output / MODEL_DIR, ignore_errors=True)
    partial.rename(output / MODEL_DIR)
    save_stats(stats, output / STATS_FILE)
    write_text_atomic(output / CONFIG_FILE, dump_config(config))


@dataclass(frozen=True)
class TrainedImageModel:
    """A `ric image train` output, ready to sample."""

    pipeline: ImagePipeline
    stats: RewardStats
    config: ImageRicConfig  # the training run's config: its template, mapping and generation


def load_trained_image_model(
    run: str | Path, dtype: str | None = None, device: str | None = None
) -> TrainedImageModel:
    """Load a `ric image train` output: the trained parts over what they were trained from.
    ``dtype`` and ``device`` (``model.dtype``, ``model.device``) replace the run's own."""
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextModel

    folder = Path(run)
    model = folder / MODEL_DIR
    if not (model / PIPELINE_FILE).is_file() or not (folder / CONFIG_FILE).is_file():
        raise ValueError(f"{str(folder)!r} is not a `ric image train` output (no {MODEL_DIR}/)")
    config = load_config(folder / CONFIG_FILE, cls=ImageRicConfig)
    config.model = placed(config.model, dtype, device)
    weights_dtype, device = DTYPES[config.model.dtype], config.model.device
    complete = all((model / part).is_dir() for part in ("unet", "text_encoder", "tokenizer"))
    if complete:
        pipeline = load_pipeline(str(model), weights_dtype, device)
    else:
        description = json.loads((model / PIPELINE_FILE).read_text())
        pipeline = load_pipeline(description["source"], weights_dtype, device)
        pipeline.resolution = int(description["resolution"])
        if (model / "unet").is_dir():
            pipeline.unet = UNet2DConditionModel.from_pretrained(
                model / "unet", torch_dtype=weights_dtype
            ).to(pipeline.device)
        if (model / "text_encoder").is_dir():
            pipeline.text_encoder = CLIPTextModel.from_pretrained(
                model / "text_encoder", torch_dtype=weights_dtype
            ).to(pipeline.device)
    if (model / LORA_DIR).is_dir():
        from peft import LoraConfig
        from peft.utils import set_peft_model_state_dict
        from safetensors.torch import load_file

        pipeline.unet.add_adapter(LoraConfig.from_pretrained(str(model / LORA_DIR)))
        set_peft_model_state_dict(
            pipeline.unet, load_file(str(model / LORA_DIR / "adapter.safetensors"))
        )
    return TrainedImageModel(pipeline, load_stats(folder / STATS_FILE), config)
