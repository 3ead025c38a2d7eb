"""Typed configuration of `ric image`: a config of its own, in the text commands' style.

The sections that mean the same as for text are the text classes themselves (rewards, mapping,
and the grid and reference of the sweep), so a preference maps to rewards by the same code; the
rest describe images: where (image, caption) rows come from, which diffusion model is trained,
and how images are sampled. ``ric image config --help-fields`` lists every field.
"""

from __future__ import annotations

from dataclasses import dataclass

from ric.config import (
    GRIDS,
    LR_SCHEDULES,
    MappingConfig,
    RewardConfig,
    TemplateConfig,
    check_choice,
    doc_field,
    fill_default_sections,
)

IMAGE_DATA_FORMATS = ("auto", "folder", "jsonl", "parquet", "csv", "hf")
IMAGE_DTYPES = ("float32", "bfloat16", "float16")
EMBEDDED_IMAGE_MODEL = "embedded"


@dataclass
class ImageDataConfig:
    """Where the (image, caption) rows come from."""

    path: str = doc_field(
        "",
        "a folder of images with a captions file, a JSONL/Parquet/CSV file of image paths and "
        "captions, a saved Hugging Face dataset folder, or a Hub dataset name",
    )
    format: str = doc_field("auto", "auto, folder, jsonl, parquet, csv or hf (auto: from the path)")
    split: str = doc_field("train", "split to read from a Hugging Face dataset")
    image_column: str = doc_field(
        "image", "column holding the image (a path relative to the file, or an HF image)"
    )
    caption_column: str = doc_field("caption", "column holding the caption")
    captions_file: str = doc_field(
        "",
        "folder format: the file naming each image's caption, relative to the folder "
        "(empty: metadata.jsonl, captions.jsonl or captions.csv, the first that exists)",
    )
    limit: int | None = doc_field(None, "read only the first LIMIT rows (None: all)")

    def __post_init__(self) -> None:
        check_choice("data.format", self.format, IMAGE_DATA_FORMATS)
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"data.limit must be >= 1 or null, got {self.limit}")


@dataclass
class ImageLabelConfig:
    """How `ric image label` scores the images."""

    output: str = doc_field("", "output directory: scored rows, stats and resolved config")
    shard_size: int = doc_field(256, "images scored and saved per shard (the unit of resume)")
    reuse_scores: bool = doc_field(True, "load shards scored by earlier runs (false: rescore all)")

    def __post_init__(self) -> None:
        if self.shard_size < 1:
            raise ValueError(f"label.shard_size must be >= 1, got {self.shard_size}")


@dataclass
class ImageTemplateConfig(TemplateConfig):
    """How reward values are appended to the caption (the paper: ``caption <R1> z1 <R2> z2``)."""

    text: str = doc_field(
        "{prompt} {rewards}", "conditioned caption with {prompt} and then {rewards}"
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.format != "plain":
            raise ValueError(
                f"template.format {self.format!r} is for chat models: a caption is plain text "
                "(template.format: plain)"
            )


@dataclass
class ImageModelConfig:
    """The text-to-image model."""

    source: str = doc_field(
        EMBEDDED_IMAGE_MODEL,
        "'embedded' (a small pixel-space model built in code, trained from scratch), or a Stable "
        "Diffusion pipeline: a Hub id (e.g. stable-diffusion-v1-5/stable-diffusion-v1-5) or a "
        "local diffusers folder",
    )
    resolution: int = doc_field(
        0, "image side in pixels for training and sampling (0: the model's own; SD 1.5: 512)"
    )
    dtype: str = doc_field("float32", "weights dtype: float32, bfloat16 or float16")
    device: str | None = doc_field(None, "torch device (None: cuda if available, else cpu)")

    def __post_init__(self) -> None:
        check_choice("model.dtype", self.dtype, IMAGE_DTYPES)
        if self.resolution < 0 or self.resolution % 8:
            raise ValueError(
                f"model.resolution must be 0 (the model's own) or a positive multiple of 8, "
                f"got {self.resolution}"
            )


@dataclass
class ImageLoraConfig:
    """LoRA on the UNet's attention projections (off: the paper's full UNet fine-tuning)."""

    enabled: bool = doc_field(False, "train a LoRA adapter on the UNet (false: every UNet weight)")
    r: int = doc_field(8, "adapter rank")
    alpha: float = doc_field(16.0, "scaling numerator (scale = alpha / r)")
    target_modules: list[str] = doc_field(
        ["to_q", "to_k", "to_v", "to_out.0"], "UNet module names that get an adapter"
    )

    def __post_init__(self) -> None:
        if self.r < 1:
            raise ValueError(f"lora.r must be >= 1, got {self.r}")
        if not self.target_modules:
            raise ValueError("lora.target_modules must name at least one module")


@dataclass
class ImageTrainConfig:
    """Reward-conditioned fine-tuning of the UNet on the noise-prediction loss."""

    data: str = doc_field("", "a `ric image label` output directory")
    output: str = doc_field("", "output directory: weights, checkpoints, log, config")
    max_steps: int = doc_field(1000, "optimizer steps")
    batch_size: int = doc_field(16, "images per micro-batch")
    gradient_accumulation_steps: int = doc_field(
        1, "micro-batches per optimizer step (the step's batch: their product)"
    )
    learning_rate: float = doc_field(1e-5, "peak learning rate")
    lr_schedule: str = doc_field("constant", "linear (decay to 0), constant or cosine")
    warmup_steps: int = doc_field(0, "linear warm-up steps")
    weight_decay: float = doc_field(1e-2, "AdamW weight decay")
    max_grad_norm: float = doc_field(1.0, "gradient clipping norm (0: off)")
    caption_dropout: float = doc_field(
        0.05, "probability of training on the empty caption, for classifier-free guidance"
    )
    train_text_encoder: bool | None = doc_field(
        None,
        "also train the text encoder (None: yes for the embedded model, which is built from "
        "scratch; no for a pretrained one, as in the paper)",
    )
    random_flip: bool = doc_field(False, "flip images left-right at random")
    save_steps: int = doc_field(200, "save a resumable checkpoint every N steps")
    keep_checkpoints: int = doc_field(1, "checkpoints kept on disk (older ones are deleted)")
    log_steps: int = doc_field(20, "log the mean loss every N steps")
    seed: int = doc_field(0, "seed of data order, noise, timesteps and caption dropout")

    def __post_init__(self) -> None:
        check_choice("train.lr_schedule", self.lr_schedule, LR_SCHEDULES)
        for key in (
            "max_steps",
            "batch_size",
            "gradient_accumulation_steps",
            "save_steps",
            "keep_checkpoints",
            "log_steps",
        ):
            if getattr(self, key) < 1:
                raise ValueError(f"train.{key} must be >= 1, got {getattr(self, key)}")
        if not 0 <= self.caption_dropout < 1:
            raise ValueError(f"train.caption_dropout must be in [0, 1), got {self.caption_dropout}")


@dataclass
class ImageGenerationConfig:
    """How images are sampled (the paper: DDIM, 50 steps, guidance 7.5)."""

    steps: int = doc_field(50, "DDIM scheduler steps")
    guidance_scale: float = doc_field(7.5, "classifier-free guidance scale (1: no guidance)")
    eta: float = doc_field(0.0, "DDIM eta (0: deterministic given the starting noise)")
    batch_size: int = doc_field(16, "images denoised together")
    seed: int = doc_field(0, "seed of the starting noise (image k of a call uses seed + k)")

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise ValueError(f"generation.steps must be >= 1, got {self.steps}")
        if self.batch_size < 1:
            raise ValueError(f"generation.batch_size must be >= 1, got {self.batch_size}")
        if self.guidance_scale < 1:
            raise ValueError(
                f"generation.guidance_scale must be >= 1 (1: no guidance), "
                f"got {self.guidance_scale}"
            )


@dataclass
class ImageEvaluateConfig:
    """The preference sweep over held-out captions."""

    model: str = doc_field("", "a `ric image train` output directory")
    prompts: str = doc_field("", "held-out captions: JSONL, Parquet, CSV or a text file")
    prompt_column: str = doc_field("caption", "column of the held-out captions")
    num_prompts: int = doc_field(16, "held-out captions used (the first N)")
    images_per_prompt: int = doc_field(2, "images per (preference, caption), each its own seed")
    output: str = doc_field("", "output directory: tables, plots, image grid, metrics, report")
    grid: str = doc_field("paper", "paper (11 points / 13 vectors), lattice, or explicit")
    divisions: int = doc_field(10, "lattice divisions per objective when grid is lattice")
    preferences: list[list[float]] = doc_field([], "the preferences when grid is explicit")
    reference: list[float] | None = doc_field(
        None, "hypervolume reference point in raw reward units (None: the worst mean, minus 1)"
    )
    probe: bool = doc_field(
        True, "run the behavioural probe (each objective asked at its low and high end)"
    )
    grid_captions: int = doc_field(4, "captions (rows) shown in the report's image grid")
    resamples: int = doc_field(
        1000,
        "resamples of the held-out captions for the 95% intervals of the hypervolume and of "
        "Spearman(w_1, mean r_i) (0: off)",
    )

    def __post_init__(self) -> None:
        check_choice("evaluate.grid", self.grid, GRIDS)
        for key in ("num_prompts", "images_per_prompt", "grid_captions"):
            if getattr(self, key) < 1:
                raise ValueError(f"evaluate.{key} must be >= 1, got {getattr(self, key)}")
        if self.resamples < 0:
            raise ValueError(f"evaluate.resamples must be >= 0 (0: off), got {self.resamples}")


@dataclass
class ImageRicConfig:
    """Everything one `ric image` run needs; each command reads the sections it uses."""

    data: ImageDataConfig = doc_field(None, "input (image, caption) rows")
    rewards: list[RewardConfig] = doc_field(
        [], "objectives, in order (R1, R2, ...); types from `ric image rewards`"
    )
    label: ImageLabelConfig = doc_field(None, "labeling settings")
    template: ImageTemplateConfig = doc_field(None, "how rewards are appended to the caption")
    mapping: MappingConfig = doc_field(None, "preference-to-reward mapping")
    model: ImageModelConfig = doc_field(None, "text-to-image model")
    lora: ImageLoraConfig = doc_field(None, "LoRA on the UNet")
    train: ImageTrainConfig = doc_field(None, "reward-conditioned fine-tuning")
    generation: ImageGenerationConfig = doc_field(None, "sampling settings")
    evaluate: ImageEvaluateConfig = doc_field(None, "preference sweep")

    def __post_init__(self) -> None:
        fill_default_sections(self)
