"""`ric map` and `ric config` through the real entry point."""

import json
import runpy
import subprocess
import sys

import pytest

from ric.cli import main


def _last_json(text):
    return json.loads(text.strip().splitlines()[-1])


def test_map_issue_example(capsys):
    code = main(
        ["map", "--preference", "0.2,0.8", "--method", "p_inf", "--r-min=-4,-4", "--r-max=4,4"]
    )
    assert code == 0
    result = _last_json(capsys.readouterr().out)
    assert result["desired_rewards"] == pytest.approx([-0.8, 4.0])
    assert result["method"] == "p_inf"


def test_map_convex_with_p_inf(capsys):
    """docs/commands.md's `--p inf`: the flag's float reaches mapping.p as a float, not as text."""
    code = main(
        [
            "map",
            "--preference",
            "0.6,0.4",
            "--method",
            "convex",
            "--p",
            "inf",
            "--r-min=-4,-4",
            "--r-max=4,4",
        ]
    )
    assert code == 0
    result = _last_json(capsys.readouterr().out)
    assert result["p"] == "inf" and result["method"] == "convex"  # strict JSON: no Infinity
    # p = inf, lam = 1: the box constraint alone, both objectives at r_max (ordered: w_1 >= w_2)
    assert result["desired_rewards"] == pytest.approx([4.0, 4.0])


def test_map_p_norm_with_lambda(capsys):
    main(
        [
            "map",
            "--preference",
            "0.5,0.5",
            "--method",
            "p_norm",
            "--p",
            "2",
            "--lam",
            "1,2",
            "--r-min=0,0",
            "--r-max=1,1",
        ]
    )
    result = _last_json(capsys.readouterr().out)
    assert result["desired_rewards"] == pytest.approx([2 / 5**0.5, 0.5 / 5**0.5])


def test_map_default_range_is_seeded_normal_and_prints_prompt(capsys):
    main(["map", "--preference", "1,0", "--prompt", "Hi <R2> 9"])
    result = _last_json(capsys.readouterr().out)
    r_min, r_max = result["r_min"], result["r_max"]
    assert r_max[0] > 3.5 and r_min[1] < -3.5
    assert result["desired_rewards"] == pytest.approx([r_max[0], r_min[1]])
    assert result["conditioned_prompt"].count("<R2>") == 1


def test_map_with_stats_file(tmp_path, capsys):
    import numpy as np

    from ric import RewardStats
    from ric.data.io import save_stats

    raw = np.random.default_rng(0).normal(size=(200, 3))
    save_stats(RewardStats.fit(raw, ["a", "b", "c"]), tmp_path / "stats.json")
    main(
        [
            "map",
            "--preference",
            "0.2,0.3,0.5",
            "--stats",
            str(tmp_path),
            "--set",
            "mapping.range_source=quantile",
        ]
    )
    result = _last_json(capsys.readouterr().out)
    assert result["names"] == ["a", "b", "c"]
    z = (raw - raw.mean(0)) / raw.std(0)
    assert result["r_max"] == pytest.approx(z.max(0).tolist())


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--preference", "0.5,0.6"], "sum to 1"),
        (
            ["--preference", "0.5,0.5", "--r-min=-4,-4,-4"],
            "preference has 2 weights but r_min has shape (3,)",
        ),
        (["--preference", "0.5,0.5", "--method", "p_norm", "--p", "0.5"], "p must be > 1"),
        (["--preference", "0.5,0.5", "--stats", "missing.json"], "missing.json"),
    ],
)
def test_map_errors_are_one_line(args, message, capsys):
    assert main(["map", *args]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


@pytest.mark.slow
def test_console_script_runs():
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "ric.cli",
            "map",
            "--preference",
            "0.3,0.7",
            "--method",
            "linear",
            "--r-min=0,0",
            "--r-max=10,10",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert _last_json(out.stdout)["desired_rewards"] == pytest.approx([3.0, 7.0])


@pytest.mark.parametrize("module", ["ric", "ric.cli"])
def test_python_m_runs_the_command_and_exits_with_its_status(module, monkeypatch, capsys):
    """`python -m ric` and `python -m ric.cli` (the process above), run in this process."""
    linear = ["--method", "linear", "--r-min=0,0", "--r-max=10,10"]
    monkeypatch.setattr(sys, "argv", [module, "map", "--preference", "0.3,0.7", *linear])
    with pytest.raises(SystemExit) as end:
        runpy.run_module(module, run_name="__main__")
    assert end.value.code == 0
    assert _last_json(capsys.readouterr().out)["desired_rewards"] == pytest.approx([3.0, 7.0])
    monkeypatch.setattr(sys, "argv", [module, "map", "--preference", "0.5,0.6", *linear])
    with pytest.raises(SystemExit) as end:
        runpy.run_module(module, run_name="__main__")
    assert end.value.code == 2
    assert "sum to 1" in capsys.readouterr().err


def test_config_fields_lists_docs(capsys):
    main(["config", "--fields"])
    out = capsys.readouterr().out
    assert "label.shard_size" in out and "rows scored and saved per shard" in out
