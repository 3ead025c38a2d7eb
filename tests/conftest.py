"""Test-wide settings (never reach the model hub, keep tokenizers single-threaded and quiet) and
the shared tiny pipeline fixture."""

import os
from pathlib import Path

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["TOKENIZERS_PARALLELISM"] = "false"

EXAMPLES = Path(__file__).parent.parent / "examples" / "qa_pairs.jsonl"


@pytest.fixture(scope="session")
def tiny_offline(tmp_path_factory):
    """``label/``: the example pairs scored by verbosity and positivity; ``train/``: a tiny
    model trained on them for 5 steps (LoRA r 4). Tests only read these folders."""
    from ric.cli import main

    root = tmp_path_factory.mktemp("tiny-offline")
    label = ["label", "--data", str(EXAMPLES), "--output", str(root / "label"), "--no-progress"]
    assert main([*label, "--reward", "verbosity", "--reward", "positivity"]) == 0
    train = ["train", "--data", str(root / "label"), "--output", str(root / "train")]
    settings = ["train.max_steps=5", "lora.r=4", "lora.alpha=8", "train.mixed_precision=fp32"]
    overrides = [arg for setting in settings for arg in ("--set", setting)]
    assert main([*train, "--model", "tiny", "--no-progress", *overrides]) == 0
    return root
