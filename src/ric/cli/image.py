"""`ric image`: the text-to-image commands' ``run_*`` functions and their table,
``IMAGE_COMMANDS`` (flags, help, config keys), on ``ImageRicConfig``."""

from __future__ import annotations

import argparse
from pathlib import Path

from ric.cli.table import (
    EXPLICIT_REWARDS,
    FIELDS,
    PREFERENCE,
    RESUME,
    Command,
    Flag,
)
from ric.cli.text import print_labeled, run_config, steered, write_records
from ric.image.config import ImageRicConfig


def run_image_label(args: argparse.Namespace, config: ImageRicConfig) -> None:
    from ric.image.label import label_images

    print_labeled(label_images(config, show_progress=not args.no_progress), "images")


def run_image_train(args: argparse.Namespace, config: ImageRicConfig) -> None:
    from ric.image.train import train_image_model

    result = train_image_model(config, resume=args.resume, show_progress=not args.no_progress)
    print(
        f"trained {result.steps} steps (from step {result.resumed_from}), final loss "
        f"{result.final_loss:.4f}, {result.seconds:.0f} s\noutput: {result.output}"
    )


def run_image_generate(args: argparse.Namespace, config: ImageRicConfig) -> None:
    from ric.image.data import read_captions
    from ric.image.evaluate import caption_seeds, generate_for_targets
    from ric.image.train import load_trained_image_model
    from ric.steering import Steering

    captions = list(args.caption or [])
    if args.captions:
        captions += read_captions(args.captions, config.evaluate.prompt_column, None)
    if not captions:
        raise ValueError("no captions: pass --caption TEXT (repeatable) or --captions FILE")
    if args.num_images < 1:
        raise ValueError(f"--num-images must be >= 1, got {args.num_images}")
    model = load_trained_image_model(args.model, config.model.dtype, config.model.device)
    steering = Steering.for_stats(model.stats, config.mapping)
    desired = steered(lambda: steering.desired(args.preference, args.rewards))
    texts, images = generate_for_targets(
        model, config, captions, desired[None], args.num_images, not args.no_progress, "generate"
    )
    output = Path(args.output)
    output.mkdir(parents=True, exist_ok=True)
    seeds = caption_seeds(len(captions), args.num_images, config.generation.seed).tolist()
    records = []
    for index, (text, image, seed) in enumerate(zip(texts, images, seeds, strict=True)):
        file = output / f"{index // args.num_images:03d}-{index % args.num_images}.png"
        image.save(file)
        records.append(
            {
                "caption": captions[index // args.num_images],
                "preference": args.preference,
                "desired_rewards": desired.tolist(),
                "conditioned_caption": text,
                "seed": seed,
                "file": str(file),
                "generation": vars(config.generation),
            }
        )
    write_records(records, str(output / "generations.jsonl"))


def run_image_evaluate(args: argparse.Namespace, config: ImageRicConfig) -> None:
    from ric.evaluation.report import REPORT_FILE
    from ric.image.evaluate import evaluate_image_model

    result = evaluate_image_model(config, show_progress=not args.no_progress)
    print_image_metrics(result.metrics)
    print(f"report: {result.output / REPORT_FILE}")


def print_image_metrics(metrics: dict) -> None:
    """An image sweep's hypervolume and, per objective, its steerability and probe move."""
    from ric.evaluation.report import (
        INTERVALS_NOTE,
        describe_interval,
        describe_move,
        format_signed,
    )

    steer = metrics["steerability"]
    interval = (metrics.get("intervals") or {}).get("hypervolume")
    print(f"hypervolume {metrics['front']['hypervolume']:.4g}{describe_interval(interval, '.4g')}")
    for name, values in steer.items():
        rho = values["w1_vs_obtained"]
        probe = (metrics.get("probe") or {}).get(name)
        print(
            f"  {name}: Spearman(w1, mean) {format_signed(rho)}"
            + ("" if probe is None else f", probe {describe_move(probe)}")
        )
    if metrics.get("intervals"):
        print(f"  ({INTERVALS_NOTE})")


def run_image_demo(args: argparse.Namespace, config: None) -> None:
    from ric.evaluation.report import REPORT_FILE
    from ric.recipes.image_demo import run_image_demo

    demo = run_image_demo(
        Path(args.output), args.smoke, args.overrides, show_progress=not args.no_progress
    )
    print_image_metrics(demo.evaluation.metrics)
    report = demo.evaluation.output / REPORT_FILE
    print(f"image demo finished in {demo.seconds['total']:.0f} s; report: {report}")


def run_image_rewards(args: argparse.Namespace, config: None) -> None:
    from ric.image.rewards import describe_image_rewards

    for name, description in describe_image_rewards().items():
        print(f"{name:16s} {description}")
    print(f"{'pkg.mod:func':16s} your own function f(captions, images) -> scores")


# What an image run records and its users inherit unless they set it (text runs: RUN_SETTINGS).
IMAGE_RUN_SECTIONS = ("mapping", "generation", "model.dtype", "model.device")
IMAGE_COMMANDS: dict[str, Command] = {
    "label": Command(
        run_image_label,
        "score (image, caption) rows with image rewards",
        "Score the images with the configured rewards; write the scored table + stats.json.",
        (
            Flag(
                "--data",
                "a folder with a captions file, a JSONL/Parquet/CSV of image paths, a saved HF "
                "dataset or a hub name",
                "data.path",
            ),
            Flag("--output", "output directory", "label.output"),
            Flag(
                "--reward",
                "image reward type (repeatable); replaces the config's",
                "rewards",
                action="append",
                to_config=lambda types: [{"type": kind} for kind in types],
            ),
        ),
        config_class=ImageRicConfig,
        one_process=True,
    ),
    "train": Command(
        run_image_train,
        "reward-conditioned fine-tuning of the UNet (the paper's text-to-image RiC)",
        "Train on a `ric image label` output with the rewards appended to each caption.",
        (
            Flag("--data", "a `ric image label` output directory", "train.data"),
            Flag("--output", "output directory", "train.output"),
            Flag("--model", "embedded, a Stable Diffusion folder or hub id", "model.source"),
            RESUME,
        ),
        config_class=ImageRicConfig,
        one_process=True,
    ),
    "generate": Command(
        run_image_generate,
        "images for captions at a preference or explicit rewards",
        "Write PNGs and generations.jsonl to --output (settings recorded in each line). "
        "Mapping, generation, model.dtype and model.device settings are the run's own unless "
        "you set them.",
        (
            Flag("--model", "a `ric image train` output directory", required=True),
            Flag("--caption", "a caption (repeatable)", action="append"),
            Flag("--captions", "a file of captions (JSONL, Parquet, CSV, or .txt lines)"),
            PREFERENCE,
            EXPLICIT_REWARDS,
            Flag("--num-images", "images per caption, seeds seed..seed+n-1", type=int, default=1),
            Flag("--output", "directory for the images", required=True),
        ),
        trained_run="--model",
        config_class=ImageRicConfig,
        run_sections=IMAGE_RUN_SECTIONS,
        one_process=True,
    ),
    "evaluate": Command(
        run_image_evaluate,
        "sweep preferences on held-out captions: front, hypervolume, steerability, image grid",
        "Mapping, generation, model.dtype and model.device settings are the run's own unless "
        "you set them.",
        (
            Flag("--model", "a `ric image train` output directory", "evaluate.model"),
            Flag("--prompts", "held-out captions (JSONL, Parquet, CSV, .txt)", "evaluate.prompts"),
            Flag("--output", "output directory", "evaluate.output"),
        ),
        trained_run="evaluate.model",
        config_class=ImageRicConfig,
        run_sections=IMAGE_RUN_SECTIONS,
        one_process=True,
    ),
    "demo": Command(
        run_image_demo,
        "draw the embedded image set -> label -> train from scratch -> evaluate",
        "The whole text-to-image pipeline on shapes drawn in code; prints where the report is.",
        (
            Flag("--output", "output directory (runs/image-demo)", default="runs/image-demo"),
            Flag("--smoke", "a few images and steps (< 1 minute)", action="store_true"),
        ),
        config_file=False,
        builds_config=False,
        one_process=True,
    ),
    "rewards": Command(
        run_image_rewards,
        "list the available image reward scorers",
        config_file=False,
        overrides=False,
        progress=False,
        builds_config=False,
    ),
    "config": Command(
        run_config,
        "print the resolved image config, or every field with its doc",
        flags=(FIELDS,),
        progress=False,
        config_class=ImageRicConfig,
    ),
}
