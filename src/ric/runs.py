"""The trained-run folder: what `ric train`, `ric online` and `ric baseline` write, and what
evaluation, generation, the baselines and serving read back.

Everything inference needs comes from that folder, so serving and evaluation cannot drift from
training: the base model source and template (config.yaml), the stats (stats.json), the weights
(``adapter/``: LoRA; ``layers/``: the top layers fully fine-tuned; ``model/``: every weight) and
the reward scorers (their identities are recorded in the stats). ``metrics.json`` is written
last: its presence marks the run finished.

Baseline outputs (`ric baseline ...`) have the same layout plus ``method.json``, which says what
the folder holds and how to rebuild it: the method (base, sft, morlhf, soups), the preference a
MORLHF model was trained for, the run it started from (``init``, whose adapter is merged into the
base weights before this folder's adapter goes on top) and a soup's member runs. A folder without
``method.json`` is a RiC model. Paths in it are relative to the folder.

A calibrated run (`ric calibrate`) has no weights of its own: its ``calibration.json`` names the
run whose weights it uses (``model``: relative to the folder, or a shipped run's name) and holds
the fitted calibration (``ric.core.calibration``); its config and stats are its own copies, with
``mapping.method: calibrated``. A run whose weights sit beside its ``calibration.json`` (the
shipped ``embedded-ric``) names no ``model``.

A run can also be named instead of given as a path: ``embedded-ric`` is the steerable model that
ships inside the package (``SHIPPED_RUNS``; its card is ``ric/tasks/data/README.md``).

Two rules every stage shares live here:

* **a finished run is reused only by the settings that made it** (``finished_run``): rerun with
  the same settings, a finished run is skipped; with other settings, it is refused with the
  differing keys named, never silently reused or overwritten;
* **a run's recorded settings govern its use** (``layered_config``): `ric generate`,
  `ric evaluate` and `ric online` take the mapping, generation and ``train.max_length`` settings
  the run recorded, and only what the user sets explicitly replaces them.
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from ric.config import (
    RewardConfig,
    RicConfig,
    config_from_values,
    flatten,
    load_config,
    placed,
)
from ric.core import Calibration, PromptTemplate, RewardStats
from ric.data.io import CONFIG_FILE, STATS_FILE, load_stats, stats_rewards, write_text_atomic

ADAPTER_DIR = "adapter"
MODEL_DIR = "model"
LAYERS_DIR = "layers"
METRICS_FILE = "metrics.json"
METHOD_FILE = "method.json"
CALIBRATION_FILE = "calibration.json"
# What a trained run records and its users inherit unless they set it (see layered_config).
RUN_SETTINGS = ("mapping", "generation", "train.max_length", "model.dtype", "model.device")
# Settings that change where and how often a run saves, never its result.
BOOKKEEPING = frozenset({"output", "save_steps", "keep_checkpoints", "log_steps"})
METHODS = ("ric", "base", "sft", "morlhf", "soups")
# Trained runs shipped inside the package, accepted by name wherever a run folder is.
SHIPPED_RUNS = {"embedded-ric": Path(__file__).parent / "tasks" / "data" / "embedded-ric"}


def run_folder(run: str | Path) -> Path:
    """The folder of a trained run: a path, or the name of a shipped run (``SHIPPED_RUNS``)
    when no folder of that name exists."""
    path = Path(run)
    return SHIPPED_RUNS[str(run)] if str(run) in SHIPPED_RUNS and not path.exists() else path


@dataclass(frozen=True)
class Method:
    """What a model folder holds (``method.json``; absent: a RiC model)."""

    name: str = "ric"
    preference: list[float] | None = None  # morlhf: the preference it was trained for
    init: str | None = None  # the run training started from, relative to the folder
    members: list[str] = field(default_factory=list)  # soups: one RL run per objective

    @property
    def conditioned(self) -> bool:
        """Whether prompts carry reward values (RiC) or not (every baseline)."""
        return self.name == "ric"


def read_method(folder: Path) -> Method:
    path = folder / METHOD_FILE
    if not path.is_file():
        return Method()
    method = Method(**json.loads(path.read_text()))
    if method.name not in METHODS:
        raise ValueError(f"{str(path)!r} names method {method.name!r}; valid: {METHODS}")
    return method


def write_method(
    folder: Path,
    name: str,
    preference: Sequence[float] | None = None,
    init: str | Path | None = None,
    members: Sequence[str | Path] = (),
) -> Method:
    """Write ``folder/method.json``; ``init`` and ``members`` are stored relative to it."""
    folder.mkdir(parents=True, exist_ok=True)
    method = Method(
        name=name,
        preference=None if preference is None else [float(v) for v in preference],
        init=None if init is None else os.path.relpath(Path(init).resolve(), folder.resolve()),
        members=[os.path.relpath(Path(m).resolve(), folder.resolve()) for m in members],
    )
    write_text_atomic(folder / METHOD_FILE, json.dumps(asdict(method), indent=1))
    return method


def read_calibration(folder: Path) -> Calibration | None:
    """The calibration ``folder`` records (``calibration.json``), None when it has none."""
    path = folder / CALIBRATION_FILE
    if not path.is_file():
        return None
    try:
        return Calibration.from_json(json.loads(path.read_text())["calibration"])
    except (KeyError, TypeError, json.JSONDecodeError, ValueError) as error:
        raise ValueError(f"{str(path)!r} is not a `ric calibrate` calibration: {error}") from None


def weights_source(folder: Path) -> Path | None:
    """The run whose weights a calibrated run uses (its ``calibration.json``'s ``model``); None
    when the folder holds its own."""
    path = folder / CALIBRATION_FILE
    if not path.is_file():
        return None
    model = json.loads(path.read_text()).get("model")
    if model is None:
        return None
    return run_folder(model) if model in SHIPPED_RUNS else folder / model


@dataclass
class TrainedPolicy:
    model: Any
    tokenizer: Any
    config: RicConfig  # the training run's resolved config
    stats: RewardStats
    template: PromptTemplate
    method: Method
    folder: Path

    def member_adapters(self) -> list[Path]:
        """A soup's member adapters, in objective order."""
        return [self.folder / member / ADAPTER_DIR for member in self.method.members]

    def reward_configs(self) -> list[RewardConfig]:
        """The scorers the stats were computed with (identity = 'type {options json}')."""
        return stats_rewards(self.stats)


def load_trained(
    directory: str | Path,
    trainable: bool = False,
    merged: bool = False,
    dtype: str | None = None,
    device: str | None = None,
) -> TrainedPolicy:
    """Load a `ric train` or `ric baseline` output (adapter on its starting model, or the full
    model); with ``trainable`` the adapter's weights (or the full model's) can be fine-tuned
    further; with ``merged`` a LoRA adapter is folded into the weights, for generation only
    (measured: greedy SmolLM2 generation with `embedded-ric` 1.07x faster merged, median of 3,
    2 CPU cores). A soup comes back as its starting model; ``soup_model`` mixes its members in.
    ``dtype`` and ``device`` (``model.dtype``, ``model.device``) replace the run's own: how to
    run it, not what it is."""
    from ric.models import (
        load_adapter,
        load_layers,
        load_policy,
        merge_adapter,
        unfreeze_top_layers,
    )

    if trainable and merged:
        raise ValueError("a merged adapter cannot be trained further: load it unmerged")
    folder = run_folder(directory)
    if not (folder / CONFIG_FILE).is_file():
        raise ValueError(
            f"{str(folder)!r} is not a trained run (`ric train`, `ric online` or `ric baseline` "
            f"output): it has no {CONFIG_FILE}"
        )
    config = load_config(folder / CONFIG_FILE)
    config.model = placed(config.model, dtype, device)
    stats = load_stats(folder / STATS_FILE)
    source = weights_source(folder)
    if source is not None:  # a calibrated run: another run's weights, this folder's settings
        policy = load_trained(source, trainable, merged, dtype, device)
        template = config.template.prompt_template()
        return replace(policy, config=config, stats=stats, template=template, folder=folder)
    method = read_method(folder)
    has_adapter = (folder / ADAPTER_DIR).is_dir()
    if (folder / MODEL_DIR).is_dir():
        config.model.source = str(folder / MODEL_DIR)
        model, tokenizer = load_policy(config.model)
        model.requires_grad_(False)
        if trainable:
            unfreeze_top_layers(model, config.lora.top_layers)
    elif (folder / LAYERS_DIR).is_dir():  # the top layers fine-tuned: laid over the start model
        model, tokenizer = load_start(config, folder / method.init if method.init else None)
        load_layers(model, folder / LAYERS_DIR).requires_grad_(False)
        if trainable:
            unfreeze_top_layers(model, config.lora.top_layers)
    elif has_adapter or method.name in ("base", "soups"):  # these two have no weights of their own
        model, tokenizer = load_start(config, folder / method.init if method.init else None)
        if has_adapter:
            model = load_adapter(model, folder / ADAPTER_DIR, trainable=trainable)
            if merged:
                model = merge_adapter(model)
    else:
        raise ValueError(
            f"{str(folder)!r} holds none of {ADAPTER_DIR}/, {LAYERS_DIR}/ or {MODEL_DIR}/"
        )
    return TrainedPolicy(
        model, tokenizer, config, stats, config.template.prompt_template(), method, folder
    )


def load_start(config: RicConfig, init: Path | None) -> tuple[Any, Any]:
    """The model a run starts from, as a plain transformers model: ``model.source``, or the
    ``init`` run with its adapter merged into the weights."""
    from peft import PeftModel

    from ric.models import load_policy, merge_adapter

    if init is None:
        return load_policy(config.model)
    start = load_trained(init, dtype=config.model.dtype, device=config.model.device)
    model = merge_adapter(start.model) if isinstance(start.model, PeftModel) else start.model
    return model, start.tokenizer


def save_weights(model: Any, tokenizer: Any, output: Path) -> Path:
    """What training changed, with the tokenizer: ``adapter/`` (LoRA), ``layers/`` (the top
    layers fine-tuned, their weights alone) or ``model/`` (every weight). Returns the folder."""
    from peft import PeftModel

    from ric.models import save_adapter, save_layers

    if isinstance(model, PeftModel):
        folder = save_adapter(model, output / ADAPTER_DIR)
    elif all(parameter.requires_grad for parameter in model.parameters()):
        folder = output / MODEL_DIR
        model.save_pretrained(folder)
    else:
        folder = save_layers(model, output / LAYERS_DIR)
    tokenizer.save_pretrained(folder)
    return folder


def settings_of(config: Any, sections: Sequence[str]) -> dict[str, Any]:
    """The dotted-key values of ``config`` under ``sections`` (e.g. ``train``, ``mapping.p``),
    without output folders and checkpoint bookkeeping: what made a run's result, as
    ``finished_run`` compares it."""
    return {
        key: value
        for key, value in flatten(asdict(config)).items()
        if _under(key, sections) and key.rpartition(".")[2] not in BOOKKEEPING
    }


def _under(key: str, sections: Sequence[str]) -> bool:
    return any(key == section or key.startswith(f"{section}.") for section in sections)


def finished_run(folder: Path, requested: Mapping[str, Any], what: str) -> bool:
    """Whether ``folder`` holds a finished run (its ``metrics.json``) made with the
    ``requested`` settings (dotted keys; ``preference`` is read from ``method.json``). A
    finished run made with other settings is refused, naming them: a stage never reuses, nor
    overwrites, a result it did not ask for."""
    if not (folder / METRICS_FILE).is_file():
        return False
    recorded = flatten(asdict(load_config(folder / CONFIG_FILE)))
    recorded["preference"] = read_method(folder).preference
    differing = [key for key, value in requested.items() if recorded.get(key) != value]
    if differing:
        shown = "; ".join(
            f"{key}: {recorded.get(key)!r} there, {requested[key]!r} now" for key in differing[:4]
        )
        more = f" (and {len(differing) - 4} more)" if len(differing) > 4 else ""
        raise ValueError(
            f"{str(folder)!r} holds a finished {what} made with other settings ({shown}{more}): "
            "choose another --output, or delete that folder to redo it"
        )
    return True


@dataclass(frozen=True)
class RunResult:
    """What a stage that writes ``metrics.json`` returns (training, RL, evaluation): its folder
    and those metrics, so that a caller reports them without reading the file back."""

    output: Path  # the folder the stage wrote: a trained run or an evaluation
    metrics: dict[str, Any]  # what its metrics.json holds

    @classmethod
    def recorded(cls, output: Path) -> RunResult:
        """A run finished earlier and reused as it is: the metrics it recorded."""
        return cls(output, json.loads((output / METRICS_FILE).read_text()))


@dataclass(frozen=True)
class LayeredConfig:
    """A config for using a trained run, and where its run-governed settings came from."""

    config: Any  # a RicConfig, or the config class the run was made with
    from_run: dict[str, Any]  # dotted key -> value, recorded by the run (non-default ones)
    from_user: dict[str, Any]  # dotted key -> value, set by the user's file, --set or a flag


def layered_config(
    user_values: dict[str, Any],
    run: str | Path | None,
    cls: type = RicConfig,
    sections: Sequence[str] = RUN_SETTINGS,
) -> LayeredConfig:
    """The config (``cls``) to use ``run`` with: its recorded ``sections`` (for text runs
    mapping, generation, ``train.max_length``, ``model.dtype`` and ``model.device``), then
    everything the user set (``user_values``: their file and overrides, as
    ``ric.config.read_values`` gives them). Without a run: the user's config."""
    unlayered = LayeredConfig(config_from_values(user_values, cls=cls), {}, {})
    if run is None or not (run_folder(run) / CONFIG_FILE).is_file():
        return unlayered  # loading the run explains what is missing
    try:
        recorded = settings_of(load_config(run_folder(run) / CONFIG_FILE, cls=cls), sections)
    except ValueError:  # another kind of run (a text run given to `ric image`): loading explains
        return unlayered
    defaults = settings_of(cls(), sections)
    user = {key: value for key, value in flatten(user_values).items() if _under(key, sections)}
    values = copy.deepcopy(user_values)
    for key, value in recorded.items():
        *parents, leaf = key.split(".")
        section: Any = values
        for part in parents:
            section = section.setdefault(part, {}) if isinstance(section, dict) else None
        if isinstance(section, dict) and key not in user:  # a non-mapping: from_dict names it
            section.setdefault(leaf, value)
    from_run = {k: v for k, v in recorded.items() if k not in user and v != defaults.get(k)}
    return LayeredConfig(config_from_values(values, cls=cls), from_run, user)
