"""The `ric` command line: each subcommand is a thin call into one library function.

Errors a user can fix (bad values, missing files or columns) are printed as one line,
``ric: error: ...``, with exit status 2 and no traceback.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from functools import reduce
from pathlib import Path
from typing import Any

import numpy as np

from ric import parallel
from ric.config import RicConfig, config_from_values, dump_config, iter_field_docs, read_values
from ric.core import MAPPING_METHODS, build_prompt
from ric.image.config import ImageRicConfig


def parse_floats(text: str) -> list[float]:
    """'0.2,0.8' -> [0.2, 0.8]; 'inf' is accepted; a bad item is named in the error."""
    values = []
    for item in text.split(","):
        try:
            values.append(float(item))
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{item.strip()!r} in {text!r} is not a number; expected comma-separated "
                "numbers like 0.2,0.8"
            ) from None
    return values


def run_map(args: argparse.Namespace, config: RicConfig) -> None:
    from ric.data.io import load_stats

    mapping = config.mapping
    stats = load_stats(args.stats) if args.stats else None
    n = len(args.preference)
    r_min, r_max = mapping.reward_range(stats, n)
    if args.r_min is not None:
        r_min = args.r_min
    if args.r_max is not None:
        r_max = args.r_max
    desired = mapping.desired_rewards(args.preference, r_min, r_max)
    names = list(stats.names) if stats else [f"R{i}" for i in range(1, n + 1)]
    for name, w, low, high, value in zip(
        names, args.preference, r_min, r_max, desired, strict=True
    ):
        print(f"{name}: w={w:g}  range=[{low:.3f}, {high:.3f}]  desired={value:.4f}")
    result = {
        "preference": list(args.preference),
        "method": mapping.method,
        "names": names,
        "r_min": [float(v) for v in r_min],
        "r_max": [float(v) for v in r_max],
        "desired_rewards": [float(v) for v in desired],
    }
    if mapping.method in ("p_norm", "convex"):
        result["p"] = mapping.p
    if args.prompt is not None:
        template = config.template.prompt_template()
        result["conditioned_prompt"] = build_prompt(args.prompt, desired.tolist(), template)
        print(result["conditioned_prompt"])
    print(json.dumps(result))


def run_label(args: argparse.Namespace, config: RicConfig) -> None:
    from ric.data.label import label_dataset

    result = label_dataset(config, show_progress=not args.no_progress)
    print(
        f"scored {result.stats.count} samples with {', '.join(result.stats.names)} "
        f"({result.shards_scored} shard scores computed, {result.shards_reused} reused)"
    )
    for name, mean, std in zip(
        result.stats.names, result.stats.mean, result.stats.std, strict=True
    ):
        print(f"  {name}: mean {mean:.4g}, std {std:.4g}")
    print(
        f"data:   {result.scored_path}\nstats:  {result.stats_path}\nconfig: {result.config_path}"
    )


def run_train(args: argparse.Namespace, config: RicConfig) -> None:
    from ric.runs import METRICS_FILE
    from ric.training.offline import run_train

    output = run_train(config, resume=args.resume, show_progress=not args.no_progress)
    metrics = json.loads((output / METRICS_FILE).read_text())
    print(
        f"trained {metrics['steps']} steps on {metrics['samples']} samples "
        f"(loss {metrics['first_loss']:.4f} -> {metrics['last_loss']:.4f}, "
        f"{metrics['response_tokens_per_second']:.0f} response tokens/s)"
    )
    if config.lora.top_layers and "frozen_cache" in metrics:  # runs from before it lack it
        print(f"frozen layers: {metrics['frozen_cache']}")
    print(f"output: {output}")


def desired_rewards(args: argparse.Namespace, mapping: Any, stats: Any) -> np.ndarray:
    """The desired rewards (N,) from exactly one of --preference (mapped with ``mapping`` over
    the range of ``stats``) and --rewards (explicit, standardized units)."""
    if (args.preference is None) == (args.rewards is None):
        raise ValueError("give exactly one of --preference (mapped) or --rewards (explicit)")
    n = stats.num_objectives
    given = "--rewards" if args.rewards is not None else "--preference"
    values = args.rewards if args.rewards is not None else args.preference
    if len(values) != n:
        raise ValueError(
            f"{given} has {len(values)} values; the model has {n} objectives "
            f"({', '.join(stats.names)})"
        )
    if args.rewards is not None:
        return np.asarray(args.rewards, dtype=float)
    r_min, r_max = mapping.reward_range(stats, n)
    return mapping.desired_rewards(args.preference, r_min, r_max)


def run_generate(args: argparse.Namespace, config: RicConfig) -> None:
    from ric.models.generation import generate_with_stats
    from ric.runs import load_trained

    prompts = list(args.prompt or [])
    if args.prompts:  # pandas reads them: imported only then, a first answer is sooner without
        from ric.data.sources import read_prompts

        prompts += read_prompts(args.prompts, config.evaluate.prompt_column)
    if not prompts:
        raise ValueError("no prompts: pass --prompt TEXT (repeatable) or --prompts FILE")
    policy = load_trained(
        args.model, merged=True, dtype=config.model.dtype, device=config.model.device
    )
    if not policy.method.conditioned:
        _generate_baseline(args, config, policy, prompts)
        return
    desired = desired_rewards(args, config.mapping, policy.stats)
    conditioned = policy.conditioned_prompts(prompts, desired)
    result = generate_with_stats(policy.model, policy.tokenizer, conditioned, config.generation)
    records = [
        {
            "prompt": prompt,
            "preference": args.preference,
            "desired_rewards": desired.tolist(),
            "conditioned_prompt": text,
            "response": response,
            "finished": finished,
            "generation": vars(config.generation),
        }
        for prompt, text, response, finished in zip(
            prompts, conditioned, result.texts, result.finished, strict=True
        )
    ]
    _write_records(records, args.output)


def _generate_baseline(
    args: argparse.Namespace, config: RicConfig, policy: object, prompts: list[str]
) -> None:
    """`ric generate` for a baseline: no rewards in the prompt; a soup needs --preference."""
    from ric.models.generation import generate_with_stats
    from ric.models.soups import soup_model
    from ric.runs import TrainedPolicy

    assert isinstance(policy, TrainedPolicy)
    name = policy.method.name
    if args.rewards is not None:
        raise ValueError(f"{args.model!r} is a {name} baseline: it takes no --rewards")
    model = policy.model
    if name == "soups":
        if args.preference is None:
            raise ValueError(
                "a Rewarded Soups model needs --preference (its interpolation weights)"
            )
        model = soup_model(model, policy.member_adapters(), args.preference)
    elif args.preference is not None:
        raise ValueError(
            f"{args.model!r} is a {name} baseline: it was trained for "
            f"{policy.method.preference or 'no preference'} and takes no --preference"
        )
    texts = policy.plain_prompts(prompts)
    result = generate_with_stats(model, policy.tokenizer, texts, config.generation)
    records = [
        {
            "prompt": prompt,
            "method": name,
            "preference": args.preference or policy.method.preference,
            "model_prompt": text,
            "response": response,
            "finished": finished,
            "generation": vars(config.generation),
        }
        for prompt, text, response, finished in zip(
            prompts, texts, result.texts, result.finished, strict=True
        )
    ]
    _write_records(records, args.output)


def _write_records(records: list[dict], output: str | None) -> None:
    """Print JSON lines, and write them to ``output`` when given."""
    lines = "".join(json.dumps(record, ensure_ascii=False) + "\n" for record in records)
    if output:
        from ric.data.io import write_text_atomic

        parallel.on_main(lambda: write_text_atomic(Path(output), lines))
    print(lines, end="")


def run_evaluate(args: argparse.Namespace, config: RicConfig) -> None:
    from ric.evaluation.report import describe_interval, describe_move, format_signed
    from ric.evaluation.sweep import METRICS_FILE, run_evaluate

    output = run_evaluate(config, show_progress=not args.no_progress)
    metrics = json.loads((output / METRICS_FILE).read_text())
    interval = (metrics["intervals"] or {}).get("hypervolume")
    print(f"hypervolume {metrics['front']['hypervolume']:.4g}{describe_interval(interval, '.4g')}")
    w1_intervals = (metrics["intervals"] or {}).get("w1_vs_obtained", {})
    for name, values in metrics["steerability"].items():
        desired, w1 = values["desired_vs_obtained"], values["w1_vs_obtained"]
        print(
            f"  {name}: Spearman(desired, obtained) {format_signed(desired)}, "
            f"Spearman(w_1, mean) {format_signed(w1)}{describe_interval(w1_intervals.get(name))}"
        )
    for name, values in (metrics["probe"] or {}).items():
        print(
            f"  {name}: asked low / high gives {values['obtained_low_raw']:.4g} / "
            f"{values['obtained_high_raw']:.4g}: moves {describe_move(values)}"
        )
    for name, values in (metrics["reward_sensitivity"] or {}).items():
        print(
            f"  {name}: loss gap with shuffled rewards {values['gap']:+.4f} per token, "
            f"{values['sequence_gap']:+.3f} per response"
        )
    print(f"report: {output / 'report.md'}")


def run_online(args: argparse.Namespace, config: RicConfig) -> None:
    from ric.training.online import run_online

    show_progress = not args.no_progress
    output = run_online(config, show_progress)
    print(f"online iterations: {output}")
    if config.evaluate.prompts:
        from ric.evaluation.compare import COMPARISON_TABLE
        from ric.tasks.iterations import compare_iterations

        report = compare_iterations(config, output / "evaluate", show_progress)
        for row in _comparison_rows(report.parent / COMPARISON_TABLE):
            print(f"  {row['label']}: hypervolume {row['hypervolume_text']}")
        print(f"report: {report}")


def _comparison_rows(table: Path) -> list[dict]:
    """A `comparison.csv`'s rows, each with ``hypervolume_text``: the hypervolume with its 95%
    interval, and the interval of its gap to the last row (paired), where computed."""
    import pandas as pd

    from ric.evaluation.report import describe_interval

    def known(value: object) -> bool:  # CSV: NaN where resampling was off
        return isinstance(value, float) and math.isfinite(value)

    rows = pd.read_csv(table).to_dict("records")
    for row in rows:
        interval = (row.get("hypervolume_low"), row.get("hypervolume_high"))
        shown = interval if known(interval[0]) else None
        text = f"{row['hypervolume']:.4g}{describe_interval(shown, '.4g')}"
        gap = (row.get("minus_last_low"), row.get("minus_last_high"))
        if row is not rows[-1] and known(gap[0]):
            text += f", minus {rows[-1]['label']}: {gap[0]:+.3g} to {gap[1]:+.3g} (95% interval)"
        row["hypervolume_text"] = text
    return rows


def run_bootstrap(args: argparse.Namespace, config: RicConfig) -> None:
    from ric.training.bootstrap import PAIRS_FILE, run_bootstrap

    output = run_bootstrap(config, show_progress=not args.no_progress)
    print(f"pairs: {output / PAIRS_FILE}")


def run_prepare(args: argparse.Namespace, config: RicConfig) -> None:
    from ric.data.prepare import PAIRS_FILE, REPORT_FILE, run_prepare

    output = run_prepare(config)
    report = json.loads((output / REPORT_FILE).read_text())
    left_out = ", ".join(f"{count} {reason}" for reason, count in report["left_out"].items())
    print(
        f"{report['pairs']} pairs from {report['upstream_rows']} upstream rows of "
        f"{report['source']} (left out: {left_out or 'none'})"
    )
    print(f"pairs: {output / PAIRS_FILE}  (columns: {', '.join(report['columns'])})")


def _probe_move(row: dict, name: str) -> dict:
    """A comparison table row's probe move of objective ``name`` (the form ``describe_move``
    reads); its standard error unknown where the CSV has none."""
    error = row.get(f"probe_se_{name}")
    known = isinstance(error, float) and math.isfinite(error)
    return {"difference_sd": row[f"probe_sd_{name}"], "difference_se": error if known else None}


def run_demo(args: argparse.Namespace, config: None) -> None:

    from ric.evaluation.compare import COMPARISON_TABLE
    from ric.evaluation.report import describe_move
    from ric.tasks.demo import run_demo

    report = run_demo(
        Path(args.output),
        smoke=args.smoke,
        overrides=args.overrides,
        show_progress=not args.no_progress,
    )
    timing = json.loads((report.parent.parent / "demo.json").read_text())["seconds"]
    for row in _comparison_rows(report.parent / COMPARISON_TABLE):
        probed = [c.removeprefix("probe_sd_") for c in row if c.startswith("probe_sd_")]
        moves = ", ".join(f"{name} {describe_move(_probe_move(row, name))}" for name in probed)
        print(f"{row['label']}: hypervolume {row['hypervolume_text']}")
        print(f"  asked low vs high moves {moves}")
    print(f"demo finished in {timing['total']:.0f} s; report: {report}")


def run_baseline(args: argparse.Namespace, config: RicConfig) -> None:
    from ric.baselines.rl import run_rl
    from ric.baselines.soups import train_soup
    from ric.training.offline import run_train

    if args.baseline == "sft":
        if args.output:
            config = replace(config, train=replace(config.train, output=args.output))
        output = run_train(config, args.resume, not args.no_progress, conditioned=False)
        print(f"SFT baseline: {output}")
        return
    if not args.output:
        raise ValueError("no output directory: pass --output")
    if args.baseline == "soups":
        output = train_soup(config, Path(args.output), not args.no_progress)
        print(f"Rewarded Soups (evaluate with `ric evaluate --model {output}`): {output}")
        return
    if args.preference is None:
        raise ValueError("morlhf trains one model per preference: pass --preference, e.g. 0.5,0.5")
    output = run_rl(config, args.preference, Path(args.output), not args.no_progress)
    metrics = json.loads((output / "metrics.json").read_text())
    start, end = metrics["reward_start"], metrics["reward_end"]
    if start and end:
        print(
            f"mean scalarized reward {start['mean_scalarized']:+.3f} (first batches) -> "
            f"{end['mean_scalarized']:+.3f} (last batches), {metrics['seconds']:.0f} s"
        )
    print(f"MORLHF model for {metrics['preference']}: {output}")


def run_compare(args: argparse.Namespace, config: None) -> None:
    import pandas as pd

    from ric.evaluation.compare import COMPARISON_TABLE
    from ric.tasks.compare import COST_TABLE, run_compare

    report = run_compare(
        Path(args.output),
        smoke=args.smoke,
        overrides=args.overrides,
        layer=Path(args.config) if args.config else None,
        show_progress=not args.no_progress,
    )
    for row in _comparison_rows(report.parent / COMPARISON_TABLE):
        print(f"  {row['label']}: hypervolume {row['hypervolume_text']}; {row['points']} points")
    for row in pd.read_csv(report.parent / COST_TABLE).itertuples():
        print(f"  {row.method}: {row.seconds:.0f} s ({row.relative_to_morlhf:.0%} of MORLHF)")
    print(f"report: {report}")


def run_serve(args: argparse.Namespace, config: RicConfig) -> None:
    from ric.serve import serve

    serve(args.model, config)


def run_export_lora(args: argparse.Namespace, config: None) -> None:
    from ric.runs import export_lora

    metrics = export_lora(
        args.model, args.output, args.rank, args.dtype, args.portable, args.weights
    )
    soup = f" averaged from {len(args.model)} runs," if len(args.model) > 1 else ""
    print(
        f"ric: {args.output}:{soup} LoRA rank {metrics['rank']} ({metrics['dtype']}), "
        f"{metrics['adapter_bytes'] / 1e6:.1f} MB; each weight change keeps "
        f"{metrics['kept_min']:.0%}..{max(metrics['kept'].values()):.0%} of its squared norm "
        f"(mean {metrics['kept_mean']:.0%}); it loads wherever a trained run does",
        file=sys.stderr,
    )


def run_rewards(args: argparse.Namespace, config: None) -> None:
    from ric.rewards import describe_rewards

    for name, description in describe_rewards().items():
        print(f"{name:14s} {description}")
    print(f"{'pkg.mod:func':14s} your own function f(prompts, responses) -> scores, or a class")


def run_config(args: argparse.Namespace, config: Any) -> None:
    """The resolved config (a RicConfig, or `ric image`'s ImageRicConfig), or its fields."""
    if args.fields:
        for key, type_name, default, doc in iter_field_docs(type(config)):
            print(f"{key:30s} {type_name:18s} default {default!r:12s} {doc}")
        return
    print(dump_config(config), end="")


def run_image_label(args: argparse.Namespace, config: ImageRicConfig) -> None:
    from ric.image.label import label_images, read_image_labels

    output = label_images(config, show_progress=not args.no_progress)
    stats = read_image_labels(output).stats
    print(f"scored {stats.count} images with {', '.join(stats.names)}")
    for name, mean, std in zip(stats.names, stats.mean, stats.std, strict=True):
        print(f"  {name}: mean {mean:.4g}, std {std:.4g}")
    print(f"output: {output}")


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

    captions = list(args.caption or [])
    if args.captions:
        captions += read_captions(args.captions, config.evaluate.prompt_column, None)
    if not captions:
        raise ValueError("no captions: pass --caption TEXT (repeatable) or --captions FILE")
    if args.num_images < 1:
        raise ValueError(f"--num-images must be >= 1, got {args.num_images}")
    model = load_trained_image_model(args.model, config.model.dtype, config.model.device)
    desired = desired_rewards(args, config.mapping, model.stats)
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
    _write_records(records, str(output / "generations.jsonl"))


def run_image_evaluate(args: argparse.Namespace, config: ImageRicConfig) -> None:
    from ric.image.evaluate import evaluate_image_model

    output = evaluate_image_model(config, show_progress=not args.no_progress)
    metrics = json.loads((output / "metrics.json").read_text())
    _print_image_metrics(metrics)
    print(f"report: {output / 'report.md'}")


def _print_image_metrics(metrics: dict) -> None:
    from ric.evaluation.report import describe_interval, describe_move, format_signed

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


def run_image_demo(args: argparse.Namespace, config: None) -> None:
    from ric.tasks.image_demo import run_image_demo

    report = run_image_demo(
        Path(args.output), args.smoke, args.overrides, show_progress=not args.no_progress
    )
    _print_image_metrics(json.loads((report.parent / "metrics.json").read_text()))
    timing = json.loads((report.parent.parent / "demo.json").read_text())["seconds"]
    print(f"image demo finished in {timing['total']:.0f} s; report: {report}")


def run_image_rewards(args: argparse.Namespace, config: None) -> None:
    from ric.image.rewards import describe_image_rewards

    for name, description in describe_image_rewards().items():
        print(f"{name:16s} {description}")
    print(f"{'pkg.mod:func':16s} your own function f(captions, images) -> scores")


@dataclass(frozen=True)
class Flag:
    """One command-line flag. ``key``: the config key its value sets (None: the command reads
    it itself); ``to_config`` turns the flag's value into that key's value."""

    name: str
    help: str
    key: str | None = None
    type: Callable[[str], Any] | None = None
    action: str | None = None  # "store_true" or "append"
    choices: Sequence[str] | None = None
    required: bool = False
    default: Any = None
    to_config: Callable[[Any], Any] | None = None

    def add_to(self, parser: argparse.ArgumentParser) -> None:
        options: dict[str, Any] = {"help": self.help}
        if self.action:
            options["action"] = self.action
        else:
            options |= {"type": self.type, "choices": self.choices, "default": self.default}
        if self.name.startswith("--"):
            options["required"] = self.required
        parser.add_argument(self.name, **options)

    def config_value(self, args: argparse.Namespace) -> Any:
        """The value the flag gives its config key, or None when the flag was not used."""
        value = getattr(args, self.name.lstrip("-").replace("-", "_"))
        if value is None or value is False:
            return None
        return self.to_config(value) if self.to_config else value


@dataclass(frozen=True)
class Command:
    """One subcommand: its flags, the common options it takes, and the function it calls."""

    run: Callable[[argparse.Namespace, Any], None]
    help: str
    description: str | None = None
    flags: tuple[Flag, ...] = ()
    config_file: bool = True  # --config FILE
    overrides: bool = True  # --set KEY=VALUE
    progress: bool = True  # --no-progress
    builds_config: bool = True  # False: the command lays --set over its own task
    # The trained run whose recorded settings govern the command: a config key, or "--model".
    trained_run: str | None = None
    config_class: type = RicConfig  # ImageRicConfig for `ric image ...`
    # The sections a trained run's recording governs (None: the text runs' RUN_SETTINGS).
    run_sections: tuple[str, ...] | None = None
    # Refuses `accelerate launch`/`torchrun` with several processes: it would serve, or do all
    # the work and write, once per process.
    one_process: bool = False


OUTPUT = Flag("--output", "output directory")
NO_PROGRESS = Flag("--no-progress", "hide progress bars", action="store_true")
SMOKE = Flag("--smoke", "tiny in-code model and a data slice (< 1 minute)", action="store_true")
MODEL_SOURCE = Flag("--model", "smollm2, tiny, a local directory or a hub id", "model.source")
RESUME = Flag("--resume", "continue from the newest checkpoint in --output", action="store_true")
PREFERENCE = Flag("--preference", "e.g. 0.2,0.8 (mapped)", type=parse_floats)
EXPLICIT_REWARDS = Flag(
    "--rewards", "explicit desired rewards, standardized units", type=parse_floats
)


COMMANDS: dict[str, Command] = {
    "map": Command(
        run_map,
        "map a preference to desired rewards",
        "Print the desired rewards for a preference; the last line is JSON.",
        (
            Flag("--preference", "e.g. 0.2,0.8", type=parse_floats, required=True),
            Flag("--method", "default: p_inf", "mapping.method", choices=MAPPING_METHODS),
            Flag("--p", "norm exponent for p_norm / convex", "mapping.p", type=float),
            Flag("--lam", "per-objective lambda, each >= 1", "mapping.lam", type=parse_floats),
            Flag("--r-min", "per-objective r_min, e.g. -4,-4", type=parse_floats),
            Flag("--r-max", "per-objective r_max, e.g. 4,4", type=parse_floats),
            Flag("--stats", "stats.json (or a `ric label` output dir) for the ranges"),
            Flag("--prompt", "also print the conditioned prompt for this text"),
        ),
        progress=False,
    ),
    "label": Command(
        run_label,
        "score (prompt, response) data with rewards",
        "Score data with the configured rewards; write scored data + stats.json.",
        (
            Flag("--data", "JSONL, Parquet, CSV, a saved HF dataset or a hub name", "data.path"),
            Flag("--output", "output directory", "label.output"),
            Flag(
                "--reward",
                "reward type (repeatable); replaces the config's",
                "rewards",
                action="append",
                to_config=lambda types: [{"type": kind} for kind in types],
            ),
        ),
    ),
    "train": Command(
        run_train,
        "offline stage: multi-reward conditional SFT",
        "Fine-tune the policy on a `ric label` output with rewards in the prompt.",
        (
            Flag("--data", "a `ric label` output directory", "train.data"),
            Flag("--output", "output directory", "train.output"),
            MODEL_SOURCE,
            Flag("--init", "a RiC run to continue on this data, e.g. embedded-ric", "train.init"),
            RESUME,
        ),
    ),
    "generate": Command(
        run_generate,
        "generate with a trained model for a preference or explicit rewards",
        "Print one JSON line per prompt (settings recorded in each). Mapping, generation, "
        "model.dtype and model.device settings are the run's own unless you set them.",
        (
            Flag("--model", "a `ric train` output directory", required=True),
            Flag("--prompt", "a prompt (repeatable)", action="append"),
            Flag("--prompts", "a file of prompts (JSONL, Parquet, CSV)"),
            PREFERENCE,
            EXPLICIT_REWARDS,
            Flag("--output", "also write the JSON lines to this file"),
        ),
        progress=False,
        trained_run="--model",
    ),
    "evaluate": Command(
        run_evaluate,
        "sweep preferences on held-out prompts: front, hypervolume, steerability, report",
        "Mapping, generation, model.dtype and model.device settings are the run's own unless "
        "you set them.",
        (
            Flag("--model", "a `ric train` output directory", "evaluate.model"),
            Flag("--prompts", "held-out prompts (JSONL, Parquet, CSV, HF)", "evaluate.prompts"),
            Flag("--output", "output directory", "evaluate.output"),
        ),
        trained_run="evaluate.model",
    ),
    "bootstrap": Command(
        run_bootstrap,
        "build an offline dataset: K sampled responses per prompt from a policy",
        flags=(
            Flag("--prompts", "prompts file (JSONL, Parquet, CSV, HF)", "bootstrap.prompts"),
            Flag("--output", "output directory", "bootstrap.output"),
            Flag("--samples", "responses per prompt (default 4)", "bootstrap.samples", type=int),
            MODEL_SOURCE,
        ),
    ),
    "prepare": Command(
        run_prepare,
        "turn an upstream dataset into (prompt, response) pairs that `ric label` reads",
        "Preparers: hh-rlhf, summarize, helpsteer2, ultrafeedback. --data: a Hub dataset name "
        "(default: the dataset's own) or local files in the upstream format.",
        (
            Flag(
                "dataset",
                "the preparer (hh-rlhf, summarize, helpsteer2, ultrafeedback)",
                "prepare.dataset",
            ),
            Flag("--data", "Hub dataset name or local .jsonl/.json/.parquet files", "prepare.data"),
            Flag("--output", "output directory", "prepare.output"),
            Flag("--split", "split of a Hub dataset (default train)", "prepare.split"),
            Flag("--limit", "read only the first N upstream rows", "prepare.limit", type=int),
            Flag(
                "--tokenizer",
                "the paper's 8-512 token filter with this tokenizer",
                "prepare.tokenizer",
            ),
        ),
        progress=False,
    ),
    "online": Command(
        run_online,
        "online stage: generate near the front, relabel, MORS, fine-tune; k iterations",
        "Continue a `ric train` output with online iterations (resumable: rerun the same "
        "command after a crash). Mapping, generation and train.max_length are the run's own "
        "unless you set them.",
        (
            Flag("--model", "the `ric train` output to continue", "online.model"),
            Flag("--output", "output directory (one iter-K/ per iteration)", "online.output"),
            Flag("--iterations", "online iterations (default 2)", "online.iterations", type=int),
            Flag(
                "--no-mors",
                "ablation: keep every sample",
                "online.mors",
                action="store_true",
                to_config=lambda _: False,
            ),
            Flag(
                "--no-original",
                "ablation: mix in no original samples",
                "online.original_fraction",
                action="store_true",
                to_config=lambda _: 0,
            ),
            Flag(
                "--heldout",
                "held-out prompts: then evaluate offline and every iteration",
                "evaluate.prompts",
            ),
        ),
        trained_run="online.model",
    ),
    "demo": Command(
        run_demo,
        "label -> offline training -> evaluation on the embedded default task",
        "Run the whole pipeline on the embedded task and print the report.",
        (Flag("--output", "output directory (runs/demo)", default="runs/demo"), SMOKE),
        config_file=False,
        builds_config=False,
    ),
    "baseline": Command(
        run_baseline,
        "the paper's baselines: sft, morlhf (one model per preference), soups",
        "sft: plain SFT on the labeled responses, prompts without rewards. morlhf: RL (TRL "
        "GRPO/RLOO) on w^T z(r) with a KL penalty to the starting model. soups: one RL model "
        "per reward, interpolated per preference at evaluation. Every output loads with "
        "`ric evaluate` and `ric generate`; reruns resume.",
        (
            Flag("baseline", "which baseline", choices=("sft", "morlhf", "soups")),
            Flag("--data", "a `ric label` output directory", "train.data"),
            OUTPUT,
            Flag("--model", "the base model: smollm2, tiny, a directory, a hub id", "model.source"),
            Flag(
                "--init",
                "morlhf, soups: a `ric baseline sft` output to start from",
                "baseline.init",
            ),
            Flag("--preference", "morlhf: the preference, e.g. 0.5,0.5", type=parse_floats),
            Flag("--resume", "sft: continue from a checkpoint", action="store_true"),
        ),
    ),
    "compare": Command(
        run_compare,
        "RiC against base, SFT, MORLHF and Rewarded Soups: fronts, hypervolumes, costs",
        "Train everything the comparison needs under --output (resumable) and evaluate it on "
        "the same prompts, rewards, stats and reference point. Without --config: the embedded "
        "default task sized for 2 CPU cores; --config lays a file over it "
        "(configs/compare-gpu.yaml).",
        (Flag("--output", "output (runs/compare)", default="runs/compare"), SMOKE),
        builds_config=False,
    ),
    "serve": Command(
        run_serve,
        "serve a trained model over an OpenAI-compatible HTTP API, steered per request",
        "Each request sets its own preference (or desired rewards) in the body. Mapping, "
        "generation, model.dtype and model.device settings are the run's own unless you set "
        "them; serve.* holds batching and guardrails.",
        (
            Flag("--model", "a `ric train` or `ric online` output directory", required=True),
            Flag("--host", "address to listen on (default 127.0.0.1)", "serve.host"),
            Flag("--port", "port to listen on (default 8000)", "serve.port", type=int),
        ),
        progress=False,
        trained_run="--model",
        one_process=True,
    ),
    "export-lora": Command(
        run_export_lora,
        "turn a fine-tuned run (top layers or a LoRA adapter) into a LoRA run of a few MB",
        "Each weight change becomes its best rank-r approximation (truncated SVD); norm "
        "scales are kept whole. The output loads with `ric generate/evaluate/online/serve` and "
        "with plain peft. metrics.json says how much of each change the rank kept. Given "
        "--model more than once, it exports the runs' weighted average (a model soup) of runs "
        "that share base model, template and stats.json, such as successive online iterations.",
        (
            Flag(
                "--model",
                "a trained run with layers/ or adapter/ (e.g. a `ric train` output); repeat "
                "it to average several",
                action="append",
                required=True,
            ),
            Flag(
                "--weights",
                "soup weights, one per --model, summing to 1, e.g. 0.5,0.5 (default: equal)",
                type=parse_floats,
            ),
            Flag("--output", "output directory (must not exist or be empty)", required=True),
            Flag("--rank", "LoRA rank (default 32)", type=int, default=32),
            Flag("--dtype", "float16 (default), bfloat16 or float32", default="float16"),
            Flag(
                "--portable",
                "record none of this machine's paths (data, outputs): a run to hand to others",
                action="store_true",
            ),
        ),
        config_file=False,
        overrides=False,
        progress=False,
        builds_config=False,
        one_process=True,
    ),
    "rewards": Command(
        run_rewards,
        "list the available reward scorers",
        config_file=False,
        overrides=False,
        progress=False,
        builds_config=False,
    ),
    "config": Command(
        run_config,
        "print the resolved config, or every field with its doc",
        flags=(Flag("--fields", "list every field and its doc", action="store_true"),),
        progress=False,
    ),
}


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
        flags=(Flag("--fields", "list every field and its doc", action="store_true"),),
        progress=False,
        config_class=ImageRicConfig,
    ),
}


def _add_commands(subparsers: Any, commands: dict[str, Command]) -> None:
    for name, command in commands.items():
        sub = subparsers.add_parser(name, help=command.help, description=command.description)
        for flag in command.flags:
            flag.add_to(sub)
        if command.config_file:
            sub.add_argument("--config", help="YAML config file (defaults apply where silent)")
        if command.progress:
            NO_PROGRESS.add_to(sub)
        if command.overrides:
            sub.add_argument(
                "--set",
                dest="overrides",
                action="append",
                default=[],
                metavar="KEY=VALUE",
                help="override a config key, e.g. --set label.shard_size=256 (repeatable)",
            )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ric", description="Multi-objective alignment with Rewards-in-Context (RiC)."
    )
    subparsers = parser.add_subparsers(dest="command", required=True)
    _add_commands(subparsers, COMMANDS)
    image = subparsers.add_parser(
        "image",
        help="text-to-image RiC: label, train, generate, evaluate, demo",
        description="Rewards-in-Context for diffusion models (DESIGN 1.7), on `ric image` "
        "configs (`ric image config --fields`).",
    )
    _add_commands(image.add_subparsers(dest="image_command", required=True), IMAGE_COMMANDS)
    return parser


def chosen_command(args: argparse.Namespace) -> Command:
    if args.command == "image":
        return IMAGE_COMMANDS[args.image_command]
    return COMMANDS[args.command]


def command_config(command: Command, args: argparse.Namespace) -> Any:
    """The config file, then --set overrides, then the command's flags; for a command that uses
    a trained run, laid over the run's recorded settings (ric.runs.layered_config)."""
    flags = [
        f"{flag.key}={json.dumps(value)}"
        for flag in command.flags
        if flag.key and (value := flag.config_value(args)) is not None
    ]
    values = read_values(getattr(args, "config", None), [*args.overrides, *flags])
    cls = command.config_class
    if command.trained_run is None:
        return config_from_values(values, cls=cls)
    from ric.runs import RUN_SETTINGS, layered_config

    run = (
        args.model
        if command.trained_run == "--model"
        else reduce(getattr, command.trained_run.split("."), config_from_values(values, cls=cls))
    )
    layered = layered_config(values, run or None, cls, command.run_sections or RUN_SETTINGS)
    if layered.from_run:
        shown = ", ".join(f"{key}={value}" for key, value in layered.from_run.items())
        print(f"ric: settings recorded by the run {run}: {shown}", file=sys.stderr)
    if layered.from_user:
        shown = ", ".join(f"{key}={value}" for key, value in layered.from_user.items())
        print(f"ric: settings you set: {shown}", file=sys.stderr)
    return layered.config


def main(argv: Sequence[str] | None = None) -> int:
    # User rewards ("my_rewards:score") resolve from the working directory, as `python -m` would.
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    args = build_parser().parse_args(argv)
    command = chosen_command(args)
    if parallel.launched() and command.one_process:
        if parallel.is_main_process():  # one message, not one per process
            name = " ".join(filter(None, (args.command, getattr(args, "image_command", None))))
            print(
                f"ric: error: `ric {name}` runs as one process, but it was launched as "
                f"{parallel.num_processes()}; run it without accelerate launch or torchrun",
                file=sys.stderr,
            )
        parallel.wait_for_everyone()  # a first exit gets the others killed: let the main say why
        return 2
    if parallel.launched() and not parallel.is_main_process():
        # One of several processes (accelerate launch): the main one prints and shows progress.
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 (for the rest of the process)
        args.no_progress = True
    try:
        config = command_config(command, args) if command.builds_config else None
        command.run(args, config)
    except (ValueError, OSError) as error:  # OSError: a full disk, no network, no permission
        print(f"ric: error: {' '.join(str(error).split())}", file=sys.stderr)  # one line
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
