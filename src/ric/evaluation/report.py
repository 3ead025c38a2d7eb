"""`report.md`: the plot, the per-preference table, the metrics and the settings on one page."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from ric.config import RicConfig
from ric.data.io import write_text_atomic
from ric.evaluation.card import card_lines

NORMAL_95 = 1.96  # half-width of a normal 95% interval, in standard errors
# What the resampled intervals of the hypervolume and Spearman are for (ric.evaluation.metrics)
INTERVALS_NOTE = (
    "95% intervals of the noise-free values (expected means over the prompts); one answer per "
    "prompt biases the figures, the hypervolume up and Spearman toward 0"
)

REPORT_FILE = "report.md"


def describe_move(values: dict) -> str:
    """An objective's probe move as people read it: ``+1.69 sd (95% interval +1.43 to +1.95)``
    (the interval only where the standard error is known)."""
    move, error = values["difference_sd"], values.get("difference_se")
    interval = None if error is None else (move - NORMAL_95 * error, move + NORMAL_95 * error)
    return f"{move:+.2f} sd{describe_interval(interval)}"


def markdown_table(frame: pd.DataFrame) -> str:
    header = "| " + " | ".join(frame.columns) + " |"
    rule = "| " + " | ".join("---" for _ in frame.columns) + " |"
    rows = [
        "| " + " | ".join(f"{v:.3f}" if isinstance(v, float) else str(v) for v in row) + " |"
        for row in frame.itertuples(index=False)
    ]
    return "\n".join([header, rule, *rows])


def format_signed(value: float | None) -> str:
    """A correlation as the reports print it: ``+0.96``, or ``n/a`` where undefined."""
    return "n/a" if value is None else f"{value:+.2f}"


def describe_interval(interval: Sequence[float] | None, digits: str = "+.2f") -> str:
    """`` (95% interval +0.91 to +0.99)``, or nothing where none was computed."""
    if interval is None:
        return ""
    low, high = interval
    return f" (95% interval {low:{digits}} to {high:{digits}})"


def write_report(
    output: Path,
    metrics: dict,
    summary: pd.DataFrame,
    config: RicConfig | Any,
    extra: Sequence[str] = (),
) -> Path:
    """Write ``output/report.md`` from the sweep's metrics and summary table. ``config``: a
    RicConfig, or any config with mapping, generation and evaluate sections (the image sweep's);
    ``extra``: markdown lines placed after the front plot (the image grid)."""
    front = metrics["front"]
    intervals = metrics.get("intervals") or {"hypervolume": None, "w1_vs_obtained": {}}
    steer_rows = [
        f"| {name} | {format_signed(v['desired_vs_obtained'])} "
        f"| {format_signed(v['weight_vs_obtained'])} | {format_signed(v['w1_vs_obtained'])}"
        f"{describe_interval(intervals['w1_vs_obtained'].get(name))} |"
        for name, v in metrics["steerability"].items()
    ]
    sensitivity = metrics.get("reward_sensitivity")
    sensitivity_lines = (
        [
            "## Does the model read its rewards?",
            "",
            "Response loss on training pairs with their own rewards in the prompt, and with one "
            "objective's values shuffled across pairs, per token and summed per response (nats); "
            "a gap near 0 means the model ignores that objective's value.",
            "",
            "| objective | per token: true | shuffled | gap "
            "| per response: true | shuffled | gap |",
            "| --- | --- | --- | --- | --- | --- | --- |",
            *(
                f"| {name} | {v['loss_true']:.4f} | {v['loss_shuffled']:.4f} | {v['gap']:+.4f} "
                f"| {v['sequence_loss_true']:.2f} | {v['sequence_loss_shuffled']:.2f} "
                f"| {v['sequence_gap']:+.3f} |"
                for name, v in sensitivity.items()
            ),
            "",
        ]
        if sensitivity
        else []
    )
    probe = metrics.get("probe")
    probe_lines = (
        [
            "## Behavioural probe",
            "",
            "Each objective asked at the low and at the high end of its range, the others at the "
            "middle, on the same prompts: the obtained mean at both ends (raw units) and the move "
            "in training standard deviations, with the 95% interval its standard error over the "
            "prompts gives (one sampled answer per prompt and end).",
            "",
            "| objective | desired low / high | obtained low | obtained high | move |",
            "| --- | --- | --- | --- | --- |",
            *(
                f"| {name} | {v['desired_low']:+.2f} / {v['desired_high']:+.2f} "
                f"| {v['obtained_low_raw']:.4g} | {v['obtained_high_raw']:.4g} "
                f"| {describe_move(v)} |"
                for name, v in probe.items()
            ),
            "",
        ]
        if probe
        else []
    )
    card = metrics.get("steering_card")
    lines = [
        "# RiC evaluation report",
        "",
        f"Model: `{metrics['model']}`; {metrics['num_prompts']} held-out prompts, "
        f"{metrics['num_preferences']} preferences, mapping `{config.mapping.method}`.",
        "",
        "![front](front.png)",
        "",
        *extra,
        "## Front",
        "",
        f"Hypervolume **{front['hypervolume']:.4g}**"
        f"{describe_interval(intervals['hypervolume'], '.4g')} against reference point "
        f"{[round(v, 4) for v in front['reference']]} (raw reward units); "
        f"{sum(front['non_dominated'])} of {len(front['non_dominated'])} points non-dominated.",
        "",
        *(
            [
                f"The 95% intervals resample the {metrics['num_prompts']} held-out prompts "
                f"{metrics['intervals']['resamples']} times (each answer is one sample) and are "
                "for the noise-free values, those of the expected mean rewards over the prompts. "
                "The answers' noise biases both figures: the hypervolume up (its interval can "
                "sit below it), Spearman toward 0 (its interval, the range over the orderings "
                "of the means the prompts allow, can stretch from it to +1 or -1).",
                "",
            ]
            if metrics.get("intervals")
            else []
        ),
        "## Steerability (Spearman rank correlation across the grid)",
        "",
        "| objective | desired R_i vs mean r_i | w_i vs mean r_i | w_1 vs mean r_i |",
        "| --- | --- | --- | --- |",
        *steer_rows,
        "",
        *probe_lines,
        *(card_lines(card, metrics["objectives"]) if card else []),
        *sensitivity_lines,
        "## Per preference",
        "",
        markdown_table(summary),
        "",
        "## Settings",
        "",
        "```json",
        json.dumps(
            {
                "generation": vars(config.generation),
                "mapping": vars(config.mapping),
                "evaluate": vars(config.evaluate),
            },
            indent=1,
            default=str,
        ),
        "```",
        "",
    ]
    path = output / REPORT_FILE
    write_text_atomic(path, "\n".join(lines))
    return path
