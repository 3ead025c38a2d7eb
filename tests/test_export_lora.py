"""`ric export-lora`: top layers fully fine-tuned -> a LoRA run of their truncated-SVD changes,
and shipped runs accepted by name (``embedded-ric``)."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import overrides
from peft import PeftModel
from safetensors.torch import load_file

from ric.cli import main
from ric.models.lora import low_rank_factors
from ric.models.tiny import build_tiny
from ric.runs import SHIPPED_RUNS, load_trained, run_folder, write_method
from ric.steering import Steering


@pytest.fixture(scope="module")
def layers_run(labeled, tmp_path_factory):
    """The tiny model with its top layer (of 2) fully fine-tuned for 15 steps."""
    root = tmp_path_factory.mktemp("layers")
    settings = [
        "train.max_steps=15",
        "train.learning_rate=0.003",
        "train.mixed_precision=fp32",
        "lora.enabled=false",
        "lora.top_layers=1",
    ]
    train = ["train", "--data", str(labeled), "--output", str(root / "train")]
    assert main([*train, "--model", "tiny", "--no-progress", *overrides(*settings)]) == 0
    return root / "train"


def _logits(folder: Path) -> torch.Tensor:
    return _logits_of(load_trained(folder).model, folder)


def _logits_of(model: torch.nn.Module, run: Path) -> torch.Tensor:
    """``model``'s logits on a prompt conditioned as ``run`` conditions it."""
    policy = load_trained(run)
    prompt = Steering.for_run(policy).prompts(["What is a fox?"], np.array([0.5, -1.0]))[0]
    ids = policy.tokenizer(prompt, return_tensors="pt").input_ids
    with torch.no_grad():
        return model(ids).logits


def test_low_rank_factors_match_the_truncated_svd_by_hand():
    # An orthogonal U (a rotation), V = I, singular values 3, 2, 1.
    c, s = np.cos(0.3), np.sin(0.3)
    u = torch.tensor([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]], dtype=torch.float64)
    delta = u @ torch.diag(torch.tensor([3.0, 2.0, 1.0], dtype=torch.float64))
    b, a, kept = low_rank_factors(delta, 1)
    assert b.shape == (3, 1) and a.shape == (1, 3)
    expected = 3.0 * torch.outer(u[:, 0], torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64))
    torch.testing.assert_close(b @ a, expected)
    assert kept == pytest.approx(9 / 14)
    # A rank above the matrix's: exact, padded with zero factors.
    b, a, kept = low_rank_factors(delta, 5)
    assert b.shape == (3, 5) and torch.equal(b[:, 3:], torch.zeros(3, 2))
    torch.testing.assert_close(b @ a, delta)
    assert kept == pytest.approx(1.0)


@pytest.mark.slow
def test_full_rank_export_reproduces_the_fine_tuned_model(layers_run, tmp_path, capsys):
    out = tmp_path / "lora"
    argv = ["export-lora", "--model", str(layers_run), "--output", str(out)]
    assert main([*argv, "--rank", "64", "--dtype", "float32"]) == 0  # hidden size 64: full rank
    assert "LoRA rank 64 (float32)" in capsys.readouterr().err
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["kept_min"] == pytest.approx(1.0)
    assert metrics["source_metrics"]["steps"] == 15
    torch.testing.assert_close(_logits(out), _logits(layers_run), rtol=0, atol=1e-4)
    adapter = load_file(str(out / "adapter" / "adapter_model.safetensors"))
    assert all(".layers.1." in name for name in adapter)  # the fine-tuned layer only
    assert any("input_layernorm" in name for name in adapter)  # norm scales kept whole


@pytest.mark.slow
def test_low_rank_export_is_smaller_approximate_and_usable(layers_run, tmp_path, capsys):
    out = tmp_path / "lora"
    assert (
        main(["export-lora", "--model", str(layers_run), "--output", str(out), "--rank", "4"]) == 0
    )
    adapter = load_file(str(out / "adapter" / "adapter_model.safetensors"))
    assert {tensor.dtype for tensor in adapter.values()} == {torch.float16}
    assert adapter["base_model.model.model.layers.1.self_attn.q_proj.lora_A.weight"].shape == (
        4,
        64,
    )
    metrics = json.loads((out / "metrics.json").read_text())
    assert 0 < metrics["kept_min"] < metrics["kept_mean"] < 1
    exported, source = _logits(out), _logits(layers_run)
    assert not torch.allclose(exported, source, atol=1e-4)  # an approximation, but closer to the
    untrained = _logits_of(build_tiny()[0], layers_run)  # fine-tuned model than the start is
    assert (exported - source).abs().mean() < (untrained - source).abs().mean() / 2
    assert load_trained(out).config.lora.r == 4
    capsys.readouterr()
    assert (
        main(
            [
                "generate",
                "--model",
                str(out),
                "--prompt",
                "Why?",
                "--preference",
                "0.5,0.5",
                "--set",
                "generation.max_new_tokens=4",
            ]
        )
        == 0
    )
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert line["preference"] == [0.5, 0.5]


@pytest.mark.slow
def test_export_refuses_a_non_empty_output_and_writes_nothing(layers_run, tmp_path, capsys):
    out = tmp_path / "taken"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    assert main(["export-lora", "--model", str(layers_run), "--output", str(out)]) == 2
    assert "exists and is not empty" in capsys.readouterr().err
    assert [p.name for p in tmp_path.iterdir()] == ["taken"]  # no staging folder left
    assert [p.name for p in out.iterdir()] == ["notes.txt"]


def test_shipped_runs_resolve_by_name_unless_a_folder_has_that_name(tmp_path, monkeypatch):
    assert run_folder("embedded-ric") == SHIPPED_RUNS["embedded-ric"]
    assert run_folder("runs/x") == Path("runs/x")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "embedded-ric").mkdir()
    assert run_folder("embedded-ric") == Path("embedded-ric")


@pytest.mark.slow
def test_a_portable_export_records_no_path_of_this_machine(layers_run, tmp_path, capsys):
    out = tmp_path / "shared"
    argv = ["export-lora", "--model", str(layers_run), "--output", str(out), "--portable"]
    assert main([*argv, "--rank", "2"]) == 0
    for name in ("config.yaml", "metrics.json", "adapter/adapter_config.json"):
        text = (out / name).read_text()
        assert str(layers_run.parent) not in text and str(tmp_path) not in text, name
    assert load_trained(out).config.model.source == "tiny"  # what loading needs is kept
    peft_config = json.loads((out / "adapter" / "adapter_config.json").read_text())
    assert peft_config["base_model_name_or_path"] == "tiny"
    capsys.readouterr()
    online = ["online", "--model", str(out), "--output", str(tmp_path / "online")]
    assert main(online) == 2
    assert "records no training data: set online.data" in capsys.readouterr().err
    assert not (tmp_path / "online").exists()


@pytest.mark.slow
def test_a_merged_lora_run_generates_as_the_unmerged_one(layers_run, tmp_path):
    out = tmp_path / "lora"
    assert (
        main(["export-lora", "--model", str(layers_run), "--output", str(out), "--rank", "4"]) == 0
    )
    unmerged, merged = load_trained(out), load_trained(out, merged=True)
    assert isinstance(unmerged.model, PeftModel) and not isinstance(merged.model, PeftModel)
    torch.testing.assert_close(_logits_of(merged.model, out), _logits(out), rtol=0, atol=1e-5)
    with pytest.raises(ValueError, match="cannot be trained further"):
        load_trained(out, trainable=True, merged=True)


def test_a_lora_run_exports_exactly_at_its_rank_and_approximately_below(tiny_offline, tmp_path):
    run = tiny_offline / "train"  # LoRA r 4 on every layer of the tiny model
    exact, smaller = tmp_path / "r4", tmp_path / "r1"
    argv = ["export-lora", "--model", str(run), "--dtype", "float32", "--output"]
    assert main([*argv, str(exact), "--rank", "4"]) == 0
    assert json.loads((exact / "metrics.json").read_text())["kept_min"] == pytest.approx(1.0)
    torch.testing.assert_close(_logits(exact), _logits(run), rtol=0, atol=1e-4)
    assert main([*argv, str(smaller), "--rank", "1"]) == 0
    assert json.loads((smaller / "metrics.json").read_text())["kept_mean"] < 0.99
    assert load_trained(smaller).config.lora.r == 1


@pytest.fixture(scope="module")
def second_layers_run(labeled, tmp_path_factory):
    """Another run of the same kind on the same labeled data: 6 steps instead of 15."""
    output = tmp_path_factory.mktemp("second") / "train"
    settings = ["train.max_steps=6", "train.learning_rate=0.003", "train.mixed_precision=fp32"]
    settings += ["lora.enabled=false", "lora.top_layers=1"]
    argv = ["train", "--data", str(labeled), "--output", str(output)]
    assert main([*argv, "--model", "tiny", "--no-progress", *overrides(*settings)]) == 0
    return output


@pytest.mark.slow
def test_several_runs_export_as_their_weighted_average(
    layers_run, second_layers_run, tmp_path, capsys
):
    out = tmp_path / "soup"
    argv = ["export-lora", "--model", str(layers_run), "--model", str(second_layers_run)]
    options = ["--weights", "0.25,0.75", "--rank", "64", "--dtype", "float32"]
    assert main([*argv, *options, "--output", str(out)]) == 0
    assert "averaged from 2 runs" in capsys.readouterr().err
    soup = dict(load_trained(out, merged=True).model.named_parameters())
    first = dict(load_trained(layers_run).model.named_parameters())
    second = dict(load_trained(second_layers_run).model.named_parameters())
    changed = [name for name in first if not torch.equal(first[name], second[name])]
    assert changed and all(".layers.1." in name for name in changed)
    for name in first:  # theta = 0.25 theta_1 + 0.75 theta_2, and untouched weights unchanged
        expected = 0.25 * first[name] + 0.75 * second[name]
        torch.testing.assert_close(soup[name], expected, rtol=0, atol=1e-5, msg=name)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["soup_weights"] == [0.25, 0.75]
    assert metrics["exported_from"] == [str(layers_run), str(second_layers_run)]
    assert [m["steps"] for m in metrics["source_metrics"]] == [15, 6]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("weights", "message"),
    [
        ("1", "1 soup weight(s) [1.0] for 2 run(s)"),
        ("1.5,-0.5", "soup weights must be >= 0, got [1.5, -0.5]"),
    ],
)
def test_bad_soup_weights_are_refused_and_nothing_is_written(
    layers_run, second_layers_run, tmp_path, capsys, weights, message
):
    argv = ["export-lora", "--model", str(layers_run), "--model", str(second_layers_run)]
    assert main([*argv, "--weights", weights, "--output", str(tmp_path / "soup")]) == 2
    assert message in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_two_lora_runs_of_one_lineage_average_exactly_at_twice_their_rank(tiny_offline, tmp_path):
    """The real case, successive online iterations: LoRA r 4 continued for 3 more steps. Each
    run's change folds in with its own scaling; together they have rank <= 8."""
    first, second, soup = tiny_offline / "train", tmp_path / "continued", tmp_path / "soup"
    settings = ["train.max_steps=3", "train.learning_rate=0.01", "train.mixed_precision=fp32"]
    argv = ["train", "--init", str(first), "--data", str(tiny_offline / "label")]
    assert main([*argv, "--output", str(second), "--no-progress", *overrides(*settings)]) == 0
    export = ["export-lora", "--model", str(first), "--model", str(second), "--dtype", "float32"]
    assert main([*export, "--rank", "8", "--output", str(soup), "--portable"]) == 0
    metrics = json.loads((soup / "metrics.json").read_text())
    assert metrics["kept_min"] == pytest.approx(1.0)
    assert metrics["exported_from"] == [f"{first.parent.name}/train", f"{tmp_path.name}/continued"]
    merged = [
        dict(load_trained(run, merged=True).model.named_parameters())
        for run in (first, second, soup)
    ]
    changed = [name for name in merged[0] if not torch.equal(merged[0][name], merged[1][name])]
    assert changed
    for name in merged[0]:
        expected = (merged[0][name] + merged[1][name]) / 2
        torch.testing.assert_close(merged[2][name], expected, rtol=0, atol=1e-5, msg=name)


@pytest.mark.slow
def test_morlhf_runs_of_different_preferences_are_not_averaged(layers_run, tmp_path, capsys):
    """Averaged, they would be one model labeled with the first run's preference."""
    runs = [tmp_path / "helpful", tmp_path / "concise"]
    for run, preference in zip(runs, ([1.0, 0.0], [0.0, 1.0]), strict=True):
        shutil.copytree(layers_run, run)
        write_method(run, "morlhf", preference)
    argv = ["export-lora", "--model", str(runs[0]), "--model", str(runs[1])]
    assert main([*argv, "--output", str(tmp_path / "soup")]) == 2
    error = capsys.readouterr().err
    assert "their method differs" in error and "preference=[0.0, 1.0]" in error, error
    assert not (tmp_path / "soup").exists()
