"""Rewarded Soups: interpolating LoRA deltas equals interpolating the dense merged models, and
interpolating A and B separately does not."""

from pathlib import Path

import pytest
import torch

from ric.config import LoraConfig, ModelConfig
from ric.models import attach_lora, load_adapter, load_policy, merge_adapter, save_adapter
from ric.models.interpolation import soup_model


def _base():
    model, _ = load_policy(ModelConfig(source="tiny", device="cpu"))
    return model


def _random_adapter(folder: Path, r: int, seed: int) -> Path:
    base = _base()  # seeds torch itself: draw the adapter after it
    torch.manual_seed(seed)
    model = attach_lora(base, LoraConfig(r=r, alpha=2.0 * r, dropout=0.0))
    for name, param in model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(param, std=0.3)  # B = 0 at init would make every delta 0
    return save_adapter(model, folder)


@pytest.fixture(scope="module")
def adapters(tmp_path_factory):
    root = tmp_path_factory.mktemp("soups")
    return [_random_adapter(root / "a0", 4, 0), _random_adapter(root / "a1", 8, 1)]


def _state(model):
    return {name: value.detach().clone() for name, value in model.state_dict().items()}


def test_soup_equals_interpolated_dense_models(adapters):
    w = (0.3, 0.7)
    soup = _state(soup_model(_base(), adapters, w))
    merged = [_state(merge_adapter(load_adapter(_base(), folder))) for folder in adapters]
    assert soup.keys() == merged[0].keys()
    changed = 0
    for name, value in soup.items():
        expected = w[0] * merged[0][name] + w[1] * merged[1][name]
        torch.testing.assert_close(value, expected, atol=1e-6, rtol=1e-5)
        changed += not torch.equal(merged[0][name], merged[1][name])
    assert changed >= 4  # q and v of both layers really differ between the two models


def test_one_hot_preference_gives_that_model(adapters):
    soup = _state(soup_model(_base(), adapters, (0.0, 1.0)))
    merged = _state(merge_adapter(load_adapter(_base(), adapters[1])))
    for name, value in soup.items():
        torch.testing.assert_close(value, merged[name], atol=1e-6, rtol=1e-5)


def test_interpolating_a_and_b_separately_is_wrong(adapters):
    w = (0.5, 0.5)
    same_rank = [adapters[0], _random_adapter(adapters[0].parent / "a2", 4, 2)]
    naive = load_adapter(_base(), same_rank[0])
    other = dict(load_adapter(_base(), same_rank[1]).named_parameters())
    with torch.no_grad():
        for name, param in naive.named_parameters():
            if "lora_" in name:
                param.copy_(w[0] * param + w[1] * other[name])  # average A and B entrywise
    right = _state(soup_model(_base(), same_rank, w))
    wrong = _state(merge_adapter(naive))
    assert max((right[n] - wrong[n]).abs().max().item() for n in right) > 1e-3


def test_bad_preference_is_named(adapters):
    with pytest.raises(ValueError, match="preference has 3 weights but there are 2 objectives"):
        soup_model(_base(), adapters, (0.2, 0.3, 0.5))
    with pytest.raises(ValueError, match="sum"):
        soup_model(_base(), adapters, (0.2, 0.3))
