"""Adapter for Hugging Face sequence-classification reward models (docs/design.md §5 lists the
paper's).

Reward models differ in what they read: a (prompt, response) text pair, the response alone, or
one string built from a template (e.g. ``"{response} <|endoftext|> {prompt}"``), the prompt
framed as they were trained (``prompt_template``, e.g. ``"{prompt} \n\nAssistant:"``), and in
which output column is the reward. All are options here, so every model of the paper is one
config entry; ``preset`` names the paper's six with the inputs its code fed them (``PRESETS``).

Scoring is batched the way the authors' code was not (docs/design.md §2): texts are tokenized once,
sorted by token length, batched, right-padded, and the scores are put back in input order.
Sorting keeps padding (wasted compute) small. Right padding is the safe side for every
architecture: encoders with absolute positions see the same positions as unpadded text, and
decoder classifiers read the last non-pad token, which transformers finds with right padding.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from ric.rewards.base import score_checked
from ric.runtime import default_device, set_pad_token

if TYPE_CHECKING:
    import torch
    from transformers import BatchEncoding, PreTrainedModel, PreTrainedTokenizerBase

INPUT_KINDS = ("pair", "reversed_pair", "response", "template")
SUMMARY_INSTRUCTION = "Generate a one-sentence summary of this post."
# The paper's reward models, fed as its code fed them (prompts as `ric prepare` writes them: the
# dialogue before the last assistant turn; the post of a summary).
PRESETS: dict[str, dict[str, Any]] = {
    "harmless": {  # Helpful Assistant: the (dialogue, answer) pair, logit 0
        "model": "Ray2333/gpt2-large-harmless-reward_model",
        "input": "pair",
        "prompt_template": "{prompt} \n\nAssistant:",
    },
    "helpful": {
        "model": "Ray2333/gpt2-large-helpful-reward_model",
        "input": "pair",
        "prompt_template": "{prompt} \n\nAssistant:",
    },
    "humor": {"model": "mohameddhiab/humor-no-humor", "input": "response", "logit": 1},
    "summary": {  # Reddit Summary: one string, summary then post
        "model": "Tristan/gpt2_reward_summarization",
        "input": "template",
        "template": "{response} <|endoftext|> {prompt}",
    },
    "deberta": {  # the summary task's (instruction prompt, summary) pair
        "model": "OpenAssistant/reward-model-deberta-v3-large-v2",
        "input": "pair",
        "prompt_template": f"### Instruction: {SUMMARY_INSTRUCTION} ### Input: {{prompt}} "
        "### Response: ",
    },
    "faithful": {  # text = the summary, pair = the post; logit 1 of 2
        "model": "CogComp/bart-faithful-summary-detector",
        "input": "reversed_pair",
        "logit": 1,
    },
}


def preset_options(preset: str, **given: Any) -> dict[str, Any]:
    """The options of ``preset`` with every ``given`` option that is not None laid over them
    (no preset: the given options and the defaults)."""
    if preset and preset not in PRESETS:
        raise ValueError(f"preset: {preset!r} is not valid; choose one of {', '.join(PRESETS)}")
    defaults = {"input": "pair", "template": None, "logit": 0, "prompt_template": "{prompt}"}
    options = {**defaults, **PRESETS.get(preset, {})}
    options.update({key: value for key, value in given.items() if value is not None})
    if not options.get("model"):
        raise ValueError("the hf reward needs options: {model: HUB_ID_OR_DIR} or {preset: NAME}")
    return options


DTYPES = ("float32", "bfloat16", "float16")
MAX_LENGTH_CAP = 1024  # default truncation when neither tokenizer nor config knows better


def fill_template(template: str, prompt: str, response: str) -> str:
    """Put ``prompt`` and ``response`` into ``{prompt}`` / ``{response}`` of ``template``.

    Plain string replacement (``str.format`` would choke on other braces), done so that the
    inserted texts are never scanned again: a prompt containing "{response}" stays literal.
    """
    return response.join(part.replace("{prompt}", prompt) for part in template.split("{response}"))


class HFRewardModel:
    """Hugging Face sequence-classification reward model (hub id or local dir), batched."""

    def __init__(
        self,
        model: str | None = None,
        preset: str = "",
        input: str | None = None,
        template: str | None = None,
        logit: int | None = None,
        prompt_template: str | None = None,
        batch_size: int = 32,
        max_length: int | None = None,
        device: str | None = None,
        dtype: str = "float32",
        trust_remote_code: bool = False,
    ) -> None:
        """Load ``model`` with AutoTokenizer / AutoModelForSequenceClassification.

        ``preset``: one of ``PRESETS`` (the paper's models); the options given here override it.
        ``input``: "pair" (tokenizer(prompt, response), the default), "reversed_pair"
        (tokenizer(response, prompt)), "response", or "template" (``template`` with {prompt}
        and {response}). ``prompt_template``: the prompt as the model reads it ({prompt}).
        ``logit``: output column that is the reward (default 0).
        ``max_length``: truncation (default: the tokenizer's limit, capped at 1024 and at the
        model's position embeddings). ``device``: None picks CUDA when available.
        """
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        options = preset_options(
            preset,
            model=model,
            input=input,
            template=template,
            logit=logit,
            prompt_template=prompt_template,
        )
        model, input, template = options["model"], options["input"], options["template"]
        _check_settings(input, template, options["prompt_template"], batch_size, max_length)
        if dtype not in DTYPES:
            raise ValueError(f"dtype: {dtype!r} is not valid; choose one of {', '.join(DTYPES)}")
        tokenizer = AutoTokenizer.from_pretrained(model, trust_remote_code=trust_remote_code)
        network = AutoModelForSequenceClassification.from_pretrained(
            model, dtype=getattr(torch, dtype), trust_remote_code=trust_remote_code
        )
        network.to(device or default_device())
        self._configure(network, tokenizer, model, options, batch_size, max_length)

    @classmethod
    def from_model(
        cls,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        input: str = "pair",
        template: str | None = None,
        logit: int = 0,
        batch_size: int = 32,
        max_length: int | None = None,
        device: str | None = None,
        prompt_template: str = "{prompt}",
    ) -> HFRewardModel:
        """Wrap an already-loaded classifier and tokenizer (tests, reuse across scorers).

        ``device``: None keeps the model where it is. Tokenizer and model config are updated
        in place when the tokenizer has no pad token (see ``set_pad_token``).
        """
        _check_settings(input, template, prompt_template, batch_size, max_length)
        if device is not None:
            model.to(device)
        scorer = cls.__new__(cls)
        name = getattr(model.config, "name_or_path", "") or type(model).__name__
        options = {
            "input": input,
            "template": template,
            "logit": logit,
            "prompt_template": prompt_template,
        }
        scorer._configure(model, tokenizer, name, options, batch_size, max_length)
        return scorer

    def _configure(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        name: str,
        options: dict[str, Any],
        batch_size: int,
        max_length: int | None,
    ) -> None:
        """Check ``logit`` against the loaded model; prepare model and tokenizer for batching."""
        logit = options["logit"]
        num_labels = model.config.num_labels
        if not 0 <= logit < num_labels:
            raise ValueError(
                f"logit {logit} is out of range: model {name!r} has {num_labels} output "
                f"column(s) (num_labels={num_labels}); choose 0..{num_labels - 1}"
            )
        set_pad_token(model, tokenizer)
        self.name = name
        self.input = options["input"]
        self.template = options["template"]
        self.prompt_template = options["prompt_template"]
        self.logit = logit
        self.batch_size = batch_size
        self.max_length = max_length or _default_max_length(model, tokenizer)
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.device = next(model.parameters()).device
        # Tokenizers may emit inputs the model does not take (token_type_ids for a decoder).
        self._accepted_inputs = set(inspect.signature(model.forward).parameters)

    def score(self, prompts: Sequence[str], responses: Sequence[str]) -> np.ndarray:
        """Rewards (B,), float64: column ``logit`` of the classifier's output for each pair."""
        return score_checked(f"hf:{self.name}", self._score, prompts, responses)

    def _score(self, prompts: list[str], responses: list[str]) -> np.ndarray:
        encoded = self._tokenize(prompts, responses)
        lengths = [len(ids) for ids in encoded["input_ids"]]
        order = sorted(range(len(lengths)), key=lengths.__getitem__, reverse=True)  # longest first
        keys = [key for key in encoded if key in self._accepted_inputs]
        scores = np.empty(len(lengths), dtype=np.float64)
        for start in range(0, len(order), self.batch_size):
            rows = order[start : start + self.batch_size]
            features = {key: [encoded[key][row] for row in rows] for key in keys}
            scores[rows] = self._forward(features)
        return scores

    def _tokenize(self, prompts: list[str], responses: list[str]) -> BatchEncoding:
        """Token ids of every input, unpadded, truncated to ``max_length``."""
        kwargs: dict[str, Any] = {"truncation": True, "max_length": self.max_length}
        prompts = [self.prompt_template.replace("{prompt}", p) for p in prompts]
        if self.input == "pair":
            return self.tokenizer(prompts, responses, **kwargs)
        if self.input == "reversed_pair":  # e.g. faithfulness detectors: (summary, source)
            return self.tokenizer(responses, prompts, **kwargs)
        if self.input == "response":
            return self.tokenizer(responses, **kwargs)
        assert self.template is not None  # guaranteed by _check_settings
        texts = [
            fill_template(self.template, p, r) for p, r in zip(prompts, responses, strict=True)
        ]
        return self.tokenizer(texts, **kwargs)

    def _forward(self, features: dict[str, list[list[int]]]) -> np.ndarray:
        """Pad one batch on the right and return column ``logit`` of its output, (b,)."""
        import torch

        batch = self.tokenizer.pad(features, padding_side="right", return_tensors="pt")
        with torch.inference_mode():
            logits: torch.Tensor = self.model(**batch.to(self.device)).logits  # (b, num_labels)
        return logits[:, self.logit].float().cpu().numpy()


def _check_settings(
    input: str,
    template: str | None,
    prompt_template: str,
    batch_size: int,
    max_length: int | None,
) -> None:
    """Check the options that need no model, before any loading."""
    if "{prompt}" not in prompt_template:
        raise ValueError(f"prompt_template must contain {{prompt}}, got {prompt_template!r}")
    if input not in INPUT_KINDS:
        raise ValueError(f"input: {input!r} is not valid; choose one of {', '.join(INPUT_KINDS)}")
    if input == "template" and (template is None or "{response}" not in template):
        raise ValueError("input 'template' needs a template containing {response} (and {prompt})")
    if input != "template" and template is not None:
        raise ValueError(f"template is only read with input='template', not input={input!r}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if max_length is not None and max_length < 1:
        raise ValueError(f"max_length must be >= 1 or None, got {max_length}")


def _default_max_length(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> int:
    """The tokenizer's limit, capped at 1024 and at the model's position embeddings.

    Tokenizers without a known limit report a huge model_max_length; the positions cap keeps
    absolute-position encoders (BERT: 512) from indexing past their table.
    """
    limits = [tokenizer.model_max_length, MAX_LENGTH_CAP]
    positions = getattr(model.config, "max_position_embeddings", None)
    if isinstance(positions, int):
        limits.append(positions)
    return min(limits)
