"""The online stage: targets, MORS selection, buffer accumulation, original-data mixing, adapter
updates, ablation flags, the comparison report, and resume after real kills at several points."""

import itertools
import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from helpers import EXAMPLES, TINY_LORA, TINY_STOPPING, kill_when, overrides
from safetensors.torch import load_file

from ric.cli import main
from ric.core import draw_targets, front_targets, mors_mask, uniform_targets
from ric.training.online import SECONDS_COLUMN

# Answers of at most 12 tokens, some ended by a stop string (see helpers.TINY_STOPPING).
TINY = overrides(*TINY_LORA, *TINY_STOPPING)


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


def test_an_iteration_plans_its_prompts_and_targets_from_its_seed_and_number():
    from ric.config import MappingConfig, OnlineConfig
    from ric.steering import Steering
    from ric.training.online import plan_iteration

    r_min, r_max = np.array([-1.0, -2.0]), np.array([1.0, 2.0])
    steering = Steering(("verbosity", "positivity"), MappingConfig(), r_min, r_max)
    prompts, settings = ["a?", "b?", "c?"], OnlineConfig(samples=60, seed=3)
    plan = plan_iteration(prompts, settings, steering, 1)
    assert list(plan.columns) == ["prompt", "target_verbosity", "target_positivity"]
    assert len(plan) == 60 and set(plan["prompt"]) == set(prompts)  # drawn with replacement
    targets = plan[["target_verbosity", "target_positivity"]].to_numpy()
    assert np.all((targets >= r_min) & (targets <= r_max))
    assert np.all(np.isclose(targets, r_max).sum(axis=1) >= 1)  # front: one objective free
    pd.testing.assert_frame_equal(plan, plan_iteration(prompts, settings, steering, 1))  # resume
    assert not plan.equals(plan_iteration(prompts, settings, steering, 2))  # each its own draw


def test_mors_keeps_what_beats_its_threshold_in_one_objective_and_off_keeps_all():
    from ric.training.online import select

    standardized = np.array([[0.0, 0.0], [1.0, 1.0], [2.0, 0.0], [0.0, 2.0], [1.0, 0.5]])
    kept, thresholds = select(standardized, mors=True, quantile=0.5)
    np.testing.assert_array_equal(thresholds, [1.0, 0.5])  # each objective's median
    assert kept.tolist() == [False, True, True, True, False]
    kept, thresholds = select(standardized, mors=False, quantile=0.5)
    assert kept.all() and thresholds is None


def test_the_offline_model_and_each_iteration_are_swept_on_the_same_prompts(tiny_offline, tmp_path):
    """`ric online --heldout`'s report (ric.recipes.iterations), here on the tiny offline run as
    both the offline model and a finished iteration: the same model, so the same front."""
    from ric.config import load_config
    from ric.recipes.iterations import compare_iterations
    from ric.training.online import OnlineResult

    run = tiny_offline / "train"
    settings = [f"online.model={run}", f"evaluate.prompts={EXAMPLES}", "evaluate.num_prompts=2"]
    settings += ["evaluate.probe=false", "evaluate.resamples=0", "generation.do_sample=false"]
    config = load_config(None, [*settings, "generation.max_new_tokens=4"])
    output = tmp_path / "evaluate"
    comparison = compare_iterations(config, OnlineResult(tmp_path, (run,)), output, False)
    assert [model.label for model in comparison.models] == ["offline", "online 1"]
    offline, online = comparison.models
    assert offline.hypervolume == online.hypervolume and offline.points == online.points == 11
    assert list(pd.read_csv(output / "comparison.csv")["label"]) == ["offline", "online 1"]
    fronts = [
        json.loads((output / k / "metrics.json").read_text())["front"]
        for k in ("offline", "online-1")
    ]
    assert fronts[0]["reference"] == fronts[1]["reference"]
    assert "online 1" in comparison.report.read_text()


@pytest.fixture
def offline(tiny_offline):
    return tiny_offline


def _online_args(model, out, *settings):
    return [
        "online",
        "--model",
        str(model),
        "--output",
        str(out),
        "--no-progress",
        *TINY,
        *overrides(*settings),
    ]


SMALL = ("online.samples=12", "online.shard_size=5", "online.max_steps=3")


@pytest.mark.slow
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


@pytest.mark.slow
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


@pytest.mark.slow
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
    killed = [kill_when(command, ready, env) for ready in kill_points]
    assert all(killed), f"a kill came after the run had finished: {killed}"
    subprocess.run(command, check=True, env=env, stdout=subprocess.DEVNULL)

    for iteration in ("iter-01", "iter-02"):
        ours = pd.read_parquet(out / iteration / "buffer.parquet")
        theirs = pd.read_parquet(reference / iteration / "buffer.parquet")
        pd.testing.assert_frame_equal(ours, theirs)  # nothing lost, nothing duplicated
        # the time counts every shard, also those the killed processes made
        shards = (out / iteration).glob("parts-*/shard-*.parquet")
        recorded = sum(pd.read_parquet(shard)[SECONDS_COLUMN].sum() for shard in shards)
        metrics = json.loads((out / iteration / "metrics.json").read_text())
        assert metrics["seconds"]["generate_and_score"] == pytest.approx(recorded)
    assert len(ours) == 80
    final = load_file(str(out / "iter-02" / "adapter" / "adapter_model.safetensors"))
    expected = load_file(str(reference / "iter-02" / "adapter" / "adapter_model.safetensors"))
    for key in expected:
        np.testing.assert_allclose(final[key], expected[key], atol=1e-6)


@pytest.mark.slow
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
    assert kill_when(command, ready, os.environ.copy()), "the kill came after the run finished"
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
