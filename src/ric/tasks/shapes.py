"""The embedded image set of `ric image demo`: coloured shapes, drawn in code.

No image set that ships in a package both fits a from-scratch model on 2 CPU cores and varies in
what the image rewards measure, so the demo draws its own (licence: the project's, Apache-2.0):
32x32 pictures of a circle, square or triangle in one of 6 colours on one of 3 backgrounds,
captioned with exactly those words ("a red circle on a black background"): words a small text
encoder learns. What the caption does not say is the *detail*: every image carries a grain
(per-pixel noise) of a random strength, from none to strong. Detail is what the
two demo rewards disagree on: it costs JPEG bytes (compressibility falls) and raises the variance
of the Laplacian (sharpness rises), so only the reward values in the caption can tell the model
how much to draw. Six (colour, shape, background) combinations never appear in training; the
held-out captions are those six plus six seen ones, so the sweep also shows whether the model
composes words it learned apart.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

SIDE = 32
COLOURS = {
    "red": (215, 45, 45),
    "green": (45, 165, 70),
    "blue": (45, 85, 215),
    "yellow": (235, 205, 45),
    "purple": (140, 65, 175),
    "orange": (240, 135, 35),
}
BACKGROUNDS = {"white": (235, 235, 235), "black": (25, 25, 25), "grey": (125, 125, 125)}
SHAPES = ("circle", "square", "triangle")
MAX_TEXTURE = 70.0  # the strongest texture's amplitude, in 0-255 pixel units
CAPTIONS_FILE = "metadata.jsonl"
HELDOUT_FILE = "heldout.jsonl"


def caption(colour: str, shape: str, background: str) -> str:
    article = "an" if colour[0] in "aeiou" else "a"
    return f"{article} {colour} {shape} on a {background} background"


def combinations() -> list[tuple[str, str, str]]:
    return [(c, s, b) for c in COLOURS for s in SHAPES for b in BACKGROUNDS]


def split_combinations(seed: int) -> tuple[list[tuple[str, str, str]], list[tuple[str, str, str]]]:
    """(training, held-out-only) combinations: 6 never seen in training, every word still seen."""
    rng = np.random.default_rng(seed)
    every = combinations()
    while True:
        unseen_index = rng.choice(len(every), size=6, replace=False)
        unseen = [every[i] for i in sorted(unseen_index)]
        seen = [combo for combo in every if combo not in unseen]
        if all({combo[k] for combo in seen} == {combo[k] for combo in every} for k in range(3)):
            return seen, unseen


def draw_shape(colour: str, shape: str, background: str, rng: np.random.Generator) -> np.ndarray:
    """The clean picture (SIDE, SIDE, 3) float: the shape at a jittered place and size."""
    image = Image.new("RGB", (SIDE, SIDE), BACKGROUNDS[background])
    draw = ImageDraw.Draw(image)
    half = rng.uniform(7, 11)
    cx, cy = rng.uniform(13, 19, size=2)
    box = (cx - half, cy - half, cx + half, cy + half)
    fill = COLOURS[colour]
    if shape == "circle":
        draw.ellipse(box, fill=fill)
    elif shape == "square":
        draw.rectangle(box, fill=fill)
    else:
        draw.polygon([(cx, cy - half), (cx - half, cy + half), (cx + half, cy + half)], fill=fill)
    return np.asarray(image, dtype=np.float64)


def texture(strength: float, rng: np.random.Generator) -> np.ndarray:
    """(SIDE, SIDE, 1) grain of amplitude ``strength``: grey per-pixel noise. (One-pixel stripes
    were tried too: JPEG codes them in one coefficient per block, so they are sharp *and*
    cheap, and the model learned to draw them whatever sharpness it was asked for.)"""
    return strength * rng.standard_normal((SIDE, SIDE, 1))


def draw(colour: str, shape: str, background: str, rng: np.random.Generator) -> Image.Image:
    strength = MAX_TEXTURE * rng.random()
    pixels = draw_shape(colour, shape, background, rng) + texture(strength, rng)
    return Image.fromarray(np.clip(pixels, 0, 255).round().astype(np.uint8))


def build_shapes(output: Path, images_per_caption: int = 30, seed: int = 0) -> Path:
    """Draw the training set into ``output`` (PNGs + metadata.jsonl, the folder format of
    `ric image label`) and the held-out captions into ``output/heldout.jsonl``. Deterministic:
    the same seed draws the same pixels."""
    output.mkdir(parents=True, exist_ok=True)
    seen, unseen = split_combinations(seed)
    rng = np.random.default_rng(seed)
    records = []
    for colour, shape, background in seen:
        for k in range(images_per_caption):
            name = f"{colour}-{shape}-{background}-{k:03d}.png"
            draw(colour, shape, background, rng).save(output / name)
            records.append({"file_name": name, "caption": caption(colour, shape, background)})
    lines = "".join(json.dumps(record) + "\n" for record in records)
    (output / CAPTIONS_FILE).write_text(lines, encoding="utf-8")
    heldout = unseen + [seen[i] for i in sorted(rng.choice(len(seen), size=6, replace=False))]
    (output / HELDOUT_FILE).write_text(
        "".join(json.dumps({"caption": caption(*combo)}) + "\n" for combo in heldout),
        encoding="utf-8",
    )
    return output
