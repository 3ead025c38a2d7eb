"""`ric export-lora`: a trained run, or a soup of several, written as a small LoRA run.

A run whose top layers were fully fine-tuned (``layers/``), or one with a LoRA adapter of any
rank (``adapter/``), becomes a run of the same layout with a LoRA adapter of the rank asked
(``lora_from_tuned_layers``: the best rank-r approximation of each weight change), in the dtype
asked, loadable wherever a trained run is. Several runs of one base model, reward scale and
template can be averaged first (a model soup). ``portable`` leaves out this machine's paths, for
a run handed to others.

Kept apart from the run folder (``ric.runs``), which training, evaluation and serving read:
exporting builds on it and on the models, and nothing but the CLI and `ric export --adapter`
(``ric.export.hf``, which reuses ``lora_of_runs`` and the soup checks) uses it.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from ric.config import RicConfig, config_from_values, dump_config, flatten, load_config
from ric.core import check_preference
from ric.data.io import (
    CONFIG_FILE,
    STATS_FILE,
    check_free_folder,
    load_stats,
    staged_folder,
    write_text_atomic,
)
from ric.runs import (
    ADAPTER_DIR,
    LAYERS_DIR,
    METHOD_FILE,
    METRICS_FILE,
    load_trained,
    read_method,
    run_folder,
)

EXPORT_DTYPES = ("float16", "bfloat16", "float32")
# Settings that name this machine's files (data, outputs, prompts, runs), blanked in a run that
# is handed to others (``export_lora(portable=True)``); ``model.source`` is kept: loading needs it.
PATH_SETTINGS = frozenset({"data", "output", "model", "prompts", "path", "init"})


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
    ``output`` unless the whole run was written. (A Hugging Face model folder, loadable without
    ric, is `ric export`'s: ``ric.export.hf``.)"""
    from ric.models.lora import ADAPTER_CONFIG, save_adapter

    folders, target = [run_folder(run) for run in runs], Path(output)
    check_dtype(dtype)
    mix = soup_weights(weights, len(folders))
    check_free_folder(target)
    soup = lora_of_runs(folders, rank, dtype, mix)
    config = _without_paths(soup.config) if portable else soup.config
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
    kept = soup.kept
    with staged_folder(target) as staging:
        adapter = save_adapter(soup.model, staging / ADAPTER_DIR)
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
            **({"soup_weights": mix.tolist()} if len(names) > 1 else {}),
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
    return metrics


@dataclass(frozen=True)
class SoupLora:
    """Runs (one, or a soup of several) as one LoRA adapter on their base model."""

    config: RicConfig  # the first run's, its ``lora`` section the adapter's (rank, targets)
    model: Any  # a peft PeftModel: the base model with the adapter, in the dtype asked
    tokenizer: Any  # the base model's
    kept: dict[str, float]  # per linear weight: the share of its change's squared norm kept


def lora_of_runs(folders: Sequence[Path], rank: int, dtype: str, weights: np.ndarray) -> SoupLora:
    """The runs in ``folders`` (``layers/`` or ``adapter/`` over their base model) averaged by
    ``weights`` (theta = sum_i weights_i theta_i; one run: itself), as a LoRA adapter of
    ``rank`` (each weight change's truncated SVD; norm scales whole), its weights in ``dtype``.
    Shared by `ric export-lora` (a LoRA run) and `ric export --adapter` (a PEFT folder)."""
    import torch

    from ric.models import load_policy
    from ric.models.lora import lora_from_tuned_layers

    if rank < 1:
        raise ValueError(f"rank must be >= 1, got {rank}")
    for folder in folders:
        check_exportable(folder)
    config = load_config(folders[0] / CONFIG_FILE)
    check_soup_members(folders, config)
    model, tokenizer = load_policy(config.model)
    tuned = _average_weights(model, [_tuned_weights(model, folder) for folder in folders], weights)
    adapted, kept = lora_from_tuned_layers(model, tuned, rank)
    for name, parameter in adapted.named_parameters():
        if "lora_" in name or "modules_to_save" in name:
            parameter.data = parameter.data.to(getattr(torch, dtype))
    targets = sorted(adapted.peft_config["default"].target_modules)
    config.lora = replace(
        config.lora, enabled=True, r=rank, alpha=float(rank), dropout=0.0, target_modules=targets
    )
    return SoupLora(config, adapted, tokenizer, kept)


def check_dtype(dtype: str) -> None:
    """Refuse a dtype an export cannot write, naming those it can."""
    if dtype not in EXPORT_DTYPES:
        raise ValueError(f"dtype {dtype!r} is not one of {', '.join(EXPORT_DTYPES)}")


def check_exportable(folder: Path) -> None:
    """Refuse a run that is unfinished, or holds no weight change over its base model alone
    (``model/``, or an adapter over another run): there is nothing to factor into a LoRA."""
    if not (folder / METRICS_FILE).is_file():
        raise ValueError(f"{str(folder)!r} is not a finished trained run (no {METRICS_FILE})")
    layered, has_adapter = (folder / LAYERS_DIR).is_dir(), (folder / ADAPTER_DIR).is_dir()
    if not (layered or has_adapter) or read_method(folder).init is not None:
        raise ValueError(
            f"{str(folder)!r} has neither {LAYERS_DIR}/ nor {ADAPTER_DIR}/ over its base model: "
            "export takes a run trained with lora.top_layers > 0 or with a LoRA adapter"
        )


def soup_weights(weights: Sequence[float] | None, count: int) -> np.ndarray:
    """The weights (count,) of a soup of ``count`` runs: equal unless given, on the simplex."""
    if count < 1:
        raise ValueError("export needs at least one run")
    if weights is None:
        return np.full(count, 1.0 / count)
    if len(weights) != count:
        raise ValueError(f"{len(weights)} soup weight(s) {list(weights)} for {count} run(s)")
    return check_preference(weights, what="soup")


def check_soup_members(folders: Sequence[Path], config: RicConfig) -> None:
    """Runs averaged into one model must share its base model, method, template and reward
    scale: the soup is conditioned (and loaded) as the first run is."""
    first = folders[0]
    stats, method = load_stats(first / STATS_FILE), read_method(first)
    for folder in folders[1:]:
        other = load_config(folder / CONFIG_FILE)
        differences = {
            "model.source": (config.model.source, other.model.source),
            "template.text": (config.template.text, other.template.text),
            "template.format": (config.template.format, other.template.format),
            "template.system": (config.template.system, other.template.system),
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
