"""The online stage: targets, MORS selection, buffer accumulation, original-data mixing, adapter
updates, ablation flags, the comparison report, and resume after real kills at several points."""

import itertools
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from safetensors.torch import load_file

from ric.cli import main
from ric.core import draw_targets, front_targets, mors_mask, uniform_targets

EXAMPLES = Path(__file__).parent.parent / "examples" / "qa_pairs.jsonl"
TINY = [
    "--set",
    "lora.r=4",
    "--set",
    "lora.alpha=8",
    "--set",
    "train.mixed_precision=fp32",
    "--set",
    "generation.max_new_tokens=12",
    # The tiny model never emits EOS: a stop string ends some answers (finished), the token
    # budget cuts the others (unfinished), so selection sees both.
    "--set",
    "generation.stop_strings=[e]",
]


def test_front_targets_hold_all_but_one_objective_at_r_max():
    r_min, r_max = np.array([-1.0, -2.0, -3.0]), np.array([1.0, 2.0, 3.0])
    targets = front_targets(np.random.default_rng(0), 500, r_min, r_max)
    at_max = np.isclose(targets, r_max)
    assert targets.shape == (500, 3)
    assert np.all(at_max.sum(axis=1) >= 2)  # the free one is below r_max (almost surely)
    assert np.all((targets >= r_min) & (targets <= r_max))
    free = np.argmin(at_max, axis=1)
    assert np.all(np.bincount(free, minlength=3) > 100)  # each objective is the free one ~1/3
    again = front_targets(np.random.default_rng(0), 500, r_min, r_max)
    np.testing.assert_array_equal(targets, again)


def test_uniform_targets_and_registry_errors():
    targets = uniform_targets(np.random.default_rng(1), 1000, np.zeros(2), np.array([1.0, 4.0]))
    assert targets.min() >= 0 and targets[:, 0].max() <= 1 and targets[:, 1].max() > 3
    with pytest.raises(ValueError, match="valid: front, uniform"):
        draw_targets("corner", np.random.default_rng(0), 3, np.zeros(2), np.ones(2))
    with pytest.raises(ValueError, match="r_min <= r_max"):
        front_targets(np.random.default_rng(0), 3, np.ones(2), np.zeros(2))


@pytest.fixture
def offline(tiny_offline):
    return tiny_offline


def _online_args(model, out, *settings):
    overrides = [arg for setting in settings for arg in ("--set", setting)]
    return [
        "online",
        "--model",
        str(model),
        "--output",
        str(out),
        "--no-progress",
        *TINY,
        *overrides,
    ]


SMALL = ("online.samples=12", "online.shard_size=5", "online.max_steps=3")


def test_online_iterations_write_every_artifact(offline, tmp_path, capsys):
    out = tmp_path / "online"
    heldout = ["--heldout", str(EXAMPLES), "--set", "evaluate.num_prompts=2"]
    args = _online_args(offline / "train", out, *SMALL, "online.learning_rate=0.01")
    assert main([*args, *heldout]) == 0
    printed = capsys.readouterr().out
    assert "online 2: hypervolume" in printed

    first = pd.read_parquet(out / "iter-01" / "buffer.parquet")
    second = pd.read_parquet(out / "iter-02" / "buffer.parquet")
    assert len(first) == 12 and len(second) == 24  # the buffer accumulates
    assert sorted(second["iteration"].unique()) == [1, 2]
    pd.testing.assert_frame_equal(
        second[second["iteration"] == 1].drop(columns="kept"), first.drop(columns="kept")
    )
    # responses cut by the token budget set no threshold and are never kept
    finished = second["finished"].to_numpy(dtype=bool)
    assert 0 < finished.sum() < 24
    obtained = second.loc[finished, ["standardized_verbosity", "standardized_positivity"]]
    thresholds = json.loads((out / "iter-02" / "thresholds.json").read_text())
    np.testing.assert_allclose(thresholds["online"], np.quantile(obtained, 0.7, axis=0))
    np.testing.assert_array_equal(
        second.loc[finished, "kept"], mors_mask(obtained.to_numpy(), np.array(thresholds["online"]))
    )
    assert not second.loc[~finished, "kept"].any()
    assert 0 < second["kept"].sum() < finished.sum()
    # hindsight relabeling: standardized = (raw - mean) / std with the offline stats
    stats = json.loads((offline / "train" / "stats.json").read_text())
    np.testing.assert_allclose(
        second["standardized_verbosity"],
        (second["reward_verbosity"] - stats["mean"][0]) / stats["std"][0],
    )
    metrics = json.loads((out / "iter-02" / "metrics.json").read_text())
    assert metrics["kept_online"] == second["kept"].sum()
    assert metrics["unfinished"] == (~second.loc[second["iteration"] == 2, "finished"]).sum()
    assert metrics["original_mixed"] == round(0.5 * metrics["kept_online"])
    assert metrics["training_samples"] == metrics["kept_online"] + metrics["original_mixed"]

    # each iteration fine-tunes the previous adapter, and its folder loads like `ric train`'s
    weights = [
        load_file(str(folder / "adapter" / "adapter_model.safetensors"))
        for folder in (offline / "train", out / "iter-01", out / "iter-02")
    ]
    for before, after in itertools.pairwise(weights):
        assert any(not np.allclose(before[k], after[k]) for k in before)
    assert (
        main(["generate", "--model", str(out / "iter-02"), "--prompt", "Hi?", "--rewards", "0,0"])
        == 0
    )

    report = (out / "evaluate" / "report.md").read_text()
    assert "online 2" in report and (out / "evaluate" / "fronts.png").stat().st_size > 0
    table = pd.read_csv(out / "evaluate" / "comparison.csv")
    assert list(table["label"]) == ["offline", "online 1", "online 2"]
    for label in ("offline", "online-1", "online-2"):
        metrics = json.loads((out / "evaluate" / label / "metrics.json").read_text())
        assert (
            metrics["front"]["reference"]
            == json.loads((out / "evaluate" / "offline" / "metrics.json").read_text())["front"][
                "reference"
            ]
        )


def test_ablation_flags(offline, tmp_path):
    out = tmp_path / "ablation"
    args = _online_args(offline / "train", out, *SMALL, "online.iterations=1")
    assert main([*args, "--no-mors", "--no-original"]) == 0
    buffer = pd.read_parquet(out / "iter-01" / "buffer.parquet")
    metrics = json.loads((out / "iter-01" / "metrics.json").read_text())
    thresholds = json.loads((out / "iter-01" / "thresholds.json").read_text())
    # without MORS every finished response is kept; the unfinished ones never are
    assert buffer["finished"].sum() < 12 and thresholds["online"] is None
    assert (buffer["kept"] == buffer["finished"]).all()
    assert metrics["original_mixed"] == 0
    assert metrics["training_samples"] == buffer["finished"].sum()


def test_online_errors(offline, tmp_path, capsys):
    assert main(["online", "--model", str(tmp_path), "--output", str(tmp_path / "o")]) == 2
    assert "not a `ric train` output" in capsys.readouterr().err
    args = _online_args(offline / "train", tmp_path / "o", "online.mors_quantile=1.5")
    assert main(args) == 2
    assert "online.mors_quantile must be in (0, 1), got 1.5" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def _kill_when(command, ready, env):
    """Start ``command``, SIGKILL it once ``ready()`` is true; return whether it was killed."""
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while process.poll() is None and time.monotonic() < deadline and not ready():
        time.sleep(0.01)
    killed = process.poll() is None
    process.send_signal(signal.SIGKILL)
    process.wait()
    return killed


def test_online_resumes_after_kills_during_generation_and_training(offline, tmp_path):
    settings = (
        "online.samples=40",
        "online.shard_size=4",
        "online.max_steps=60",
        "online.learning_rate=0.003",
        "train.save_steps=5",
        "train.batch_size=2",
    )
    reference = tmp_path / "uninterrupted"
    assert main(_online_args(offline / "train", reference, *settings)) == 0

    out = tmp_path / "killed"
    command = [sys.executable, "-m", "ric.cli", *_online_args(offline / "train", out, *settings)]
    env = os.environ.copy()
    kill_points = [
        lambda: any((out / "iter-01").glob("parts-*/shard-00002.parquet")),  # mid-generation
        lambda: any((out / "iter-01" / "checkpoints").glob("step-*")),  # training
        lambda: any((out / "iter-02").glob("parts-*/shard-00001.parquet")),  # 2nd iteration
    ]
    killed = [_kill_when(command, ready, env) for ready in kill_points]
    assert all(killed), f"a kill came after the run had finished: {killed}"
    subprocess.run(command, check=True, env=env, stdout=subprocess.DEVNULL)

    for iteration in ("iter-01", "iter-02"):
        ours = pd.read_parquet(out / iteration / "buffer.parquet")
        theirs = pd.read_parquet(reference / iteration / "buffer.parquet")
        pd.testing.assert_frame_equal(ours, theirs)  # nothing lost, nothing duplicated
    assert len(ours) == 80
    final = load_file(str(out / "iter-02" / "adapter" / "adapter_model.safetensors"))
    expected = load_file(str(reference / "iter-02" / "adapter" / "adapter_model.safetensors"))
    for key in expected:
        np.testing.assert_allclose(final[key], expected[key], atol=1e-6)


def test_a_changed_shard_size_after_a_kill_neither_duplicates_nor_loses_rows(
    offline, tmp_path, capsys
):
    settings = ("online.samples=12", "online.max_steps=3", "online.iterations=1")
    reference = tmp_path / "reference"
    assert main(_online_args(offline / "train", reference, *settings, "online.shard_size=4")) == 0

    out = tmp_path / "killed"
    killed_run = _online_args(offline / "train", out, *settings, "online.shard_size=3")
    command = [sys.executable, "-m", "ric.cli", *killed_run]
    ready = lambda: any((out / "iter-01").glob("parts-*/shard-00001.parquet"))  # noqa: E731
    assert _kill_when(command, ready, os.environ.copy()), "the kill came after the run finished"
    assert main(_online_args(offline / "train", out, *settings, "online.shard_size=4")) == 0

    ours = pd.read_parquet(out / "iter-01" / "buffer.parquet")
    pd.testing.assert_frame_equal(ours, pd.read_parquet(reference / "iter-01" / "buffer.parquet"))
    assert len(ours) == 12  # the shard_size=3 rows were not read as shard_size=4 rows
    assert len(list((out / "iter-01").glob("parts-*"))) == 2

    # A finished iteration is reused only by the settings that made it.
    capsys.readouterr()
    other = _online_args(offline / "train", out, *settings, "online.samples=10")
    assert main(other) == 2
    assert "online.samples: 12 there, 10 now" in capsys.readouterr().err
    more = _online_args(offline / "train", out, *settings[:2], "online.iterations=2")
    assert main([*more, "--set", "online.shard_size=4"]) == 0  # adding an iteration is fine
    assert (out / "iter-02" / "metrics.json").is_file()
