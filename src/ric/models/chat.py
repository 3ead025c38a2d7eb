"""A tokenizer's chat template as ric renders it (``template.format: chat``, ric.core.chat).

ric tokenizes every prompt one way, ``tokenizer(prompt)`` with the tokenizer's default special
tokens, in training and in generation alike. A chat template writes the BOS token itself where
the model wants one, so the rendered text loses a leading BOS when the tokenizer adds one by
itself (``adds_bos``): then ``tokenizer(render(messages))`` gives exactly the ids that
``apply_chat_template(messages, tokenize=True)`` gives.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

Render = Callable[[Sequence[dict[str, str]]], str]


def adds_bos(tokenizer: Any) -> bool:
    """Whether ``tokenizer`` starts every text with its BOS token by itself: then a chat
    template's output, which writes BOS too, must lose its own to be tokenized the ric way
    (and an exported chat template must write BOS, since servers tokenize a rendered chat
    without special tokens)."""
    bos = tokenizer.bos_token_id
    return bos is not None and tokenizer("x")["input_ids"][:1] == [bos]


def special_tokens(tokenizer: Any) -> tuple[str, ...]:
    """The tokenizer's special tokens (BOS, EOS, chat markers such as ``<|im_start|>``): the
    strings a chat-format prompt neutralizes in user text, beside the template's own."""
    tokens = list(tokenizer.all_special_tokens)
    decoder = getattr(tokenizer, "added_tokens_decoder", {}) or {}
    tokens += [token.content for token in decoder.values() if getattr(token, "special", False)]
    return tuple(dict.fromkeys(token for token in tokens if isinstance(token, str) and token))


def chat_renderer(tokenizer: Any) -> Render:
    """``messages -> text``: the tokenizer's chat template with the generation prompt, minus a
    leading BOS the tokenizer adds itself (module docstring). Raises ValueError when the
    tokenizer has no chat template."""
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError(
            "template.format chat needs a tokenizer with a chat template; this model's has none "
            "(use template.format: plain, or an instruct model)"
        )
    strip = tokenizer.bos_token if adds_bos(tokenizer) else ""

    def render(messages: Sequence[dict[str, str]]) -> str:
        text = tokenizer.apply_chat_template(
            list(messages), add_generation_prompt=True, tokenize=False
        )
        if strip and text.startswith(strip):
            text = text[len(strip) :]
        return text

    return render
