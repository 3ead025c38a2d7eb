"""The conditional SFT loop on the tiny model: labels, batching, loss, checkpoints, exact resume."""

import json
import shutil

import pytest
import torch

from ric.config import TrainConfig
from ric.core import build_prompt
from ric.models.lora import unfreeze_top_layers
from ric.models.packed_attention import packed_attention
from ric.models.samples import IGNORE_INDEX, collate, pack, response_loss_sum, tokenize_sample
from ric.models.tiny import build_tiny
from ric.training.checkpoints import latest_checkpoint
from ric.training.optimization import adamw, resolve_mixed_precision
from ric.training.sft import epoch_batches, train

PAIRS = [
    (build_prompt("What is a fox?", [1.0, -1.0]), "A fox is a small wild animal."),
    (build_prompt("Why is the sky blue?", [-0.5, 0.5]), "Blue light scatters the most."),
    (build_prompt("Say something nice.", [2.0, 0.0]), "What a lovely day, thank you!"),
    (build_prompt("Name a number.", [0.0, 1.5]), "1.5"),
] * 4


@pytest.fixture(scope="module")
def tokenizer():
    return build_tiny()[1]


def _samples(tokenizer, max_length=128):
    return [tokenize_sample(tokenizer, p, r, max_length) for p, r in PAIRS]


def test_labels_are_response_and_eos_located_by_prompt_length(tokenizer):
    prompt, response = PAIRS[0]
    sample = tokenize_sample(tokenizer, prompt, response, max_length=128)
    prompt_ids = tokenizer(prompt)["input_ids"]
    assert list(sample.input_ids[: sample.prompt_length]) == prompt_ids  # as generation sees it
    completion = sample.input_ids[sample.prompt_length :]
    assert completion[-1] == tokenizer.eos_token_id
    assert tokenizer.decode(completion[:-1]) == response
    batch = collate([sample], tokenizer.pad_token_id)
    labels = batch["labels"][0]
    assert (labels[: sample.prompt_length] == IGNORE_INDEX).all()
    assert labels[sample.prompt_length :].tolist() == list(completion)


def test_truncation_drops_eos_and_overlong_prompts(tokenizer):
    prompt, response = PAIRS[0]
    prompt_length = len(tokenizer(prompt)["input_ids"])
    cut = tokenize_sample(tokenizer, prompt, response, max_length=prompt_length + 3)
    assert len(cut.input_ids) == prompt_length + 3
    assert tokenizer.eos_token_id not in cut.input_ids[prompt_length:]
    assert tokenize_sample(tokenizer, prompt, response, max_length=prompt_length) is None


def test_collate_pads_right_and_masks_padding(tokenizer):
    samples = _samples(tokenizer)[:3]
    batch = collate(samples, tokenizer.pad_token_id)
    width = max(len(s.input_ids) for s in samples)
    assert batch["input_ids"].shape == (3, width)
    for row, sample in enumerate(samples):
        n = len(sample.input_ids)
        assert batch["attention_mask"][row].tolist() == [1] * n + [0] * (width - n)
        assert (batch["labels"][row, n:] == IGNORE_INDEX).all()


def test_pack_puts_samples_end_to_end_with_positions_restarting(tokenizer):
    samples = _samples(tokenizer)[:3]
    batch = pack(samples)
    total = sum(len(s.input_ids) for s in samples)
    assert {key: tuple(value.shape) for key, value in batch.items()} == {
        "input_ids": (1, total),
        "position_ids": (1, total),
        "labels": (1, total),
    }
    assert batch["input_ids"][0].tolist() == [t for s in samples for t in s.input_ids]
    expected_positions = [i for s in samples for i in range(len(s.input_ids))]
    assert batch["position_ids"][0].tolist() == expected_positions
    labeled = int((batch["labels"] != IGNORE_INDEX).sum())
    assert labeled == sum(s.trained_tokens for s in samples)


def test_packed_loss_equals_padded_loss_so_no_sample_attends_to_another(tokenizer):
    """The padded batch isolates samples by construction (own row, padding masked); the packed
    row holds them side by side. Equal per-token losses, and equal gradients, mean the packed
    attention saw nothing of the neighbours."""
    model, _ = build_tiny(seed=0)
    samples = _samples(tokenizer)[:5]  # different lengths: the padded batch has padding
    assert len({len(s.input_ids) for s in samples}) > 1
    per_sample = []
    for sample in samples:  # each alone: the ground truth
        per_sample.append(response_loss_sum(model, collate([sample], 0)).item())
    padded = response_loss_sum(model, collate(samples, tokenizer.pad_token_id))
    masked = response_loss_sum(model, pack(samples))  # transformers' block-diagonal mask
    assert masked.item() == pytest.approx(sum(per_sample), rel=1e-6)
    with packed_attention(model):  # what training uses: attention cut per sample
        assert model.config._attn_implementation == "ric_segments"
        packed = response_loss_sum(model, pack(samples))
    assert model.config._attn_implementation == "sdpa"  # restored for padded generation
    assert packed.item() == pytest.approx(sum(per_sample), rel=1e-6)
    assert padded.item() == pytest.approx(sum(per_sample), rel=1e-6)
    padded.backward()
    padded_grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    packed.backward()
    for padded_grad, param in zip(padded_grads, model.parameters(), strict=True):
        torch.testing.assert_close(param.grad, padded_grad, rtol=1e-4, atol=1e-6)
    # Without the restart of positions the row is one long sequence: another loss.
    joined = dict(pack(samples))
    del joined["position_ids"]
    joined["attention_mask"] = torch.ones_like(joined["input_ids"])
    assert response_loss_sum(model, joined).item() != pytest.approx(sum(per_sample), rel=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("accumulation", [1, 2])
def test_packed_training_matches_padded_training(tokenizer, tmp_path, accumulation):
    runs = {}
    for packing in (True, False):
        model, _ = build_tiny(seed=0)
        settings = _settings(max_steps=6, log_steps=1, gradient_accumulation_steps=accumulation)
        settings.packing = packing
        result = train(
            model,
            _samples(tokenizer),
            settings,
            tmp_path / str(packing),
            tokenizer.pad_token_id,
            show_progress=False,
        )
        runs[packing] = (result, _trainable(model))
    (packed, packed_weights), (padded, padded_weights) = runs[True], runs[False]
    assert packed.response_tokens == padded.response_tokens
    assert [s for s, _ in packed.losses] == [s for s, _ in padded.losses]
    for (_, a), (_, b) in zip(packed.losses, padded.losses, strict=True):
        assert a == pytest.approx(b, rel=1e-4)
    for name, weight in packed_weights.items():
        torch.testing.assert_close(weight, padded_weights[name], rtol=1e-3, atol=1e-5)


def test_epoch_batches_cover_every_sample_once_and_are_deterministic():
    lengths = [5, 9, 3, 7, 1, 8, 2, 6, 4, 10, 11]
    batches = epoch_batches(lengths, batch_size=3, seed=1, epoch=0)
    assert sorted(i for batch in batches for i in batch) == list(range(len(lengths)))
    assert batches == epoch_batches(lengths, batch_size=3, seed=1, epoch=0)
    assert batches != epoch_batches(lengths, batch_size=3, seed=1, epoch=1)
    for batch in batches:  # grouped by length inside a group
        assert [lengths[i] for i in batch] == sorted(lengths[i] for i in batch)


def test_optimizer_is_fused_adamw_with_the_reference_update():
    torch.manual_seed(0)
    weights = [torch.nn.Parameter(torch.randn(7, 5)), torch.nn.Parameter(torch.randn(5))]
    copies = [torch.nn.Parameter(weight.detach().clone()) for weight in weights]
    initial = [weight.detach().clone() for weight in weights]
    fused = adamw(weights, learning_rate=0.01, weight_decay=0.1)
    reference = torch.optim.AdamW(copies, lr=0.01, weight_decay=0.1, foreach=False)
    assert fused.param_groups[0]["fused"] is True  # CPU has torch's fused kernel
    for _ in range(3):
        gradients = [torch.randn_like(weight) for weight in weights]
        for optimizer, group in ((fused, weights), (reference, copies)):
            for weight, gradient in zip(group, gradients, strict=True):
                weight.grad = gradient.clone()
            optimizer.step()
    for weight, copy, before in zip(weights, copies, initial, strict=True):
        assert (weight - before).abs().min() > 1e-3  # every weight moved
        torch.testing.assert_close(weight, copy, rtol=0, atol=1e-6)


def _settings(**overrides):
    values = {
        "max_steps": 30,
        "batch_size": 4,
        "learning_rate": 3e-3,
        "mixed_precision": "fp32",
        "save_steps": 0,
        "log_steps": 5,
    }
    return TrainConfig(**{**values, **overrides})


@pytest.mark.slow
def test_loss_falls_and_log_is_written(tokenizer, tmp_path):
    model, _ = build_tiny(seed=0)
    result = train(
        model,
        _samples(tokenizer),
        _settings(),
        tmp_path,
        tokenizer.pad_token_id,
        show_progress=False,
    )
    first, last = result.losses[0][1], result.losses[-1][1]
    assert last < 0.6 * first
    assert (tmp_path / "train_log.jsonl").read_text().count("\n") == 6
    assert result.response_tokens > 0


@pytest.mark.slow
def test_final_loss_is_logged_even_without_periodic_logging(tokenizer, tmp_path):
    model, _ = build_tiny(seed=0)
    settings = _settings(max_steps=3, log_steps=0)
    result = train(
        model, _samples(tokenizer), settings, tmp_path, tokenizer.pad_token_id, show_progress=False
    )
    assert [step for step, _ in result.losses] == [3]


def _trainable(model):
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


class Interrupt(Exception):
    pass


def _tiny_trained_from(top_layers):
    """The tiny model, every weight trained (0) or only its top layer (1: the frozen-layer cache
    is on, and the resumed process starts with it empty)."""
    model, _ = build_tiny(seed=0)
    return unfreeze_top_layers(model, top_layers) if top_layers else model


@pytest.mark.slow
@pytest.mark.parametrize("top_layers", [0, 1])
def test_resume_after_interruption_matches_an_uninterrupted_run(tokenizer, tmp_path, top_layers):
    settings = _settings(
        max_steps=8, save_steps=3, gradient_accumulation_steps=2, batch_size=3, log_steps=1
    )
    samples = _samples(tokenizer)

    straight = _tiny_trained_from(top_layers)
    uninterrupted = train(
        straight,
        samples,
        settings,
        tmp_path / "straight",
        tokenizer.pad_token_id,
        show_progress=False,
    )

    def crash(folder):
        if folder.name.endswith("6"):
            raise Interrupt

    broken = _tiny_trained_from(top_layers)
    with pytest.raises(Interrupt):
        train(
            broken,
            samples,
            settings,
            tmp_path / "resumed",
            tokenizer.pad_token_id,
            show_progress=False,
            on_checkpoint=crash,
        )
    assert latest_checkpoint(tmp_path / "resumed").name == "step-00000006"
    assert len(list((tmp_path / "resumed" / "checkpoints").glob("step-*"))) == 2
    # as if killed before checkpoint 6 was written: steps 4-6 are logged but not checkpointed
    shutil.rmtree(latest_checkpoint(tmp_path / "resumed"))

    fresh = _tiny_trained_from(top_layers)  # a new process starts from the base weights
    result = train(
        fresh,
        samples,
        settings,
        tmp_path / "resumed",
        tokenizer.pad_token_id,
        resume=True,
        show_progress=False,
    )
    assert result.resumed_from == 3
    assert result.frozen_cache.startswith("layers 0-0" if top_layers else "off")
    # the tokens (and seconds) of the steps before the checkpoint count too
    assert result.response_tokens == uninterrupted.response_tokens
    # the log holds each step once: what the killed run logged after step 3 was dropped
    log = (tmp_path / "resumed" / "train_log.jsonl").read_text().splitlines()
    straight_log = (tmp_path / "straight" / "train_log.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in log] == list(range(1, 9))
    for ours, theirs in zip(log, straight_log, strict=True):
        assert json.loads(ours)["loss"] == pytest.approx(json.loads(theirs)["loss"], abs=1e-5)
    expected, got = _trainable(straight), _trainable(fresh)
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], rtol=0, atol=1e-6)


@pytest.mark.parametrize(("amx", "expected"), [(True, "bf16"), (False, "no")])
def test_auto_precision_on_cpu_uses_bf16_only_with_amx(monkeypatch, amx, expected):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)
    assert resolve_mixed_precision("auto") == expected
    assert resolve_mixed_precision("fp32") == "no"
    assert resolve_mixed_precision("bf16") == "bf16"
