"""`ric demo --smoke`: the whole pipeline, offline and online, on the tiny model."""

import json

import pytest

from ric.cli import main
from ric.config import load_config
from ric.recipes.demo import DEMO_CONFIG, demo_config, generating_config
from ric.runtime import native_bfloat16
from ric.tasks import HELDOUT_QUESTIONS, TRAIN_PAIRS


def test_shipped_task_data():
    pairs = [json.loads(line) for line in TRAIN_PAIRS.read_text().splitlines()]
    heldout = [json.loads(line)["prompt"] for line in HELDOUT_QUESTIONS.read_text().splitlines()]
    assert len(pairs) >= 800 and {"prompt", "response"} <= set(pairs[0])
    assert not set(heldout) & {pair["prompt"] for pair in pairs}  # held out means unseen
    assert TRAIN_PAIRS.stat().st_size < 20_000_000
    # every row says whether it finished; sentence cuts are finished answers by construction
    assert all(isinstance(pair["finished"], bool) for pair in pairs)
    assert all(pair["finished"] for pair in pairs if pair["sentences"] > 0)
    assert sum(pair["finished"] for pair in pairs) >= 1000
    assert load_config(DEMO_CONFIG).rewards


@pytest.mark.slow
def test_demo_smoke_runs_every_stage(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--smoke", "--output", str(out), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert str(out / "evaluate" / "report.md") in printed
    assert "online 1 p_inf: hypervolume" in printed
    assert "asked low vs high moves relevance" in printed
    assert "(95% interval" in printed.split("asked low vs high moves relevance")[1]
    first = next(line for line in printed.splitlines() if line.startswith("online 1 p_inf:"))
    assert "minus online 1 calibrated:" in first  # the paired gap to the last model
    mappings = {"online-1-p_inf": "p_inf", "online-1-calibrated": "calibrated"}
    for model, mapping in mappings.items():
        metrics = json.loads((out / "evaluate" / model / "metrics.json").read_text())
        assert metrics["objectives"] == ["relevance", "conciseness"]
        assert metrics["num_preferences"] == 11
        assert set(metrics["probe"]) == {"relevance", "conciseness"}
        assert metrics["mapping"]["method"] == mapping
        assert metrics["steering_card"]["mapping"] == mapping
    calibration = json.loads((out / "calibrated" / "calibration.json").read_text())
    assert calibration["design"]["points"] == 9  # the smoke design: 3 x 3 levels
    assert (out / "calibrated" / calibration["model"]).resolve() == (
        out / "online" / "iter-01"
    ).resolve()
    train = json.loads((out / "train" / "metrics.json").read_text())
    first_rows = [json.loads(line) for line in TRAIN_PAIRS.read_text().splitlines()[:48]]
    finished = sum(row["finished"] for row in first_rows)
    assert 0 < finished < 48  # the unfinished ones are left out
    assert train["steps"] == 10 and train["samples"] == finished
    online = json.loads((out / "online" / "iter-01" / "metrics.json").read_text())
    assert online["generated"] == 8 and online["steps"] == 3
    assert "online 1 calibrated" in (out / "evaluate" / "report.md").read_text()
    timing = json.loads((out / "demo.json").read_text())
    assert timing["smoke"] is True and timing["seconds"]["total"] > 0
    # Calibration and sweeps generate in bfloat16 where the CPU computes in it; training not.
    dtype = "bfloat16" if native_bfloat16("cpu") else "float32"
    assert timing["generation_dtype"] == dtype and f"with {dtype} weights" in printed
    for stage in ("evaluate/online-1-p_inf", "evaluate/online-1-calibrated"):
        assert load_config(out / stage / "config.yaml").model.dtype == dtype
    assert load_config(out / "train" / "config.yaml").model.dtype == "float32"
    # The calibrated run uses iteration 1's weights: one probe serves both sweeps.
    probes = [out / "evaluate" / model / "probe_samples.parquet" for model in mappings]
    assert probes[0].read_bytes() == probes[1].read_bytes()

    # A rerun resumes: labels come from the cache, finished training, online iterations, the
    # calibration and the evaluations are not repeated (none of their files is written again).
    finished = [
        out / "train" / "metrics.json",
        out / "online" / "iter-01" / "metrics.json",
        out / "calibrated" / "metrics.json",
        *(out / "evaluate" / model / "metrics.json" for model in mappings),
    ]
    written = [path.stat().st_mtime_ns for path in finished]
    assert main(["demo", "--smoke", "--output", str(out), "--no-progress"]) == 0
    assert [path.stat().st_mtime_ns for path in finished] == written


def test_a_chosen_dtype_applies_to_every_stage(tmp_path):
    chosen = ["model.dtype=float32"]
    config = demo_config(tmp_path, overrides=chosen)
    assert generating_config(config, chosen).model.dtype == "float32"
    generating = generating_config(config).model.dtype
    assert generating == ("bfloat16" if native_bfloat16("cpu") else "float32")
    assert config.model.dtype == "float32"  # training's weights stay float32
