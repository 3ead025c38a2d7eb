"""Name -> image scorer: the rewards of RiC's text-to-image experiments, beside the text registry.

An image reward maps a batch of (caption, image) pairs to one float per pair, higher is better.
The paper's objectives are aesthetic (the LAION predictor) and compressibility (minus the JPEG
size, as in DDPO); colourfulness, sharpness and BRISQUE (whose model ships in its wheel) are
offline alternatives that need no download. Users name their own code as
``"package.module:function"``, taking ``(captions, images)``: it is loaded and its options
checked by the same code as the text rewards (:mod:`ric.rewards.user`).

Heavy libraries are imported when a scorer is built, so importing this module stays fast. Every
``score`` goes through :func:`score_images_checked` (input types, empty batch, float64 (n,)
finite output).
"""

from __future__ import annotations

import io
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np
from numpy.typing import ArrayLike

from ric.rewards.base import as_scores
from ric.rewards.user import check_options, load_user_score
from ric.runtime import default_device, quiet_transformers

if TYPE_CHECKING:
    import torch
    from PIL import Image

DEFAULT_CLIP_MODEL = "openai/clip-vit-large-patch14"
# The predictor DDPO-style work uses (trained on SAC, LAION logos and AVA), mirrored on the Hub
# from the LAION repository.
AESTHETIC_HUB_REPO = "camenduru/improved-aesthetic-predictor"
DEFAULT_AESTHETIC_PREDICTOR = f"{AESTHETIC_HUB_REPO}/sac+logos+ava1-l14-linearMSE.pth"
# BRISQUE's scale runs from 0 (best) to about 100; an image it cannot rate (one flat colour,
# whose statistics are 0/0) gets that bad end rather than NaN, so a run never stops on it.
FLAT_BRISQUE = 100.0


@runtime_checkable
class ImageRewardFunction(Protocol):
    """Scores images generated for captions; higher is better."""

    def score(self, captions: Sequence[str], images: Sequence[Image.Image]) -> np.ndarray:
        """Return the rewards of a batch, shape (n,), float64, finite, in the scorer's units."""
        ...


def score_images_checked(
    name: str,
    score: Callable[[list[str], list[Image.Image]], ArrayLike],
    captions: Sequence[str],
    images: Sequence[Image.Image],
) -> np.ndarray:
    """Run ``score`` on a validated batch; return finite float64 scores of shape (n,).

    An empty batch returns an empty array without calling ``score``. ``name`` identifies the
    scorer in error messages, so a user function's wrong output is traced to its spec.
    """
    from PIL import Image

    if len(captions) != len(images):
        raise ValueError(
            f"got {len(captions)} captions but {len(images)} images; they must pair up one to one"
        )
    for index, caption in enumerate(captions):
        if not isinstance(caption, str):
            raise ValueError(f"caption {index} is {type(caption).__name__}, not str: {caption!r}")
    for index, image in enumerate(images):
        if not isinstance(image, Image.Image):
            raise ValueError(f"image {index} is {type(image).__name__}, not a PIL image")
    if not images:
        return np.zeros(0, dtype=np.float64)
    scores = as_scores(name, score(list(captions), list(images)), len(images), "(caption, image)")
    bad = np.flatnonzero(~np.isfinite(scores))
    if bad.size:
        raise ValueError(
            f"reward {name!r} returned {scores[bad[0]]} for image {bad[0]}; scores must be finite"
        )
    return scores


def _check_resolution(resolution: int) -> None:
    if resolution < 0:
        raise ValueError(f"resolution must be >= 0 (0: keep the size), got {resolution}")


def _prepared(image: Image.Image, mode: str, resolution: int) -> Image.Image:
    """``image`` in ``mode``, resized (bicubic) to resolution x resolution unless 0, so images of
    any size are measured at one size: JPEG bytes and Laplacian statistics depend on it."""
    from PIL import Image

    image = image.convert(mode)
    if resolution:
        image = image.resize((resolution, resolution), Image.Resampling.BICUBIC)
    return image


class Compressibility:
    """Minus the JPEG size in kB (bytes / 1000) at quality 95 and 512 px, as in DDPO and RiC."""

    def __init__(self, resolution: int = 512, quality: int = 95) -> None:
        """``resolution``: side the image is resized to first (0: as is); ``quality``: Pillow's
        JPEG quality, 1-100."""
        _check_resolution(resolution)
        if not 1 <= quality <= 100:
            raise ValueError(f"quality must be in 1..100, got {quality}")
        self.resolution = resolution
        self.quality = quality

    def score(self, captions: Sequence[str], images: Sequence[Image.Image]) -> np.ndarray:
        return score_images_checked("compressibility", self._score, captions, images)

    def _score(self, captions: list[str], images: list[Image.Image]) -> list[float]:
        scores = []
        for image in images:
            buffer = io.BytesIO()
            _prepared(image, "RGB", self.resolution).save(
                buffer, format="JPEG", quality=self.quality
            )
            scores.append(-buffer.tell() / 1000)
        return scores


class Colourfulness:
    """Hasler & Suesstrunk (2003) colourfulness M = sigma_rgyb + 0.3 mu_rgyb on 0-255 RGB."""

    def score(self, captions: Sequence[str], images: Sequence[Image.Image]) -> np.ndarray:
        return score_images_checked("colourfulness", self._score, captions, images)

    def _score(self, captions: list[str], images: list[Image.Image]) -> list[float]:
        scores = []
        for image in images:
            rgb = np.asarray(image.convert("RGB"), dtype=np.float64)
            red, green, blue = rgb[..., 0], rgb[..., 1], rgb[..., 2]
            rg = red - green
            yb = 0.5 * (red + green) - blue
            sigma = np.hypot(rg.std(), yb.std())
            mu = np.hypot(rg.mean(), yb.mean())
            scores.append(float(sigma + 0.3 * mu))
        return scores


class Sharpness:
    """Variance of the Laplacian of the grayscale image (0-255) at 512 px; higher is sharper."""

    def __init__(self, resolution: int = 512) -> None:
        """``resolution``: side the image is resized to first (0: as is)."""
        _check_resolution(resolution)
        self.resolution = resolution

    def score(self, captions: Sequence[str], images: Sequence[Image.Image]) -> np.ndarray:
        return score_images_checked("sharpness", self._score, captions, images)

    def _score(self, captions: list[str], images: list[Image.Image]) -> list[float]:
        from scipy.ndimage import laplace

        scores = []
        for image in images:
            gray = np.asarray(_prepared(image, "L", self.resolution), dtype=np.float64)
            scores.append(float(laplace(gray).var()))
        return scores


class Brisque:
    """Minus BRISQUE (no-reference quality, 0 best to ~100) from the brisque package's SVR."""

    def __init__(self, resolution: int = 512) -> None:
        """``resolution``: side the image is resized to first (0: as is)."""
        _check_resolution(resolution)
        self.resolution = resolution
        self._model = _brisque_model()

    def score(self, captions: Sequence[str], images: Sequence[Image.Image]) -> np.ndarray:
        return score_images_checked("brisque", self._score, captions, images)

    def _score(self, captions: list[str], images: list[Image.Image]) -> list[float]:
        scores = []
        for image in images:
            rgb = np.asarray(_prepared(image, "RGB", self.resolution))
            with np.errstate(divide="ignore", invalid="ignore"):  # flat images: 0/0, see below
                value = float(self._model.score(rgb))
            scores.append(-value if np.isfinite(value) else -FLAT_BRISQUE)
        return scores


def _brisque_model() -> Any:
    """brisque's BRISQUE with its features made plain floats: 0.2.0 leaves some as 1-element
    arrays, which numpy 2 refuses to convert with ``float()``."""
    from brisque import BRISQUE

    class FloatFeatures(BRISQUE):
        def calculate_brisque_features(
            self, image: np.ndarray, kernel_size: int = 7, sigma: float = 7 / 6
        ) -> np.ndarray:
            features = super().calculate_brisque_features(image, kernel_size, sigma)
            return np.array([np.asarray(value, dtype=np.float64).item() for value in features])

    return FloatFeatures(url=False)


class Aesthetic:
    """LAION improved aesthetic predictor v2: an MLP on CLIP ViT-L/14 embeddings, about 1-10."""

    def __init__(
        self,
        clip_model: str = DEFAULT_CLIP_MODEL,
        predictor: str = DEFAULT_AESTHETIC_PREDICTOR,
        device: str | None = None,
        batch_size: int = 32,
    ) -> None:
        """``clip_model``: CLIP Hub id or local folder (its vision tower and image processor);
        ``predictor``: the MLP's state dict, a local .pth/.safetensors file or
        "owner/repo/filename" on the Hub; ``device``: None picks CUDA when available."""
        from transformers import AutoImageProcessor, CLIPVisionModelWithProjection

        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.batch_size = batch_size
        self.device = device or default_device()
        self._processor = AutoImageProcessor.from_pretrained(clip_model)
        self._clip = CLIPVisionModelWithProjection.from_pretrained(clip_model)
        self._mlp = aesthetic_mlp(load_state_dict(predictor_file(predictor)))
        width = self._mlp[0].in_features
        if width != self._clip.config.projection_dim:
            raise ValueError(
                f"predictor {predictor!r} reads {width}-dim embeddings but CLIP {clip_model!r} "
                f"makes {self._clip.config.projection_dim}-dim ones; pair it with its own CLIP"
            )
        self._clip.to(self.device).eval()
        self._mlp.to(self.device).eval()

    def score(self, captions: Sequence[str], images: Sequence[Image.Image]) -> np.ndarray:
        return score_images_checked("aesthetic", self._score, captions, images)

    def _score(self, captions: list[str], images: list[Image.Image]) -> np.ndarray:
        import torch

        scores = []
        with torch.inference_mode():
            for start in range(0, len(images), self.batch_size):
                batch = [image.convert("RGB") for image in images[start : start + self.batch_size]]
                pixels = self._processor(images=batch, return_tensors="pt")["pixel_values"]
                embeddings = self._clip(pixel_values=pixels.to(self.device)).image_embeds
                # The predictor was trained on unit-length embeddings.
                embeddings = torch.nn.functional.normalize(embeddings.float(), dim=-1)
                scores.append(self._mlp(embeddings)[:, 0].double().cpu().numpy())
        return np.concatenate(scores)


def aesthetic_mlp(state_dict: Mapping[str, torch.Tensor]) -> torch.nn.Sequential:
    """The improved-aesthetic-predictor MLP (input size from ``state_dict``) with its weights.

    The dropouts (identity at inference) keep the layer indices of the LAION checkpoints.
    """
    from torch import nn

    weights = {key.removeprefix("layers."): value for key, value in state_dict.items()}
    if "0.weight" not in weights:
        raise ValueError(
            "the predictor is not an improved-aesthetic-predictor state dict: no layers.0.weight"
        )
    mlp = nn.Sequential(
        nn.Linear(weights["0.weight"].shape[1], 1024),
        nn.Dropout(0.2),
        nn.Linear(1024, 128),
        nn.Dropout(0.2),
        nn.Linear(128, 64),
        nn.Dropout(0.1),
        nn.Linear(64, 16),
        nn.Linear(16, 1),
    )
    try:
        mlp.load_state_dict(weights)
    except RuntimeError as error:
        raise ValueError(
            f"the predictor is not an improved-aesthetic-predictor state dict: {error}"
        ) from error
    return mlp


def predictor_file(predictor: str) -> str:
    """Local path of ``predictor``: the file itself, or "owner/repo/filename" from the Hub."""
    if Path(predictor).is_file():
        return predictor
    owner, _, rest = predictor.partition("/")
    name, _, filename = rest.partition("/")
    if not (owner and name and filename) or predictor.startswith((".", "/", "~")):
        raise ValueError(
            f"predictor {predictor!r}: no such file, and not a Hub 'owner/repo/filename'"
        )
    from huggingface_hub import hf_hub_download

    try:
        return hf_hub_download(repo_id=f"{owner}/{name}", filename=filename)
    except OSError as error:  # the Hub's not-found, offline and HTTP errors
        raise ValueError(
            f"predictor {predictor!r}: not a local file, and {filename!r} could not be fetched "
            f"from the Hub repository {owner}/{name}: {error}"
        ) from error


def load_state_dict(path: str) -> dict[str, torch.Tensor]:
    """Tensors of a .safetensors file, or of a torch-saved state dict (tensors only)."""
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file

        return load_file(path)
    import torch

    return torch.load(path, map_location="cpu", weights_only=True)


class UserImageReward:
    """A user's image scorer with the shared input and output checks around it."""

    def __init__(
        self, spec: str, score: Callable[[list[str], list[Image.Image]], ArrayLike]
    ) -> None:
        self.spec = spec
        self._score = score

    def score(self, captions: Sequence[str], images: Sequence[Image.Image]) -> np.ndarray:
        return score_images_checked(self.spec, self._score, captions, images)


IMAGE_REWARDS: dict[str, Callable[..., ImageRewardFunction]] = {
    "aesthetic": Aesthetic,
    "brisque": Brisque,
    "colourfulness": Colourfulness,
    "compressibility": Compressibility,
    "sharpness": Sharpness,
}
ALIASES = {"colorfulness": "colourfulness"}  # accepted, not listed


def available_image_rewards() -> list[str]:
    """Registered image reward names, sorted."""
    return sorted(IMAGE_REWARDS)


def describe_image_rewards() -> dict[str, str]:
    """Registered image reward names (sorted) -> one-line description."""
    return {
        name: (IMAGE_REWARDS[name].__doc__ or "").strip().splitlines()[0]
        for name in sorted(IMAGE_REWARDS)
    }


def create_image_reward(type: str, options: Mapping[str, Any] | None = None) -> ImageRewardFunction:
    """Build the image scorer ``type`` (a registered name or ``"package.module:function"``).

    ``options`` are the scorer's keyword arguments; unknown or missing ones raise ValueError
    naming the key, before any model is loaded.
    """
    quiet_transformers()  # the aesthetic predictor's CLIP loads without its bars
    options = dict(options or {})
    name = ALIASES.get(type, type)
    if name in IMAGE_REWARDS:
        factory = IMAGE_REWARDS[name]
        check_options(type, factory, options)
        return factory(**options)
    if ":" in type:
        return UserImageReward(type, load_user_score(type, options, inputs="captions, images"))
    raise ValueError(
        f"unknown image reward {type!r}; valid: {', '.join(available_image_rewards())} "
        "or 'package.module:function'"
    )
