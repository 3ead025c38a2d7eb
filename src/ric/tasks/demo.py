"""`ric demo`: label -> offline training -> one online iteration -> evaluation, on the embedded
default task.

The data ship inside the package (``data/``), the policy is the embedded SmolLM2, the rewards are
built-in scorers: nothing is downloaded. ``--smoke`` runs the same pipeline on the tiny in-code
model and a slice of the data, in well under a minute (tests and quick checks use it).

The evaluation sweeps the offline model and the online iteration on the same held-out prompts:
``evaluate/report.md`` shows both fronts and their hypervolumes, and ``evaluate/offline/`` and
``evaluate/online-1/`` hold each model's own report (steerability, per-preference tables).

A rerun with the same ``--output`` resumes: labeling reuses scored shards, training continues
from its newest checkpoint, a finished training run is not repeated, the online stage resumes
shard by shard, and finished evaluations are reused.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import yaml

from ric import parallel
from ric.config import RicConfig, config_from_values
from ric.data.io import write_text_atomic
from ric.data.label import label_dataset
from ric.tasks.iterations import compare_iterations
from ric.training.offline import run_train
from ric.training.online import run_online

TASK_DIR = Path(__file__).parent
DEMO_CONFIG = TASK_DIR / "demo.yaml"
TRAIN_PAIRS = TASK_DIR / "data" / "pairs.jsonl"
HELDOUT_QUESTIONS = TASK_DIR / "data" / "questions_heldout.jsonl"
SMOKE_OVERRIDES = [
    "model.source=tiny",
    "data.limit=48",
    "lora.r=4",
    "lora.alpha=8",
    "lora.top_layers=0",
    "train.max_steps=10",
    "train.save_steps=5",
    "train.mixed_precision=fp32",
    "generation.max_new_tokens=8",
    # The untrained tiny model never emits EOS; a stop string ends its answers, so the online
    # stage has finished responses to select from.
    "generation.stop_strings=[' ']",
    "evaluate.num_prompts=3",
    "online.samples=8",
    "online.shard_size=4",
    "online.max_steps=3",
]


def demo_config(
    output: Path,
    smoke: bool = False,
    overrides: list[str] | None = None,
    layer: Path | None = None,
) -> RicConfig:
    """The demo's config with every output path under ``output``. ``layer``: a YAML file laid
    over the embedded task (its sections merged key by key; a list replaces the list), e.g. to
    resize it for a GPU or to use other data and rewards."""
    values = yaml.safe_load(DEMO_CONFIG.read_text())
    if layer is not None:
        if not layer.is_file():
            raise ValueError(f"config file {str(layer)!r} does not exist")
        _merge(values, yaml.safe_load(layer.read_text()) or {})
    inputs = {"data.path": TRAIN_PAIRS, "evaluate.prompts": HELDOUT_QUESTIONS}
    paths = {
        **{key: value for key, value in inputs.items() if not _get(values, key)},
        "label.output": output / "label",
        "train.data": output / "label",
        "train.output": output / "train",
        "online.model": output / "train",
        "online.output": output / "online",
    }
    settings = [f"{key}={json.dumps(str(value))}" for key, value in paths.items()]
    return config_from_values(
        values, [*settings, *(SMOKE_OVERRIDES if smoke else []), *(overrides or [])]
    )


def _merge(base: dict, layer: dict) -> None:
    """Lay ``layer`` over ``base`` in place: mappings merge key by key, anything else replaces."""
    for key, value in layer.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        else:
            base[key] = value


def _get(values: dict, key: str) -> object:
    section, _, name = key.partition(".")
    return (values.get(section) or {}).get(name)


def run_demo(
    output: Path,
    smoke: bool = False,
    overrides: list[str] | None = None,
    show_progress: bool = True,
) -> Path:
    """Run every stage; return the path of the comparison report. Stage times go to demo.json."""
    config = demo_config(output, smoke, overrides)
    seconds: dict[str, float] = {}
    start = time.perf_counter()
    label_dataset(config, show_progress)
    seconds["label"] = time.perf_counter() - start

    start = time.perf_counter()
    run_train(config, resume=True, show_progress=show_progress)
    seconds["train"] = time.perf_counter() - start

    start = time.perf_counter()
    run_online(config, show_progress)
    seconds["online"] = time.perf_counter() - start

    start = time.perf_counter()
    report = compare_iterations(config, output / "evaluate", show_progress)
    seconds["evaluate"] = time.perf_counter() - start
    seconds["total"] = sum(seconds.values())
    timing = json.dumps({"smoke": smoke, "seconds": seconds})
    parallel.on_main(lambda: write_text_atomic(output / "demo.json", timing))
    return report
