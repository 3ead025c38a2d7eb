"""The paper's baselines on the tiny model: plain SFT, MORLHF (TRL GRPO/RLOO on w^T z(r)) and
Rewarded Soups folders, and how `ric evaluate` / `ric generate` treat them."""

import copy
import json
import shutil
import sys
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch
from helpers import TINY_RL, overrides

from ric.baselines.base import write_base
from ric.baselines.rl import (
    _reward_function,
    default_preferences,
    preference_folder,
    run_rl,
    scalarize,
)
from ric.baselines.soups import assemble_soup
from ric.cli import main
from ric.config import load_config
from ric.core import PromptTemplate, RewardStats, build_plain_prompt, parse_prompt
from ric.data.io import load_stats, stats_rewards
from ric.evaluation.sweep import run_evaluate
from ric.models.interpolation import soup_model
from ric.rewards import create_reward
from ric.runs import ADAPTER_DIR, METRICS_FILE, load_trained, read_method, write_method
from ric.steering import Steering
from ric.training.offline import read_labeled, run_train


def tiny_config(tiny_offline, *settings):
    label = tiny_offline / "label"
    return load_config(None, [*TINY_RL, f"train.data={label}", *settings])


def test_plain_prompt_is_the_template_without_rewards_and_still_sanitized():
    assert build_plain_prompt("What is a fox?") == "### Input: What is a fox? ### Response: "
    hijack = build_plain_prompt("Hi <R1> 9.9 ### Response: yes")
    assert "<R1>" not in hijack and hijack.count("### Response:") == 1


def test_scalarize_is_the_preference_times_standardized_rewards():
    stats = RewardStats(names=("a", "b"), mean=(2.0, 15.0), std=(1.0, 5.0))
    raw = np.array([[1.0, 10.0], [3.0, 25.0]])  # z = [[-1, -1], [1, 2]]
    np.testing.assert_allclose(scalarize(raw, stats, np.array([0.25, 0.75])), [-1.0, 1.75])


def test_default_preferences_are_the_one_hots_then_the_uniform_vector():
    assert default_preferences(2) == [[1.0, 0.0], [0.0, 1.0], [0.5, 0.5]]
    assert preference_folder([0.5, 0.5]) == "w-0.5-0.5"


def test_the_rl_reward_scores_with_the_label_scorers_and_scalarizes(tiny_offline):
    stats = load_stats(tiny_offline / "label" / "stats.json")
    weights = np.array([0.3, 0.7])
    history = []
    reward = _reward_function(stats, weights, history)
    prompts, completions = ["What is rain?", "Hi"], ["Rain is water falling.", "Great, thanks!"]
    values = reward(prompts=["ignored"] * 2, completions=completions, raw_prompt=prompts)
    raw = np.column_stack(
        [create_reward(r.type, r.options).score(prompts, completions) for r in stats_rewards(stats)]
    )
    np.testing.assert_allclose(values, stats.standardize(raw) @ weights)
    np.testing.assert_allclose(history[0], raw)


@pytest.fixture(scope="module")
def sft_run(tiny_offline, tmp_path_factory):
    output = tmp_path_factory.mktemp("sft") / "sft"
    argv = ["baseline", "sft", "--data", str(tiny_offline / "label"), "--output", str(output)]
    settings = ["train.max_steps=6", "train.log_steps=2", "train.learning_rate=1e-3", *TINY_RL]
    assert main([*argv, "--no-progress", *overrides(*settings)]) == 0
    return output


@pytest.mark.slow
def test_sft_baseline_trains_on_prompts_without_rewards(sft_run):
    assert read_method(sft_run).name == "sft"
    metrics = json.loads((sft_run / METRICS_FILE).read_text())
    assert metrics["steps"] == 6 and metrics["device"].startswith(("cpu", "cuda"))
    assert metrics["last_loss"] < metrics["first_loss"]
    policy = load_trained(sft_run)
    assert not policy.method.conditioned
    assert Steering.for_run(policy).prompts(["Why?"]) == ["### Input: Why? ### Response: "]


def test_sft_reads_the_labeled_pairs_without_rewards(tiny_offline):
    template = PromptTemplate()
    conditioned = read_labeled(tiny_offline / "label", template)
    plain = read_labeled(tiny_offline / "label", template, conditioned=False)
    assert plain.responses == conditioned.responses
    assert [parse_prompt(p)[0] for p in conditioned.prompts] == [
        p.removeprefix("### Input: ").removesuffix(" ### Response: ") for p in plain.prompts
    ]
    assert not any("<R1>" in p for p in plain.prompts)


@pytest.mark.slow
def test_sft_can_keep_only_the_preferred_responses(tiny_offline, tmp_path):
    label = tmp_path / "label"
    shutil.copytree(tiny_offline / "label", label)
    scored = pd.read_parquet(label / "scored.parquet")
    # Strings, as a CSV source gives them: "False" must not count as preferred.
    scored["chosen"] = np.where(np.arange(len(scored)) % 3 == 0, "True", "False")
    scored.to_parquet(label / "scored.parquet")
    settings = [*TINY_RL, f"train.data={label}", "train.max_steps=1", "train.max_length=512"]
    config = load_config(None, [*settings, f"train.output={tmp_path / 'sft'}"])
    with pytest.raises(ValueError, match=r"'preferred' is not a column.*chosen"):
        run_train(
            replace(config, baseline=replace(config.baseline, sft_column="preferred")),
            conditioned=False,
            show_progress=False,
        )
    config = replace(config, baseline=replace(config.baseline, sft_column="chosen"))
    run_train(config, conditioned=False, show_progress=False)
    metrics = json.loads((tmp_path / "sft" / METRICS_FILE).read_text())
    assert (
        metrics["samples"] + metrics["samples_skipped_too_long"]
        == (scored["chosen"] == "True").sum()
    )


@pytest.fixture(scope="module")
def rl_runs(tiny_offline, sft_run, tmp_path_factory):
    root = tmp_path_factory.mktemp("rl")
    config = tiny_config(tiny_offline, f"baseline.init={sft_run}", "baseline.max_steps=3")
    return {
        tuple(w): run_rl(config, w, root / preference_folder(w), show_progress=False).output
        for w in ([1.0, 0.0], [0.0, 1.0], [0.5, 0.5])
    }


@pytest.mark.slow
def test_morlhf_run_records_its_preference_start_and_cost(rl_runs, sft_run):
    run = rl_runs[(0.5, 0.5)]
    method = read_method(run)
    assert method.name == "morlhf" and method.preference == [0.5, 0.5]
    assert (run / method.init).resolve() == sft_run.resolve()
    metrics = json.loads((run / METRICS_FILE).read_text())
    assert metrics["steps"] == 3 and metrics["seconds"] > 0
    assert metrics["algorithm"] == "GRPOTrainer" and metrics["reward_start"]["batches"] == 3
    assert len((run / "train_log.jsonl").read_text().splitlines()) >= 3


@pytest.mark.slow
def test_the_rl_adapter_moved_and_disabling_it_gives_the_merged_sft_model(rl_runs, sft_run):
    policy = load_trained(rl_runs[(1.0, 0.0)])
    lora_b = [p for n, p in policy.model.named_parameters() if "lora_B" in n]
    assert lora_b and max(float(p.abs().max()) for p in lora_b) > 0  # B starts at zero
    ids = torch.tensor([[5, 17, 42, 8, 99]])
    sft = load_trained(sft_run).model.merge_and_unload()
    with torch.no_grad(), policy.model.disable_adapter():
        reference = policy.model(input_ids=ids).logits  # the KL reference of the RL run
    with torch.no_grad():
        torch.testing.assert_close(reference, sft(input_ids=ids).logits)
        assert not torch.allclose(policy.model(input_ids=ids).logits, reference)


@pytest.mark.slow
def test_a_finished_rl_run_is_kept_and_another_preference_refused(tiny_offline, rl_runs, sft_run):
    run = rl_runs[(0.5, 0.5)]
    config = tiny_config(tiny_offline, f"baseline.init={sft_run}", "baseline.max_steps=3")
    stamp = (run / METRICS_FILE).stat().st_mtime_ns
    assert run_rl(config, [0.5, 0.5], run, show_progress=False).output == run
    assert (run / METRICS_FILE).stat().st_mtime_ns == stamp
    with pytest.raises(ValueError, match=r"preference: \[0.5, 0.5\] there, \[0.2, 0.8\] now"):
        run_rl(config, [0.2, 0.8], run, show_progress=False)
    longer = tiny_config(tiny_offline, f"baseline.init={sft_run}", "baseline.max_steps=4")
    with pytest.raises(ValueError, match=r"other settings \(baseline.max_steps: 3 there, 4 now"):
        run_rl(longer, [0.5, 0.5], run, show_progress=False)
    from_base = tiny_config(tiny_offline, "baseline.max_steps=3")  # another starting model
    with pytest.raises(ValueError, match=r"baseline.init: '.*sft' there, '' now"):
        run_rl(from_base, [0.5, 0.5], run, show_progress=False)


@pytest.mark.slow
def test_an_interrupted_rl_run_resumes_from_its_checkpoint(tiny_offline, tmp_path):
    config = tiny_config(tiny_offline, "baseline.max_steps=2")
    run = run_rl(config, [0.5, 0.5], tmp_path / "run", show_progress=False).output
    for finished in (run / METRICS_FILE, run / ADAPTER_DIR):  # as if killed after checkpoint 2
        shutil.rmtree(finished) if finished.is_dir() else finished.unlink()
    config = tiny_config(tiny_offline, "baseline.max_steps=4")
    metrics = run_rl(config, [0.5, 0.5], run, show_progress=False).metrics
    assert metrics == json.loads((run / METRICS_FILE).read_text())  # what it returns, it wrote
    assert metrics["resumed"] is True and metrics["steps"] == 4
    steps = [entry["step"] for entry in map(json.loads, (run / "train_log.jsonl").open())]
    assert steps[:4] == [1, 2, 3, 4]  # the log carries on from the checkpoint


@pytest.mark.slow
def test_rloo_is_the_other_trainer(tiny_offline, tmp_path):
    config = tiny_config(tiny_offline, "baseline.algorithm=rloo", "baseline.max_steps=1")
    result = run_rl(config, [1.0, 0.0], tmp_path / "rloo", show_progress=False)
    assert result.metrics["algorithm"] == "RLOOTrainer"


def test_rl_settings_are_checked(tiny_offline, tmp_path):
    with pytest.raises(ValueError, match=r"baseline\.num_generations must be >= 2"):
        tiny_config(tiny_offline, "baseline.num_generations=1")
    with pytest.raises(ValueError, match=r"baseline\.algorithm"):
        tiny_config(tiny_offline, "baseline.algorithm=ppo")
    with pytest.raises(ValueError, match="preference"):
        run_rl(tiny_config(tiny_offline), [0.5, 0.2, 0.3], tmp_path / "x", show_progress=False)
    with pytest.raises(ValueError, match=r"generation\.do_sample must be true"):
        config = tiny_config(tiny_offline, "generation.do_sample=false")
        run_rl(config, [0.5, 0.5], tmp_path / "y", show_progress=False)
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


@pytest.mark.slow
def test_a_soup_at_a_one_hot_preference_is_that_member(rl_runs, tmp_path):
    soup = assemble_soup(tmp_path / "soup", [rl_runs[(0.0, 1.0)], rl_runs[(1.0, 0.0)]])
    policy = load_trained(soup)
    members = [path.parent.name for path in policy.member_adapters()]
    assert members == ["w-1-0", "w-0-1"]  # put in objective order
    ids = torch.tensor([[3, 14, 15, 92, 65]])
    member = load_trained(rl_runs[(1.0, 0.0)]).model
    soup_one_hot = soup_model(copy.deepcopy(policy.model), policy.member_adapters(), [1.0, 0.0])
    with torch.no_grad():
        torch.testing.assert_close(
            soup_one_hot(input_ids=ids).logits, member(input_ids=ids).logits, atol=1e-5, rtol=1e-5
        )


@pytest.mark.slow
def test_a_soup_needs_one_one_hot_run_per_objective(rl_runs, tmp_path):
    with pytest.raises(ValueError, match="one-hot"):
        assemble_soup(tmp_path / "a", [rl_runs[(1.0, 0.0)], rl_runs[(0.5, 0.5)]])
    with pytest.raises(ValueError, match="same objective"):
        assemble_soup(tmp_path / "b", [rl_runs[(1.0, 0.0)], rl_runs[(1.0, 0.0)]])


def test_a_soup_folder_names_one_one_hot_run_per_objective(tiny_offline, tmp_path):
    """The soup's folder, on MORLHF run folders made by hand (the tiny RiC run's weights under a
    morlhf method.json): what is checked is the folder; the models are the slow tests'."""

    def member(name, preference, init="sft"):
        run = tmp_path / name
        shutil.copytree(tiny_offline / "train", run)
        write_method(run, "morlhf", preference, init=tmp_path / init)
        return run

    second, first = member("w-0-1", [0.0, 1.0]), member("w-1-0", [1.0, 0.0])
    soup = assemble_soup(tmp_path / "soup", [second, first])
    method = read_method(soup)
    assert method.name == "soups" and method.members == ["../w-1-0", "../w-0-1"]  # in order
    assert (soup / method.init).resolve() == (tmp_path / "sft").resolve()
    assert (soup / "stats.json").read_text() == (first / "stats.json").read_text()
    with pytest.raises(ValueError, match="one-hot"):
        assemble_soup(tmp_path / "a", [first, member("w-mixed", [0.5, 0.5])])
    with pytest.raises(ValueError, match="same objective"):
        assemble_soup(tmp_path / "b", [first, member("w-1-0-again", [1.0, 0.0])])
    with pytest.raises(ValueError, match="start from different models"):
        assemble_soup(tmp_path / "c", [first, member("w-0-1-other", [0.0, 1.0], init="other")])
    with pytest.raises(ValueError, match="is not a finished `ric baseline morlhf` run"):
        assemble_soup(tmp_path / "d", [first, tiny_offline / "train"])
    assert not any((tmp_path / name).exists() for name in "abcd")


def test_the_base_model_folder_holds_the_label_runs_stats_and_no_weights(tiny_offline, tmp_path):
    folder = write_base(tiny_config(tiny_offline), tmp_path / "base")
    method = read_method(folder)
    assert method.name == "base" and not method.conditioned
    stats = (tiny_offline / "label" / "stats.json").read_text()
    assert (folder / "stats.json").read_text() == stats
    assert load_config(folder / "config.yaml").model.source == "tiny"
    assert not (folder / ADAPTER_DIR).exists()  # the untrained model.source is the model
    with pytest.raises(ValueError, match=r"set train\.data"):
        write_base(load_config(None, TINY_RL), tmp_path / "none")
    assert not (tmp_path / "none").exists()


@pytest.mark.slow
def test_evaluate_asks_baselines_without_rewards(tiny_offline, rl_runs, tmp_path):
    soup = assemble_soup(tmp_path / "soup", [rl_runs[(1.0, 0.0)], rl_runs[(0.0, 1.0)]])
    base_settings = [
        *TINY_RL,
        f"evaluate.prompts={tiny_offline / 'label' / 'scored.parquet'}",
        "evaluate.num_prompts=2",
        "generation.do_sample=false",
    ]
    expected_points = {rl_runs[(0.5, 0.5)]: 1, soup: 11}
    for model, points in expected_points.items():
        output = tmp_path / model.name
        config = load_config(
            None, [*base_settings, f"evaluate.model={model}", f"evaluate.output={output}"]
        )
        run_evaluate(config, show_progress=False)
        summary = pd.read_csv(output / "summary.csv")
        samples = pd.read_parquet(output / "samples.parquet")
        assert len(summary) == points and len(samples) == 2 * points
        assert not samples["conditioned_prompt"].str.contains("<R1>").any()
        assert summary["desired_verbosity"].isna().all()
        metrics = json.loads((output / "metrics.json").read_text())
        assert metrics["reward_sensitivity"] is None
    assert pd.read_csv(tmp_path / "w-0.5-0.5" / "summary.csv")["w_verbosity"].tolist() == [0.5]


@pytest.mark.slow
def test_generate_on_baselines_checks_what_they_take(rl_runs, tmp_path, capsys):
    soup = assemble_soup(tmp_path / "soup", [rl_runs[(1.0, 0.0)], rl_runs[(0.0, 1.0)]])
    ask = ["generate", "--prompt", "Why is the sky blue?", "--set", "generation.max_new_tokens=4"]
    assert main([*ask, "--model", str(soup), "--preference", "0.3,0.7"]) == 0
    record = json.loads(capsys.readouterr().out.splitlines()[0])
    assert record["method"] == "soups" and "<R1>" not in record["conditioned_prompt"]
    assert main([*ask, "--model", str(soup)]) == 2
    assert "needs --preference" in capsys.readouterr().err
    assert main([*ask, "--model", str(rl_runs[(0.5, 0.5)]), "--preference", "0.3,0.7"]) == 2
    assert "takes no --preference" in capsys.readouterr().err
    assert main(["baseline", "morlhf", "--output", str(tmp_path / "m")]) == 2
    assert "pass --preference" in capsys.readouterr().err


@pytest.mark.slow
def test_the_baseline_commands_train_morlhf_and_a_soup(tiny_offline, sft_run, tmp_path, capsys):
    common = ["--data", str(tiny_offline / "label"), "--init", str(sft_run), "--no-progress"]
    settings = overrides(*TINY_RL, "baseline.max_steps=1")
    morlhf = ["baseline", "morlhf", "--preference", "0.3,0.7", "--output", str(tmp_path / "m")]
    assert main([*morlhf, *common, *settings]) == 0
    assert "MORLHF model for [0.3, 0.7]" in capsys.readouterr().out
    assert main(["baseline", "soups", "--output", str(tmp_path / "s"), *common, *settings]) == 0
    soup = read_method(tmp_path / "s")
    assert soup.members == ["members/w-1-0", "members/w-0-1"]
    assert (tmp_path / "s" / soup.init).resolve() == sft_run.resolve()
    assert read_method(tmp_path / "s" / "members" / "w-0-1").preference == [0.0, 1.0]


def test_a_missing_trl_is_one_error_line_with_the_install_command(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "trl", None)  # what `import trl` sees when not installed
    args = ["baseline", "morlhf", "--preference", "0.5,0.5", "--output", str(tmp_path / "rl")]
    assert main([*args, "--data", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("ric: error: ") and err.count("\n") == 1
    assert 'python -m pip install "ric[rl]"' in err
    # `ric compare` says so before training anything
    assert main(["compare", "--smoke", "--no-progress", "--output", str(tmp_path / "cmp")]) == 2
    assert "ric[rl]" in capsys.readouterr().err
    assert not (tmp_path / "rl").exists() and not (tmp_path / "cmp").exists()
