"""`ric export`: a trained run as a Hugging Face model folder that the field's tools load with
no ric installed (transformers, PEFT, vLLM, SGLang, ``transformers serve``).

The folder holds, and why:

* the weights: by default merged into the base model and saved with ``save_pretrained``
  (safetensors) in the dtype asked: a LoRA adapter folded in, fine-tuned top layers laid over
  the base, or a full model as it is (``load_trained(merged=True)``), so any engine serves it;
  with ``adapter``, a PEFT LoRA whose ``adapter_config.json`` names the real base (its Hub id or
  the absolute folder the run was trained from), built by ``ric.export.lora``'s truncated SVD
  (exact at a LoRA run's own rank), for those who keep one base and many adapters;
* the tokenizer, whose chat template is the steering (``ric.export.chat_template``): a request's
  ``preference`` (or ``rewards``) chat_template_kwarg becomes ric's exact conditioned prompt, with
  the run's mapping and range baked in (a calibrated run's, `ric calibrate`: a table of its
  mapping over a lattice of preferences, exact on it, interpolated between; a chat-format run's:
  ric's prelude, then the model's own chat template verbatim, the rewards in a system turn).
  Every server that forwards chat_template_kwargs (vLLM, SGLang, ``transformers serve``) then
  steers it, with no ric code in the loop;
* ``generation_config.json``: the run's recorded sampling settings, as ric generates with them;
* ``ric_steering.json`` and the model card ``README.md`` (``ric.export.card``).

Several runs of one base model, template, method and reward scale can be averaged (a model
soup): merged, exactly, weight by weight; as an adapter, through `ric export-lora`'s soup path.
Baselines (sft, morlhf, soups) take no preference, so there is nothing to steer: refused; so is
a soup whose first run steers with a calibration (it measured that run, not the soup). Every
check runs before the weights are loaded, and the folder is written beside ``output`` and
renamed into place, so a failure leaves nothing. `ric export-lora` is another thing: it writes
a ric run folder (a LoRA run that ric's own commands load), not a Hugging Face model folder.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from ric.config import RicConfig, load_config
from ric.core import CALIBRATED, RewardStats, check_preference
from ric.data.io import (
    CONFIG_FILE,
    STATS_FILE,
    check_free_folder,
    load_stats,
    staged_folder,
    write_text_atomic,
)
from ric.export.base_model import BaseModel, find_base, require_location
from ric.export.card import STEERING_FILE, ExportFacts, model_card, steering_record
from ric.export.lora import check_dtype, check_soup_members, lora_of_runs, soup_weights
from ric.models.chat import adds_bos
from ric.runs import (
    METRICS_FILE,
    MODEL_DIR,
    load_trained,
    read_calibration,
    read_method,
    run_folder,
    weights_source,
)
from ric.steering import Steering

DEFAULT_ADAPTER_RANK = 32  # for a run with layers/; a LoRA run keeps its own rank
CARD_FILE = "README.md"


@dataclass(frozen=True)
class ExportResult:
    """What `ric export` wrote, for the CLI to print and a caller to check."""

    output: Path  # the Hugging Face model folder
    kind: str  # "merged" (every weight) or "adapter" (a PEFT LoRA on base_model)
    dtype: str  # the weights' dtype
    base_model: str  # the base the weights build on: a Hub id, a folder, or the run's source
    runs: tuple[str, ...]  # the exported runs (several: a soup)
    soup_weights: tuple[float, ...]  # one per run
    default_preference: tuple[float, ...]  # what the template asks for when a request gives none
    bos_token: bool  # the template writes the BOS token (the tokenizer adds one itself)
    files: tuple[str, ...]  # every file written, relative to output, sorted
    bytes: int  # their total size
    rank: int | None = None  # adapter: its LoRA rank
    kept_min: float | None = None  # adapter: least share of a weight change's norm^2 kept


def export_model(
    runs: Sequence[str | Path],
    output: str | Path,
    dtype: str | None = None,
    adapter: bool = False,
    rank: int | None = None,
    weights: Sequence[float] | None = None,
    evaluation: str | Path | None = None,
) -> ExportResult:
    """Write ``output``, a Hugging Face model folder of the RiC run in ``runs`` (or the weighted
    average of several, ``weights`` default equal): merged weights in ``dtype`` (default: the
    run's ``model.dtype``), or with ``adapter`` a PEFT LoRA of ``rank`` (default: a LoRA run's
    own, else 32); the steering chat template, generation settings, ``ric_steering.json`` and a
    model card. ``evaluation``: a `ric evaluate` output of the run, whose figures the card
    quotes. Every check runs before the weights load. See the module docstring."""
    folders, target = [run_folder(run) for run in runs], Path(output)
    if rank is not None and not adapter:
        raise ValueError(f"rank {rank} is for an adapter (--adapter); merged weights are exact")
    mix = soup_weights(weights, len(folders))
    for folder in folders:
        _check_steerable(folder)
    check_free_folder(target)
    config = load_config(folders[0] / CONFIG_FILE)
    _check_calibrated_soup(folders, config)
    check_soup_members(folders, config)
    dtype = dtype or config.model.dtype
    check_dtype(dtype)
    base = find_base(config.model.source)
    if adapter:
        require_location(base)
    steered = _steered(folders[0], config)
    evaluated = _read_evaluation(Path(evaluation), steered.steering) if evaluation else None
    adapter_rank, kept_min = None, None
    if adapter:
        adapter_rank = rank or _own_rank(config)
        sources = [weights_source(folder) or folder for folder in folders]  # calibrated: its model
        soup = lora_of_runs(sources, adapter_rank, dtype, mix)
        model, tokenizer, kept_min = soup.model, soup.tokenizer, min(soup.kept.values())
    else:
        model, tokenizer = _merged_model(folders, mix, dtype)
    facts = ExportFacts(
        name=target.name,
        runs=tuple(str(run) for run in runs),  # as given: a shipped run by its name
        soup_weights=tuple(float(w) for w in mix),
        kind="adapter" if adapter else "merged",
        dtype=dtype,
        base=base,
        steering=steered.steering,
        stats=steered.stats,
        default_preference=tuple(float(w) for w in steered.default),
        bos_token=steered.bos_token,
        generation=config.generation,
        metrics=tuple(json.loads((f / METRICS_FILE).read_text()) for f in folders),
        evaluation=evaluated,
        rank=adapter_rank,
        kept_min=kept_min,
        whole_modules=adapter and bool(model.peft_config["default"].modules_to_save),
    )
    tokenizer.chat_template = steered.chat_template
    files = _write_folder(target, model, tokenizer, config, facts)
    return ExportResult(
        output=target,
        kind=facts.kind,
        dtype=dtype,
        base_model=base.hub_id or base.location or base.source,
        runs=facts.runs,
        soup_weights=facts.soup_weights,
        default_preference=facts.default_preference,
        bos_token=facts.bos_token,
        files=tuple(sorted(files)),
        bytes=sum(files.values()),
        rank=adapter_rank,
        kept_min=kept_min,
    )


@dataclass(frozen=True)
class _Steered:
    """How the exported folder steers: what its chat template and card are written from."""

    stats: RewardStats
    steering: Steering
    default: np.ndarray  # (N,) the preference of a request that gives none
    bos_token: bool  # the template writes BOS (the tokenizer adds one itself)
    chat_template: str


def _steered(folder: Path, config: RicConfig) -> _Steered:
    """The run's steering and its chat template, from its stats, settings, calibration and
    tokenizer alone: a mapping no template can hold (convex; calibrated for 4 objectives or more)
    is refused before any weight loads."""
    from ric.export.chat_template import steering_chat_template

    stats = load_stats(folder / STATS_FILE)
    tokenizer = _tokenizer_of(folder, config)
    steering = Steering.for_stats(stats, config.mapping, config.template.prompt_template())
    steering = replace(steering, calibration=read_calibration(folder))
    steering = steering.with_tokenizer(tokenizer)  # chat format: its special tokens protected
    default = _default_preference(config, steering)
    bos_token = adds_bos(tokenizer)
    if steering.template.is_chat:
        # The model's own chat template follows ric's prelude; the prelude writes BOS only
        # where the tokenizer adds one and the original template does not write it.
        original = tokenizer.chat_template
        if isinstance(original, dict):  # named templates: the one apply_chat_template uses
            original = original.get("default")
        template = steering_chat_template(
            steering, default, bos_token=bos_token and not _writes_bos(tokenizer), original=original
        )
    else:
        template = steering_chat_template(steering, default, bos_token=bos_token)
    return _Steered(stats, steering, default, bos_token, template)


def _writes_bos(tokenizer: Any) -> bool:
    """Whether the tokenizer's own chat template starts its text with the BOS token."""
    bos = tokenizer.bos_token
    if not bos or not getattr(tokenizer, "chat_template", None):
        return False
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": "x"}], add_generation_prompt=True, tokenize=False
    )
    return text.startswith(bos)


def _write_folder(
    target: Path, model: Any, tokenizer: Any, config: RicConfig, facts: ExportFacts
) -> dict[str, int]:
    """Write the folder (staged beside ``target``, renamed into place when whole); returns
    each file's size by its path inside it."""
    with staged_folder(target) as staging:
        base = facts.base if facts.kind == "adapter" else None
        _save_weights(model, tokenizer, config, staging, base)
        tokenizer.save_pretrained(staging)
        write_text_atomic(staging / STEERING_FILE, json.dumps(steering_record(facts), indent=1))
        write_text_atomic(staging / CARD_FILE, model_card(facts))
        return {
            str(path.relative_to(staging)): path.stat().st_size
            for path in staging.rglob("*")
            if path.is_file()
        }


def _check_steerable(folder: Path) -> None:
    """Refuse what is not a finished RiC run: only a model that reads rewards in its prompt has
    anything for a chat template to steer."""
    if not (folder / CONFIG_FILE).is_file() or not (folder / METRICS_FILE).is_file():
        raise ValueError(
            f"{str(folder)!r} is not a finished trained run (no {METRICS_FILE} or "
            f"{CONFIG_FILE}): give a `ric train` or `ric online` output, or embedded-ric"
        )
    method = read_method(folder)
    if not method.conditioned:
        raise ValueError(
            f"{str(folder)!r} is a {method.name} baseline, which takes no preference: there is "
            "nothing to steer; export a RiC run (a `ric train` or `ric online` output)"
        )


def _check_calibrated_soup(folders: Sequence[Path], config: RicConfig) -> None:
    """Refuse a soup that would steer with its first run's calibration: a calibration measured
    that model's answers, and the soup is another model."""
    if len(folders) > 1 and config.mapping.method == CALIBRATED:
        raise ValueError(
            f"{str(folders[0])!r} steers with its calibration (mapping.method calibrated), which "
            "measured that model's answers, not a soup's: export it alone, or make the soup of "
            "uncalibrated runs (the first run's mapping is the soup's)"
        )


def _default_preference(config: RicConfig, steering: Steering) -> np.ndarray:
    """The run's ``serve.default_preference``, or uniform: what a request without a preference
    gets, as from `ric serve`."""
    count = steering.num_objectives
    default = config.serve.default_preference or [1.0 / count] * count
    try:
        return check_preference(default, count, what="serve.default_preference")
    except ValueError as error:
        raise ValueError(f"the run's {error} ({', '.join(steering.names)})") from None


def _tokenizer_of(folder: Path, config: RicConfig) -> Any:
    """The run's tokenizer, without its weights: a full model's own (a calibrated run's: that
    of the run whose weights it uses), else its base's."""
    from ric.models.loading import load_tokenizer

    model_dir = (weights_source(folder) or folder) / MODEL_DIR
    return load_tokenizer(str(model_dir) if model_dir.is_dir() else config.model.source)


def _own_rank(config: RicConfig) -> int:
    """A LoRA run's own rank (its export is then exact), else ``DEFAULT_ADAPTER_RANK``."""
    return config.lora.r if config.lora.enabled else DEFAULT_ADAPTER_RANK


def _merged_model(folders: Sequence[Path], mix: np.ndarray, dtype: str) -> tuple[Any, Any]:
    """The runs merged into their base (an adapter folded in, top layers laid over) and averaged
    by ``mix`` (theta = sum_i mix_i theta_i over every weight, in float64: exact to the last
    float32 bit that matters), then cast to ``dtype``. Loaded in float32 on the CPU, one run at a
    time, so a soup of K runs holds two models, not K."""
    import torch

    def merged(folder: Path) -> tuple[Any, Any]:
        policy = load_trained(folder, merged=True, dtype="float32", device="cpu")
        return policy.model, policy.tokenizer

    model, tokenizer = merged(folders[0])
    if len(folders) > 1:
        state = model.state_dict()
        total = {
            name: float(mix[0]) * value.double()
            for name, value in state.items()
            if value.is_floating_point()
        }
        for weight, folder in zip(mix[1:], folders[1:], strict=True):
            other = merged(folder)[0].state_dict()
            for name in total:
                total[name] += float(weight) * other[name].double()
        with torch.no_grad():
            for name, value in total.items():
                state[name].copy_(value)
    return model.to(getattr(torch, dtype)), tokenizer


def _save_weights(
    model: Any, tokenizer: Any, config: RicConfig, folder: Path, base: BaseModel | None
) -> None:
    """The weights and ``generation_config.json`` into ``folder``: the whole model, or (``base``
    given) the adapter alone, its config naming ``base`` instead of where ric loaded it from."""
    from ric.models.generation import generation_config_for
    from ric.models.lora import ADAPTER_CONFIG, save_adapter

    generation = generation_config_for(model, tokenizer, config.generation)
    if base is None:
        model.generation_config = generation
        model.save_pretrained(folder)
        return
    save_adapter(model, folder)
    peft_config = json.loads((folder / ADAPTER_CONFIG).read_text())
    peft_config["base_model_name_or_path"] = require_location(base)
    write_text_atomic(folder / ADAPTER_CONFIG, json.dumps(peft_config, indent=2))
    generation.save_pretrained(folder)


def _read_evaluation(folder: Path, steering: Steering) -> dict[str, Any]:
    """The metrics of a `ric evaluate` output of the run, for the card."""
    path = folder / METRICS_FILE
    metrics = json.loads(path.read_text()) if path.is_file() else {}
    if "front" not in metrics:
        raise ValueError(
            f"--evaluation {str(folder)!r} is not a `ric evaluate` output (no {METRICS_FILE} "
            "with a front)"
        )
    if list(metrics.get("objectives", [])) != list(steering.names):
        raise ValueError(
            f"--evaluation {str(folder)!r} measured {metrics.get('objectives')}, not this run's "
            f"objectives {list(steering.names)}"
        )
    return metrics
