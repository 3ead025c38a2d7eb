"""HFRewardModel on tiny classifiers built and saved in code (a BERT-like encoder with token types,
a Llama-like decoder whose tokenizer has no pad token), loaded back through the real loading path.

Every score is compared with a manual, unpadded forward pass of the same saved model, one example
at a time: that pins batching, length sorting, order restoration, padding side and pad handling.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import (
    AutoModelForSequenceClassification,
    AutoTokenizer,
    BertConfig,
    BertForSequenceClassification,
    LlamaConfig,
    LlamaForSequenceClassification,
    PreTrainedTokenizerFast,
)

from ric.rewards import HFRewardModel, create_reward
from ric.rewards.hf import fill_template

CORPUS = [
    "what is the capital of france",
    "paris is the capital of france and a large city",
    "how do plants grow",
    "plants need light water and good soil to grow",
    "the cat sat on the mat",
    "tell me a joke about a dog",
]
# Lengths deliberately unsorted, with a repeated prompt, as in RiC data.
PROMPTS = [
    "what is the capital of france",
    "how do plants grow",
    "what is the capital of france",
    "tell me a joke",
    "how do plants grow",
    "what is the capital of france",
]
RESPONSES = [
    "paris",
    "plants need light water and good soil to grow and the cat sat on the mat",
    "paris is the capital of france",
    "a dog sat on the mat",
    "light",
    "the capital of france is paris and paris is a large city",
]
POSITIONS = 64  # max_position_embeddings of both tiny models


def _bert_tokenizer() -> PreTrainedTokenizerFast:
    backend = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[EOS]"]
    backend.train_from_iterator(CORPUS, trainers.WordLevelTrainer(special_tokens=specials))
    backend.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[(t, backend.token_to_id(t)) for t in ("[CLS]", "[SEP]")],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token="[PAD]",
        unk_token="[UNK]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        eos_token="[EOS]",
        model_input_names=["input_ids", "token_type_ids", "attention_mask"],
    )


def _llama_tokenizer() -> PreTrainedTokenizerFast:
    """Byte-level BPE with eos but no pad token, like many decoder reward models."""
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300,
        special_tokens=["<unk>", "</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    backend.train_from_iterator(CORPUS, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>", eos_token="</s>")


@pytest.fixture(scope="module")
def bert_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Tiny BERT classifier, 2 output columns, saved with its tokenizer."""
    directory = tmp_path_factory.mktemp("bert")
    tokenizer = _bert_tokenizer()
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=POSITIONS,
        num_labels=2,
        initializer_range=0.5,  # large weights, so scores differ by more than the tolerance
    )
    BertForSequenceClassification(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Tiny Llama classifier, 1 output column, tokenizer without a pad token."""
    directory = tmp_path_factory.mktemp("llama")
    tokenizer = _llama_tokenizer()
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=POSITIONS,
        num_labels=1,
        initializer_range=0.5,
    )
    LlamaForSequenceClassification(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def manual_scores(
    directory: Path, texts: list[str], pairs: list[str] | None = None, column: int = 0
) -> np.ndarray:
    """Score each example alone, unpadded, straight through transformers: the reference."""
    tokenizer = AutoTokenizer.from_pretrained(directory)
    model = AutoModelForSequenceClassification.from_pretrained(directory).eval()
    scores = []
    with torch.inference_mode():
        for index, text in enumerate(texts):
            args = (text,) if pairs is None else (text, pairs[index])
            encoded = tokenizer(*args, return_tensors="pt")
            scores.append(model(**encoded).logits[0, column].item())
    return np.array(scores)


@pytest.fixture(params=["bert", "llama"])
def model_dir(request: pytest.FixtureRequest, bert_dir: Path, llama_dir: Path) -> Path:
    return bert_dir if request.param == "bert" else llama_dir


def test_batched_scores_equal_one_at_a_time_and_keep_input_order(model_dir: Path) -> None:
    batched = HFRewardModel(model=str(model_dir), input="pair", batch_size=4, device="cpu")
    single = HFRewardModel(model=str(model_dir), input="pair", batch_size=1, device="cpu")
    lengths = [len(ids) for ids in batched.tokenizer(PROMPTS, RESPONSES)["input_ids"]]
    assert lengths != sorted(lengths, reverse=True)  # so the sort really reorders

    scores = batched.score(PROMPTS, RESPONSES)

    assert scores.dtype == np.float64
    assert scores.shape == (len(PROMPTS),)
    assert np.ptp(scores) > 0.1  # distinct scores: a permutation would be caught
    np.testing.assert_allclose(scores, single.score(PROMPTS, RESPONSES), atol=1e-4)
    np.testing.assert_allclose(scores, manual_scores(model_dir, PROMPTS, RESPONSES), atol=1e-4)


def test_pair_input_is_the_text_pair_and_differs_from_response_only(bert_dir: Path) -> None:
    pair = HFRewardModel(model=str(bert_dir), input="pair", device="cpu").score(PROMPTS, RESPONSES)
    response = HFRewardModel(model=str(bert_dir), input="response", device="cpu")

    response_scores = response.score(PROMPTS, RESPONSES)

    np.testing.assert_allclose(pair, manual_scores(bert_dir, PROMPTS, RESPONSES), atol=1e-4)
    np.testing.assert_allclose(response_scores, manual_scores(bert_dir, RESPONSES), atol=1e-4)
    assert np.abs(pair - response_scores).max() > 0.1


def test_reversed_pair_puts_the_response_first(bert_dir: Path) -> None:
    scorer = HFRewardModel(model=str(bert_dir), input="reversed_pair", device="cpu")

    reversed_scores = scorer.score(PROMPTS, RESPONSES)

    np.testing.assert_allclose(
        reversed_scores, manual_scores(bert_dir, RESPONSES, PROMPTS), atol=1e-4
    )
    assert np.abs(reversed_scores - manual_scores(bert_dir, PROMPTS, RESPONSES)).max() > 0.01


def test_template_input_scores_the_filled_string(llama_dir: Path) -> None:
    template = "question: {prompt} answer: {response}"
    scorer = HFRewardModel(
        model=str(llama_dir), input="template", template=template, batch_size=3, device="cpu"
    )
    filled = [f"question: {p} answer: {r}" for p, r in zip(PROMPTS, RESPONSES, strict=True)]

    np.testing.assert_allclose(
        scorer.score(PROMPTS, RESPONSES), manual_scores(llama_dir, filled), atol=1e-4
    )


def test_fill_template_never_rescans_inserted_text() -> None:
    filled = fill_template("{response} <|endoftext|> {prompt}", "a {response} b", "{prompt} {x}")
    assert filled == "{prompt} {x} <|endoftext|> a {response} b"


def test_logit_selects_the_output_column(bert_dir: Path) -> None:
    column1 = HFRewardModel(model=str(bert_dir), logit=1, device="cpu").score(PROMPTS, RESPONSES)
    column0 = HFRewardModel(model=str(bert_dir), logit=0, device="cpu").score(PROMPTS, RESPONSES)

    expected = manual_scores(bert_dir, PROMPTS, RESPONSES, column=1)
    np.testing.assert_allclose(column1, expected, atol=1e-4)
    assert np.abs(column1 - column0).max() > 0.1


@pytest.mark.parametrize(("which", "logit"), [("bert", 2), ("bert", -1), ("llama", 1)])
def test_logit_out_of_range_is_an_error(
    which: str, logit: int, bert_dir: Path, llama_dir: Path
) -> None:
    directory = bert_dir if which == "bert" else llama_dir
    with pytest.raises(ValueError, match=rf"logit {logit} is out of range.*num_labels="):
        HFRewardModel(model=str(directory), logit=logit, device="cpu")


def test_missing_pad_token_becomes_eos_in_tokenizer_and_model(llama_dir: Path) -> None:
    assert AutoTokenizer.from_pretrained(llama_dir).pad_token is None

    scorer = HFRewardModel(model=str(llama_dir), device="cpu")

    assert scorer.tokenizer.pad_token == "</s>"
    assert scorer.model.config.pad_token_id == scorer.tokenizer.eos_token_id


def test_mismatched_lengths_are_an_error(bert_dir: Path) -> None:
    scorer = HFRewardModel(model=str(bert_dir), device="cpu")
    with pytest.raises(ValueError, match="got 2 prompts but 1 responses"):
        scorer.score(["a", "b"], ["c"])


def test_empty_batch_gives_empty_scores(bert_dir: Path) -> None:
    scores = HFRewardModel(model=str(bert_dir), device="cpu").score([], [])
    assert scores.shape == (0,)
    assert scores.dtype == np.float64


def test_default_truncation_respects_position_embeddings(bert_dir: Path) -> None:
    scorer = HFRewardModel(model=str(bert_dir), input="response", device="cpu")
    long_response = " ".join(["plants need light"] * 100)  # 300 words > 64 positions

    scores = scorer.score(["how do plants grow"], [long_response])

    assert scorer.max_length == POSITIONS
    assert np.isfinite(scores).all()


def test_from_model_wraps_loaded_objects(bert_dir: Path) -> None:
    model = AutoModelForSequenceClassification.from_pretrained(bert_dir)
    tokenizer = AutoTokenizer.from_pretrained(bert_dir)

    scorer = HFRewardModel.from_model(model, tokenizer, input="pair", batch_size=2)

    np.testing.assert_allclose(
        scorer.score(PROMPTS, RESPONSES), manual_scores(bert_dir, PROMPTS, RESPONSES), atol=1e-4
    )


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"input": "prompt"}, "input: 'prompt' is not valid"),
        ({"input": "template"}, "needs a template containing {response}"),
        ({"input": "pair", "template": "{response}"}, "only read with input='template'"),
        ({"batch_size": 0}, "batch_size must be >= 1"),
        ({"max_length": 0}, "max_length must be >= 1"),
        ({"dtype": "float8"}, "dtype: 'float8' is not valid"),
    ],
)
def test_invalid_options_fail_before_loading(tmp_path: Path, options: dict, message: str) -> None:
    missing = tmp_path / "not-a-model"  # loading it would raise OSError, not ValueError
    with pytest.raises(ValueError, match=message):
        create_reward("hf", {"model": str(missing), **options})


def test_bfloat16_loads_in_bfloat16_and_scores_like_float32(bert_dir: Path) -> None:
    half = HFRewardModel(model=str(bert_dir), dtype="bfloat16", device="cpu")
    full = HFRewardModel(model=str(bert_dir), dtype="float32", device="cpu")

    scores = half.score(PROMPTS, RESPONSES)

    assert next(half.model.parameters()).dtype == torch.bfloat16
    assert scores.dtype == np.float64
    # bfloat16 keeps 8 bits of mantissa and this tiny model has large random weights: compare the
    # pattern of the scores, not their digits.
    assert np.corrcoef(scores, full.score(PROMPTS, RESPONSES))[0, 1] > 0.9
