"""Batched generation of responses to conditioned prompts (online stage, evaluation, serving).

The authors' code generated one example at a time and cleaned responses with character-set
stripping (``rstrip("### Response:")``, ``.strip('</s>')``), which ate the ends of real answers
(docs/design.md §2). Here:

* prompts are tokenized once, alone, exactly as ``tokenizer(prompt)`` (and the SFT loop) tokenizes
  them, then sorted by length into batches (little padding) and padded on the LEFT by
  ``left_pad``, so every row's last prompt token sits right before its first new token; results
  are put back in input order. The tokenizer's own ``padding_side`` is never touched, so training
  code that pads right is unaffected;
* ``model.generate`` gets the sampling settings explicitly (``top_k=0`` is transformers' own
  "off"; left out, or None inside a transformers GenerationConfig, it becomes the default 50),
  EOS is suppressed for the first ``min_new_tokens`` tokens (the paper's code suppressed it at
  the first step), and stop strings end a row's generation early (``stop_strings=`` +
  ``tokenizer=``);
* the new tokens of each row are cut at their first EOS (rows that finish early are padded by
  ``generate``; nothing after EOS may leak into a response), decoded without special tokens, then
  cut at the first stop string by exact substring search and stripped of surrounding whitespace.

Streaming: ``on_token(position, token_id)``, if given, is called in the generating thread with
each new token of each row as ``generate`` makes it (``position``: the prompt's index in the
input, whatever batch and order it was generated in), up to and excluding the row's first EOS;
it only observes, the results are the same with or without it.

Groups: a caller that knows which prompts will get answers of similar length passes ``groups``
(one label per prompt): batches are then made group by group (sorted by length within each), so
a batch of short answers ends early instead of waiting for a long one. A preference sweep groups
by preference point: on ``embedded-ric``'s sweep a batch asked for conciseness stops after a few
tokens.

Reproducibility: ``torch.manual_seed(settings.seed)`` once per call, so the same call (same
prompts, settings and model) gives the same texts. Sampled texts still depend on which prompts
share a batch, as the random draws are made per batch.

Several processes (``accelerate launch``): every process calls with the same prompts, generates
every K-th one (``ric.parallel``; seed ``settings.seed`` + its index) and gets every result, in
input order. Streaming (``on_token``) is for one process.

Backends (``settings.backend``): ``hf``, the above, and ``vllm`` (``ric.models.vllm_backend``),
which generates the new tokens of every prompt on a vLLM engine; the same prompt ids go in and
the same EOS cut, decoding and cleaning come out. Streaming is ``hf`` only.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, replace
from functools import partial
from typing import TYPE_CHECKING, Any

import torch
from tqdm.auto import tqdm
from transformers.generation.streamers import BaseStreamer

from ric import parallel
from ric.config import GenerationConfig

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

__all__ = [
    "GenerationResult",
    "clean_response",
    "eos_token_ids",
    "generate_responses",
    "generate_with_stats",
    "generation_config_for",
    "left_pad",
    "pad_token_id",
    "truncate_at_eos",
]


@dataclass(frozen=True)
class GenerationResult:
    """Responses in input order, with the number of tokens each was decoded from and whether
    each one ended (EOS or a stop string) rather than ran into ``max_new_tokens``."""

    texts: list[str]  # cleaned responses
    num_new_tokens: list[int]  # generated tokens before the first EOS (stop-string cut not counted)
    finished: list[bool]  # ended by EOS or a stop string; False: cut by the generation budget

    @classmethod
    def concatenate(cls, results: Sequence[GenerationResult]) -> GenerationResult:
        """One result holding ``results`` one after another."""
        return cls(
            [text for result in results for text in result.texts],
            [count for result in results for count in result.num_new_tokens],
            [done for result in results for done in result.finished],
        )


def generate_responses(
    model: Any,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    settings: GenerationConfig,
    show_progress: bool = False,
) -> list[str]:
    """One cleaned response per prompt, in input order (see the module docstring)."""
    return generate_with_stats(model, tokenizer, prompts, settings, show_progress).texts


def generate_with_stats(
    model: Any,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    settings: GenerationConfig,
    show_progress: bool = False,
    on_token: Callable[[int, int], None] | None = None,
    groups: Sequence[int] | None = None,
) -> GenerationResult:
    """Generate in length-sorted, left-padded batches; ``model`` is a causal LM (transformers or
    PEFT). Its train/eval mode is restored afterwards. ``on_token`` and ``groups`` (one label
    per prompt, batched apart): see the module docstring."""
    if groups is not None and len(groups) != len(prompts):
        raise ValueError(f"{len(groups)} group labels for {len(prompts)} prompts: give one each")
    if settings.backend == "vllm" and on_token is not None:
        raise ValueError("streaming generation (on_token) needs generation.backend=hf, not vllm")
    generate_here: Callable[..., GenerationResult] = (
        _generate_on_vllm  # vLLM schedules its own batches: groups change nothing there
        if settings.backend == "vllm"
        else partial(_generate_here, on_token=on_token, groups=groups)
    )
    if parallel.num_processes() == 1:
        return generate_here(model, tokenizer, prompts, settings, show_progress)
    if on_token is not None:
        raise ValueError("streaming generation (on_token) runs in a single process")
    own_seed = replace(settings, seed=settings.seed + parallel.process_index())

    def generate_share(share: list[int]) -> list[tuple[str, int, bool]]:
        texts = [prompts[i] for i in share]
        labels = None if groups is None else [groups[i] for i in share]
        run = (
            _generate_on_vllm
            if settings.backend == "vllm"
            else partial(_generate_here, groups=labels)
        )
        result = run(model, tokenizer, texts, own_seed, show_progress)
        return list(zip(result.texts, result.num_new_tokens, result.finished, strict=True))

    rows = parallel.map_rows(list(range(len(prompts))), generate_share)
    return GenerationResult([r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows])


def _generate_here(
    model: Any,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    settings: GenerationConfig,
    show_progress: bool = False,
    on_token: Callable[[int, int], None] | None = None,
    groups: Sequence[int] | None = None,
) -> GenerationResult:
    """``generate_with_stats`` in this process, for all of ``prompts``."""
    prompt_ids = _tokenize_prompts(tokenizer, prompts)
    eos_ids = eos_token_ids(model, tokenizer)
    pad_id = pad_token_id(tokenizer, eos_ids)
    options = _generate_options(settings, tokenizer, eos_ids, pad_id)
    labels = [0] * len(prompt_ids) if groups is None else list(groups)
    order = sorted(range(len(prompt_ids)), key=lambda i: (labels[i], -len(prompt_ids[i])))
    texts = [""] * len(prompt_ids)
    counts = [0] * len(prompt_ids)
    finished = [False] * len(prompt_ids)
    was_training = model.training
    model.eval()
    torch.manual_seed(settings.seed)
    progress = tqdm(total=len(prompts), desc="generating", unit="prompt", disable=not show_progress)
    try:
        for batch in batches(order, labels, settings.batch_size):
            streamer = None if on_token is None else _RowStreamer(batch, eos_ids, on_token)
            rows = [prompt_ids[i] for i in batch]
            new_ids = _generate_batch(model, rows, pad_id, options, streamer)
            kept = [truncate_at_eos(row, eos_ids) for row in new_ids]
            decoded = tokenizer.batch_decode(kept, skip_special_tokens=True)
            for index, row, ids, text in zip(batch, new_ids, kept, decoded, strict=True):
                texts[index] = clean_response(text, settings.stop_strings)
                counts[index] = len(ids)
                # EOS inside the new tokens, or a stop string that ended (or cut) the text.
                finished[index] = len(ids) < len(row) or any(
                    stop in text for stop in settings.stop_strings
                )
            progress.update(len(batch))
    finally:
        progress.close()
        model.train(was_training)
    return GenerationResult(texts, counts, finished)


def batches(order: list[int], labels: Sequence[int], size: int) -> list[list[int]]:
    """``order`` cut into batches of at most ``size``, a new one at a change of label once the
    batch is at least half full (smaller groups share a batch: a batch of a few rows costs a
    step nearly what a full one does)."""
    cut: list[list[int]] = []
    for index in order:
        full = cut and len(cut[-1]) == size
        new_group = cut and labels[cut[-1][-1]] != labels[index] and 2 * len(cut[-1]) >= size
        if not cut or full or new_group:
            cut.append([])
        cut[-1].append(index)
    return cut


def _generate_on_vllm(
    model: Any,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    settings: GenerationConfig,
    show_progress: bool = False,
) -> GenerationResult:
    """``_generate_here`` on vLLM: the same prompt ids in, the same EOS cut, decoding and
    cleaning of the new tokens out."""
    from ric.models.vllm_backend import generate_token_ids

    _check_stop_strings(settings.stop_strings)
    prompt_ids = _tokenize_prompts(tokenizer, prompts)
    if not prompt_ids:
        return GenerationResult([], [], [])
    eos_ids = eos_token_ids(model, tokenizer)
    new_ids, finished = generate_token_ids(
        model, tokenizer, prompt_ids, eos_ids, settings, show_progress
    )
    kept = [truncate_at_eos(row, eos_ids) for row in new_ids]
    decoded = tokenizer.batch_decode(kept, skip_special_tokens=True)
    texts = [clean_response(text, settings.stop_strings) for text in decoded]
    return GenerationResult(texts, [len(ids) for ids in kept], finished)


@torch.inference_mode()
def _generate_batch(
    model: Any,
    rows: list[list[int]],
    pad_id: int,
    options: dict[str, Any],
    streamer: BaseStreamer | None,
) -> list[list[int]]:
    """The new token ids of each row of one left-padded batch (EOS/padding included)."""
    inputs = left_pad(rows, pad_id)
    width = inputs["input_ids"].shape[1]
    inputs = {k: v.to(model.device) for k, v in inputs.items()}
    output = model.generate(**inputs, **options, streamer=streamer)
    return output[:, width:].tolist()


class _RowStreamer(BaseStreamer):
    """The streamer of one batch: each row's new tokens to ``on_token`` with the row's input
    position, until its first EOS. ``generate`` first puts the prompts (skipped), then one token
    per row at each step (finished rows get padding, not reported)."""

    def __init__(
        self, positions: list[int], eos_ids: Collection[int], on_token: Callable[[int, int], None]
    ) -> None:
        self.positions = positions
        self.eos_ids = eos_ids
        self.on_token = on_token
        self.prompts_seen = False
        self.ended: set[int] = set()

    def put(self, value: torch.Tensor) -> None:
        if not self.prompts_seen:
            self.prompts_seen = True
            return
        for position, token in zip(self.positions, value.tolist(), strict=True):
            if position in self.ended:
                continue
            if token in self.eos_ids:
                self.ended.add(position)
            else:
                self.on_token(position, token)

    def end(self) -> None:
        """Nothing to flush: every token was handed on as it came."""


def left_pad(rows: Sequence[Sequence[int]], pad_id: int) -> dict[str, torch.Tensor]:
    """``input_ids`` and ``attention_mask``, each (B, T), with every row padded on the left."""
    width = max(len(row) for row in rows)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
    for index, row in enumerate(rows):
        input_ids[index, width - len(row) :] = torch.tensor(row, dtype=torch.long)
        attention_mask[index, width - len(row) :] = 1
    return {"input_ids": input_ids, "attention_mask": attention_mask}


def truncate_at_eos(token_ids: Sequence[int], eos_ids: Collection[int]) -> list[int]:
    """The tokens before the first EOS id (all of them if there is none)."""
    for position, token_id in enumerate(token_ids):
        if token_id in eos_ids:
            return list(token_ids[:position])
    return list(token_ids)


def clean_response(text: str, stop_strings: Sequence[str]) -> str:
    """``text`` cut at the earliest occurrence of any stop string (exact substrings, never
    character sets), stripped of surrounding whitespace. Apply to decoded new tokens only."""
    _check_stop_strings(stop_strings)
    cut = min((text.find(stop) for stop in stop_strings if stop in text), default=len(text))
    return text[:cut].strip()


def _tokenize_prompts(
    tokenizer: PreTrainedTokenizerBase, prompts: Sequence[str]
) -> list[list[int]]:
    """Each prompt's ids as ``tokenizer(prompt)`` gives them alone (default special tokens)."""
    rows: list[list[int]] = tokenizer(list(prompts))["input_ids"] if prompts else []
    empty = [index for index, row in enumerate(rows) if not row]
    if empty:
        raise ValueError(f"prompts at positions {empty} tokenize to no tokens; nothing to continue")
    return rows


def eos_token_ids(model: Any, tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """The tokenizer's EOS (what SFT appends) plus any EOS ids of the model's generation config."""
    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    from_model = configured if isinstance(configured, list) else [configured]
    ids = [tokenizer.eos_token_id, *from_model]
    unique = list(dict.fromkeys(token_id for token_id in ids if token_id is not None))
    if not unique:
        raise ValueError("neither the tokenizer nor the model defines an EOS token id")
    return unique


def pad_token_id(tokenizer: PreTrainedTokenizerBase, eos_ids: list[int]) -> int:
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos_ids[0]


def generation_config_for(
    model: Any, tokenizer: PreTrainedTokenizerBase, settings: GenerationConfig
) -> Any:
    """transformers' ``GenerationConfig`` holding what ``generate_with_stats`` passes to
    ``model.generate`` for ``settings`` (sampling values only when sampling, EOS ids, pad id,
    stop strings): saved as ``generation_config.json``, it makes a plain ``generate``, or a
    server that reads that file, answer with ric's settings. top_k 0 ("off") is written as the
    whole vocabulary, the same sampling: "off" gives transformers no top-k step, and without
    one `transformers serve` 5.25 cannot narrow a greedy request to top_k 1, and samples it."""
    from transformers import GenerationConfig as TransformersGenerationConfig

    eos_ids = eos_token_ids(model, tokenizer)
    options = _generate_options(settings, tokenizer, eos_ids, pad_token_id(tokenizer, eos_ids))
    options.pop("tokenizer", None)  # passed to generate for stop strings; not a setting
    if options.get("top_k") == 0:
        options["top_k"] = model.get_output_embeddings().weight.shape[0]
    return TransformersGenerationConfig(**options)


def _generate_options(
    settings: GenerationConfig,
    tokenizer: PreTrainedTokenizerBase,
    eos_ids: list[int],
    pad_id: int,
) -> dict[str, Any]:
    """Keyword arguments for ``model.generate``; sampling settings only when sampling."""
    _check_stop_strings(settings.stop_strings)
    options: dict[str, Any] = {
        "max_new_tokens": settings.max_new_tokens,
        "min_new_tokens": min(settings.min_new_tokens, settings.max_new_tokens),
        "do_sample": settings.do_sample,
        "eos_token_id": eos_ids,
        "pad_token_id": pad_id,
    }
    if settings.do_sample:
        options |= {
            "temperature": settings.temperature,
            "top_p": settings.top_p,
            "top_k": settings.top_k,  # 0 is "off"; left out, transformers' default 50 applies
        }
    if settings.stop_strings:
        options |= {"stop_strings": list(settings.stop_strings), "tokenizer": tokenizer}
    return options


def _check_stop_strings(stop_strings: Sequence[str]) -> None:
    if any(not stop for stop in stop_strings):
        raise ValueError(
            f"generation.stop_strings must not contain an empty string: {stop_strings}"
        )
