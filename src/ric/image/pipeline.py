"""The text-to-image model: its parts, how they are built or loaded, saved, and sampled.

One ``ImagePipeline`` holds a diffusers UNet (noise prediction conditioned on the text), a
transformers CLIP text encoder and its tokenizer, the noise schedule, and a VAE when the model
works in latent space (Stable Diffusion) or none when it denoises pixels (the embedded model).

* ``model.source: embedded``: a small pixel-space model built in code (``build_embedded``) and
  trained from scratch: a 3-level UNet2DConditionModel, a 2-layer CLIP text encoder, and a
  word-level tokenizer whose vocabulary is the training captions' words plus what reward values
  are written with (digits, '.', '-', the markers).
* any other source: a Stable Diffusion pipeline folder (local, or a Hub id for users with a
  network), loaded part by part (``unet/``, ``text_encoder/``, ``tokenizer/``, ``vae/``,
  ``scheduler/``), without the safety checker, which plays no part in training or scoring.

Sampling (``sample_images``) is DDIM with classifier-free guidance against the empty caption, the
paper's setting; image k of a call starts from its own seed, so the same seed gives the same
starting noise whatever the caption or the batch, and a preference sweep compares like with like.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from ric.runtime import default_device

PIPELINE_FILE = "ric_pipeline.json"
EMBEDDED_RESOLUTION = 32
EMBEDDED_MAX_TOKENS = 48
# What reward values and markers are spelled with (ric.core.template): one decimal, a sign.
VALUE_PIECES = [*"0123456789", ".", "-", "<", ">"]
SPECIAL_TOKENS = {"pad": "[PAD]", "unk": "[UNK]", "bos": "[BOS]", "eos": "[EOS]"}
_WORD = re.compile(r"\w+|[^\w\s]+")  # the pieces of tokenizers' Whitespace pre-tokenizer


@dataclass
class ImagePipeline:
    """The parts of a text-to-image model (see the module docstring)."""

    unet: Any
    text_encoder: Any
    tokenizer: Any
    scheduler_config: dict[str, Any]
    resolution: int
    vae: Any = None
    source: str = ""  # what the untrained parts were built or loaded from

    @property
    def device(self) -> torch.device:
        return next(self.unet.parameters()).device

    @property
    def sample_shape(self) -> tuple[int, int, int]:
        """(channels, height, width) of what the UNet denoises: pixels, or VAE latents."""
        side = self.resolution // (self.vae_scale if self.vae is not None else 1)
        return (self.unet.config.in_channels, side, side)

    @property
    def vae_scale(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    @property
    def max_tokens(self) -> int:
        return int(self.tokenizer.model_max_length)


def caption_vocabulary(captions: Sequence[str], num_objectives: int) -> list[str]:
    """The embedded tokenizer's words: every lower-cased piece of the captions, the marker
    words ``R1``..``RN`` and what values are written with, sorted so the same captions always
    give the same ids."""
    pieces = {piece for caption in captions for piece in _WORD.findall(caption.lower())}
    pieces |= {f"r{i}" for i in range(1, num_objectives + 1)} | set(VALUE_PIECES)
    return sorted(pieces)


def build_embedded_tokenizer(words: Sequence[str]) -> Any:
    """A word-level tokenizer over ``words`` (lower-cased, split like ``_WORD``), wrapped as a
    transformers fast tokenizer so it saves and loads like any other."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    specials = list(SPECIAL_TOKENS.values())
    vocab = {token: index for index, token in enumerate([*specials, *words])}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token=SPECIAL_TOKENS["unk"]))
    tokenizer.normalizer = normalizers.Lowercase()
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    bos, eos = SPECIAL_TOKENS["bos"], SPECIAL_TOKENS["eos"]
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A {eos}", special_tokens=[(bos, vocab[bos]), (eos, vocab[eos])]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        model_max_length=EMBEDDED_MAX_TOKENS,
        **{f"{role}_token": token for role, token in SPECIAL_TOKENS.items()},
    )


def build_embedded(captions: Sequence[str], num_objectives: int, seed: int) -> ImagePipeline:
    """The embedded model, freshly initialized (``seed``), for these training captions."""
    from diffusers import DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    tokenizer = build_embedded_tokenizer(caption_vocabulary(captions, num_objectives))
    torch.manual_seed(seed)
    width = 64
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(tokenizer),
            hidden_size=width,
            intermediate_size=4 * width,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=EMBEDDED_MAX_TOKENS,
            pad_token_id=tokenizer.pad_token_id,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )
    )
    unet = UNet2DConditionModel(
        sample_size=EMBEDDED_RESOLUTION,
        in_channels=3,
        out_channels=3,
        block_out_channels=(32, 64, 64),
        # Cross-attention to the caption at the 8x8 level only: what the caption sets (shape,
        # colours, how much detail) is global, and attention at 16x16 doubled the step time.
        down_block_types=("DownBlock2D", "DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D", "UpBlock2D"),
        layers_per_block=1,
        cross_attention_dim=width,
        attention_head_dim=8,
        norm_num_groups=8,
    )
    scheduler = DDPMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2")
    return ImagePipeline(
        unet=unet,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        scheduler_config=dict(scheduler.config),
        resolution=EMBEDDED_RESOLUTION,
        source="embedded",
    )


def load_pipeline(
    source: str, dtype: torch.dtype = torch.float32, device: str | None = None
) -> ImagePipeline:
    """A diffusers-layout folder (local or a Hub id) part by part: ``unet/``, ``text_encoder/``,
    ``tokenizer/``, ``scheduler/`` and, in latent-space models, ``vae/``."""
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import AutoTokenizer, CLIPTextModel

    local = Path(source)
    if local.exists() and not (local / "unet").is_dir():
        raise ValueError(
            f"{source!r} is not a diffusers pipeline folder: it has no unet/ (expected unet/, "
            "text_encoder/, tokenizer/, scheduler/ and, for latent models, vae/)"
        )
    described = _read_description(local)
    has_vae = (local / "vae").is_dir() if local.exists() else True
    device = device or default_device()
    unet = UNet2DConditionModel.from_pretrained(source, subfolder="unet", torch_dtype=dtype)
    text_encoder = CLIPTextModel.from_pretrained(
        source, subfolder="text_encoder", torch_dtype=dtype
    )
    tokenizer = AutoTokenizer.from_pretrained(source, subfolder="tokenizer")
    scheduler = DDPMScheduler.from_pretrained(source, subfolder="scheduler")
    vae = (
        AutoencoderKL.from_pretrained(source, subfolder="vae", torch_dtype=dtype).to(device)
        if has_vae
        else None
    )
    sample_size = int(unet.config.sample_size)
    resolution = described.get("resolution") or (
        sample_size * 2 ** (len(vae.config.block_out_channels) - 1) if vae else sample_size
    )
    return ImagePipeline(
        unet=unet.to(device),
        text_encoder=text_encoder.to(device),
        tokenizer=tokenizer,
        scheduler_config=dict(scheduler.config),
        resolution=int(resolution),
        vae=vae,
        source=described.get("source", source),
    )


def save_pipeline(pipeline: ImagePipeline, folder: Path, parts: Sequence[str]) -> None:
    """Write ``parts`` (any of unet, text_encoder, tokenizer, scheduler, vae) in the diffusers
    layout, and what they were built from (``ric_pipeline.json``)."""
    from diffusers import DDPMScheduler

    folder.mkdir(parents=True, exist_ok=True)
    writers: dict[str, Callable[[Path], None]] = {
        "unet": pipeline.unet.save_pretrained,
        "text_encoder": pipeline.text_encoder.save_pretrained,
        "tokenizer": pipeline.tokenizer.save_pretrained,
        "scheduler": DDPMScheduler.from_config(pipeline.scheduler_config).save_pretrained,
        "vae": lambda path: pipeline.vae.save_pretrained(path),
    }
    for part in parts:
        writers[part](folder / part)
    description = {"source": pipeline.source, "resolution": pipeline.resolution}
    (folder / PIPELINE_FILE).write_text(json.dumps(description, indent=2) + "\n")


def _read_description(folder: Path) -> dict[str, Any]:
    path = folder / PIPELINE_FILE
    return json.loads(path.read_text()) if path.is_file() else {}


def encode_captions(pipeline: ImagePipeline, captions: Sequence[str]) -> torch.Tensor:
    """The text encoder's last hidden states (B, T, D), padded to the tokenizer's length."""
    tokens = pipeline.tokenizer(
        list(captions),
        padding="max_length",
        max_length=pipeline.max_tokens,
        truncation=True,
        return_tensors="pt",
    )
    return pipeline.text_encoder(tokens.input_ids.to(pipeline.device))[0]


def count_tokens(pipeline: ImagePipeline, caption: str) -> int:
    return len(pipeline.tokenizer(caption).input_ids)


def fit_caption(pipeline: ImagePipeline, caption: str, conditioned: Callable[[str], str]) -> str:
    """``conditioned(caption)``, with the caption's last words dropped until it fits the text
    encoder: the reward values come last and must never be the part truncation cuts."""
    words = caption.split()
    while True:
        text = conditioned(" ".join(words))
        if count_tokens(pipeline, text) <= pipeline.max_tokens or not words:
            break
        words.pop()
    if count_tokens(pipeline, text) > pipeline.max_tokens:
        raise ValueError(
            f"the reward values alone ({text!r}) do not fit the text encoder's "
            f"{pipeline.max_tokens} tokens"
        )
    return text


def to_pixels(images: Sequence[Image.Image], resolution: int) -> torch.Tensor:
    """Images as a (B, 3, R, R) tensor in [-1, 1]: centre-cropped square, resized to R."""
    arrays = []
    for image in images:
        image = image.convert("RGB")
        side = min(image.size)
        left, top = (image.width - side) // 2, (image.height - side) // 2
        image = image.crop((left, top, left + side, top + side))
        if side != resolution:
            image = image.resize((resolution, resolution), Image.Resampling.BICUBIC)
        arrays.append(np.asarray(image, dtype=np.float32))
    batch = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2)
    return batch / 127.5 - 1


def to_images(pixels: torch.Tensor) -> list[Image.Image]:
    """(B, 3, H, W) in [-1, 1] back to PIL images (values outside are clipped)."""
    array = ((pixels.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return [Image.fromarray(image.permute(1, 2, 0).cpu().numpy()) for image in array]


def encode_images(pipeline: ImagePipeline, pixels: torch.Tensor, generator: Any) -> torch.Tensor:
    """What the UNet denoises for these images: the pixels, or scaled VAE latents."""
    pixels = pixels.to(pipeline.device, dtype=pipeline.unet.dtype)
    if pipeline.vae is None:
        return pixels
    posterior = pipeline.vae.encode(pixels).latent_dist
    return posterior.sample(generator=generator) * pipeline.vae.config.scaling_factor


def decode_samples(pipeline: ImagePipeline, samples: torch.Tensor) -> torch.Tensor:
    if pipeline.vae is None:
        return samples
    return pipeline.vae.decode(samples / pipeline.vae.config.scaling_factor).sample


def starting_noise(pipeline: ImagePipeline, seeds: Sequence[int]) -> torch.Tensor:
    """One noise sample per seed, drawn on the CPU so a seed gives the same image anywhere."""
    noise = [
        torch.randn(pipeline.sample_shape, generator=torch.Generator().manual_seed(int(seed)))
        for seed in seeds
    ]
    return torch.stack(noise).to(pipeline.device, dtype=pipeline.unet.dtype)


@torch.no_grad()
def sample_images(
    pipeline: ImagePipeline,
    captions: Sequence[str],
    seeds: Sequence[int],
    steps: int,
    guidance_scale: float,
    eta: float = 0.0,
    batch_size: int = 16,
    on_batch: Callable[[int], None] | None = None,
) -> list[Image.Image]:
    """DDIM sampling with classifier-free guidance: one image per (caption, seed)."""
    from diffusers import DDIMScheduler

    if len(captions) != len(seeds):
        raise ValueError(f"{len(captions)} captions but {len(seeds)} seeds")
    pipeline.unet.eval()
    pipeline.text_encoder.eval()
    scheduler = DDIMScheduler.from_config(pipeline.scheduler_config)
    scheduler.set_timesteps(steps)
    guided = guidance_scale != 1
    empty = encode_captions(pipeline, [""]) if guided else None
    images: list[Image.Image] = []
    for start in range(0, len(captions), batch_size):
        batch_captions = list(captions[start : start + batch_size])
        batch_seeds = list(seeds[start : start + batch_size])
        text = encode_captions(pipeline, batch_captions)
        if guided:
            text = torch.cat([empty.expand_as(text), text])
        samples = starting_noise(pipeline, batch_seeds) * scheduler.init_noise_sigma
        # DDIM's eta > 0 adds noise at every step: drawn per image too, from its own seed.
        variance = [torch.Generator().manual_seed(int(seed) + 1) for seed in batch_seeds]
        for timestep in scheduler.timesteps:
            inputs = torch.cat([samples, samples]) if guided else samples
            inputs = scheduler.scale_model_input(inputs, timestep)
            predicted = pipeline.unet(inputs, timestep, encoder_hidden_states=text).sample
            if guided:
                unconditional, conditional = predicted.chunk(2)
                predicted = unconditional + guidance_scale * (conditional - unconditional)
            noise = None
            if eta > 0:
                noise = torch.stack(
                    [torch.randn(samples.shape[1:], generator=g) for g in variance]
                ).to(samples)
            samples = scheduler.step(
                predicted, timestep, samples, eta=eta, variance_noise=noise
            ).prev_sample
        images.extend(to_images(decode_samples(pipeline, samples)))
        if on_batch is not None:
            on_batch(len(batch_captions))
    return images
