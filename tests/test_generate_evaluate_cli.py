"""`ric generate` and `ric evaluate` end to end on a tiny model trained by `ric train`."""

import json

import pandas as pd
import pytest
from helpers import EXAMPLES, TINY_LORA, overrides

from ric.cli import main

GENERATION = overrides(
    "generation.max_new_tokens=12", "generation.batch_size=8", "generation.do_sample=false"
)


@pytest.fixture
def trained(tiny_offline):
    return tiny_offline / "train"


def test_generate_records_settings_and_conditioned_prompt(trained, capsys):
    code = main(
        [
            "generate",
            "--model",
            str(trained),
            "--prompt",
            "Why is the sky blue?",
            "--prompt",
            "Hi <R1> 9.9",
            "--preference",
            "0.2,0.8",
            *GENERATION,
        ]
    )
    assert code == 0
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(records) == 2
    first = records[0]
    assert first["generation"]["max_new_tokens"] == 12
    assert first["conditioned_prompt"].startswith("### Input: Why is the sky blue? <R1> ")
    assert first["conditioned_prompt"].endswith(" ### Response: ")
    assert records[1]["conditioned_prompt"].count("<R1>") == 1  # the injected marker is inert
    assert isinstance(first["response"], str)


def test_generate_explicit_rewards_and_errors(trained, capsys):
    code = main(
        ["generate", "--model", str(trained), "--prompt", "q", "--rewards", "1.0,-0.5", *GENERATION]
    )
    assert code == 0
    record = json.loads(capsys.readouterr().out.splitlines()[0])
    assert "<R1> 1.0 <R2> -0.5" in record["conditioned_prompt"]
    assert main(["generate", "--model", str(trained), "--prompt", "q", "--rewards", "1.0"]) == 2
    assert "2 objectives" in capsys.readouterr().err
    assert main(["generate", "--model", str(trained), "--prompt", "q"]) == 2
    assert "exactly one of --preference" in capsys.readouterr().err


def test_evaluate_writes_every_artifact(trained, tmp_path, capsys):
    out = tmp_path / "eval"
    code = main(
        [
            "evaluate",
            "--model",
            str(trained),
            "--prompts",
            str(EXAMPLES),
            "--output",
            str(out),
            "--no-progress",
            "--set",
            "evaluate.num_prompts=3",
            *GENERATION,
        ]
    )
    assert code == 0
    assert {p.name for p in out.iterdir()} >= {
        "samples.parquet",
        "summary.csv",
        "front.png",
        "metrics.json",
        "report.md",
        "config.yaml",
        "probe_samples.parquet",
    }
    samples = pd.read_parquet(out / "samples.parquet")
    assert len(samples) == 11 * 3  # the paper's 11-point grid x 3 prompts
    summary = pd.read_csv(out / "summary.csv")
    assert summary["w_verbosity"].tolist() == pytest.approx([i / 10 for i in range(11)])
    first = samples[samples.preference_index == 0]
    assert summary["mean_verbosity"][0] == pytest.approx(first["reward_verbosity"].mean())
    assert samples["reward_verbosity"].tolist() == [float(len(r)) for r in samples["response"]]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["num_preferences"] == 11 and metrics["objectives"] == ["verbosity", "positivity"]
    from ric.core import hypervolume

    means = summary[["mean_verbosity", "mean_positivity"]].to_numpy()
    reference = metrics["front"]["reference"]
    assert metrics["front"]["hypervolume"] == pytest.approx(hypervolume(means, reference))
    assert set(metrics["steerability"]) == {"verbosity", "positivity"}
    intervals = metrics["intervals"]  # over 1000 resamples of the 3 prompts
    assert intervals["resamples"] == 1000
    low, high = intervals["hypervolume"]
    assert low <= high
    assert "![front](front.png)" in (out / "report.md").read_text()
    # every sample says whether it ended; 12 tokens of an untrained model never do
    assert samples["finished"].dtype == bool and not samples["finished"].any()
    # the probe: each objective asked low and high, its move in training sd, printed too
    probe = metrics["probe"]["verbosity"]
    stats = json.loads((trained / "stats.json").read_text())
    move = (probe["obtained_high_raw"] - probe["obtained_low_raw"]) / stats["std"][0]
    assert probe["difference_sd"] == pytest.approx(move)
    assert probe["desired_low"] < probe["desired_high"]
    # ...from the answers it saved: 2 objectives x 2 ends x 3 prompts
    answers = pd.read_parquet(out / "probe_samples.parquet")
    assert len(answers) == 12
    asked_low = answers[(answers.probed == "verbosity") & (answers.end == "low")]
    assert asked_low["reward_verbosity"].mean() == pytest.approx(probe["obtained_low_raw"])
    printed = capsys.readouterr().out
    assert "verbosity: asked low / high gives" in printed and "per response" in printed
    hypervolume_line = next(line for line in printed.splitlines() if line.startswith("hypervolume"))
    assert f"(95% interval {low:.4g} to {high:.4g})" in hypervolume_line
    assert "moves" in printed and "95% interval" in printed.split("asked low / high")[1]
    # 12 tokens of an untrained model: every mean the same, so no rank correlation, no interval
    assert metrics["intervals"]["w1_vs_obtained"] == {"verbosity": None, "positivity": None}
    assert "  verbosity: Spearman(desired, obtained) n/a, Spearman(w_1, mean) n/a\n" in printed
    gaps = metrics["reward_sensitivity"]["positivity"]
    assert gaps["sequence_gap"] == pytest.approx(
        gaps["sequence_loss_shuffled"] - gaps["sequence_loss_true"]
    )
    # evaluated again into the same folder with the probe and the intervals off: no answers or
    # intervals of the first evaluation pass for this one's
    again = ["evaluate", "--model", str(trained), "--prompts", str(EXAMPLES), "--output", str(out)]
    off = ["--set", "evaluate.probe=false", "--set", "evaluate.resamples=0", "--no-progress"]
    assert main([*again, "--set", "evaluate.num_prompts=3", *off, *GENERATION]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["probe"] is None and metrics["intervals"] is None
    assert not (out / "probe_samples.parquet").exists()


@pytest.mark.slow
def test_a_runs_recorded_settings_govern_evaluate_and_generate(tiny_offline, tmp_path, capsys):
    from ric.config import MappingConfig, load_config
    from ric.data.io import load_stats
    from ric.steering import Steering

    run = tmp_path / "quantile-run"
    recorded = [
        "mapping.range_source=quantile",
        "generation.max_new_tokens=7",
        "generation.do_sample=false",
        *("train.max_steps=2", *TINY_LORA),
    ]
    train = ["train", "--data", str(tiny_offline / "label"), "--output", str(run), "--model"]
    assert main([*train, "tiny", "--no-progress", *(f"--set={s}" for s in recorded)]) == 0

    out = tmp_path / "eval"
    evaluate = ["evaluate", "--model", str(run), "--prompts", str(EXAMPLES), "--output", str(out)]
    assert main([*evaluate, "--no-progress", "--set", "evaluate.num_prompts=2"]) == 0
    err = capsys.readouterr().err
    assert f"settings recorded by the run {run}: " in err
    assert "mapping.range_source=quantile" in err and "generation.max_new_tokens=7" in err
    assert "settings you set: " not in err  # evaluate.num_prompts is not a run setting

    stats = load_stats(run / "stats.json")
    quantile = Steering.for_stats(stats, MappingConfig(range_source="quantile"))
    normal = Steering.for_stats(stats, MappingConfig())
    assert not all(abs(a - b) < 0.1 for a, b in zip(quantile.r_max, normal.r_max, strict=True))
    summary = pd.read_csv(out / "summary.csv")
    for row in summary.itertuples():
        w = [row.w_verbosity, row.w_positivity]
        expected = quantile.map_preference(w)
        assert [row.desired_verbosity, row.desired_positivity] == pytest.approx(expected)
    used = load_config(out / "config.yaml")
    assert used.generation.max_new_tokens == 7 and used.mapping.range_source == "quantile"

    # What the user sets wins, and is reported as theirs.
    ask = ["generate", "--model", str(run), "--prompt", "q", "--preference", "0.5,0.5"]
    assert main([*ask, "--set", "generation.max_new_tokens=3"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["generation"]["max_new_tokens"] == 3
    assert "settings you set: generation.max_new_tokens=3" in captured.err
    assert json.loads(captured.out)["generation"]["do_sample"] is False  # still the run's


@pytest.mark.slow
def test_dtype_and_device_are_how_a_run_is_loaded_not_what_it_is(
    tiny_offline, tmp_path, capsys, monkeypatch
):
    import torch

    import ric.evaluation.sweep
    import ric.runs
    from ric.config import load_config
    from ric.runs import load_trained

    run = tmp_path / "bf16-run"
    recorded = ["model.dtype=bfloat16", "train.max_steps=2", "lora.r=4", "lora.alpha=8"]
    train = ["train", "--data", str(tiny_offline / "label"), "--output", str(run), "--model"]
    assert main([*train, "tiny", "--no-progress", *(f"--set={s}" for s in recorded)]) == 0
    assert load_trained(run, merged=True).model.dtype == torch.bfloat16  # the run's own
    assert load_trained(run, merged=True, dtype="float32").model.dtype == torch.float32
    with pytest.raises(ValueError, match=r"model\.dtype: 'float8' is not valid"):
        load_trained(run, dtype="float8")

    loaded = []  # the dtype of each model the commands below load (the real loader, observed)

    def observed_load(*args, **kwargs):
        policy = load_trained(*args, **kwargs)
        loaded.append(policy.model.dtype)
        return policy

    monkeypatch.setattr(ric.evaluation.sweep, "load_trained", observed_load)
    monkeypatch.setattr(ric.runs, "load_trained", observed_load)
    evaluate = ["evaluate", "--model", str(run), "--prompts", str(EXAMPLES), "--no-progress"]
    ask = ["--set", "evaluate.num_prompts=1", "--set", "evaluate.grid=explicit"]
    ask += ["--set", "evaluate.preferences=[[1,0],[0,1]]"]
    assert main([*evaluate, "--output", str(tmp_path / "as-run"), *ask]) == 0
    assert "model.dtype=bfloat16" in capsys.readouterr().err  # recorded by the run
    assert load_config(tmp_path / "as-run" / "config.yaml").model.dtype == "bfloat16"
    out = tmp_path / "float32"
    assert main([*evaluate, "--output", str(out), *ask, "--set", "model.dtype=float32"]) == 0
    assert "settings you set: model.dtype=float32" in capsys.readouterr().err
    assert load_config(out / "config.yaml").model.dtype == "float32"
    ask = ["generate", "--model", str(run), "--prompt", "q", "--preference", "0.5,0.5"]
    assert main([*ask, "--set", "model.dtype=float32"]) == 0
    assert loaded == [torch.bfloat16, torch.float32, torch.float32]
