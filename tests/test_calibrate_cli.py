"""`ric calibrate` end to end on the tiny model, and a calibrated run used by `ric generate`,
`ric map` and `ric evaluate` (the steering card)."""

import json

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import TINY_CALIBRATION
from helpers import EXAMPLES, calibrated_copy, edited_run, overrides

from ric.cli import main
from ric.core import Calibration
from ric.runs import load_trained, write_method

GENERATION = overrides(
    "generation.max_new_tokens=6", "generation.batch_size=8", "generation.do_sample=false"
)


def last_json(capsys) -> dict:
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_calibrate_writes_a_run_that_uses_the_models_weights(tiny_calibrated, tiny_offline):
    names = {path.name for path in tiny_calibrated.iterdir()}
    assert {"calibration.json", "config.yaml", "stats.json", "samples.parquet"} <= names
    assert {"calibration.png", "metrics.json"} <= names
    assert not names & {"adapter", "model", "layers"}  # the weights are referenced, not copied
    record = json.loads((tiny_calibrated / "calibration.json").read_text())
    assert (tiny_calibrated / record["model"]).resolve() == (tiny_offline / "train").resolve()
    config = yaml.safe_load((tiny_calibrated / "config.yaml").read_text())
    assert config["mapping"]["method"] == "calibrated"
    trained_config = yaml.safe_load((tiny_offline / "train" / "config.yaml").read_text())
    for section in ("rewards", "template", "model", "train", "lora"):  # the weights' run's own
        assert config[section] == trained_config[section], section
    samples = pd.read_parquet(tiny_calibrated / "samples.parquet")
    assert len(samples) == 9 * 2  # 3 x 3 levels, 2 answers each
    assert samples.groupby("point")["prompt"].nunique().eq(2).all()
    calibration = Calibration.from_json(record["calibration"])
    assert calibration.samples == 18 and calibration.levels.shape == (2, 3)
    # The tiny model was trained for 5 steps: it ignores its rewards, and the fit says so.
    metrics = json.loads((tiny_calibrated / "metrics.json").read_text())
    assert metrics["unsteered"] == ["verbosity", "positivity"]
    calibrated = load_trained(tiny_calibrated)
    trained = load_trained(tiny_offline / "train")
    assert calibrated.folder == tiny_calibrated and calibrated.config.mapping.method == "calibrated"
    for mine, theirs in zip(calibrated.model.parameters(), trained.model.parameters(), strict=True):
        assert mine.data.equal(theirs.data)


def calibrate_command(model, output) -> list[str]:
    command = ["calibrate", "--model", str(model), "--output", str(output), "--no-progress"]
    return [*command, "--prompts", str(EXAMPLES), *overrides(*TINY_CALIBRATION)]


def test_a_rerun_reuses_and_other_settings_are_refused(tiny_offline, tmp_path, capsys):
    output = tmp_path / "calibrated"
    assert main(calibrate_command(tiny_offline / "train", output)) == 0
    first = (output / "calibration.json").read_text()
    assert main(calibrate_command(tiny_offline / "train", output)) == 0
    assert (output / "calibration.json").read_text() == first
    capsys.readouterr()
    changed = [*calibrate_command(tiny_offline / "train", output), "--set", "calibrate.levels=4"]
    assert main(changed) == 2
    assert "calibrate.levels: 3 there, 4 now" in capsys.readouterr().err


def test_a_killed_calibration_resumes_from_its_saved_answers(tiny_offline, tmp_path, monkeypatch):
    output = tmp_path / "calibrated"
    assert main(calibrate_command(tiny_offline / "train", output)) == 0
    fitted = json.loads((output / "calibration.json").read_text())
    for name in ("metrics.json", "calibration.json"):  # as if killed after its last shard
        (output / name).unlink()

    def no_generation(*args, **kwargs):
        raise AssertionError("a saved shard was generated again")

    monkeypatch.setattr("ric.models.generation.generate_with_stats", no_generation)
    assert main(calibrate_command(tiny_offline / "train", output)) == 0
    assert (
        json.loads((output / "calibration.json").read_text())["calibration"]
        == (fitted["calibration"])
    )


def test_calibrate_refuses_a_baseline_and_bad_settings(tiny_offline, tmp_path, capsys):
    sft = edited_run(tiny_offline / "train", tmp_path / "sft")
    write_method(sft, "sft")
    assert main(calibrate_command(sft, tmp_path / "out")) == 2
    assert "sft baseline, which takes no rewards" in capsys.readouterr().err
    assert not (tmp_path / "out" / "metrics.json").exists()
    bad = [
        *calibrate_command(tiny_offline / "train", tmp_path / "x"),
        "--set",
        "calibrate.levels=1",
    ]
    assert main(bad) == 2
    assert "calibrate.levels must be >= 2, got 1" in capsys.readouterr().err
    assert main(calibrate_command(tiny_offline / "train", tiny_offline / "train")) == 2
    assert "is the model's own folder" in capsys.readouterr().err


def test_generate_and_map_ask_a_calibrated_run_for_obtained_rewards(
    tiny_calibrated, tmp_path, capsys
):
    run = calibrated_copy(tiny_calibrated, tmp_path / "cal")  # obtains half of what it is asked
    ask = ["generate", "--model", str(run), "--prompt", "Why is the sky blue?", *GENERATION]
    assert main([*ask, "--rewards-obtained", "0.5,-0.25"]) == 0
    record = last_json(capsys)
    assert record["desired_rewards"] == pytest.approx([1.0, -0.5])
    assert record["promised_rewards"] == pytest.approx([0.5, -0.25])
    assert "<R1> 1.0 <R2> -0.5" in record["conditioned_prompt"]
    assert main([*ask, "--preference", "0.3,0.7"]) == 0
    mapped = last_json(capsys)
    assert main(["map", "--model", str(run), "--preference", "0.3,0.7"]) == 0
    shown = last_json(capsys)
    assert shown["method"] == "calibrated"
    assert shown["desired_rewards"] == pytest.approx(mapped["desired_rewards"])
    np.testing.assert_allclose(shown["promised_rewards"], np.array(shown["desired_rewards"]) / 2)
    assert main(["map", "--model", str(run), "--rewards-obtained", "0.5,-0.25"]) == 0
    assert last_json(capsys)["desired_rewards"] == pytest.approx([1.0, -0.5])
    assert main([*ask, "--rewards-obtained", "50,0"]) == 2
    error = capsys.readouterr().err
    assert "--rewards-obtained [50.0, 0.0] is beyond this model's reach" in error
    assert main([*ask, "--rewards-obtained", "0,0", "--preference", "0.5,0.5"]) == 2
    assert "exactly one of --preference" in capsys.readouterr().err


def test_an_uncalibrated_run_says_how_to_calibrate(tiny_offline, capsys):
    train = tiny_offline / "train"
    ask = ["generate", "--model", str(train), "--prompt", "q", *GENERATION]
    assert main([*ask, "--rewards-obtained", "0,0"]) == 2
    assert "ric calibrate --model RUN --output DIR" in capsys.readouterr().err
    assert main([*ask, "--preference", "0.5,0.5", "--set", "mapping.method=calibrated"]) == 2
    assert "has no calibration" in capsys.readouterr().err


def test_evaluate_writes_the_steering_card(tiny_calibrated, tiny_offline, tmp_path, capsys):
    run = calibrated_copy(tiny_calibrated, tmp_path / "cal")
    out = tmp_path / "eval"
    evaluate = ["evaluate", "--model", str(run), "--prompts", str(EXAMPLES), "--no-progress"]
    settings = overrides(
        "evaluate.num_prompts=2", "evaluate.obtained_targets=2", "evaluate.resamples=50"
    )
    assert main([*evaluate, "--output", str(out), *settings, *GENERATION]) == 0
    line = [row for row in capsys.readouterr().out.splitlines() if "steering card" in row]
    assert line and line[0].startswith("steering card (calibrated): calibration error")
    metrics = json.loads((out / "metrics.json").read_text())
    card = metrics["steering_card"]
    summary = pd.read_csv(out / "summary.csv")
    desired = summary[["desired_verbosity", "desired_positivity"]].to_numpy()
    obtained = summary[["mean_standardized_verbosity", "mean_standardized_positivity"]].to_numpy()
    np.testing.assert_allclose(card["promised_rewards"], desired / 2)  # the known calibration
    assert card["calibration_error_sd"] == pytest.approx(np.abs(obtained - desired / 2).mean())
    assert card["distinct_points"] == 11 and card["points"] == 11
    assert card["distinct_by_objective"] == {"verbosity": 11, "positivity": 11}
    assert set(card["side_effects"]) == {"verbosity", "positivity"}
    probe = metrics["probe"]
    for name in ("verbosity", "positivity"):  # the diagonal of the side effects is the probe
        assert card["side_effects"][name][name] == pytest.approx(probe[name]["difference_sd"])
    check = card["obtained_targets"]
    assert len(check["targets"]) == 4  # 2 x 2 inside the reach
    np.testing.assert_allclose(check["desired"], np.array(check["targets"]) * 2)
    checked = pd.read_parquet(out / "obtained_samples.parquet")
    assert len(checked) == 4 * 2
    assert {"calibration.png", "report.md"} <= {p.name for p in out.iterdir()}
    assert "## Steering card" in (out / "report.md").read_text()
    # An uncalibrated run promises its desired rewards (the paper's assumption).
    plain = tmp_path / "plain"
    evaluate[2] = str(tiny_offline / "train")
    assert main([*evaluate, "--output", str(plain), *settings[:2], *GENERATION]) == 0
    card = json.loads((plain / "metrics.json").read_text())["steering_card"]
    assert card["mapping"] == "p_inf" and "obtained_targets" not in card
    plain_summary = pd.read_csv(plain / "summary.csv")
    np.testing.assert_allclose(
        card["promised_rewards"],
        plain_summary[["desired_verbosity", "desired_positivity"]].to_numpy(),
    )
    # p_inf asks for an objective's top value at every w_i >= 1/2: 6 distinct values of 11.
    assert card["distinct_by_objective"] == {"verbosity": 6, "positivity": 6}


def test_online_from_a_calibrated_run_trains_weights_that_need_a_new_calibration(
    tiny_calibrated, tmp_path, capsys
):
    out = tmp_path / "online"
    online = ["online", "--model", str(tiny_calibrated), "--output", str(out), "--no-progress"]
    settings = overrides(
        "online.samples=4", "online.max_steps=1", "lora.r=4", "lora.alpha=8", *TINY_CALIBRATION
    )
    assert main([*online, *settings]) == 0
    iteration = out / "iter-01"
    assert not (iteration / "calibration.json").exists()
    ask = ["generate", "--model", str(iteration), "--prompt", "q", "--preference", "0.5,0.5"]
    assert main([*ask, *GENERATION]) == 2
    assert "has no calibration" in capsys.readouterr().err
    assert main([*calibrate_command(iteration, tmp_path / "again")]) == 0
    assert main([*ask[:2], str(tmp_path / "again"), *ask[3:], *GENERATION]) == 0


def test_a_calibrated_run_and_its_weights_are_probed_once(
    tiny_calibrated, tiny_offline, tmp_path, monkeypatch
):
    import ric.evaluation.sweep as sweep_module
    from ric.config import load_config
    from ric.data.sources import read_prompts
    from ric.evaluation.compare import evaluate_models
    from ric.evaluation.probe import asks_the_same
    from ric.evaluation.sweep import recorded_probe
    from ric.steering import Steering

    probed = []
    real_probe = sweep_module.behaviour_probe

    def counted_probe(*args, **kwargs):
        probed.append(args[0].folder)
        return real_probe(*args, **kwargs)

    monkeypatch.setattr(sweep_module, "behaviour_probe", counted_probe)
    config = load_config(
        tiny_offline / "train" / "config.yaml",
        [
            f"evaluate.prompts={EXAMPLES}",
            "evaluate.num_prompts=2",
            "evaluate.resamples=0",
            "evaluate.sensitivity_samples=0",
            *GENERATION[1::2],  # the settings, without their --set flags
        ],
    )
    models = {"plain": tiny_offline / "train", "calibrated": tiny_calibrated}
    evaluate_models(models, config, tmp_path / "compared", show_progress=False)
    assert len(probed) == 1  # the calibrated run reused the probe of the weights it uses
    plain, calibrated = tmp_path / "compared" / "plain", tmp_path / "compared" / "calibrated"
    pd.testing.assert_frame_equal(
        pd.read_parquet(plain / "probe_samples.parquet"),
        pd.read_parquet(calibrated / "probe_samples.parquet"),
    )
    assert (
        json.loads((calibrated / "metrics.json").read_text())["probe"]
        == json.loads((plain / "metrics.json").read_text())["probe"]
    )
    # A probe stands in for another only when it asked the same prompts at the same targets.
    probe = recorded_probe(plain)
    steering = Steering.for_run(load_trained(tiny_offline / "train"), config.mapping)
    prompts = read_prompts(str(EXAMPLES), "prompt", 2)
    assert asks_the_same(probe, steering, prompts)
    assert not asks_the_same(probe, steering, prompts[:1])
    assert not asks_the_same(probe, steering, [prompts[0], "Another question?"])
    assert recorded_probe(tmp_path) is None
