"""The `ric` command line: each subcommand is a thin call into one library function.

Errors a user can fix (bad values, missing files or columns) are printed as one line,
``ric: error: ...``, with exit status 2 and no traceback.
"""

from __future__ import annotations

import argparse
import json
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
    from ric.data import label_dataset

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
    print(f"output: {output}")


def run_generate(args: argparse.Namespace, config: RicConfig) -> None:
    from ric.data.sources import read_prompts
    from ric.models.generation import generate_with_stats
    from ric.runs import load_trained

    prompts = list(args.prompt or [])
    if args.prompts:
        prompts += read_prompts(args.prompts, config.evaluate.prompt_column)
    if not prompts:
        raise ValueError("no prompts: pass --prompt TEXT (repeatable) or --prompts FILE")
    policy = load_trained(args.model, merged=True)
    n = policy.stats.num_objectives
    if not policy.method.conditioned:
        _generate_baseline(args, config, policy, prompts)
        return
    if (args.preference is None) == (args.rewards is None):
        raise ValueError("give exactly one of --preference (mapped) or --rewards (explicit)")
    given = "--rewards" if args.rewards is not None else "--preference"
    values = args.rewards if args.rewards is not None else args.preference
    if len(values) != n:
        raise ValueError(
            f"{given} has {len(values)} values; the model has {n} objectives "
            f"({', '.join(policy.stats.names)})"
        )
    if args.rewards is not None:
        desired = np.asarray(args.rewards, dtype=float)
    else:
        r_min, r_max = config.mapping.reward_range(policy.stats, n)
        desired = config.mapping.desired_rewards(args.preference, r_min, r_max)
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

        write_text_atomic(Path(output), lines)
    print(lines, end="")


def run_evaluate(args: argparse.Namespace, config: RicConfig) -> None:
    from ric.evaluation.sweep import METRICS_FILE, run_evaluate

    output = run_evaluate(config, show_progress=not args.no_progress)
    metrics = json.loads((output / METRICS_FILE).read_text())
    print(f"hypervolume {metrics['front']['hypervolume']:.4g}")
    for name, values in metrics["steerability"].items():
        print(f"  {name}: Spearman(desired, obtained) {values['desired_vs_obtained']}")
    for name, values in (metrics["probe"] or {}).items():
        print(
            f"  {name}: asked low / high gives {values['obtained_low_raw']:.4g} / "
            f"{values['obtained_high_raw']:.4g} (move {values['difference_sd']:+.2f} sd)"
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
        import pandas as pd

        from ric.evaluation.compare import COMPARISON_TABLE
        from ric.tasks.iterations import compare_iterations

        report = compare_iterations(config, output / "evaluate", show_progress)
        for row in pd.read_csv(report.parent / COMPARISON_TABLE).itertuples():
            print(f"  {row.label}: hypervolume {row.hypervolume:.4g}")
        print(f"report: {report}")


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


def run_demo(args: argparse.Namespace, config: None) -> None:
    import pandas as pd

    from ric.evaluation.compare import COMPARISON_TABLE
    from ric.tasks.demo import run_demo

    report = run_demo(
        Path(args.output),
        smoke=args.smoke,
        overrides=args.overrides,
        show_progress=not args.no_progress,
    )
    timing = json.loads((report.parent.parent / "demo.json").read_text())["seconds"]
    for _, row in pd.read_csv(report.parent / COMPARISON_TABLE).iterrows():
        moves = ", ".join(
            f"{column.removeprefix('probe_sd_')} {row[column]:+.2f} sd"
            for column in row.index
            if column.startswith("probe_sd_")
        )
        print(
            f"{row['label']}: hypervolume {row['hypervolume']:.4g}; asked low vs high moves {moves}"
        )
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
    for row in pd.read_csv(report.parent / COMPARISON_TABLE).itertuples():
        print(f"  {row.label}: hypervolume {row.hypervolume:.4g} ({row.points} points)")
    for row in pd.read_csv(report.parent / COST_TABLE).itertuples():
        print(f"  {row.method}: {row.seconds:.0f} s ({row.relative_to_morlhf:.0%} of MORLHF)")
    print(f"report: {report}")


def run_serve(args: argparse.Namespace, config: RicConfig) -> None:
    from ric.serve import serve

    serve(args.model, config)


def run_export_lora(args: argparse.Namespace, config: None) -> None:
    from ric.runs import export_lora

    metrics = export_lora(args.model, args.output, args.rank, args.dtype, args.portable)
    print(
        f"ric: {args.output}: LoRA rank {metrics['rank']} ({metrics['dtype']}), "
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


def run_config(args: argparse.Namespace, config: RicConfig) -> None:
    if args.fields:
        for key, type_name, default, doc in iter_field_docs(RicConfig):
            print(f"{key:26s} {type_name:18s} default {default!r:12s} {doc}")
        return
    print(dump_config(config), end="")


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


OUTPUT = Flag("--output", "output directory")
NO_PROGRESS = Flag("--no-progress", "hide progress bars", action="store_true")
SMOKE = Flag("--smoke", "tiny in-code model and a data slice (< 1 minute)", action="store_true")
MODEL_SOURCE = Flag("--model", "smollm2, tiny, a local directory or a hub id", "model.source")


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
            Flag(
                "--resume", "continue from the newest checkpoint in --output", action="store_true"
            ),
        ),
    ),
    "generate": Command(
        run_generate,
        "generate with a trained model for a preference or explicit rewards",
        "Print one JSON line per prompt (settings recorded in each). Mapping and generation "
        "settings are the run's own unless you set them.",
        (
            Flag("--model", "a `ric train` output directory", required=True),
            Flag("--prompt", "a prompt (repeatable)", action="append"),
            Flag("--prompts", "a file of prompts (JSONL, Parquet, CSV)"),
            Flag("--preference", "e.g. 0.2,0.8 (mapped)", type=parse_floats),
            Flag("--rewards", "explicit desired rewards, standardized units", type=parse_floats),
            Flag("--output", "also write the JSON lines to this file"),
        ),
        progress=False,
        trained_run="--model",
    ),
    "evaluate": Command(
        run_evaluate,
        "sweep preferences on held-out prompts: front, hypervolume, steerability, report",
        "Mapping and generation settings are the run's own unless you set them.",
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
        "Each request sets its own preference (or desired rewards) in the body. Mapping and "
        "generation settings are the run's own unless you set them; serve.* holds batching "
        "and guardrails.",
        (
            Flag("--model", "a `ric train` or `ric online` output directory", required=True),
            Flag("--host", "address to listen on (default 127.0.0.1)", "serve.host"),
            Flag("--port", "port to listen on (default 8000)", "serve.port", type=int),
        ),
        progress=False,
        trained_run="--model",
    ),
    "export-lora": Command(
        run_export_lora,
        "turn a fine-tuned run (top layers or a LoRA adapter) into a LoRA run of a few MB",
        "Each weight change becomes its best rank-r approximation (truncated SVD); norm "
        "scales are kept whole. The output loads with `ric generate/evaluate/online/serve` and "
        "with plain peft. metrics.json says how much of each change the rank kept.",
        (
            Flag(
                "--model",
                "a trained run with layers/ or adapter/ (e.g. a `ric train` output)",
                required=True,
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ric", description="Multi-objective alignment with Rewards-in-Context (RiC)."
    )
    subparsers = parser.add_subparsers(dest="command", required=True)
    for name, command in COMMANDS.items():
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
    return parser


def command_config(command: Command, args: argparse.Namespace) -> RicConfig:
    """The config file, then --set overrides, then the command's flags; for a command that uses
    a trained run, laid over the run's recorded settings (ric.runs.layered_config)."""
    flags = [
        f"{flag.key}={json.dumps(value)}"
        for flag in command.flags
        if flag.key and (value := flag.config_value(args)) is not None
    ]
    values = read_values(getattr(args, "config", None), [*args.overrides, *flags])
    if command.trained_run is None:
        return config_from_values(values)
    from ric.runs import layered_config

    run = (
        args.model
        if command.trained_run == "--model"
        else reduce(getattr, command.trained_run.split("."), config_from_values(values))
    )
    layered = layered_config(values, run or None)
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
    command = COMMANDS[args.command]
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
