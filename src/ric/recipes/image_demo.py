"""`ric image demo`: draw the embedded image set -> label -> train -> evaluate.

Everything is built in code (``ric.tasks.shapes``: coloured shapes with a texture of random
strength; the model: ``ric.image.pipeline.build_embedded``, trained from scratch), the rewards are
offline scorers (compressibility, sharpness): nothing is downloaded. ``--smoke`` runs the same
pipeline on a few images, steps and captions, in well under a minute.

A rerun with the same ``--output`` resumes: the image set is drawn again only if missing,
labeling reuses scored shards, training continues from its newest checkpoint (a finished run is
not repeated), and the evaluation runs again.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

from ric.config import config_from_values, read_values, set_value
from ric.data.io import write_text_atomic
from ric.image.config import ImageRicConfig
from ric.image.evaluate import evaluate_image_model
from ric.image.label import label_images
from ric.image.train import train_image_model
from ric.recipes.demo import TIMING_FILE
from ric.runs import RunResult
from ric.tasks.shapes import CAPTIONS_FILE, HELDOUT_FILE, build_shapes

IMAGE_DEMO_CONFIG = Path(__file__).parent / "image_demo.yaml"
IMAGES_PER_CAPTION = 30
SMOKE_IMAGES_PER_CAPTION = 2
SMOKE_OVERRIDES = [
    "train.max_steps=6",
    "train.batch_size=4",
    "train.save_steps=3",
    "generation.steps=3",
    "generation.batch_size=32",
    "evaluate.num_prompts=2",
    "evaluate.images_per_prompt=1",
    "evaluate.grid_captions=2",
]


@dataclass(frozen=True)
class ImageDemoResult:
    """What `ric image demo` reports: the evaluation of the trained model, and how long each
    stage took (also written to ``demo.json``)."""

    evaluation: RunResult  # the evaluation folder (report.md) and its metrics
    seconds: dict[str, float]  # stage -> wall-clock seconds, and their total


def image_demo_config(
    output: Path, smoke: bool = False, overrides: list[str] | None = None
) -> ImageRicConfig:
    """The demo's config with every path under ``output``, then ``overrides``."""
    values = read_values(IMAGE_DEMO_CONFIG)
    images = output / "images"
    paths = {
        "data.path": images,
        "label.output": output / "label",
        "train.data": output / "label",
        "train.output": output / "train",
        "evaluate.model": output / "train",
        "evaluate.prompts": images / HELDOUT_FILE,
        "evaluate.output": output / "evaluate",
    }
    for key, path in paths.items():
        set_value(values, key, str(path))
    extra = [*(SMOKE_OVERRIDES if smoke else []), *(overrides or [])]
    return config_from_values(values, extra, cls=ImageRicConfig)


def run_image_demo(
    output: Path,
    smoke: bool = False,
    overrides: list[str] | None = None,
    show_progress: bool = True,
) -> ImageDemoResult:
    """Run every stage; return the evaluation and the stage times (also in demo.json)."""
    config = image_demo_config(output, smoke, overrides)
    seconds: dict[str, float] = {}
    start = time.perf_counter()
    images = Path(config.data.path)
    if not (images / CAPTIONS_FILE).is_file():
        per_caption = SMOKE_IMAGES_PER_CAPTION if smoke else IMAGES_PER_CAPTION
        build_shapes(images, images_per_caption=per_caption)
    label_images(config, show_progress)
    seconds["data and label"] = time.perf_counter() - start

    start = time.perf_counter()
    train_image_model(config, resume=True, show_progress=show_progress)
    seconds["train"] = time.perf_counter() - start

    start = time.perf_counter()
    evaluation = evaluate_image_model(config, show_progress)
    seconds["evaluate"] = time.perf_counter() - start
    seconds["total"] = sum(seconds.values())
    write_text_atomic(output / TIMING_FILE, json.dumps({"smoke": smoke, "seconds": seconds}))
    return ImageDemoResult(evaluation, seconds)
