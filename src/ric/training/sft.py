"""Multi-reward conditional SFT (docs/design.md §1.2): the loop the offline and online stages share.

A plain accelerate loop, not TRL's SFTTrainer, for three reasons:
* labels come from token positions: each sample is tokenized once as prompt ids + response ids +
  EOS, and the loss covers exactly the tokens after the prompt's length. No decode/re-tokenize
  round trip, no search for a response template (docs/design.md §2);
* batches are grouped by length (padding is wasted compute) and their order is a pure function of
  (seed, epoch), so ``resume`` continues with exactly the batches an uninterrupted run would see;
* one loop, readable top to bottom, serves both stages; accelerate still gives device placement,
  mixed precision and several processes (DDP or DeepSpeed ZeRO-2: ``accelerate launch``);
* ``train.packing`` (the default) puts a micro-batch's samples end to end in one padding-free row
  with per-sample position ids, and computes the output layer only where a response token is
  predicted (``ric.models.samples.pack``): the same loss as the padded batch, less compute;
* when only the top layers are trained, the frozen ones below run once per sample: later epochs
  start from the hidden states kept from the first (``ric.models.frozen_layers``).

Data parallel: with K processes each one takes every K-th sample of every micro-batch, so the
global batch, the data order and the loss are those of one process. The loss of a micro-batch is
its summed token loss over the micro-batch's token count (known to every process from the
samples, so no communication), times K because DDP averages the processes' gradients.

The prompt is tokenized alone, exactly as generation tokenizes it, so the conditioned prompt the
model is trained on and the one it is asked with are the same token ids.
"""

from __future__ import annotations

import contextlib
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from ric import parallel
from ric.config import TrainConfig
from ric.models.frozen_layers import FrozenLayerCache, frozen_layer_cache
from ric.models.packed_attention import packed_attention
from ric.models.samples import TokenizedSample, collate, pack, response_loss_sum
from ric.training.checkpoints import (
    append_log,
    checkpoint_folder,
    load_latest_checkpoint,
    save_checkpoint,
    truncate_log,
)
from ric.training.optimization import adamw, resolve_mixed_precision

LENGTH_GROUP_FACTOR = 50  # batches per length-sorted group: little padding, still shuffled


def epoch_batches(
    lengths: Sequence[int], batch_size: int, seed: int, epoch: int
) -> list[list[int]]:
    """Sample indices per micro-batch for one epoch: shuffled, then sorted by length within
    groups of ``LENGTH_GROUP_FACTOR`` batches, then the batches shuffled. Deterministic."""
    generator = random.Random(seed * 1_000_003 + epoch)
    order = list(range(len(lengths)))
    generator.shuffle(order)
    group = batch_size * LENGTH_GROUP_FACTOR
    batches = []
    for start in range(0, len(order), group):
        chunk = sorted(order[start : start + group], key=lambda index: lengths[index])
        batches += [chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size)]
    generator.shuffle(batches)
    return batches


@dataclass(frozen=True)
class TrainResult:
    steps: int  # optimizer steps done in total (including those before a resume)
    resumed_from: int  # step of the checkpoint resumed from (0: fresh start)
    losses: list[tuple[int, float]]  # (step, mean loss over the logging window), this run
    response_tokens: int  # response tokens trained on, over every process of a resumed run
    seconds: float  # wall-clock time of the steps, over every process of a resumed run
    frozen_cache: str  # which frozen layers ran once per sample, or why none did (this run)


def train(
    model: torch.nn.Module,
    samples: Sequence[TokenizedSample],
    settings: TrainConfig,
    output: Path,
    pad_id: int,
    resume: bool = False,
    show_progress: bool = True,
    on_checkpoint: Callable[[Path], None] | None = None,
) -> TrainResult:
    """Fine-tune the trainable parameters of ``model`` on ``samples`` for ``settings.max_steps``.

    Checkpoints (trainable weights, optimizer, scheduler, RNG, step) go to
    ``output/checkpoints/step-N`` every ``save_steps``; with ``resume`` the newest one is loaded
    and training continues from its step with the same data order.
    """
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState
    from transformers import get_scheduler

    if not samples:
        raise ValueError("no training samples (all prompts longer than train.max_length?)")
    # accelerate keeps the first mixed-precision mode of a process and refuses another; one
    # process may train several models (`ric compare`, a notebook) with different modes.
    AcceleratorState._reset_state()
    accelerator = Accelerator(
        mixed_precision=resolve_mixed_precision(settings.mixed_precision), cpu=parallel.on_cpu()
    )
    _check_engine(accelerator, settings)
    torch.manual_seed(settings.seed)
    trainable = [p for p in model.parameters() if p.requires_grad]
    if not trainable:
        raise ValueError("the model has no trainable parameters")
    optimizer = adamw(trainable, settings.learning_rate, settings.weight_decay)
    scheduler = get_scheduler(
        settings.lr_schedule,
        optimizer,
        num_warmup_steps=settings.warmup_steps,
        num_training_steps=settings.max_steps,
    )
    # The scheduler stays unprepared: accelerate's would step once per process, and here the
    # processes share one global batch per step.
    model, optimizer = accelerator.prepare(model, optimizer)
    cache, cache_note = frozen_layer_cache(model, samples, settings.frozen_cache_gb)
    start_step, seconds_before, tokens = 0, 0.0, 0
    if resume:
        unwrapped = accelerator.unwrap_model(model)
        start_step, seconds_before, tokens = load_latest_checkpoint(
            output, unwrapped, optimizer, scheduler
        )
    if accelerator.is_main_process:  # a killed run logged steps the checkpoint does not hold
        truncate_log(output, start_step)

    lengths = [len(sample.input_ids) for sample in samples]
    batches_per_epoch = len(epoch_batches(lengths, settings.batch_size, settings.seed, 0))
    accumulation = settings.gradient_accumulation_steps
    model.train()
    losses: list[tuple[int, float]] = []
    window = torch.zeros(2)  # this process's share of the summed micro-batch mean losses; count
    began = time.perf_counter()
    progress = tqdm(
        total=settings.max_steps,
        initial=start_step,
        desc="train",
        disable=not show_progress or not accelerator.is_main_process,
    )
    # Packed rows attend per sample (ric.models.packed_attention); generation afterwards pads.
    attention = packed_attention(model) if settings.packing else contextlib.nullcontext()
    epoch_cache: dict[int, list[list[int]]] = {}
    with attention:
        for step in range(start_step, settings.max_steps):
            for micro in range(accumulation):
                epoch, index = divmod(step * accumulation + micro, batches_per_epoch)
                if epoch not in epoch_cache:  # keep only the current epoch's order
                    order = epoch_batches(lengths, settings.batch_size, settings.seed, epoch)
                    epoch_cache = {epoch: order}
                keys = epoch_cache[epoch][index]
                synced = micro == accumulation - 1  # gradients are averaged once per step
                window += _backward_share(
                    accelerator, model, samples, keys, settings, pad_id, synced, cache
                )
                tokens += sum(samples[key].trained_tokens for key in keys)
            if settings.max_grad_norm > 0:
                accelerator.clip_grad_norm_(trainable, settings.max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            done = step + 1
            progress.update(1)
            # The last step always logs, so every run reports a final loss (also with log_steps 0).
            if done == settings.max_steps or (
                settings.log_steps and done % settings.log_steps == 0
            ):
                summed, count = accelerator.reduce(window.to(accelerator.device), "sum").tolist()
                losses.append((done, summed / count))  # the mean of the micro-batches' mean losses
                if accelerator.is_main_process:
                    append_log(output, done, losses[-1][1], scheduler.get_last_lr()[0], began)
                progress.set_postfix(loss=f"{losses[-1][1]:.4f}")
                window = torch.zeros(2)
            if (
                settings.save_steps
                and done % settings.save_steps == 0
                and done < settings.max_steps
            ):
                seconds = seconds_before + time.perf_counter() - began
                if accelerator.is_main_process:
                    unwrapped = accelerator.unwrap_model(model)
                    progress_made = (done, seconds, tokens)
                    save_checkpoint(
                        output,
                        progress_made,
                        unwrapped,
                        optimizer,
                        scheduler,
                        settings.keep_checkpoints,
                    )
                accelerator.wait_for_everyone()
                if on_checkpoint is not None:
                    on_checkpoint(checkpoint_folder(output, done))
    progress.close()
    return TrainResult(
        steps=settings.max_steps,
        resumed_from=start_step,
        losses=losses,
        response_tokens=tokens,
        seconds=seconds_before + time.perf_counter() - began,
        frozen_cache=cache.note if cache is not None else cache_note,
    )


def _check_engine(accelerator: Any, settings: TrainConfig) -> None:
    """Refuse the launch setups this loop would get wrong, before any work: it saves the main
    process's full copy of the trainable weights (which FSDP and ZeRO-3 shard away), and it
    accumulates micro-batches itself (DeepSpeed steps its optimizer at every backward)."""
    from accelerate.utils import DistributedType

    kind = accelerator.distributed_type
    stage = (
        accelerator.state.deepspeed_plugin.zero_stage if kind == DistributedType.DEEPSPEED else 0
    )
    if kind == DistributedType.FSDP or stage == 3:
        raise ValueError(
            f"`ric train` and `ric online` run data-parallel (DDP or DeepSpeed ZeRO-2), not "
            f"{'FSDP' if kind == DistributedType.FSDP else 'ZeRO-3'}: they save weights from the "
            "main process's full copy, which parameter sharding removes. Launch with "
            "configs/accelerate/ddp.yaml or deepspeed-zero2.yaml"
        )
    if stage and settings.gradient_accumulation_steps > 1:
        raise ValueError(
            "with DeepSpeed set train.gradient_accumulation_steps to 1 (got "
            f"{settings.gradient_accumulation_steps}): DeepSpeed steps at every backward; raise "
            "train.batch_size or the number of processes instead"
        )


def _backward_share(
    accelerator: Any,
    model: torch.nn.Module,
    samples: Sequence[TokenizedSample],
    keys: list[int],
    settings: TrainConfig,
    pad_id: int,
    synced: bool,
    cache: FrozenLayerCache | None,
) -> torch.Tensor:
    """Backpropagate this process's share of a micro-batch (``keys``: its indices into
    ``samples``; every K-th one of K processes); return its part of the micro-batch's mean token
    loss and of the micro-batch count, which the processes sum at logging time. ``synced``: the
    last micro-batch of a step, whose backward averages the gradients across processes (the
    others skip that communication)."""
    processes = accelerator.num_processes
    batch_tokens = sum(samples[key].trained_tokens for key in keys)
    share, weight = keys[accelerator.process_index :: processes], 1.0
    if not share:  # fewer samples than processes: take part in the step, add nothing
        share, weight = keys[:1], 0.0
    chosen = [samples[key] for key in share]
    batch = pack(chosen) if settings.packing else collate(chosen, pad_id)
    batch = {name: value.to(accelerator.device) for name, value in batch.items()}
    accumulation = settings.gradient_accumulation_steps
    with contextlib.nullcontext() if synced else accelerator.no_sync(model):
        if cache is None:
            loss_sum = response_loss_sum(model, batch) * weight
        else:
            loss_sum = cache.loss_sum(model, batch, share, chosen) * weight
        # DDP averages over processes; the step wants the sum over the micro-batch's tokens.
        accelerator.backward(loss_sum * processes / (batch_tokens * accumulation))
    return torch.tensor([loss_sum.item() / batch_tokens, 1.0 / processes])
