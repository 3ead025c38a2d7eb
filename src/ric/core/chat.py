"""Chat messages (OpenAI's format) to the one prompt a RiC model is given.

RiC models are trained on single-turn prompts, so a chat becomes one prompt:

* a lone user message is the prompt verbatim;
* a longer conversation is a transcript, one ``Role: text`` block per message (``System:``,
  ``User:``, ``Assistant:``; a ``developer`` message counts as the system's), joined by newlines,
  which must end with a user message;
* a message's ``content`` is a string, or a list of text parts whose texts are joined by
  newlines (any other part, an image say, is refused: the model reads text only).

The prompt then goes into the run's template like every other prompt, whose neutralizer
(``ric.core.sanitize_prompt``) defuses reward markers and template text in it: no message can set
or shift the rewards the model is asked for.

In the chat format (``template.format: chat``) a chat is not flattened:
``build_chat_messages`` keeps the messages, neutralized one by one, and puts the reward block
into a system turn ahead of them, for the model's own chat template to render.

The rule lives here, pure, because two places apply it: ``ric serve`` (``ric.serve.guardrails``)
and the exported model's chat template (``ric.export.chat_template``), which writes it again in
Jinja and is tested against this function.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ric.core.template import PromptTemplate, rewards_block, sanitize_prompt

# Each supported message role and the name its turn gets in a transcript.
ROLES = {"system": "System", "developer": "System", "user": "User", "assistant": "Assistant"}


class ChatError(ValueError):
    """Messages that make no prompt; ``param`` names the field at fault (``messages``,
    ``messages[1].role``, ``messages[0].content``), as OpenAI's errors do."""

    def __init__(self, message: str, param: str) -> None:
        super().__init__(message)
        self.param = param


def chat_prompt(messages: Sequence[Mapping[str, Any]]) -> str:
    """The one prompt a chat becomes (rule in the module docstring)."""
    if not messages:
        raise ChatError("messages must hold at least one message", param="messages")
    turns = []
    for index, message in enumerate(messages):
        role = message.get("role")
        if not isinstance(role, str) or role not in ROLES:
            raise ChatError(
                f"messages[{index}].role {role!r} is not supported; use one of {', '.join(ROLES)}",
                param=f"messages[{index}].role",
            )
        turns.append((ROLES[role], message_text(message.get("content"), index)))
    if turns[-1][0] != "User":
        raise ChatError("the last message must come from the user", param="messages")
    if len(turns) == 1:
        return turns[0][1]
    return "\n".join(f"{role}: {text}" for role, text in turns)


def message_text(content: Any, index: int) -> str:
    """A message's text: a string, or the joined text parts of a list of parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list) and all(
        isinstance(part, Mapping)
        and part.get("type") == "text"
        and isinstance(part.get("text"), str)
        for part in content
    ):
        return "\n".join(part["text"] for part in content)
    raise ChatError(
        f"messages[{index}].content must be a string or a list of text parts",
        param=f"messages[{index}].content",
    )


def build_chat_messages(
    messages: str | Sequence[Mapping[str, Any]],
    rewards: Sequence[float] | None,
    template: PromptTemplate,
) -> list[dict[str, str]]:
    """The messages a chat-format prompt renders (``template.format: chat``).

    ``messages``: a chat (checked as ``chat_prompt`` checks it: known roles, text content, the
    last message the user's) or one prompt string, which is ``[{"role": "user", ...}]``. Every
    message's text is neutralized (``sanitize_prompt`` with ``template``'s protected strings);
    a ``developer`` message is a ``system`` one. With ``rewards`` the first message is the
    system turn ``template.system`` with the reward block (``<R1> 0.3 <R2> -1.2``) written in,
    and a conversation's own leading system message is merged after it, a blank line between
    (many chat templates take one system message only); with ``rewards`` None (a baseline) no
    system turn is added.
    """
    if isinstance(messages, str):
        messages = [{"role": "user", "content": messages}]
    chat_prompt(messages)  # the same checks and errors as the one-prompt rule
    turns = [
        {
            "role": "system" if message["role"] == "developer" else str(message["role"]),
            "content": sanitize_prompt(message_text(message.get("content"), index), template),
        }
        for index, message in enumerate(messages)
    ]
    if rewards is None:
        return turns
    system = template.system_text(rewards_block(rewards, template))
    if turns[0]["role"] == "system":
        system += "\n\n" + turns.pop(0)["content"]
    return [{"role": "system", "content": system}, *turns]
