"""The `ric` command line: each subcommand is a thin call into one library function.

Errors a user can fix (bad values, missing files or columns) are printed as one line,
``ric: error: ...``, with exit status 2 and no traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ric.config import RicConfig, dump_config, iter_field_docs, load_config
from ric.core import PromptTemplate, build_prompt


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


def _config_arguments(
    parser: argparse.ArgumentParser, config_file: bool = True, progress: bool = False
) -> None:
    """--config FILE (unless ``config_file`` is False), repeatable --set, and --no-progress."""
    if config_file:
        parser.add_argument("--config", help="YAML config file (defaults apply where silent)")
    if progress:
        parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config key, e.g. --set label.shard_size=256 (repeatable)",
    )


def _load(args: argparse.Namespace, flags: dict[str, object] | None = None) -> RicConfig:
    """The config file, then --set overrides, then the subcommand's own flags (when given)."""
    flag_overrides = [
        f"{key}={json.dumps(value)}" for key, value in (flags or {}).items() if value is not None
    ]
    return load_config(args.config, [*args.overrides, *flag_overrides])


def run_map(args: argparse.Namespace) -> None:
    from ric.data.io import load_stats

    config = _load(
        args, {"mapping.method": args.method, "mapping.p": args.p, "mapping.lam": args.lam}
    )
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
        template = PromptTemplate(
            config.template.text, config.template.marker, tuple(config.template.protected)
        )
        result["conditioned_prompt"] = build_prompt(args.prompt, desired.tolist(), template)
        print(result["conditioned_prompt"])
    print(json.dumps(result))


def run_label(args: argparse.Namespace) -> None:
    from ric.data import label_dataset

    rewards = [{"type": reward} for reward in args.reward] if args.reward else None
    config = _load(args, {"data.path": args.data, "label.output": args.output, "rewards": rewards})
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


def run_train(args: argparse.Namespace) -> None:
    from ric.training.offline import METRICS_FILE, run_train

    config = _load(
        args,
        {"train.data": args.data, "train.output": args.output, "model.source": args.model},
    )
    output = run_train(config, resume=args.resume, show_progress=not args.no_progress)
    metrics = json.loads((output / METRICS_FILE).read_text())
    print(
        f"trained {metrics['steps']} steps on {metrics['samples']} samples "
        f"(loss {metrics['first_loss']:.4f} -> {metrics['last_loss']:.4f}, "
        f"{metrics['response_tokens_per_second']:.0f} response tokens/s)"
    )
    print(f"output: {output}")


def run_generate(args: argparse.Namespace) -> None:
    from ric.data.sources import read_prompts
    from ric.training.generation import generate_with_stats
    from ric.training.trained import load_trained

    config = _load(args)
    prompts = list(args.prompt or [])
    if args.prompts:
        prompts += read_prompts(args.prompts, config.evaluate.prompt_column)
    if not prompts:
        raise ValueError("no prompts: pass --prompt TEXT (repeatable) or --prompts FILE")
    policy = load_trained(args.model)
    n = policy.stats.num_objectives
    if not policy.method.conditioned:
        _generate_baseline(args, config, policy, prompts)
        return
    if (args.preference is None) == (args.rewards is None):
        raise ValueError("give exactly one of --preference (mapped) or --rewards (explicit)")
    if args.rewards is not None:
        if len(args.rewards) != n:
            raise ValueError(
                f"--rewards has {len(args.rewards)} values; the model has {n} objectives "
                f"({', '.join(policy.stats.names)})"
            )
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
    from ric.baselines.soups import soup_model
    from ric.training.generation import generate_with_stats
    from ric.training.trained import TrainedPolicy

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


def run_evaluate(args: argparse.Namespace) -> None:
    from ric.evaluation.sweep import METRICS_FILE, run_evaluate

    config = _load(
        args,
        {
            "evaluate.model": args.model,
            "evaluate.prompts": args.prompts,
            "evaluate.output": args.output,
        },
    )
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


def run_online(args: argparse.Namespace) -> None:
    from ric.training.online import run_online

    config = _load(
        args,
        {
            "online.model": args.model,
            "online.output": args.output,
            "online.iterations": args.iterations,
            "online.mors": False if args.no_mors else None,
            "online.original_fraction": 0 if args.no_original else None,
            "evaluate.prompts": args.heldout,
        },
    )
    show_progress = not args.no_progress
    output = run_online(config, show_progress)
    print(f"online iterations: {output}")
    if config.evaluate.prompts:
        import pandas as pd

        from ric.evaluation.compare import COMPARISON_TABLE
        from ric.training.online import compare_iterations

        report = compare_iterations(config, output / "evaluate", show_progress)
        for row in pd.read_csv(report.parent / COMPARISON_TABLE).itertuples():
            print(f"  {row.label}: hypervolume {row.hypervolume:.4g}")
        print(f"report: {report}")


def run_bootstrap(args: argparse.Namespace) -> None:
    from ric.training.bootstrap import PAIRS_FILE, run_bootstrap

    config = _load(
        args,
        {
            "bootstrap.prompts": args.prompts,
            "bootstrap.output": args.output,
            "bootstrap.samples": args.samples,
            "model.source": args.model,
        },
    )
    output = run_bootstrap(config, show_progress=not args.no_progress)
    print(f"pairs: {output / PAIRS_FILE}")


def run_demo(args: argparse.Namespace) -> None:
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


def run_baseline(args: argparse.Namespace) -> None:
    from ric.baselines.rl import run_rl
    from ric.baselines.soups import train_soup
    from ric.training.offline import run_train

    flags: dict[str, object] = {"train.data": args.data, "model.source": args.model}
    if args.baseline == "sft":
        config = _load(args, {**flags, "train.output": args.output})
        output = run_train(config, args.resume, not args.no_progress, conditioned=False)
        print(f"SFT baseline: {output}")
        return
    config = _load(args, {**flags, "baseline.init": args.init})
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


def run_compare(args: argparse.Namespace) -> None:
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


def run_rewards(args: argparse.Namespace) -> None:
    from ric.rewards import describe_rewards

    for name, description in describe_rewards().items():
        print(f"{name:14s} {description}")
    print(f"{'pkg.mod:func':14s} your own function f(prompts, responses) -> scores, or a class")


def run_config(args: argparse.Namespace) -> None:
    if args.fields:
        for key, type_name, default, doc in iter_field_docs(RicConfig):
            print(f"{key:26s} {type_name:18s} default {default!r:12s} {doc}")
        return
    print(dump_config(_load(args)), end="")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ric", description="Multi-objective alignment with Rewards-in-Context (RiC)."
    )
    commands = parser.add_subparsers(dest="command", required=True)

    mapper = commands.add_parser(
        "map",
        help="map a preference to desired rewards",
        description="Print the desired rewards for a preference; the last line is JSON.",
    )
    mapper.add_argument("--preference", type=parse_floats, required=True, help="e.g. 0.2,0.8")
    mapper.add_argument(
        "--method", choices=["linear", "p_norm", "p_inf", "convex"], help="default: p_inf"
    )
    mapper.add_argument("--p", type=float, help="norm exponent for p_norm / convex")
    mapper.add_argument("--lam", type=parse_floats, help="per-objective lambda, each >= 1")
    mapper.add_argument("--r-min", type=parse_floats, help="per-objective r_min, e.g. -4,-4")
    mapper.add_argument("--r-max", type=parse_floats, help="per-objective r_max, e.g. 4,4")
    mapper.add_argument("--stats", help="stats.json (or a `ric label` output dir) for the ranges")
    mapper.add_argument("--prompt", help="also print the conditioned prompt for this text")
    _config_arguments(mapper)
    mapper.set_defaults(run=run_map)

    labeler = commands.add_parser(
        "label",
        help="score (prompt, response) data with rewards",
        description="Score data with the configured rewards; write scored data + stats.json.",
    )
    labeler.add_argument("--data", help="JSONL, Parquet, CSV, a saved HF dataset or a hub name")
    labeler.add_argument("--output", help="output directory")
    labeler.add_argument(
        "--reward", action="append", help="reward type (repeatable); replaces the config's"
    )
    _config_arguments(labeler, progress=True)
    labeler.set_defaults(run=run_label)

    trainer = commands.add_parser(
        "train",
        help="offline stage: multi-reward conditional SFT",
        description="Fine-tune the policy on a `ric label` output with rewards in the prompt.",
    )
    trainer.add_argument("--data", help="a `ric label` output directory")
    trainer.add_argument("--output", help="output directory")
    trainer.add_argument("--model", help="smollm2, tiny, a local directory or a hub id")
    trainer.add_argument(
        "--resume", action="store_true", help="continue from the newest checkpoint in --output"
    )
    _config_arguments(trainer, progress=True)
    trainer.set_defaults(run=run_train)

    generator = commands.add_parser(
        "generate",
        help="generate with a trained model for a preference or explicit rewards",
        description="Print one JSON line per prompt (settings recorded in each).",
    )
    generator.add_argument("--model", required=True, help="a `ric train` output directory")
    generator.add_argument("--prompt", action="append", help="a prompt (repeatable)")
    generator.add_argument("--prompts", help="a file of prompts (JSONL, Parquet, CSV)")
    generator.add_argument("--preference", type=parse_floats, help="e.g. 0.2,0.8 (mapped)")
    generator.add_argument(
        "--rewards", type=parse_floats, help="explicit desired rewards, standardized units"
    )
    generator.add_argument("--output", help="also write the JSON lines to this file")
    _config_arguments(generator)
    generator.set_defaults(run=run_generate)

    evaluator = commands.add_parser(
        "evaluate",
        help="sweep preferences on held-out prompts: front, hypervolume, steerability, report",
    )
    evaluator.add_argument("--model", help="a `ric train` output directory")
    evaluator.add_argument("--prompts", help="held-out prompts (JSONL, Parquet, CSV, HF)")
    evaluator.add_argument("--output", help="output directory")
    _config_arguments(evaluator, progress=True)
    evaluator.set_defaults(run=run_evaluate)

    bootstrapper = commands.add_parser(
        "bootstrap",
        help="build an offline dataset: K sampled responses per prompt from a policy",
    )
    bootstrapper.add_argument("--prompts", help="prompts file (JSONL, Parquet, CSV, HF)")
    bootstrapper.add_argument("--output", help="output directory")
    bootstrapper.add_argument("--samples", type=int, help="responses per prompt (default 4)")
    bootstrapper.add_argument("--model", help="smollm2, tiny, a local directory or a hub id")
    _config_arguments(bootstrapper, progress=True)
    bootstrapper.set_defaults(run=run_bootstrap)

    online = commands.add_parser(
        "online",
        help="online stage: generate near the front, relabel, MORS, fine-tune; k iterations",
        description="Continue a `ric train` output with online iterations (resumable: rerun "
        "the same command after a crash).",
    )
    online.add_argument("--model", help="the `ric train` output to continue")
    online.add_argument("--output", help="output directory (one iter-K/ folder per iteration)")
    online.add_argument("--iterations", type=int, help="online iterations (default 2)")
    online.add_argument("--no-mors", action="store_true", help="ablation: keep every sample")
    online.add_argument(
        "--no-original", action="store_true", help="ablation: mix in no original samples"
    )
    online.add_argument(
        "--heldout", help="held-out prompts: then evaluate offline and every iteration"
    )
    _config_arguments(online, progress=True)
    online.set_defaults(run=run_online)

    demo = commands.add_parser(
        "demo",
        help="label -> offline training -> evaluation on the embedded default task",
        description="Run the whole offline pipeline on the embedded task and print the report.",
    )
    demo.add_argument("--output", default="runs/demo", help="output directory (runs/demo)")
    demo.add_argument(
        "--smoke", action="store_true", help="tiny in-code model and a data slice (< 1 minute)"
    )
    _config_arguments(demo, config_file=False, progress=True)
    demo.set_defaults(run=run_demo)

    baseline = commands.add_parser(
        "baseline",
        help="the paper's baselines: sft, morlhf (one model per preference), soups",
        description="sft: plain SFT on the labeled responses, prompts without rewards. "
        "morlhf: RL (TRL GRPO/RLOO) on w^T z(r) with a KL penalty to the starting model. "
        "soups: one RL model per reward, interpolated per preference at evaluation. "
        "Every output loads with `ric evaluate` and `ric generate`; reruns resume.",
    )
    baseline.add_argument("baseline", choices=["sft", "morlhf", "soups"])
    baseline.add_argument("--data", help="a `ric label` output directory")
    baseline.add_argument("--output", help="output directory")
    baseline.add_argument("--model", help="the base model: smollm2, tiny, a directory, a hub id")
    baseline.add_argument("--init", help="morlhf, soups: a `ric baseline sft` output to start from")
    baseline.add_argument(
        "--preference", type=parse_floats, help="morlhf: the preference, e.g. 0.5,0.5"
    )
    baseline.add_argument("--resume", action="store_true", help="sft: continue from a checkpoint")
    _config_arguments(baseline, progress=True)
    baseline.set_defaults(run=run_baseline)

    compare = commands.add_parser(
        "compare",
        help="RiC against base, SFT, MORLHF and Rewarded Soups: fronts, hypervolumes, costs",
        description="Train everything the comparison needs under --output (resumable) and "
        "evaluate it on the same prompts, rewards, stats and reference point. Without "
        "--config: the embedded default task sized for 2 CPU cores; --config lays a file "
        "over it (configs/compare-gpu.yaml).",
    )
    compare.add_argument("--output", default="runs/compare", help="output (runs/compare)")
    compare.add_argument(
        "--smoke", action="store_true", help="tiny in-code model and a data slice (< 1 minute)"
    )
    _config_arguments(compare, progress=True)
    compare.set_defaults(run=run_compare)

    rewards = commands.add_parser("rewards", help="list the available reward scorers")
    rewards.set_defaults(run=run_rewards)

    configure = commands.add_parser(
        "config", help="print the resolved config, or every field with its doc"
    )
    configure.add_argument("--fields", action="store_true", help="list every field and its doc")
    _config_arguments(configure)
    configure.set_defaults(run=run_config)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    # User rewards ("my_rewards:score") resolve from the working directory, as `python -m` would.
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        args.run(args)
    except ValueError as error:
        print(f"ric: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
