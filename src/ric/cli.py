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


def _config_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="YAML config file (defaults apply where it is silent)")
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
    labeler.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    _config_arguments(labeler)
    labeler.set_defaults(run=run_label)

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
