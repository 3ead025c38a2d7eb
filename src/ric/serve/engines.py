"""Generation under `ric serve`, on a maintained engine's continuous batching.

Every request's sequences (its prompts x ``n``) go to the engine as they arrive, join the running
batch at its next step and leave it when done; a request that is cancelled (its client went
away, its stream was closed) is taken out at the engine's next step. Two engines
(``serve.engine``):

* ``transformers`` (default; CPU or GPU): transformers' continuous batching
  (``model.init_continuous_batching``: a paged KV cache, a scheduler, a generation thread), with
  per-request logits processors, so requests with different ``temperature`` and ``top_p`` share
  every step. Greedy requests share them too: a ``top_p`` below float32's resolution keeps only
  the most likely token (the processor always keeps one), which is exactly greedy decoding.
* ``vllm`` (``pip install vllm``; CUDA): vLLM's async engine on the merged weights, written to a
  temporary folder (vLLM loads weights from files).

What ric adds on top, because the engines lack it (see docs/serving.md):

* **stop strings** (``stop``; transformers' engine has none): each new token is decoded and a
  sequence is cancelled in the engine at the token that completes a stop string;
* **the same answer as `ric generate`**: tokens cut at the first EOS, decoded, cut at the first
  stop string and stripped (``ric.models.generation``'s own functions), so a streamed answer,
  a batched one and an offline one are cleaned alike;
* **seeded requests** on transformers' engine, whose random draws are shared by the batch: a
  request with a ``seed`` is generated alone with ric's own ``generate`` while the engine pauses
  (bit-for-bit reproducible, and the same answer `ric generate` gives with that seed); vLLM seeds
  each request natively;
* counters of the sequences waiting for their first token and running (``/health``, metrics,
  the 429 of a full queue).

Not available on transformers' engine: ``generation.min_new_tokens`` (it has no per-request
minimum length: a sequence may end at its first token) and ``top_k`` per request (the run's
``generation.top_k`` applies to all).
"""

from __future__ import annotations

import asyncio
import math
import tempfile
import threading
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol

from ric.config import GenerationConfig, ServeConfig
from ric.models.generation import (
    clean_response,
    eos_token_ids,
    generate_with_stats,
    pad_token_id,
    truncate_at_eos,
)
from ric.runtime import import_optional

OnToken = Callable[[int, int], None]  # (row of the request, token id), as each is generated

CPU_CACHE_TOKENS_PER_SEQUENCE = 1024  # the KV cache on a CPU: max_batch_size x this many tokens
GREEDY_TOP_P = 1e-9  # below float32's resolution near 1: only the most likely token survives


@dataclass(frozen=True)
class Row:
    """One generated sequence as the API answers it."""

    text: str  # cleaned: cut at EOS and the first stop string, stripped
    tokens: int  # generated tokens before the first EOS
    finished: bool  # ended by EOS or a stop string (False: ran into max_tokens)


class Engine(Protocol):
    waiting: int  # sequences waiting for their first token
    running: int  # sequences generating
    peak_running: int  # the most sequences seen generating at once
    generated: int  # tokens generated so far, for every sequence (abandoned ones included)
    capacity: int | None  # tokens its KV cache holds, once started (None: the engine manages)

    def start(self) -> None: ...

    def stop(self) -> None:
        """Finish what is in flight, then end (blocking)."""

    async def generate(
        self,
        prompts: list[str],
        prompt_ids: list[list[int]],
        settings: GenerationConfig,
        seeded: bool,
        on_token: OnToken | None = None,
    ) -> list[Row]:
        """One row per prompt; cancelling the awaiting task takes its sequences out."""


class RowText:
    """One sequence's tokens as they come: where it ends (EOS, or a stop string completed),
    and its final row."""

    def __init__(self, tokenizer: Any, eos_ids: Sequence[int], stops: Sequence[str]) -> None:
        self.tokenizer = tokenizer
        self.eos_ids = set(eos_ids)
        self.stops = list(stops)
        self.ids: list[int] = []
        self.ended = False  # by EOS or a stop string

    def add(self, token: int) -> bool:
        """Take one new token; True if it ends the sequence (it is then not part of the text
        when it is EOS)."""
        self.ids.append(token)
        if token in self.eos_ids:
            self.ended = True
        elif self.stops:
            text = self.tokenizer.decode(self.ids, skip_special_tokens=True)
            self.ended = any(stop in text for stop in self.stops)
        return self.ended

    def row(self) -> Row:
        kept = truncate_at_eos(self.ids, self.eos_ids)
        text = self.tokenizer.decode(kept, skip_special_tokens=True)
        return Row(clean_response(text, self.stops), len(kept), self.ended)


class Counted:
    """The counters every engine keeps: sequences waiting (submitted, no token yet) and running
    (a token or more, not ended), and the tokens generated."""

    def __init__(self) -> None:
        self.waiting = 0
        self.running = 0
        self.peak_running = 0  # the most sequences seen generating at once
        self.generated = 0

    def began(self, count: int = 1) -> None:
        self.waiting -= count
        self.running += count
        self.peak_running = max(self.peak_running, self.running)

    def ended(self, started: bool, count: int = 1) -> None:
        """``count`` sequences left the engine, after their first token or before it."""
        if started:
            self.running -= count
        else:
            self.waiting -= count


class TransformersEngine(Counted):
    """transformers' continuous batching over the policy in memory (module docstring)."""

    def __init__(
        self, model: Any, tokenizer: Any, serve: ServeConfig, base: GenerationConfig
    ) -> None:
        super().__init__()
        self.model = model
        self.tokenizer = tokenizer
        self.serve = serve
        self.top_k = base.top_k  # the run's, for every request (0: off)
        self.eos_ids = eos_token_ids(model, tokenizer)
        self.manager: Any = None
        self.capacity: int | None = None
        self.alone = threading.Lock()  # seeded requests, one at a time beside the engine

    def start(self) -> None:
        """A fresh manager each start (stopping one restores the model's attention)."""
        from transformers import ContinuousBatchingConfig
        from transformers import GenerationConfig as TransformersGenerationConfig

        # Temperature and top_p are placeholders: they make the engine create its per-request
        # processors (it skips a temperature of 1 and a top_p of 1); every request sends its own.
        config = TransformersGenerationConfig(
            do_sample=True,
            temperature=0.5,
            top_p=0.5,
            top_k=self.top_k or None,
            max_new_tokens=self.serve.max_tokens,
            eos_token_id=self.eos_ids,
            pad_token_id=pad_token_id(self.tokenizer, self.eos_ids),
        )
        cache: dict[str, Any] = {}
        tokens = self.serve.kv_cache_tokens
        if not tokens and self.model.device.type == "cpu":
            tokens = self.serve.max_batch_size * CPU_CACHE_TOKENS_PER_SEQUENCE
        if tokens:
            page = ContinuousBatchingConfig().page_size
            cache = {"num_blocks": math.ceil(tokens / page), "page_size": page}
        self.manager = self.model.init_continuous_batching(
            generation_config=config,
            continuous_batching_config=ContinuousBatchingConfig(
                per_request_processors=True,
                max_requests_per_batch=self.serve.max_batch_size,
                **cache,
            ),
        )
        self.manager.start()
        resolved = self.manager.continuous_batching_config
        if resolved.num_blocks:  # sized now, or by the engine from free GPU memory
            self.capacity = resolved.num_blocks * resolved.page_size

    def stop(self) -> None:
        if self.manager is not None:
            self.manager.stop(block=True)
            self.manager = None

    async def generate(
        self,
        prompts: list[str],
        prompt_ids: list[list[int]],
        settings: GenerationConfig,
        seeded: bool,
        on_token: OnToken | None = None,
    ) -> list[Row]:
        if seeded:
            return await self._generate_alone(prompts, settings, on_token)
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()
        rows = [RowText(self.tokenizer, self.eos_ids, settings.stop_strings) for _ in prompts]
        ids = [f"ric-{uuid.uuid4().hex}" for _ in prompts]
        pending = set(range(len(prompts)))
        router = self.manager.output_router

        def finish(row: int) -> None:
            pending.discard(row)
            self.ended(started=bool(rows[row].ids))
            router.result_handlers.pop(ids[row], None)
            if not pending and not done.done():
                done.set_result(None)

        def receive(row: int, output: Any) -> None:  # in the event loop, at each engine step
            if row not in pending:
                return
            text = rows[row]
            if not text.ids and output.generated_tokens:
                self.began()
            for token in output.generated_tokens[len(text.ids) :]:
                self.generated += 1
                if text.add(token):
                    if not output.is_finished():  # a stop string: the engine goes on without it
                        self.manager.cancel_request(ids[row])
                    break
                if on_token is not None:
                    on_token(row, token)
            if output.error is not None and not done.done():
                done.set_exception(RuntimeError(f"the engine failed a sequence: {output.error}"))
            if text.ended or output.is_finished():
                finish(row)

        sampling = request_sampling(settings)
        self.waiting += len(prompts)
        for row, (request_id, row_ids) in enumerate(zip(ids, prompt_ids, strict=True)):
            self.manager.register_result_handler(request_id, lambda out, r=row: receive(r, out))
            self.manager.add_request(
                row_ids,
                request_id=request_id,
                max_new_tokens=settings.max_new_tokens,
                streaming=True,
                eos_token_id=self.eos_ids,
                **sampling,
            )
        try:
            await done
        finally:
            for row in list(pending):  # cancelled, or another row failed: out of the engine
                self.manager.cancel_request(ids[row])
                finish(row)
        return [text.row() for text in rows]

    async def _generate_alone(
        self, prompts: list[str], settings: GenerationConfig, on_token: OnToken | None
    ) -> list[Row]:
        """ric's own ``generate`` with the request's seed, the engine paused meanwhile; a
        cancelled request stops at its next token."""
        cancelled = threading.Event()

        def observe(row: int, token: int) -> None:  # in the generating thread
            if cancelled.is_set():
                raise asyncio.CancelledError
            self.generated += 1
            if on_token is not None:
                on_token(row, token)

        def work() -> list[Row]:
            with self.alone, self.manager.pause():
                self.began(len(prompts))
                try:
                    result = generate_with_stats(
                        self.model,
                        self.tokenizer,
                        prompts,
                        replace(settings, batch_size=len(prompts)),
                        on_token=observe,
                    )
                finally:
                    self.ended(started=True, count=len(prompts))
            return [
                Row(text, tokens, done)
                for text, tokens, done in zip(
                    result.texts, result.num_new_tokens, result.finished, strict=True
                )
            ]

        self.waiting += len(prompts)
        try:
            return await asyncio.to_thread(work)
        except asyncio.CancelledError:
            cancelled.set()
            raise


def request_sampling(settings: GenerationConfig) -> dict[str, float]:
    """The per-request processor values of one request: greedy is a top_p that keeps only the
    most likely token (module docstring)."""
    if not settings.do_sample:
        return {"temperature": 1.0, "top_p": GREEDY_TOP_P}
    return {"temperature": float(settings.temperature), "top_p": float(settings.top_p)}


class VllmEngine(Counted):
    """vLLM's async engine on the merged weights (module docstring)."""

    def __init__(self, model: Any, tokenizer: Any, serve: ServeConfig, base: GenerationConfig):
        super().__init__()
        self.vllm = import_optional("vllm")
        from ric.models.vllm_backend import base_weights

        self.tokenizer = tokenizer
        self.eos_ids = eos_token_ids(model, tokenizer)
        self.folder = tempfile.TemporaryDirectory(prefix="ric-serve-vllm-")
        model.save_pretrained(self.folder.name, state_dict=base_weights(model))
        tokenizer.save_pretrained(self.folder.name)
        self.arguments = self.vllm.AsyncEngineArgs(
            model=self.folder.name,
            tokenizer=self.folder.name,
            dtype=str(model.dtype).removeprefix("torch."),
            gpu_memory_utilization=base.vllm_gpu_memory,
            max_num_seqs=serve.max_batch_size,
        )
        self.engine: Any = None
        self.capacity = None  # vLLM preempts and resumes sequences that do not fit

    def start(self) -> None:
        self.engine = self.vllm.AsyncLLMEngine.from_engine_args(self.arguments)

    def stop(self) -> None:
        if self.engine is not None:
            self.engine.shutdown()
            self.engine = None
        self.folder.cleanup()

    async def generate(
        self,
        prompts: list[str],
        prompt_ids: list[list[int]],
        settings: GenerationConfig,
        seeded: bool,
        on_token: OnToken | None = None,
    ) -> list[Row]:
        from vllm.inputs import TokensPrompt

        from ric.models.vllm_backend import sampling_params

        async def one(row: int, row_ids: list[int]) -> Row:
            seed = settings.seed + row if seeded else None
            params = sampling_params(self.vllm, settings, self.eos_ids, seed)
            text = RowText(self.tokenizer, self.eos_ids, settings.stop_strings)
            self.waiting += 1
            started = False
            try:
                stream = self.engine.generate(
                    TokensPrompt(prompt_token_ids=row_ids), params, f"ric-{uuid.uuid4().hex}"
                )
                async for output in stream:  # cumulative token ids; closing it aborts
                    tokens = output.outputs[0].token_ids
                    if tokens and not started:
                        started = True
                        self.began()
                    for token in tokens[len(text.ids) :]:
                        self.generated += 1
                        if text.add(token):
                            break
                        if on_token is not None:
                            on_token(row, token)
                    if text.ended:
                        break
            finally:
                self.ended(started)
            return text.row()

        return list(await asyncio.gather(*(one(i, ids) for i, ids in enumerate(prompt_ids))))


def create_engine(model: Any, tokenizer: Any, serve: ServeConfig, base: GenerationConfig) -> Engine:
    """The engine ``serve.engine`` names, over the policy in memory."""
    if serve.engine == "vllm":
        return VllmEngine(model, tokenizer, serve, base)
    return TransformersEngine(model, tokenizer, serve, base)
