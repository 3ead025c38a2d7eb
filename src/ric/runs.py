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

A run can also be named instead of given as a path: ``embedded-ric`` is the steerable model that
ships inside the package (``SHIPPED_RUNS``; its card is ``ric/tasks/data/README.md``), and
``export_lora`` turns a run whose top layers were fully fine-tuned into a LoRA run of a few MB.

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

import numpy as np

from ric.config import (
    RewardConfig,
    RicConfig,
    config_from_values,
    dump_config,
    flatten,
    load_config,
    placed,
)
from ric.core import (
    PromptTemplate,
    RewardStats,
    build_plain_prompt,
    build_prompt,
    check_preference,
)
from ric.data.io import CONFIG_FILE, STATS_FILE, load_stats, stats_rewards, write_text_atomic

ADAPTER_DIR = "adapter"
MODEL_DIR = "model"
LAYERS_DIR = "layers"
METRICS_FILE = "metrics.json"
METHOD_FILE = "method.json"
# What a trained run records and its users inherit unless they set it (see layered_config).
RUN_SETTINGS = ("mapping", "generation", "train.max_length", "model.dtype", "model.device")
# Settings that change where and how often a run saves, never its result.
BOOKKEEPING = frozenset({"output", "save_steps", "keep_checkpoints", "log_steps"})
METHODS = ("ric", "base", "sft", "morlhf", "soups")
# Trained runs shipped inside the package, accepted by name wherever a run folder is.
SHIPPED_RUNS = {"embedded-ric": Path(__file__).parent / "tasks" / "data" / "embedded-ric"}
EXPORT_DTYPES = ("float16", "bfloat16", "float32")
# Settings that name this machine's files (data, outputs, prompts, runs), blanked in a run that
# is handed to others (``export_lora(portable=True)``); ``model.source`` is kept: loading needs it.
PATH_SETTINGS = frozenset({"data", "output", "model", "prompts", "path", "init"})


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


@dataclass
class TrainedPolicy:
    model: Any
    tokenizer: Any
    config: RicConfig  # the training run's resolved config
    stats: RewardStats
    template: PromptTemplate
    method: Method
    folder: Path

    def plain_prompts(self, prompts: Sequence[str]) -> list[str]:
        """The prompts in the template without reward values (what baselines are asked)."""
        return [build_plain_prompt(p, self.template) for p in prompts]

    def member_adapters(self) -> list[Path]:
        """A soup's member adapters, in objective order."""
        return [self.folder / member / ADAPTER_DIR for member in self.method.members]

    def conditioned_prompts(self, prompts: Sequence[str], desired: np.ndarray) -> list[str]:
        """Prompts with desired rewards (N,) or (B, N), standardized units, written in."""
        rows = np.broadcast_to(
            np.asarray(desired, dtype=float), (len(prompts), len(self.stats.names))
        )
        return [
            build_prompt(p, row.tolist(), self.template)
            for p, row in zip(prompts, rows, strict=True)
        ]

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


def export_lora(
    runs: Sequence[str | Path],
    output: str | Path,
    rank: int,
    dtype: str = "float16",
    portable: bool = False,
    weights: Sequence[float] | None = None,
) -> dict:
    """Write ``output``: the run in ``runs`` (top layers fully fine-tuned, ``layers/``, or a LoRA
    adapter of any rank, ``adapter/``) as a LoRA run (``adapter/``, rank ``rank``, weights in
    ``dtype``) that loads wherever a trained run does. Several runs of one base model, reward
    scale and template are averaged first, theta = sum_i weights_i theta_i (a model soup;
    ``weights`` default: equal), and the soup is exported; the first run gives its settings.
    Returns what ``output/metrics.json`` records: how much of each weight change the rank kept,
    the adapter's size and the source runs' own metrics. ``portable``: record none of this
    machine's paths (``PATH_SETTINGS``), for a run handed to others. Nothing is left at
    ``output`` unless the whole run was written."""
    import shutil
    import tempfile

    import torch

    from ric.models import load_policy
    from ric.models.lora import ADAPTER_CONFIG, lora_from_tuned_layers, save_adapter

    folders, target = [run_folder(run) for run in runs], Path(output)
    if dtype not in EXPORT_DTYPES:
        raise ValueError(f"dtype {dtype!r} is not one of {', '.join(EXPORT_DTYPES)}")
    if rank < 1:
        raise ValueError(f"rank must be >= 1, got {rank}")
    if not folders:
        raise ValueError("export needs at least one run")
    soup_weights = _soup_weights(weights, len(folders))
    for folder in folders:
        _check_exportable(folder)
    if target.exists() and any(target.iterdir()):
        raise ValueError(f"{str(target)!r} exists and is not empty: choose another --output")
    config = load_config(folders[0] / CONFIG_FILE)
    _check_soup_members(folders, config)
    model, _ = load_policy(config.model)
    tuned = _average_weights(
        model, [_tuned_weights(model, folder) for folder in folders], soup_weights
    )
    adapted, kept = lora_from_tuned_layers(model, tuned, rank)
    for name, parameter in adapted.named_parameters():
        if "lora_" in name or "modules_to_save" in name:
            parameter.data = parameter.data.to(getattr(torch, dtype))
    targets = sorted(adapted.peft_config["default"].target_modules)
    config.lora = replace(
        config.lora, enabled=True, r=rank, alpha=float(rank), dropout=0.0, target_modules=targets
    )
    if portable:
        config = _without_paths(config)
    sources = []
    for folder in folders:
        source_metrics = json.loads((folder / METRICS_FILE).read_text())
        sources.append(_local_paths_named(source_metrics) if portable else source_metrics)
    # Portable: the folder's name, with its parent's for a soup, whose runs are often
    # iterations of the same name (online/iter-01, online-2/iter-01).
    kept_parts = 1 if len(folders) == 1 else 2
    names = [
        str(Path(*folder.resolve().parts[-kept_parts:])) if portable else str(folder)
        for folder in folders
    ]
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}."))
    try:
        adapter = save_adapter(adapted, staging / ADAPTER_DIR)
        (adapter / "README.md").unlink(missing_ok=True)  # peft's blank model card
        if portable:  # peft records where the base model was loaded from on this machine
            peft_config = json.loads((adapter / ADAPTER_CONFIG).read_text())
            peft_config["base_model_name_or_path"] = config.model.source
            write_text_atomic(adapter / ADAPTER_CONFIG, json.dumps(peft_config, indent=2))
        shutil.copyfile(folders[0] / STATS_FILE, staging / STATS_FILE)
        if (folders[0] / METHOD_FILE).is_file():
            shutil.copyfile(folders[0] / METHOD_FILE, staging / METHOD_FILE)
        write_text_atomic(staging / CONFIG_FILE, dump_config(config))
        metrics = {
            "exported_from": names[0] if len(names) == 1 else names,
            **({"soup_weights": soup_weights.tolist()} if len(names) > 1 else {}),
            "rank": rank,
            "dtype": dtype,
            "kept_min": min(kept.values()),
            "kept_mean": float(np.mean(list(kept.values()))),
            "kept": kept,
            "adapter_bytes": sum(f.stat().st_size for f in adapter.iterdir()),
            "source_metrics": sources[0] if len(sources) == 1 else sources,
            "portable": portable,
        }
        write_text_atomic(staging / METRICS_FILE, json.dumps(metrics, indent=1))
        if target.exists():
            target.rmdir()  # empty (checked above)
        staging.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return metrics


def _check_exportable(folder: Path) -> None:
    if not (folder / METRICS_FILE).is_file():
        raise ValueError(f"{str(folder)!r} is not a finished trained run (no {METRICS_FILE})")
    layered, has_adapter = (folder / LAYERS_DIR).is_dir(), (folder / ADAPTER_DIR).is_dir()
    if not (layered or has_adapter) or read_method(folder).init is not None:
        raise ValueError(
            f"{str(folder)!r} has neither {LAYERS_DIR}/ nor {ADAPTER_DIR}/ over its base model: "
            "export takes a run trained with lora.top_layers > 0 or with a LoRA adapter"
        )


def _soup_weights(weights: Sequence[float] | None, count: int) -> np.ndarray:
    """The weights (count,) of a soup of ``count`` runs: equal unless given, on the simplex."""
    if weights is None:
        return np.full(count, 1.0 / count)
    if len(weights) != count:
        raise ValueError(f"{len(weights)} soup weight(s) {list(weights)} for {count} run(s)")
    return check_preference(weights, what="soup")


def _check_soup_members(folders: Sequence[Path], config: RicConfig) -> None:
    """Runs averaged into one model must share its base model, method, template and reward
    scale: the soup is conditioned (and loaded) as the first run is."""
    first = folders[0]
    stats, method = load_stats(first / STATS_FILE), read_method(first)
    for folder in folders[1:]:
        other = load_config(folder / CONFIG_FILE)
        differences = {
            "model.source": (config.model.source, other.model.source),
            "template.text": (config.template.text, other.template.text),
            # the whole method: a MORLHF run's preference is part of what it is
            "method": (method, read_method(folder)),
        }
        for key, (ours, theirs) in differences.items():
            if ours != theirs:
                raise ValueError(
                    f"cannot average {str(first)!r} and {str(folder)!r}: their {key} differs "
                    f"({ours!r} and {theirs!r}); a soup's runs share base model and conditioning"
                )
        if load_stats(folder / STATS_FILE) != stats:
            raise ValueError(
                f"cannot average {str(first)!r} and {str(folder)!r}: their {STATS_FILE} differ "
                "(rewards, means, standard deviations or data); a soup's runs must condition on "
                "one reward scale, e.g. online iterations continued from one labeled data set"
            )


def _tuned_weights(base: Any, folder: Path) -> dict[str, Any]:
    """What training changed in ``folder``'s run over ``base`` (name -> tensor): its saved top
    layers, or its LoRA adapter folded into the weights."""
    from safetensors.torch import load_file

    from ric.models.lora import LAYER_WEIGHTS, changed_weights

    if (folder / LAYERS_DIR).is_dir():
        return load_file(str(folder / LAYERS_DIR / LAYER_WEIGHTS))
    # Folded, a LoRA run takes the tuned layers' path: another rank or dtype (exact at the
    # run's own rank) and a soup with any other run come out the same way.
    return changed_weights(base, load_trained(folder, merged=True).model)


def _average_weights(
    base: Any, tuned: Sequence[Mapping[str, Any]], weights: np.ndarray
) -> Mapping[str, Any]:
    """sum_i weights_i theta_i over every weight any run changed (a run that left a weight
    alone contributes the base's value)."""
    if len(tuned) == 1:
        return tuned[0]
    parameters = dict(base.named_parameters())
    names = sorted(set().union(*tuned))
    return {
        name: sum(
            float(weight) * run.get(name, parameters[name]).detach().double()
            for weight, run in zip(weights, tuned, strict=True)
        )
        for name in names
    }


def _without_paths(config: RicConfig) -> RicConfig:
    """``config`` with every setting in ``PATH_SETTINGS`` (but ``model.source``) blanked."""
    values = asdict(config)
    for key, value in flatten(values).items():
        leaf = key.rpartition(".")[2]
        if isinstance(value, str) and leaf in PATH_SETTINGS and key != "model.source":
            section = values
            for part in key.split(".")[:-1]:
                section = section[part]
            section[leaf] = ""
    return config_from_values(values)


def _local_paths_named(value: Any) -> Any:
    """``value`` (parsed JSON) with every string that names an existing file or folder of this
    machine replaced by its last component."""
    if isinstance(value, dict):
        return {key: _local_paths_named(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_local_paths_named(item) for item in value]
    if isinstance(value, str) and len(Path(value).parts) > 1 and Path(value).exists():
        return Path(value).name
    return value
