"""`ric demo`: label -> offline training -> one online iteration -> calibration -> evaluation,
on the embedded default task.

The data ship inside the package (``ric.tasks``), the policy is the embedded SmolLM2, the
rewards are built-in scorers: nothing is downloaded. ``--smoke`` runs the same pipeline on the
tiny in-code model and a slice of the data, in well under a minute (tests and quick checks use
it).

The online iteration is calibrated (`ric calibrate`, on the training questions) and swept twice
on the same held-out prompts, with the paper's p_inf mapping and calibrated:
``evaluate/report.md`` shows both fronts and their hypervolumes (with the paired interval of
their difference), and ``evaluate/online-1-p_inf/`` and ``evaluate/online-1-calibrated/`` hold
each sweep's own report (steerability, the steering card, per-preference tables). The offline
model is not swept (`ric evaluate --model OUT/train` does it): the demo's 25 minutes on 2 cores
hold training, one online iteration, the calibration and two sweeps (21 minutes measured, with
the calibration and the sweeps in bfloat16, ``generating_config``, and one probe for both).

A rerun with the same ``--output`` resumes: labeling reuses scored shards, training continues
from its newest checkpoint, a finished training run is not repeated, the online stage resumes
shard by shard, and finished evaluations are reused.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, replace
from pathlib import Path

from ric import parallel
from ric.config import (
    RicConfig,
    config_from_values,
    flatten,
    merge_values,
    read_values,
    set_value,
)
from ric.data.io import write_text_atomic
from ric.data.label import label_dataset
from ric.evaluation.calibrate import run_calibrate
from ric.evaluation.compare import Comparison, evaluate_models
from ric.runtime import default_device, native_bfloat16, release_memory
from ric.tasks import HELDOUT_QUESTIONS, TRAIN_PAIRS, TRAIN_QUESTIONS
from ric.training.offline import run_train
from ric.training.online import run_online

DEMO_CONFIG = Path(__file__).parent / "demo.yaml"
TIMING_FILE = "demo.json"
# The calibration and the sweeps only generate. Where the hardware computes in bfloat16 natively
# they load the weights in it: 1.5x float32's tokens/s on a 2-core CPU with AVX512-BF16, with
# the same steering (docs/results.md, "bfloat16 weights"). Training keeps float32 weights.
GENERATION_DTYPE = "bfloat16"
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
    "calibrate.levels=3",
    "calibrate.answers_per_point=2",
]


@dataclass(frozen=True)
class DemoResult:
    """What `ric demo` reports: the comparison of the offline model and the online iteration,
    and how long each stage took (also written to ``demo.json``)."""

    comparison: Comparison
    seconds: dict[str, float]  # stage -> wall-clock seconds, and their total
    generation_dtype: str  # the weights' dtype in the calibration and the sweeps


def demo_config(
    output: Path,
    smoke: bool = False,
    overrides: list[str] | None = None,
    layer: Path | None = None,
) -> RicConfig:
    """The demo's config with every output path under ``output``. ``layer``: a YAML file laid
    over the embedded task (its sections merged key by key; a list replaces the list), e.g. to
    resize it for a GPU or to use other data and rewards."""
    values = read_values(DEMO_CONFIG)
    if layer is not None:
        values = merge_values(values, read_values(layer))
    inputs = {
        "data.path": TRAIN_PAIRS,
        "evaluate.prompts": HELDOUT_QUESTIONS,
        "calibrate.prompts": TRAIN_QUESTIONS,
    }
    chosen = flatten(values)
    paths = {
        **{key: value for key, value in inputs.items() if not chosen.get(key)},
        "label.output": output / "label",
        "train.data": output / "label",
        "train.output": output / "train",
        "online.model": output / "train",
        "online.output": output / "online",
        "calibrate.output": output / "calibrated",
    }
    for key, path in paths.items():
        set_value(values, key, str(path))
    return config_from_values(values, [*(SMOKE_OVERRIDES if smoke else []), *(overrides or [])])


def generating_config(config: RicConfig, overrides: list[str] | None = None) -> RicConfig:
    """``config`` for the stages that only generate (calibration, sweeps): weights in
    ``GENERATION_DTYPE`` on hardware with native bfloat16, unless ``--set model.dtype=...``
    chose one dtype for every stage."""
    chosen = any(setting.partition("=")[0].strip() == "model.dtype" for setting in overrides or [])
    if chosen or not native_bfloat16(config.model.device or default_device()):
        return config
    return replace(config, model=replace(config.model, dtype=GENERATION_DTYPE))


def run_demo(
    output: Path,
    smoke: bool = False,
    overrides: list[str] | None = None,
    show_progress: bool = True,
) -> DemoResult:
    """Run every stage; return the comparison and the stage times (also in demo.json)."""
    config = demo_config(output, smoke, overrides)
    seconds: dict[str, float] = {}
    start = time.perf_counter()
    label_dataset(config, show_progress)
    seconds["label"] = time.perf_counter() - start

    start = time.perf_counter()
    run_train(config, resume=True, show_progress=show_progress)
    seconds["train"] = time.perf_counter() - start
    # Each stage loads its own models: hand what the last one freed back (runtime.release_memory).
    release_memory()

    start = time.perf_counter()
    online = run_online(config, show_progress)
    seconds["online"] = time.perf_counter() - start
    release_memory()

    start = time.perf_counter()
    last = online.iterations[-1]
    generating = generating_config(config, overrides)
    calibrated = run_calibrate(
        replace(generating, calibrate=replace(config.calibrate, model=str(last))), show_progress
    ).output
    seconds["calibrate"] = time.perf_counter() - start
    release_memory()

    start = time.perf_counter()
    label = f"online {len(online.iterations)}"
    models = {f"{label} p_inf": last, f"{label} calibrated": calibrated}
    comparison = evaluate_models(models, generating, output / "evaluate", show_progress)
    seconds["evaluate"] = time.perf_counter() - start
    seconds["total"] = sum(seconds.values())
    dtype = generating.model.dtype
    timing = json.dumps({"smoke": smoke, "seconds": seconds, "generation_dtype": dtype})
    parallel.on_main(lambda: write_text_atomic(output / TIMING_FILE, timing))
    return DemoResult(comparison, seconds, dtype)
