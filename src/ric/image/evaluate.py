"""`ric image evaluate`: sweep preferences over held-out captions and measure the front.

The text sweep's measures on images: for each preference w of the grid, desired rewards
R = mapping(w) appended to every held-out caption, ``evaluate.images_per_prompt`` images each,
scored with the rewards the model's stats were computed with. Image j of caption i starts from
the same noise at every preference (seed ``generation.seed + i * images_per_prompt + j``), so
the columns of the image grid differ only in the rewards asked for. Then the front (mean raw
rewards per preference), its hypervolume, steerability (Spearman over the grid) and the
behavioural probe (each objective asked at its low and high end) of ``ric.evaluation``.
Output directory:

    images/          every image, p<preference>-c<caption>-<j>.png
    samples.parquet  one row per image: preference, desired R, caption, seed, file, rewards
    summary.csv      one row per preference: w, desired R, mean raw and standardized rewards
    front.png        the front, each point labeled with its preference
    image_grid.png   rows: the first ``evaluate.grid_captions`` captions; columns: preferences
    metrics.json     hypervolume, steerability, probe, settings
    report.md        plots, tables and settings in one page
    config.yaml      the resolved config
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from tqdm.auto import tqdm

from ric.config import dump_config
from ric.core import RewardStats
from ric.data.io import CONFIG_FILE, stats_rewards, write_atomic, write_text_atomic
from ric.data.label import add_rewards
from ric.evaluation.grid import resolve_grid
from ric.evaluation.metrics import front_summary, resampled_intervals, steerability
from ric.evaluation.plots import format_preference, plot_fronts
from ric.evaluation.probe import probe_summary, probe_targets
from ric.evaluation.report import write_report
from ric.evaluation.sweep import FRONT_PLOT, METRICS_FILE, reference_point, summary_frame
from ric.image.config import ImageRicConfig
from ric.image.data import read_captions
from ric.image.pipeline import sample_images
from ric.image.rewards import create_image_reward
from ric.image.train import TrainedImageModel, conditioned_captions, load_trained_image_model
from ric.runs import RunResult
from ric.steering import Steering

IMAGES_DIR = "images"
IMAGE_GRID_FILE = "image_grid.png"


def caption_seeds(num_captions: int, images_per_caption: int, seed: int) -> np.ndarray:
    """(P * J,) seeds, caption-major: image j of caption i gets seed + i * J + j."""
    return seed + np.arange(num_captions * images_per_caption)


def generate_for_targets(
    model: TrainedImageModel,
    config: ImageRicConfig,
    captions: Sequence[str],
    targets: np.ndarray,
    images_per_caption: int,
    show_progress: bool,
    description: str,
) -> tuple[list[str], list[Image.Image]]:
    """Conditioned captions and images for every (target row, caption, image j), target-major:
    the same seeds under every target."""
    repeated = [caption for caption in captions for _ in range(images_per_caption)]
    rewards = np.repeat(np.asarray(targets, dtype=float), len(repeated), axis=0)
    texts = conditioned_captions(model.pipeline, model.config, repeated * len(targets), rewards)
    seeds = np.tile(
        caption_seeds(len(captions), images_per_caption, config.generation.seed), len(targets)
    )
    progress = tqdm(total=len(texts), desc=description, unit="image", disable=not show_progress)
    images = sample_images(
        model.pipeline,
        texts,
        seeds.tolist(),
        config.generation.steps,
        config.generation.guidance_scale,
        config.generation.eta,
        config.generation.batch_size,
        on_batch=progress.update,
    )
    progress.close()
    return texts, images


def score_all(stats: RewardStats, captions: list[str], images: list[Image.Image]) -> np.ndarray:
    """(B, N) raw rewards of ``images`` with the scorers the model's stats came from."""
    scorers = [create_image_reward(r.type, r.options) for r in stats_rewards(stats)]
    return np.column_stack([scorer.score(captions, images) for scorer in scorers])


def image_probe(
    model: TrainedImageModel,
    config: ImageRicConfig,
    captions: list[str],
    steering: Steering,
    show_progress: bool,
) -> dict[str, dict[str, float]]:
    """The behavioural probe of ``ric.evaluation.probe`` on images, over the steering's range."""
    stats, count = model.stats, model.stats.num_objectives
    per_caption = config.evaluate.images_per_prompt
    targets = probe_targets(steering.r_min, steering.r_max).reshape(-1, count)  # (2N, N)
    _, images = generate_for_targets(
        model, config, captions, targets, per_caption, show_progress, "probe"
    )
    repeated = [c for c in captions for _ in range(per_caption)] * len(targets)
    return probe_summary(stats, targets, score_all(stats, repeated, images), per_caption)


def draw_image_grid(
    images: list[Image.Image],
    captions: list[str],
    preferences: np.ndarray,
    path: Path,
) -> Path:
    """A figure of ``images`` (rows: captions, columns: preferences, row-major) with labels."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows, columns = len(captions), len(preferences)
    figure, axes = plt.subplots(
        rows, columns, figsize=(1.1 * columns + 1.6, 1.15 * rows + 0.5), squeeze=False
    )
    for r in range(rows):
        for c in range(columns):
            axis = axes[r, c]
            axis.imshow(images[r * columns + c], interpolation="nearest")
            axis.set_xticks([])
            axis.set_yticks([])
            if r == 0:
                axis.set_title(f"w1={format_preference(preferences[c])}", fontsize=8)
        axes[r, 0].set_ylabel(captions[r].replace(" on a ", "\non a "), fontsize=6)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def evaluate_image_model(config: ImageRicConfig, show_progress: bool = True) -> RunResult:
    """Run the sweep and write every artifact of the module docstring; return the directory and
    the metrics written there."""
    settings = config.evaluate
    for key, hint in (("output", "--output"), ("model", "--model"), ("prompts", "--prompts")):
        if not getattr(settings, key):
            raise ValueError(f"no {key}: set evaluate.{key} (or pass {hint})")
    model = load_trained_image_model(settings.model, config.model.dtype, config.model.device)
    captions = read_captions(settings.prompts, settings.prompt_column, settings.num_prompts)
    stats, names = model.stats, list(model.stats.names)
    count, per_caption = stats.num_objectives, settings.images_per_prompt
    preferences = resolve_grid(count, settings.grid, settings.divisions, settings.preferences)
    steering = Steering.for_stats(stats, config.mapping)
    desired = steering.map_preferences(preferences)
    texts, images = generate_for_targets(
        model, config, captions, desired, per_caption, show_progress, "evaluate"
    )
    repeated = [c for c in captions for _ in range(per_caption)]
    raw = score_all(stats, repeated * len(preferences), images)
    standardized = stats.standardize(raw)
    shape = (len(preferences), len(repeated), count)
    mean_raw = raw.reshape(shape).mean(axis=1)
    mean_standardized = standardized.reshape(shape).mean(axis=1)
    output = Path(settings.output)
    seeds = np.tile(
        caption_seeds(len(captions), per_caption, config.generation.seed), len(preferences)
    )
    files = [
        f"{IMAGES_DIR}/p{k:02d}-c{i:03d}-{j}.png"
        for k in range(len(preferences))
        for i in range(len(captions))
        for j in range(per_caption)
    ]
    samples = pd.DataFrame(
        {
            "preference_index": np.repeat(np.arange(len(preferences)), len(repeated)),
            "preference": [w.tolist() for w in np.repeat(preferences, len(repeated), axis=0)],
            "desired": [r.tolist() for r in np.repeat(desired, len(repeated), axis=0)],
            "caption": repeated * len(preferences),
            "conditioned_caption": texts,
            "seed": seeds,
            "file": files,
        }
    )
    add_rewards(samples, stats, raw)
    reference = reference_point(settings.reference, stats)
    metrics = {
        "model": settings.model,
        "objectives": names,
        "num_prompts": len(captions),
        "images_per_prompt": per_caption,
        "num_preferences": len(preferences),
        "front": front_summary(mean_raw, reference),
        "steerability": steerability(preferences, desired, mean_standardized, names),
        # a caption's images are resampled together: the captions are the held-out sample
        "intervals": (
            resampled_intervals(
                raw.reshape(len(preferences), len(captions), per_caption, count).mean(axis=2),
                preferences,
                reference,
                names,
                settings.resamples,
            )
            if settings.resamples
            else None
        ),
        "mapping": steering.describe(),
        "probe": (
            image_probe(model, config, captions, steering, show_progress)
            if settings.probe
            else None
        ),
    }
    summary = summary_frame(preferences, desired, mean_raw, mean_standardized, names)
    for image, file in zip(images, files, strict=True):
        (output / file).parent.mkdir(parents=True, exist_ok=True)
        image.save(output / file)
    shown = min(settings.grid_captions, len(captions))
    grid_images = [
        images[(k * len(captions) + i) * per_caption]
        for i in range(shown)
        for k in range(len(preferences))
    ]
    draw_image_grid(grid_images, captions[:shown], preferences, output / IMAGE_GRID_FILE)
    write_atomic(output / "samples.parquet", lambda tmp: samples.to_parquet(tmp))
    write_text_atomic(output / "summary.csv", summary.to_csv(index=False))
    title = f"Empirical front, {len(captions)} held-out captions x {per_caption} images"
    plot_fronts({"RiC": (preferences, mean_raw)}, names, output / FRONT_PLOT, title)
    write_text_atomic(output / METRICS_FILE, json.dumps(metrics, indent=1))
    write_text_atomic(output / CONFIG_FILE, dump_config(config))
    grid_lines = [
        "## Images",
        "",
        f"Rows: the first {shown} held-out captions; columns: the preference grid (w1 = weight "
        f"of {names[0]}); image 0 of each caption, the same starting noise in every column.",
        "",
        f"![images]({IMAGE_GRID_FILE})",
        "",
    ]
    write_report(output, metrics, summary, config, extra=grid_lines)
    return RunResult(output, metrics)
