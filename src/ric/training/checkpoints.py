"""A training run's resumable state on disk: its checkpoints and its loss log.

``output/checkpoints/step-N`` holds the trainable weights, optimizer, scheduler, RNG states and
progress (written atomically, the newest ``keep`` kept); ``train_log.jsonl`` holds the logged
losses, cut back to a checkpoint's step when a run resumes from it. The conditional SFT loop
(``ric.training.sft``) and text-to-image training (``ric.image.train``) write this format, and
the RL baselines (``ric.baselines.rl``) use its folder and log names; kept apart from the SFT
loop so that they share the format without importing the loop.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

import torch

from ric.data.io import write_text_atomic

CHECKPOINTS = "checkpoints"
LOG_FILE = "train_log.jsonl"


def append_log(output: Path, step: int, loss: float, lr: float, began: float) -> None:
    output.mkdir(parents=True, exist_ok=True)
    record = {"step": step, "loss": loss, "lr": lr, "seconds": time.perf_counter() - began}
    with (output / LOG_FILE).open("a", encoding="utf-8") as handle:
        handle.write(json.dumps(record) + "\n")


def truncate_log(output: Path, step: int) -> None:
    """Keep only the log records up to ``step`` (all of them gone for a fresh start)."""
    log = output / LOG_FILE
    if not log.is_file():
        return
    kept = [line for line in log.read_text().splitlines() if json.loads(line)["step"] <= step]
    write_text_atomic(log, "".join(f"{line}\n" for line in kept))


def _trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {
        name: param.detach().cpu().clone()
        for name, param in model.named_parameters()
        if param.requires_grad
    }


def checkpoint_folder(output: Path, step: int) -> Path:
    return output / CHECKPOINTS / f"step-{step:08d}"


def save_checkpoint(
    output: Path,
    progress: tuple[int, float, int],
    model: torch.nn.Module,
    optimizer: Any,
    scheduler: Any,
    keep: int,
) -> None:
    """Write ``checkpoints/step-N`` atomically (temp dir, then rename); keep the newest ``keep``.
    ``progress``: the step, and the seconds and response tokens trained so far."""
    step, seconds, tokens = progress
    from safetensors.torch import save_file

    root = output / CHECKPOINTS
    final = checkpoint_folder(output, step)
    partial = root / f".partial-step-{step:08d}"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    save_file(_trainable_state(model), str(partial / "trainable.safetensors"))
    torch.save(
        {
            "step": step,
            "seconds": seconds,
            "response_tokens": tokens,
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        },
        partial / "state.pt",
    )
    shutil.rmtree(final, ignore_errors=True)
    partial.rename(final)
    for old in sorted(root.glob("step-*"))[:-keep]:
        shutil.rmtree(old)


def latest_checkpoint(output: Path) -> Path | None:
    """The newest complete checkpoint folder, or None."""
    folders = sorted((output / CHECKPOINTS).glob("step-*"))
    return folders[-1] if folders else None


def load_latest_checkpoint(
    output: Path, model: torch.nn.Module, optimizer: Any, scheduler: Any
) -> tuple[int, float, int]:
    """Restore the newest checkpoint; return its step and the seconds and response tokens
    trained before it (zeros without a checkpoint)."""
    from safetensors.torch import load_file

    folder = latest_checkpoint(output)
    if folder is None:
        return 0, 0.0, 0
    weights = load_file(str(folder / "trainable.safetensors"))
    parameters = dict(model.named_parameters())
    missing = sorted(set(weights) - set(parameters))
    if missing:
        raise ValueError(f"checkpoint {folder} does not fit the model: unknown {missing[:3]}")
    with torch.no_grad():
        for name, value in weights.items():
            parameters[name].copy_(value)
    state = torch.load(folder / "state.pt", weights_only=False)
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    torch.set_rng_state(state["torch_rng"])
    if state["cuda_rng"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda_rng"])
    return int(state["step"]), float(state["seconds"]), int(state["response_tokens"])
