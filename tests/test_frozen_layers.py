"""Frozen lower layers run once per sample: the loss, gradients and training are the full
model's, the bottom layer is not run again, and the cache turns itself off where it would not be."""

import contextlib

import pytest
import torch
from transformers import OPTConfig, OPTForCausalLM

from ric.config import LoraConfig, TrainConfig
from ric.core import build_prompt
from ric.models import attach_lora, unfreeze_top_layers
from ric.models.frozen_layers import frozen_layer_cache
from ric.models.packed_attention import packed_attention
from ric.models.samples import collate, pack, response_loss_sum, tokenize_sample
from ric.models.tiny import build_tiny, build_tiny_model
from ric.training.sft import train

PAIRS = [
    (build_prompt("What is a fox?", [1.0, -1.0]), "A fox is a small wild animal."),
    (build_prompt("Why is the sky blue?", [-0.5, 0.5]), "Blue light scatters the most."),
    (build_prompt("Say something nice.", [2.0, 0.0]), "What a lovely day, thank you!"),
    (build_prompt("Name a number.", [0.0, 1.5]), "1.5"),
]


@pytest.fixture(scope="module")
def tokenizer():
    return build_tiny()[1]


def _samples(tokenizer):
    return [tokenize_sample(tokenizer, prompt, response, 128) for prompt, response in PAIRS]


def _top_layer_model(tokenizer, lora_dropout=None):
    """The tiny model (2 layers) with only its top layer trained: in full, or a LoRA adapter."""
    model = build_tiny_model(tokenizer, seed=0)
    if lora_dropout is None:
        return unfreeze_top_layers(model, 1).train()
    torch.manual_seed(0)
    adapted = attach_lora(model, LoraConfig(r=4, alpha=8, top_layers=1, dropout=lora_dropout))
    with torch.no_grad():  # B != 0, so the adapter (and its dropout) changes the output
        for name, parameter in adapted.named_parameters():
            if "lora_B" in name:
                parameter.normal_(0, 0.1)
    return adapted.train()


def _gradients(model):
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("packing", [True, False])
def test_a_second_visit_skips_the_frozen_layer_with_the_same_loss_and_gradients(tokenizer, packing):
    model = _top_layer_model(tokenizer)
    samples, keys = _samples(tokenizer)[:3], [5, 2, 7]
    cache, note = frozen_layer_cache(model, samples, budget_gb=1.0)
    assert note.startswith("layers 0-0 run once per sample")
    batch = pack(samples) if packing else collate(samples, tokenizer.pad_token_id)
    bottom_calls = []
    model.model.layers[0].register_forward_hook(lambda *_: bottom_calls.append(1))
    with packed_attention(model) if packing else contextlib.nullcontext():
        reference = response_loss_sum(model, batch)
        reference.backward()
        expected = _gradients(model)
        model.zero_grad()
        first = cache.loss_sum(model, batch, keys, samples)
        assert (len(bottom_calls), cache.checked, sorted(cache.states)) == (2, True, [2, 5, 7])
        first.backward()
        model.zero_grad()
        second = cache.loss_sum(model, batch, keys, samples)
        assert len(bottom_calls) == 2  # the second visit did not run the frozen layer
        second.backward()
    assert first.item() == pytest.approx(reference.item(), rel=1e-6)
    assert second.item() == pytest.approx(reference.item(), rel=1e-6)
    for name, gradient in _gradients(model).items():
        torch.testing.assert_close(gradient, expected[name], rtol=1e-5, atol=1e-7)
    assert [len(cache.states[key]) for key in keys] == [len(s.input_ids) for s in samples]
    assert model.model.layers[0] is cache.layers[0]  # the full layer list is back


@pytest.mark.slow
@pytest.mark.parametrize("lora_dropout", [None, 0.2])
@pytest.mark.parametrize("packing", [True, False])
def test_training_with_the_cache_is_training_without_it(tokenizer, tmp_path, packing, lora_dropout):
    """3 epochs of 4 samples, batch 2: the frozen layer runs in the first epoch's 2 steps only,
    and the cached epochs give the losses and weights of a run without the cache, also with
    dropout drawn in the trained layer (the same random stream)."""
    runs, bottom_calls = {}, {}
    for budget in (1.0, 0.0):
        model = _top_layer_model(tokenizer, lora_dropout)
        bottom = next(m for name, m in model.named_modules() if name.endswith("layers.0"))
        calls = bottom_calls.setdefault(budget, [])
        bottom.register_forward_hook(lambda *_, calls=calls: calls.append(1))
        initial = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
        settings = TrainConfig(
            max_steps=6,
            batch_size=2,
            learning_rate=3e-3,
            mixed_precision="fp32",
            save_steps=0,
            log_steps=1,
            packing=packing,
            frozen_cache_gb=budget,
        )
        result = train(
            model,
            _samples(tokenizer),
            settings,
            tmp_path / str(budget),
            tokenizer.pad_token_id,
            show_progress=False,
        )
        weights = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
        runs[budget] = (result, weights)
    (cached, cached_weights), (plain, plain_weights) = runs[1.0], runs[0.0]
    assert cached.frozen_cache.startswith("layers 0-0 run once per sample")
    assert plain.frozen_cache == "off (train.frozen_cache_gb is 0)"
    assert (len(bottom_calls[1.0]), len(bottom_calls[0.0])) == (2, 6)  # one forward per step
    assert plain.losses[-1][1] < plain.losses[0][1]  # it learned
    for (_, a), (_, b) in zip(cached.losses, plain.losses, strict=True):
        assert a == pytest.approx(b, rel=1e-5)
    for name, weight in cached_weights.items():
        assert not torch.equal(weight, initial[name])  # every trained weight moved
        torch.testing.assert_close(weight, plain_weights[name], rtol=1e-4, atol=1e-6)


def test_a_model_that_changes_its_inputs_embeds_runs_in_full(tokenizer):
    """OPT adds its position embeddings to ``inputs_embeds``: started at its top layer with the
    cached states it would add them twice. The first batch shows it; the cache turns off."""
    config = OPTConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        ffn_dim=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        word_embed_proj_dim=64,
        dropout=0.0,
        attention_dropout=0.0,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    model = unfreeze_top_layers(OPTForCausalLM(config), 1).train()
    samples = _samples(tokenizer)
    batch = collate(samples, tokenizer.pad_token_id)
    cache, note = frozen_layer_cache(model, samples, budget_gb=1.0)
    assert note.startswith("layers 0-0")  # the list is found; only running it shows the problem
    loss = cache.loss_sum(model, batch, [0, 1, 2, 3], samples)
    assert cache.failed and not cache.states
    assert cache.note.startswith("off (from layer 1 the loss is ")
    assert loss.item() == pytest.approx(response_loss_sum(model, batch).item(), rel=1e-6)
    again = cache.loss_sum(model, batch, [0, 1, 2, 3], samples)  # still the full model
    assert again.item() == pytest.approx(loss.item(), rel=1e-6)


def _every_layer_trained(tokenizer):
    return unfreeze_top_layers(build_tiny_model(tokenizer), 0)


def _embeddings_trained(tokenizer):
    model = unfreeze_top_layers(build_tiny_model(tokenizer), 1)
    model.get_input_embeddings().weight.requires_grad_(True)
    return model


def _attention_dropout(tokenizer):
    model = build_tiny_model(tokenizer)
    model.config.attention_dropout = 0.1
    return unfreeze_top_layers(model, 1)


def _lora_on_every_layer(tokenizer):
    return attach_lora(build_tiny_model(tokenizer), LoraConfig(r=4, alpha=8))


@pytest.mark.parametrize(
    ("build", "budget", "why"),
    [
        (_every_layer_trained, 1.0, "off (the lowest decoder layer or the embeddings are trained)"),
        (_lora_on_every_layer, 1.0, "off (the lowest decoder layer or the embeddings are trained)"),
        (_embeddings_trained, 1.0, "off (the lowest decoder layer or the embeddings are trained)"),
        (_attention_dropout, 1.0, "off (dropout below the trained layers)"),
        (lambda t: unfreeze_top_layers(build_tiny_model(t), 1), 0.0, "off (train.frozen_cache_gb"),
        (lambda t: unfreeze_top_layers(build_tiny_model(t), 1), 1e-6, "GB needed, train.frozen"),
    ],
)
def test_the_cache_is_off_where_it_cannot_help_or_would_change_training(
    tokenizer, build, budget, why
):
    cache, note = frozen_layer_cache(build(tokenizer), _samples(tokenizer), budget_gb=budget)
    assert cache is None and why in note


def test_the_budget_counts_every_token_at_the_hidden_size(tokenizer):
    samples = _samples(tokenizer)
    tokens = sum(len(sample.input_ids) for sample in samples)
    needed = tokens * 64 * 4 / 1e9  # fp32 states of the tiny model's width 64
    model = unfreeze_top_layers(build_tiny_model(tokenizer), 1)
    assert frozen_layer_cache(model, samples, budget_gb=needed)[0] is not None
    _, note = frozen_layer_cache(model, samples, budget_gb=needed * 0.99)
    assert note == f"off ({needed:.2f} GB needed, train.frozen_cache_gb is {needed * 0.99:g})"
