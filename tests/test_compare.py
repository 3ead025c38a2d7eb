"""`ric compare --smoke`: RiC against base, SFT, MORLHF and Rewarded Soups on the tiny model."""

import json

import pandas as pd
import pytest

from ric.cli import main
from ric.recipes.demo import demo_config
from ric.recipes.method_comparison import COST_TABLE


@pytest.fixture(scope="module")
def compared(tmp_path_factory):
    out = tmp_path_factory.mktemp("compare")
    assert main(["compare", "--smoke", "--output", str(out), "--no-progress"]) == 0
    return out


def seconds_of(run):
    seconds = json.loads((run / "metrics.json").read_text())["seconds"]
    return sum(seconds.values()) if isinstance(seconds, dict) else seconds


@pytest.mark.slow
def test_every_method_is_evaluated_on_the_same_reference(compared):
    table = pd.read_csv(compared / "evaluate" / "comparison.csv")
    assert table["label"].tolist() == [
        "base",
        "SFT",
        "MORLHF",
        "Rewarded Soups",
        "RiC offline",
        "RiC online 1",
    ]
    assert table["points"].tolist() == [1, 1, 3, 11, 11, 11]
    # each front's 95% interval over resampled prompts; a one-model front's is its evaluation's
    assert (table["hypervolume_low"] <= table["hypervolume_high"]).all()
    offline = json.loads((compared / "evaluate" / "RiC-offline" / "metrics.json").read_text())
    row = table[table.label == "RiC offline"].iloc[0]
    assert [row.hypervolume_low, row.hypervolume_high] == pytest.approx(
        offline["intervals"]["hypervolume"]
    )
    assert table["minus_last_low"].iloc[-1] == table["minus_last_high"].iloc[-1] == 0.0
    # the probe's move and its standard error, for the models that are asked for rewards
    moves = [column for column in table.columns if column.startswith("probe_sd_")]
    errors = [column.replace("_sd_", "_se_") for column in moves]
    assert moves and set(errors) <= set(table.columns)
    conditioned = table.label.str.startswith("RiC")
    assert (table[conditioned][errors] >= 0).all().all()
    assert table[~conditioned][errors].isna().all().all()
    references = {
        json.dumps(json.loads(path.read_text())["front"]["reference"])
        for path in (compared / "evaluate").rglob("metrics.json")
    }
    assert len(references) == 1 and len(list((compared / "evaluate").rglob("metrics.json"))) == 8
    report = (compared / "evaluate" / "report.md").read_text()
    assert "![fronts](fronts.png)" in report and "## Cost" in report
    assert (compared / "evaluate" / "fronts.png").stat().st_size > 0


@pytest.mark.slow
def test_the_one_hot_rl_runs_serve_morlhf_and_the_soup(compared):
    assert sorted(p.name for p in (compared / "rl").iterdir()) == ["w-0-1", "w-0.5-0.5", "w-1-0"]
    soup = json.loads((compared / "soups" / "method.json").read_text())
    assert soup["members"] == ["../rl/w-1-0", "../rl/w-0-1"] and soup["init"] == "../sft"


@pytest.mark.slow
def test_the_cost_table_adds_up_the_recorded_seconds(compared):
    costs = pd.read_csv(compared / "evaluate" / COST_TABLE).set_index("method")
    sft = seconds_of(compared / "sft")
    rl = {w: seconds_of(compared / "rl" / w) for w in ("w-1-0", "w-0-1", "w-0.5-0.5")}
    offline = seconds_of(compared / "train")
    online = seconds_of(compared / "online" / "iter-01")
    assert costs.loc["MORLHF (3 preferences)", "seconds"] == pytest.approx(sft + sum(rl.values()))
    soups = sft + rl["w-1-0"] + rl["w-0-1"]
    assert costs.loc["Rewarded Soups (2 rewards)", "seconds"] == pytest.approx(soups)
    assert costs.loc["RiC + 1 online", "seconds"] == pytest.approx(offline + online)
    ratio = (offline + online) / (sft + sum(rl.values()))
    assert costs.loc["RiC + 1 online", "relative_to_morlhf"] == pytest.approx(ratio)
    assert costs["device"].str.startswith(("cpu", "cuda")).all()


@pytest.mark.slow
def test_a_rerun_trains_and_evaluates_nothing_again(compared):
    watched = [
        compared / "sft" / "metrics.json",
        compared / "rl" / "w-0.5-0.5" / "metrics.json",
        compared / "evaluate" / "Rewarded-Soups" / "metrics.json",
        compared / "evaluate" / "MORLHF" / "w-1-0" / "metrics.json",
    ]
    stamps = [path.stat().st_mtime_ns for path in watched]
    assert main(["compare", "--smoke", "--output", str(compared), "--no-progress"]) == 0
    assert [path.stat().st_mtime_ns for path in watched] == stamps


def test_a_config_file_is_laid_over_the_embedded_task(tmp_path):
    layer = tmp_path / "bigger.yaml"
    layer.write_text("train:\n  max_steps: 7\nbaseline:\n  preferences: [[0.2, 0.8]]\n")
    config = demo_config(tmp_path / "out", layer=layer)
    assert config.train.max_steps == 7 and config.train.batch_size == 8  # merged, not replaced
    assert config.baseline.preferences == [[0.2, 0.8]]
    assert config.train.output == str(tmp_path / "out" / "train")
    with pytest.raises(ValueError, match="does not exist"):
        demo_config(tmp_path / "out", layer=tmp_path / "missing.yaml")


def test_a_gap_between_fronts_is_resampled_pairwise():
    """Two one-point fronts on the same 3 prompts: B = A with 1 more of the first objective on
    every prompt, the second objective 2 everywhere. Each hypervolume (x * 2 against (0, 0))
    varies with the prompts drawn, but B's minus A's is 2 in every draw: paired, the prompts'
    spread cancels and the gap's interval is exact."""
    import numpy as np

    from ric.evaluation.compare import hypervolume_intervals

    a = np.array([[[1.0, 2.0], [4.0, 2.0], [7.0, 2.0]]])  # (K=1, P=3, N=2)
    b = a + np.array([1.0, 0.0])
    (a_interval, a_gap), (_, b_gap) = hypervolume_intervals([a, b], [0.0, 0.0], 500)
    assert a_interval[0] < 4.0 and a_interval[1] > 12.0  # 2x..14x
    assert a_gap == pytest.approx([-2.0, -2.0])
    assert b_gap == [0.0, 0.0]
