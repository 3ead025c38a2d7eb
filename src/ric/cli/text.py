"""The text commands' ``run_*`` functions, each a call into one library function that prints
what it returns, and the helpers they share with `ric image` (their flags and help are in
``ric.cli.text_table``)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from ric import parallel
from ric.config import RicConfig, dump_config, iter_field_docs

if TYPE_CHECKING:
    from ric.data.label import LabelResult
    from ric.evaluation.compare import ComparedModel, Comparison

T = TypeVar("T")
# How the CLI names the steering fields in its errors: by the flags that set them.
STEERING_FLAGS = {
    "preference": "--preference",
    "rewards": "--rewards",
    "rewards_obtained": "--rewards-obtained",
}


def run_map(args: argparse.Namespace, config: RicConfig) -> None:
    from ric.data.io import STATS_FILE, load_stats
    from ric.runs import read_calibration, run_folder
    from ric.steering import Steering, mapping_range

    if (args.preference is None) == (args.rewards_obtained is None):
        raise ValueError("give one of --preference or --rewards-obtained (with --model)")
    if args.rewards_obtained is not None and not args.model:
        raise ValueError("--rewards-obtained needs --model, a calibrated run (`ric calibrate`)")
    if args.model and args.stats:
        raise ValueError("give --model (a run: its stats and calibration) or --stats, not both")
    template = config.template.prompt_template()
    if args.model:
        from ric.config import load_config
        from ric.data.io import CONFIG_FILE

        folder = run_folder(args.model)
        if not (folder / CONFIG_FILE).is_file():
            raise ValueError(
                f"--model {args.model!r} is not a trained run: it has no {CONFIG_FILE}"
            )
        run_config = load_config(folder / CONFIG_FILE)
        template = run_config.template.prompt_template()
        config.model.source = run_config.model.source
        steering = Steering.for_stats(load_stats(folder / STATS_FILE), config.mapping, template)
        steering = replace(steering, calibration=read_calibration(folder))
    elif args.stats:
        steering = Steering.for_stats(load_stats(args.stats), config.mapping, template)
    else:
        count = len(args.preference)
        names = tuple(f"R{i}" for i in range(1, count + 1))
        steering = Steering(names, config.mapping, *mapping_range(config.mapping, None, count))
        steering = replace(steering, template=template)
    if args.r_min is not None:
        steering = replace(steering, r_min=np.asarray(args.r_min, dtype=float))
    if args.r_max is not None:
        steering = replace(steering, r_max=np.asarray(args.r_max, dtype=float))
    desired = steered(
        lambda: steering.desired(args.preference, rewards_obtained=args.rewards_obtained)
    )
    promised = steering.promised(desired) if steering.calibration else desired
    asked = args.preference or args.rewards_obtained
    label = "w" if args.preference else "obtain"
    for name, w, low, high, value, expected in zip(
        steering.names, asked, steering.r_min, steering.r_max, desired, promised, strict=True
    ):
        line = f"{name}: {label}={w:g}  range=[{low:.3f}, {high:.3f}]  desired={value:.4f}"
        print(line + (f"  promised={expected:.4f}" if steering.calibration else ""))
    result = {
        **({"preference": list(args.preference)} if args.preference else {}),
        **({"rewards_obtained": list(args.rewards_obtained)} if args.rewards_obtained else {}),
        **steering.describe(),
        "desired_rewards": [float(v) for v in desired],
        "promised_rewards": [float(v) for v in promised],
    }
    if args.prompt is not None:
        if template.is_chat:  # the model's chat template writes the prompt: its tokenizer
            from ric.models.loading import load_tokenizer

            steering = steering.with_tokenizer(load_tokenizer(config.model.source))
        (result["conditioned_prompt"],) = steering.prompts([args.prompt], desired)
        print(result["conditioned_prompt"])
    print(json.dumps(result))


def run_label(args: argparse.Namespace, config: RicConfig) -> None:
    from ric.data.label import label_dataset

    print_labeled(label_dataset(config, show_progress=not args.no_progress), "samples")


def print_labeled(result: LabelResult, what: str) -> None:
    """What a labeling run (`ric label`, `ric image label`) scored and where it wrote it;
    ``what``: the rows' name (samples, images)."""
    stats = result.stats
    print(
        f"scored {stats.count} {what} with {', '.join(stats.names)} "
        f"({result.shards_scored} shard scores computed, {result.shards_reused} reused)"
    )
    for name, mean, std in zip(stats.names, stats.mean, stats.std, strict=True):
        print(f"  {name}: mean {mean:.4g}, std {std:.4g}")
    print(
        f"data:   {result.scored_path}\nstats:  {result.stats_path}\nconfig: {result.config_path}"
    )


def run_train(args: argparse.Namespace, config: RicConfig) -> None:
    from ric.training.offline import run_train

    result = run_train(config, resume=args.resume, show_progress=not args.no_progress)
    metrics = result.metrics
    print(
        f"trained {metrics['steps']} steps on {metrics['samples']} samples "
        f"(loss {metrics['first_loss']:.4f} -> {metrics['last_loss']:.4f}, "
        f"{metrics['response_tokens_per_second']:.0f} response tokens/s)"
    )
    if config.lora.top_layers and "frozen_cache" in metrics:  # runs from before it lack it
        print(f"frozen layers: {metrics['frozen_cache']}")
    print(f"output: {result.output}")


def steered(ask: Callable[[], T]) -> T:
    """``ask()``, with a steering error worded in the CLI's flags (``--preference``,
    ``--rewards``) as a ValueError, which ``main`` prints as one ``ric: error:`` line."""
    from ric.steering import SteeringError

    try:
        return ask()
    except SteeringError as error:
        raise ValueError(error.naming(STEERING_FLAGS)) from None


def run_generate(args: argparse.Namespace, config: RicConfig) -> None:
    from ric.models.generation import generate_with_stats
    from ric.runs import load_trained
    from ric.steering import Steering

    prompts = list(args.prompt or [])
    if args.prompts:  # pandas reads them: imported only then, a first answer is sooner without
        from ric.data.sources import read_prompts

        prompts += read_prompts(args.prompts, config.evaluate.prompt_column)
    if not prompts:
        raise ValueError("no prompts: pass --prompt TEXT (repeatable) or --prompts FILE")
    policy = load_trained(
        args.model, merged=True, dtype=config.model.dtype, device=config.model.device
    )
    steering = Steering.for_run(policy, config.mapping)
    desired = steered(
        lambda: steering.desired(args.preference, args.rewards, args.rewards_obtained)
    )
    model = steered(lambda: steering.model_for(policy, args.preference))
    texts = steering.prompts(prompts, desired)
    result = generate_with_stats(model, policy.tokenizer, texts, config.generation)
    records = [
        {
            "prompt": prompt,
            "method": steering.method.name,
            "preference": args.preference or steering.method.preference,
            "desired_rewards": None if desired is None else desired.tolist(),
            **({"rewards_obtained": args.rewards_obtained} if args.rewards_obtained else {}),
            "promised_rewards": None if desired is None else steering.promised(desired).tolist(),
            "conditioned_prompt": text,
            "response": response,
            "finished": finished,
            "generation": vars(config.generation),
        }
        for prompt, text, response, finished in zip(
            prompts, texts, result.texts, result.finished, strict=True
        )
    ]
    write_records(records, args.output)


def write_records(records: list[dict], output: str | None) -> None:
    """Print JSON lines, and write them to ``output`` when given."""
    lines = "".join(json.dumps(record, ensure_ascii=False) + "\n" for record in records)
    if output:
        from ric.data.io import write_text_atomic

        parallel.on_main(lambda: write_text_atomic(Path(output), lines))
    print(lines, end="")


def run_calibrate(args: argparse.Namespace, config: RicConfig) -> None:
    from ric.evaluation.calibrate import run_calibrate

    result = run_calibrate(config, show_progress=not args.no_progress)
    metrics = result.metrics
    print(
        f"calibrated on {metrics['answers']} answers: mean absolute error of the fit "
        f"{metrics['error_of_fit']:.3f} sd, of the paper's obtained = desired "
        f"{metrics['error_if_uncalibrated']:.3f} sd"
    )
    for name, (low, high) in metrics["reach"].items():
        asked_low, asked_high = metrics["asked_range"][name]
        sides = ", ".join(
            f"{other} {move:+.2f}" for other, move in metrics["side_effects"][name].items()
        )
        print(
            f"  {name}: asked {asked_low:+.2f}..{asked_high:+.2f}, obtains {low:+.2f}..{high:+.2f}"
            f" sd; per sd asked of the others: {sides}"
        )
    for name in metrics["unsteered"]:
        print(
            f"warning: {name} moves by less than 0.1 sd over the whole range asked: the model "
            "does not steer it, and no mapping can (train it longer, or check its rewards)",
            file=sys.stderr,
        )
    print(f"output: {result.output} (mapping.method calibrated)")


def run_evaluate(args: argparse.Namespace, config: RicConfig) -> None:
    from ric.evaluation.report import (
        INTERVALS_NOTE,
        REPORT_FILE,
        describe_interval,
        describe_move,
        format_signed,
    )
    from ric.evaluation.sweep import run_evaluate

    result = run_evaluate(config, show_progress=not args.no_progress)
    metrics = result.metrics
    interval = (metrics["intervals"] or {}).get("hypervolume")
    print(f"hypervolume {metrics['front']['hypervolume']:.4g}{describe_interval(interval, '.4g')}")
    w1_intervals = (metrics["intervals"] or {}).get("w1_vs_obtained", {})
    for name, values in metrics["steerability"].items():
        desired, w1 = values["desired_vs_obtained"], values["w1_vs_obtained"]
        print(
            f"  {name}: Spearman(desired, obtained) {format_signed(desired)}, "
            f"Spearman(w_1, mean) {format_signed(w1)}{describe_interval(w1_intervals.get(name))}"
        )
    if metrics["intervals"]:
        print(f"  ({INTERVALS_NOTE})")
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
    if metrics.get("steering_card"):
        from ric.evaluation.card import describe_card

        print(describe_card(metrics["steering_card"]))
    print(f"report: {result.output / REPORT_FILE}")


def run_online(args: argparse.Namespace, config: RicConfig) -> None:
    from ric.training.online import run_online

    show_progress = not args.no_progress
    online = run_online(config, show_progress)
    print(f"online iterations: {online.output}")
    if config.evaluate.prompts:
        from ric.recipes.iterations import compare_iterations

        comparison = compare_iterations(config, online, online.output / "evaluate", show_progress)
        for model in comparison.models:
            print(f"  {model.label}: hypervolume {describe_hypervolume(model, comparison)}")
        print(f"report: {comparison.report}")


def describe_hypervolume(model: ComparedModel, comparison: Comparison) -> str:
    """A compared model's hypervolume with its 95% interval, and the interval of its gap to the
    comparison's last model (paired), where they were computed."""
    from ric.evaluation.report import describe_interval

    text = f"{model.hypervolume:.4g}{describe_interval(model.hypervolume_interval, '.4g')}"
    last, gap = comparison.models[-1], model.minus_last_interval
    if model is not last and gap is not None:
        text += f", minus {last.label}: {gap[0]:+.3g} to {gap[1]:+.3g} (95% interval)"
    return text


def run_bootstrap(args: argparse.Namespace, config: RicConfig) -> None:
    from ric.training.bootstrap import PAIRS_FILE, run_bootstrap

    output = run_bootstrap(config, show_progress=not args.no_progress)
    print(f"pairs: {output / PAIRS_FILE}")


def run_prepare(args: argparse.Namespace, config: RicConfig) -> None:
    from ric.data.prepare import run_prepare

    result = run_prepare(config)
    report = result.report
    left_out = ", ".join(f"{count} {reason}" for reason, count in report["left_out"].items())
    print(
        f"{report['pairs']} pairs from {report['upstream_rows']} upstream rows of "
        f"{report['source']} (left out: {left_out or 'none'})"
    )
    print(f"pairs: {result.pairs_path}  (columns: {', '.join(report['columns'])})")


def run_demo(args: argparse.Namespace, config: None) -> None:
    from ric.evaluation.card import describe_card
    from ric.evaluation.compare import folder_name
    from ric.evaluation.report import describe_move
    from ric.recipes.demo import run_demo

    demo = run_demo(
        Path(args.output),
        smoke=args.smoke,
        overrides=args.overrides,
        show_progress=not args.no_progress,
    )
    comparison = demo.comparison
    for model in comparison.models:
        print(f"{model.label}: hypervolume {describe_hypervolume(model, comparison)}")
        if model.probe:
            moves = ", ".join(f"{name} {describe_move(move)}" for name, move in model.probe.items())
            print(f"  asked low vs high moves {moves}")
        evaluation = comparison.report.parent / folder_name(model.label) / "metrics.json"
        card = json.loads(evaluation.read_text()).get("steering_card")
        if card:
            print(f"  {describe_card(card)}")
    stages = ", ".join(
        f"{stage} {seconds:.0f} s" for stage, seconds in demo.seconds.items() if stage != "total"
    )
    print(
        f"demo finished in {demo.seconds['total']:.0f} s: {stages} "
        f"(calibration and sweeps with {demo.generation_dtype} weights)"
    )
    print(f"report: {comparison.report}")


def run_baseline(args: argparse.Namespace, config: RicConfig) -> None:
    from ric.baselines.rl import run_rl
    from ric.baselines.soups import train_soup
    from ric.training.offline import run_train

    if args.baseline == "sft":
        if args.output:
            config = replace(config, train=replace(config.train, output=args.output))
        result = run_train(config, args.resume, not args.no_progress, conditioned=False)
        print(f"SFT baseline: {result.output}")
        return
    if not args.output:
        raise ValueError("no output directory: pass --output")
    if args.baseline == "soups":
        output = train_soup(config, Path(args.output), not args.no_progress)
        print(f"Rewarded Soups (evaluate with `ric evaluate --model {output}`): {output}")
        return
    if args.preference is None:
        raise ValueError("morlhf trains one model per preference: pass --preference, e.g. 0.5,0.5")
    result = run_rl(config, args.preference, Path(args.output), not args.no_progress)
    metrics = result.metrics
    start, end = metrics["reward_start"], metrics["reward_end"]
    if start and end:
        print(
            f"mean scalarized reward {start['mean_scalarized']:+.3f} (first batches) -> "
            f"{end['mean_scalarized']:+.3f} (last batches), {metrics['seconds']:.0f} s"
        )
    print(f"MORLHF model for {metrics['preference']}: {result.output}")


def run_compare(args: argparse.Namespace, config: None) -> None:
    from ric.recipes.method_comparison import run_compare

    compared = run_compare(
        Path(args.output),
        smoke=args.smoke,
        overrides=args.overrides,
        layer=Path(args.config) if args.config else None,
        show_progress=not args.no_progress,
    )
    comparison = compared.comparison
    for model in comparison.models:
        hypervolume = describe_hypervolume(model, comparison)
        print(f"  {model.label}: hypervolume {hypervolume}; {model.points} points")
    for row in compared.costs.itertuples():
        print(f"  {row.method}: {row.seconds:.0f} s ({row.relative_to_morlhf:.0%} of MORLHF)")
    print(f"report: {comparison.report}")


def run_serve(args: argparse.Namespace, config: RicConfig) -> None:
    from ric.serve import serve

    serve(args.model, config)


def run_export_lora(args: argparse.Namespace, config: None) -> None:
    from ric.export import export_lora

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


def run_export(args: argparse.Namespace, config: None) -> None:
    from ric.export import export_model

    result = export_model(
        args.model, args.output, args.dtype, args.adapter, args.rank, args.weights, args.evaluation
    )
    soup = f", averaged from {len(result.runs)} runs" if len(result.runs) > 1 else ""
    if result.kind == "adapter":
        form = f"LoRA adapter (rank {result.rank}) for {result.base_model}"
    else:
        form = f"merged model (base {result.base_model})"
    print(
        f"{result.output}: {form}{soup}, {result.dtype}, {len(result.files)} files, "
        f"{result.bytes / 1e6:.1f} MB; default preference {list(result.default_preference)}"
    )
    print(
        f'steer it: chat_template_kwargs {{"preference": [...]}} (or "rewards") in '
        f"vLLM, SGLang, `transformers serve` or apply_chat_template; {result.output}/README.md"
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
