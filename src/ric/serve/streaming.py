"""Token-by-token streaming: a streamed request's tokens, as they are generated, become text
deltas in the event loop.

The batcher's worker hands each new token of each row to the request's ``Stream.add`` (rows of
the request, in its order, whatever batch and position ``generate`` gave them). The row's text
so far is decoded from all its tokens (so multi-byte characters and BPE pieces come out whole)
and only its *settled* part is sent: the part no later token can change in the final answer,
which ``generate_with_stats`` cuts at the first stop string and strips. Held back are leading
whitespace, anything from a stop string or the possible start of one, and the last word with the
whitespace before it (a decoder may still change them: an incomplete UTF-8 character, a
tokenizer's clean-up of " ." into ".", a word piece). So what was sent is always the start of
the final text, and the stream ends with the rest of it (``Stream.rest``): the deltas of a row
add up to exactly its non-streamed answer.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Sequence
from typing import Any


def settled(text: str, stops: Sequence[str]) -> str:
    """The part of a row's decoded text so far that is sure to start its final answer."""
    cut = min((text.find(stop) for stop in stops if stop in text), default=len(text))
    starting = [
        len(text) - size
        for stop in stops
        for size in range(1, len(stop))
        if text.endswith(stop[:size])
    ]
    head = text[: min([cut, *starting])].lstrip()
    return re.sub(r"\S*\Z", "", head).rstrip()


class Stream:
    """One streamed request: ``add`` (the worker thread) takes each token of each of its rows,
    ``deltas`` (the event loop) yields ``(row, text)`` pieces until ``close``."""

    def __init__(self, tokenizer: Any, stops: Sequence[str], rows: int) -> None:
        self.tokenizer = tokenizer
        self.stops = list(stops)
        self.ids: list[list[int]] = [[] for _ in range(rows)]
        self.sent = [""] * rows
        self.loop = asyncio.get_running_loop()
        self.pieces: asyncio.Queue[tuple[int, str] | None] = asyncio.Queue()

    def add(self, row: int, token: int) -> None:
        self.ids[row].append(token)
        decoded = self.tokenizer.decode(self.ids[row], skip_special_tokens=True)
        text = settled(decoded, self.stops)
        if len(text) > len(self.sent[row]):  # both start the final text: ``text`` extends it
            delta, self.sent[row] = text[len(self.sent[row]) :], text
            self.loop.call_soon_threadsafe(self.pieces.put_nowait, (row, delta))

    def close(self) -> None:
        """No more pieces (after the last ``add``; from any thread)."""
        self.loop.call_soon_threadsafe(self.pieces.put_nowait, None)

    async def deltas(self) -> AsyncIterator[tuple[int, str]]:
        while (piece := await self.pieces.get()) is not None:
            yield piece

    def rest(self, row: int, text: str) -> str:
        """What is left to send of ``row`` once its final ``text`` is known."""
        return text[len(self.sent[row]) :]
