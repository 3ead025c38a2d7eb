"""`ric train` end to end on the tiny model: adapter written and loadable by plain peft, base
weights frozen, loss falls, resume after a real kill."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from helpers import TINY_LORA, overrides

from ric.cli import main
from ric.models.tiny import build_tiny

# Every test here trains the tiny model.
pytestmark = pytest.mark.slow

TRAIN_FLAGS = [
    *("--model", "tiny"),
    *overrides(*TINY_LORA, "train.batch_size=8", "train.learning_rate=0.003", "train.log_steps=5"),
]


def _train(data, out, *settings):
    """`ric train` on the tiny model; ``settings`` are key=value overrides."""
    return main(
        [
            "train",
            "--data",
            str(data),
            "--output",
            str(out),
            "--no-progress",
            *TRAIN_FLAGS,
            *overrides(*settings),
        ]
    )


@pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing.*:FutureWarning")
def test_train_writes_a_peft_adapter_and_the_loss_falls(labeled, tmp_path):
    out = tmp_path / "run"
    assert _train(labeled, out, "train.max_steps=30") == 0
    metrics = json.loads((out / "metrics.json").read_text())
    # LoRA on q/v of a random 64-wide model moves the loss slowly; full fine-tuning is below.
    assert metrics["last_loss"] < metrics["first_loss"] - 0.05
    assert metrics["samples"] == 48 and metrics["objectives"] == ["verbosity", "positivity"]
    assert (out / "stats.json").read_text() == (labeled / "stats.json").read_text()

    from peft import PeftModel

    base, _ = build_tiny()
    reference = {n: p.detach().clone() for n, p in base.named_parameters()}
    model = PeftModel.from_pretrained(base, out / "adapter")
    lora = {n: p for n, p in model.named_parameters() if "lora_B" in n}
    assert lora and all(p.abs().sum() > 0 for p in lora.values())  # B starts at zero: trained
    for name, param in model.get_base_model().named_parameters():
        if "lora_" not in name:
            key = name.replace("base_layer.", "")
            torch.testing.assert_close(param, reference[key], rtol=0, atol=0)


def test_full_fine_tuning_saves_a_model_and_the_loss_falls(labeled, tmp_path):
    out = tmp_path / "full"
    assert _train(labeled, out, "train.max_steps=30", "lora.enabled=false") == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["last_loss"] < 0.8 * metrics["first_loss"]
    assert (out / "model" / "model.safetensors").exists()
    assert not (out / "adapter").exists()


def test_top_layers_full_fine_tuning_saves_those_layers_only(labeled, tmp_path):
    from safetensors.torch import load_file

    from ric.runs import load_trained

    out = tmp_path / "top"
    settings = ("train.max_steps=20", "lora.enabled=false", "lora.top_layers=1")
    assert _train(labeled, out, *settings) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["last_loss"] < metrics["first_loss"] - 0.05
    saved = load_file(str(out / "layers" / "weights.safetensors"))
    assert saved and all(name.startswith("model.layers.1.") for name in saved)  # 2 layers
    assert not (out / "model").exists() and not (out / "adapter").exists()

    base, _ = build_tiny()
    policy = load_trained(out)
    trained = dict(policy.model.named_parameters())
    for name, original in base.named_parameters():
        if name in saved:
            torch.testing.assert_close(trained[name], saved[name], rtol=0, atol=0)
            assert not torch.equal(trained[name], original)
        else:  # below the top layer: the start model's weights, untouched
            torch.testing.assert_close(trained[name], original, rtol=0, atol=0)
    assert not any(p.requires_grad for p in policy.model.parameters())
    trainable = load_trained(out, trainable=True).model.named_parameters()
    assert sorted(n for n, p in trainable if p.requires_grad) == sorted(saved)


def test_finished_run_is_kept(labeled, tmp_path, capsys):
    out = tmp_path / "run"
    assert _train(labeled, out, "train.max_steps=4", "train.save_steps=2") == 0
    adapter = (out / "adapter" / "adapter_model.safetensors").read_bytes()
    metrics = (out / "metrics.json").read_text()
    # The same settings (with or without --resume) have nothing left to do: no step is retrained.
    assert _train(labeled, out, "train.max_steps=4") == 0
    resume = ["--resume", "--set", "train.max_steps=4", "--set", "train.save_steps=2"]
    assert main(["train", "--data", str(labeled), "--output", str(out), *TRAIN_FLAGS, *resume]) == 0
    assert (out / "adapter" / "adapter_model.safetensors").read_bytes() == adapter
    assert (out / "metrics.json").read_text() == metrics
    # Other settings are refused, naming them: a finished run is neither reused nor overwritten.
    longer = ["--resume", "--set", "train.max_steps=6"]
    assert main(["train", "--data", str(labeled), "--output", str(out), *TRAIN_FLAGS, *longer]) == 2
    assert "train.max_steps: 4 there, 6 now" in capsys.readouterr().err


def test_train_resumes_after_a_real_kill(labeled, tmp_path):
    out = tmp_path / "run"
    command = [
        sys.executable,
        "-m",
        "ric.cli",
        "train",
        "--data",
        str(labeled),
        "--output",
        str(out),
        "--no-progress",
        "--set",
        "train.max_steps=400",
        "--set",
        "train.save_steps=5",
        *TRAIN_FLAGS,
    ]
    process = subprocess.Popen(command, env=os.environ.copy())
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not list((out / "checkpoints").glob("step-*")):
        time.sleep(0.1)
    time.sleep(0.5)
    process.send_signal(signal.SIGKILL)
    process.wait()
    checkpoints = sorted((out / "checkpoints").glob("step-*"))
    assert checkpoints, "no checkpoint before the kill"
    assert not (out / "metrics.json").exists()
    killed_at = int(checkpoints[-1].name.split("-")[1])
    assert killed_at < 400

    subprocess.run([*command, "--resume"], check=True, env=os.environ.copy())
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["resumed_from_step"] >= killed_at
    assert metrics["steps"] == 400
    assert (out / "adapter" / "adapter_model.safetensors").exists()


def test_train_init_continues_a_ric_run_with_its_own_settings(tiny_offline, tmp_path):
    from safetensors.torch import load_file

    from ric.config import load_config

    init, label = tiny_offline / "train", tiny_offline / "label"
    adapter = "adapter/adapter_model.safetensors"
    started = load_file(str(init / adapter))

    def continued(output: Path, learning_rate: str) -> dict[str, torch.Tensor]:
        argv = ["train", "--data", str(label), "--output", str(output), "--init", str(init)]
        settings = [
            *("train.max_steps=2", "train.mixed_precision=fp32"),
            *(f"train.learning_rate={learning_rate}", "lora.r=16"),  # r: the init's wins
        ]
        assert main([*argv, "--no-progress", *overrides(*settings)]) == 0
        return load_file(str(output / adapter))

    # A vanishing learning rate leaves the init's adapter (trained, B != 0) as it was: training
    # started from it, not from a new adapter (B = 0).
    still = continued(tmp_path / "still", "1e-12")
    assert still.keys() == started.keys()
    assert any(name.endswith("lora_B.weight") and v.abs().sum() > 0 for name, v in still.items())
    for name, value in started.items():
        torch.testing.assert_close(still[name], value, rtol=0, atol=1e-8)
    moved = continued(tmp_path / "moved", "0.003")
    assert any(not torch.equal(moved[name], value) for name, value in started.items())
    recorded = load_config(tmp_path / "moved" / "config.yaml")
    assert recorded.lora.r == 4 and recorded.model.source == "tiny"  # the init's settings
    assert recorded.train.init == str(init)
    # The same command again: the finished run is kept (a retrained one would record other
    # seconds in its metrics).
    metrics = (tmp_path / "moved" / "metrics.json").read_text()
    continued(tmp_path / "moved", "0.003")
    assert (tmp_path / "moved" / "metrics.json").read_text() == metrics


def test_train_init_refuses_a_baseline_run(tiny_offline, tmp_path, capsys):
    sft = tmp_path / "sft"
    argv = ["baseline", "sft", "--data", str(tiny_offline / "label"), "--output", str(sft)]
    settings = ["train.max_steps=1", *TINY_LORA]
    assert main([*argv, "--model", "tiny", "--no-progress", *overrides(*settings)]) == 0
    argv = ["train", "--data", str(tiny_offline / "label"), "--output", str(tmp_path / "out")]
    assert main([*argv, "--init", str(sft), "--no-progress"]) == 2
    assert "is a 'sft' run: it continues a RiC run" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
