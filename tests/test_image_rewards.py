"""Image rewards: hand-checked values of the model-free scorers, the direction of the quality
scores, the aesthetic predictor on a tiny CLIP built here, the registry and user code.

The user functions below are loaded by the registry as 'test_image_rewards:NAME'.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageFilter
from safetensors.torch import save_file
from skimage import data as skimage_data

from ric.image.rewards import (
    ImageRewardFunction,
    aesthetic_mlp,
    available_image_rewards,
    create_image_reward,
    describe_image_rewards,
)

NAMES = ["aesthetic", "brisque", "colourfulness", "compressibility", "sharpness"]


def redness(captions, images, weight=1.0):
    """A user function: weight x the mean red channel (0-1), as a list."""
    return [weight * np.asarray(image.convert("RGB"))[..., 0].mean() / 255 for image in images]


def one_short(captions, images):
    """Broken on purpose: one score fewer than images."""
    return np.zeros(len(images) - 1)


def not_finite(captions, images):
    """Broken on purpose: NaN for the second image."""
    return [0.0, float("nan")][: len(images)]


def noise(size: tuple[int, int], seed: int = 0) -> Image.Image:
    """Uniform RGB noise, width x height."""
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    return Image.fromarray(pixels)


def flat(colour: tuple[int, int, int], size: tuple[int, int] = (64, 48)) -> Image.Image:
    return Image.new("RGB", size, colour)


def with_noise(image: Image.Image, std: float, seed: int = 0) -> Image.Image:
    """``image`` plus Gaussian noise of standard deviation ``std`` (0-255), clipped."""
    pixels = np.asarray(image, dtype=np.float64)
    noisy = pixels + np.random.default_rng(seed).normal(0.0, std, pixels.shape)
    return Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8))


@pytest.fixture(scope="module")
def photo() -> Image.Image:
    """A natural photo (skimage's astronaut) at 128 px: the quality scores are made for those."""
    return Image.fromarray(skimage_data.astronaut()).resize((128, 128), Image.Resampling.BICUBIC)


# --- compressibility ---------------------------------------------------------------------------


def test_compressibility_is_minus_the_jpeg_kilobytes_at_512_px_quality_95() -> None:
    image = noise((40, 30))
    buffer = io.BytesIO()
    image.resize((512, 512), Image.Resampling.BICUBIC).save(buffer, format="JPEG", quality=95)
    as_is = io.BytesIO()
    image.save(as_is, format="JPEG", quality=50)

    default = create_image_reward("compressibility").score(["c"], [image])
    unresized = create_image_reward("compressibility", {"resolution": 0, "quality": 50})

    np.testing.assert_array_equal(default, [-len(buffer.getvalue()) / 1000])
    np.testing.assert_array_equal(unresized.score(["c"], [image]), [-len(as_is.getvalue()) / 1000])
    assert default.dtype == np.float64


def test_a_flat_image_is_more_compressible_than_noise() -> None:
    scores = create_image_reward("compressibility").score(
        ["c", "c"], [flat((90, 140, 200)), noise((64, 64))]
    )

    assert scores[0] > scores[1]
    assert np.all(scores < 0)


def test_compressibility_converts_grey_and_transparent_images_to_rgb() -> None:
    grey = flat((128, 128, 128)).convert("L")
    transparent = flat((128, 128, 128)).convert("RGBA")

    scores = create_image_reward("compressibility").score(
        ["c"] * 3, [flat((128, 128, 128)), grey, transparent]
    )

    assert scores[0] == scores[1] == scores[2]


# --- colourfulness -----------------------------------------------------------------------------


def test_colourfulness_of_grey_is_zero() -> None:
    scores = create_image_reward("colourfulness").score(
        ["c", "c"], [flat((128, 128, 128)), flat((0, 0, 0))]
    )

    np.testing.assert_array_equal(scores, [0.0, 0.0])


def test_colourfulness_of_half_red_half_blue_follows_the_formula() -> None:
    image = Image.new("RGB", (10, 4), (255, 0, 0))
    image.paste((0, 0, 255), (5, 0, 10, 4))
    # red: rg = 255, yb = 127.5; blue: rg = 0, yb = -255; half the pixels each
    mean_rg, std_rg = 127.5, 127.5
    mean_yb, std_yb = (127.5 - 255) / 2, (127.5 + 255) / 2
    expected = np.hypot(std_rg, std_yb) + 0.3 * np.hypot(mean_rg, mean_yb)

    scores = create_image_reward("colourfulness").score(["c"], [image])

    np.testing.assert_allclose(scores, [expected], rtol=1e-12)


def test_colorfulness_is_an_alias() -> None:
    image = noise((16, 16))

    american = create_image_reward("colorfulness").score(["c"], [image])

    np.testing.assert_array_equal(
        american, create_image_reward("colourfulness").score(["c"], [image])
    )


# --- sharpness and BRISQUE ---------------------------------------------------------------------


def test_sharpness_is_the_variance_of_the_laplacian() -> None:
    image = Image.new("L", (5, 5), 0)
    image.putpixel((2, 2), 255)
    # Laplacian: -4 x 255 at the centre, 255 at its four neighbours, 0 elsewhere; mean 0
    expected = ((4 * 255) ** 2 + 4 * 255**2) / 25

    scores = create_image_reward("sharpness", {"resolution": 0}).score(["c"], [image])

    np.testing.assert_allclose(scores, [expected], rtol=1e-12)


def test_sharpness_falls_with_blur_and_rises_with_noise(photo: Image.Image) -> None:
    """Blur removes high frequencies (lower score); noise adds some (higher score: the
    Laplacian cannot tell detail from noise)."""
    blurred = photo.filter(ImageFilter.GaussianBlur(2))

    clean, blurry, noisy = create_image_reward("sharpness").score(
        ["c"] * 3, [photo, blurred, with_noise(photo, 20)]
    )

    assert blurry < clean < noisy
    assert create_image_reward("sharpness").score(["c"], [flat((9, 9, 9))])[0] == 0.0


def test_brisque_falls_with_blur_and_with_noise(photo: Image.Image) -> None:
    """Minus BRISQUE: a clean photo scores higher (better) than blurred or noisy copies."""
    scorer = create_image_reward("brisque", {"resolution": 0})
    blurred = photo.filter(ImageFilter.GaussianBlur(2))

    clean, blurry, noisy = scorer.score(["c"] * 3, [photo, blurred, with_noise(photo, 20)])

    assert clean > blurry + 10
    assert clean > noisy + 5
    assert -100 < blurry < clean <= 0


@pytest.mark.filterwarnings("error")  # the 0/0 inside BRISQUE warns nothing
def test_brisque_of_a_flat_image_is_the_bad_end_of_its_scale() -> None:
    scores = create_image_reward("brisque").score(
        ["c", "c"], [flat((0, 0, 0)), flat((200, 10, 10))]
    )

    np.testing.assert_array_equal(scores, [-100.0, -100.0])


# --- aesthetic predictor on a tiny CLIP ---------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_aesthetic(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """A random tiny CLIP vision tower with projection (16-dim embeddings) and its image
    processor in ``clip/``, and a random predictor MLP for it as ``mlp.pth`` and
    ``mlp.safetensors``. Returns the folder and the MLP's state dict."""
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModelWithProjection

    root = tmp_path_factory.mktemp("tiny-aesthetic")
    torch.manual_seed(0)
    config = CLIPVisionConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        image_size=32,
        patch_size=8,
        projection_dim=16,
    )
    CLIPVisionModelWithProjection(config).save_pretrained(root / "clip")
    processor = CLIPImageProcessor(
        size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}
    )
    processor.save_pretrained(root / "clip")
    mlp = torch.nn.Sequential(
        torch.nn.Linear(16, 1024),
        torch.nn.Dropout(0.2),
        torch.nn.Linear(1024, 128),
        torch.nn.Dropout(0.2),
        torch.nn.Linear(128, 64),
        torch.nn.Dropout(0.1),
        torch.nn.Linear(64, 16),
        torch.nn.Linear(16, 1),
    )
    state = {f"layers.{key}": value.contiguous() for key, value in mlp.state_dict().items()}
    torch.save(state, root / "mlp.pth")
    save_file(state, root / "mlp.safetensors")
    return root, state


def test_aesthetic_scores_a_tiny_clip_as_computed_by_hand(
    tiny_aesthetic: tuple[Path, dict],
) -> None:
    from transformers import AutoImageProcessor, CLIPVisionModelWithProjection

    root, state = tiny_aesthetic
    options = {"clip_model": str(root / "clip"), "device": "cpu", "batch_size": 2}
    scorer = create_image_reward("aesthetic", {**options, "predictor": str(root / "mlp.pth")})
    images = [noise((48, 40), seed) for seed in range(3)]
    pixels = AutoImageProcessor.from_pretrained(root / "clip")(
        images=images[:1], return_tensors="pt"
    )["pixel_values"]
    with torch.no_grad():
        embedding = CLIPVisionModelWithProjection.from_pretrained(root / "clip")(
            pixel_values=pixels
        ).image_embeds[0]
    x = (embedding / embedding.norm()).double()
    for layer in (0, 2, 4, 6, 7):  # linear layers only: no activations, dropout is off
        x = state[f"layers.{layer}.weight"].double() @ x + state[f"layers.{layer}.bias"].double()

    scores = scorer.score(["a", "b", "c"], images)

    assert scores.shape == (3,)
    assert scores.dtype == np.float64
    assert np.all(np.isfinite(scores))
    assert scores[0] == pytest.approx(x.item(), rel=1e-6)  # float32 vs float64
    np.testing.assert_array_equal(scorer.score(["a", "b", "c"], images), scores)
    np.testing.assert_allclose(scorer.score(["b"], images[1:2]), scores[1:2], rtol=1e-6)
    safetensors = create_image_reward(
        "aesthetic", {**options, "predictor": str(root / "mlp.safetensors")}
    )
    np.testing.assert_array_equal(safetensors.score(["a", "b", "c"], images), scores)


def test_aesthetic_predictor_errors_name_the_problem(
    tiny_aesthetic: tuple[Path, dict], tmp_path: Path
) -> None:
    root, state = tiny_aesthetic
    options = {"clip_model": str(root / "clip"), "device": "cpu"}
    wide = aesthetic_mlp({**state, "layers.0.weight": torch.zeros(1024, 24)})
    torch.save({f"layers.{k}": v for k, v in wide.state_dict().items()}, tmp_path / "wide.pth")
    torch.save({"fc.weight": torch.zeros(1, 16)}, tmp_path / "other.pth")

    with pytest.raises(ValueError, match=r"reads 24-dim embeddings but CLIP .* makes 16-dim"):
        create_image_reward("aesthetic", {**options, "predictor": str(tmp_path / "wide.pth")})
    with pytest.raises(ValueError, match="not an improved-aesthetic-predictor state dict"):
        create_image_reward("aesthetic", {**options, "predictor": str(tmp_path / "other.pth")})
    with pytest.raises(ValueError, match="no such file, and not a Hub 'owner/repo/filename'"):
        create_image_reward("aesthetic", {**options, "predictor": str(tmp_path / "missing.pth")})
    with pytest.raises(ValueError, match="could not be fetched from the Hub repository org/repo"):
        create_image_reward("aesthetic", {**options, "predictor": "org/repo/mlp.pth"})


# --- registry ----------------------------------------------------------------------------------


def test_available_image_rewards_are_sorted_and_described() -> None:
    descriptions = describe_image_rewards()

    assert available_image_rewards() == NAMES
    assert list(descriptions) == NAMES
    for description in descriptions.values():
        assert description
        assert "\n" not in description


@pytest.mark.parametrize("name", [name for name in NAMES if name != "aesthetic"])
def test_every_model_free_reward_creates_and_scores_a_batch(name: str) -> None:
    """(aesthetic needs a CLIP: created from the tiny one above.)"""
    scorer = create_image_reward(name)

    scores = scorer.score(["a", "b"], [noise((32, 24)), flat((1, 2, 3))])

    assert isinstance(scorer, ImageRewardFunction)
    assert scores.shape == (2,)
    assert scores.dtype == np.float64
    assert np.all(np.isfinite(scores))
    assert scorer.score([], []).shape == (0,)


def test_unknown_image_reward_lists_the_valid_names() -> None:
    with pytest.raises(ValueError) as error:
        create_image_reward("beauty")

    assert str(error.value) == (
        "unknown image reward 'beauty'; valid: aesthetic, brisque, colourfulness, "
        "compressibility, sharpness or 'package.module:function'"
    )


@pytest.mark.parametrize(
    ("name", "options", "message"),
    [
        (
            "compressibility",
            {"qualty": 90},
            "unknown option 'qualty'; valid options: resolution, quality",
        ),
        ("colourfulness", {"resolution": 64}, "unknown option 'resolution'; valid options: none"),
        ("sharpness", {"size": 64}, "unknown option 'size'; valid options: resolution"),
        (
            "aesthetic",
            {"model": "x"},
            "unknown option 'model'; valid options: clip_model, predictor, device, batch_size",
        ),
        ("compressibility", {"quality": 0}, r"quality must be in 1\.\.100, got 0"),
        ("sharpness", {"resolution": -1}, r"resolution must be >= 0 \(0: keep the size\), got -1"),
    ],
)
def test_bad_options_are_named_with_the_valid_ones(name: str, options: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        create_image_reward(name, options)


def test_inputs_are_checked_before_scoring() -> None:
    scorer = create_image_reward("colourfulness")

    with pytest.raises(ValueError, match="got 2 captions but 1 images"):
        scorer.score(["a", "b"], [flat((0, 0, 0))])
    with pytest.raises(ValueError, match="image 0 is ndarray, not a PIL image"):
        scorer.score(["a"], [np.zeros((4, 4, 3), dtype=np.uint8)])
    with pytest.raises(ValueError, match="caption 0 is int, not str"):
        scorer.score([3], [flat((0, 0, 0))])


# --- user code ---------------------------------------------------------------------------------


def test_user_function_scores_images_with_options() -> None:
    scorer = create_image_reward("test_image_rewards:redness", {"weight": 2.0})

    scores = scorer.score(["red", "blue"], [flat((255, 0, 0)), flat((0, 0, 255))])

    np.testing.assert_array_equal(scores, [2.0, 0.0])
    assert scores.dtype == np.float64
    assert isinstance(scorer, ImageRewardFunction)


@pytest.mark.parametrize(
    ("spec", "options", "message"),
    [
        (
            "test_image_rewards:redness",
            {"scale": 2},
            "unknown option 'scale'; valid options: weight",
        ),
        (
            "test_image_rewards:NAMES",
            {},
            r"is of type list: expected a class, a function f\(captions, images\)",
        ),
        ("no_such_module_xyz:f", {}, "cannot import module 'no_such_module_xyz'"),
    ],
)
def test_user_code_errors_name_the_problem(spec: str, options: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        create_image_reward(spec, options)


def test_user_function_output_is_checked() -> None:
    images = [flat((0, 0, 0)), flat((9, 9, 9))]

    with pytest.raises(
        ValueError, match=r"'test_image_rewards:one_short' returned shape \(1,\) for 2"
    ):
        create_image_reward("test_image_rewards:one_short").score(["a", "b"], images)
    with pytest.raises(ValueError, match="returned nan for image 1; scores must be finite"):
        create_image_reward("test_image_rewards:not_finite").score(["a", "b"], images)
