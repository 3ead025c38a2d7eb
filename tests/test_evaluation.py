"""Evaluation pieces without a model: grids, steerability, front summary, plot and report."""

import numpy as np
import pytest

from ric.config import load_config
from ric.core import hypervolume
from ric.evaluation.grid import PAPER_GRID_3, resolve_grid, simplex_lattice
from ric.evaluation.metrics import (
    front_summary,
    rank_correlation,
    resampled_intervals,
    steerability,
)
from ric.evaluation.plots import format_preference, plot_fronts
from ric.evaluation.report import write_report
from ric.evaluation.sweep import SweepResult, summary_table


def test_paper_grid_two_objectives_is_eleven_points():
    grid = resolve_grid(2)
    np.testing.assert_allclose(grid[:, 0], np.linspace(0, 1, 11))
    np.testing.assert_allclose(grid.sum(axis=1), 1)


def test_paper_grid_three_objectives_is_the_papers_thirteen():
    grid = resolve_grid(3)
    assert len(grid) == 13 == len(PAPER_GRID_3)
    assert [1.0, 0.0, 0.0] in grid.tolist() and [0.1, 0.8, 0.1] in grid.tolist()


@pytest.mark.parametrize(("n", "d", "count"), [(2, 4, 5), (3, 2, 6), (4, 2, 10), (5, 3, 35)])
def test_simplex_lattice_counts(n, d, count):
    # C(d + n - 1, n - 1) points, each on the simplex.
    lattice = simplex_lattice(n, d)
    assert len(lattice) == count == len(set(lattice))
    assert all(abs(sum(w) - 1) < 1e-12 for w in lattice)


def test_any_number_of_objectives_has_a_grid():
    for n in (4, 5, 7):
        assert resolve_grid(n).shape[1] == n


def test_explicit_grid_is_validated():
    assert resolve_grid(2, "explicit", explicit=[[0.3, 0.7]]).tolist() == [[0.3, 0.7]]
    with pytest.raises(ValueError, match="sum to 1"):
        resolve_grid(2, "explicit", explicit=[[0.3, 0.6]])
    with pytest.raises(ValueError, match="unknown grid kind"):
        resolve_grid(2, "spiral")


def test_rank_correlation_hand_values():
    assert rank_correlation(np.array([1, 2, 3]), np.array([10, 20, 30])) == pytest.approx(1)
    assert rank_correlation(np.array([1, 2, 3]), np.array([3, 1, 2])) == pytest.approx(-0.5)
    assert rank_correlation(np.array([1, 1, 1]), np.array([1, 2, 3])) is None


def test_steerability_reads_the_papers_figure_two():
    w = resolve_grid(2)
    obtained = np.c_[w[:, 0] ** 2, 1 - w[:, 0]]  # r_1 rises with w_1, r_2 falls
    result = steerability(w, w, obtained, ["a", "b"])
    assert result["a"]["w1_vs_obtained"] == pytest.approx(1)
    assert result["b"]["w1_vs_obtained"] == pytest.approx(-1)
    assert result["b"]["weight_vs_obtained"] == pytest.approx(1)


def test_front_summary_hypervolume_and_dominance():
    points = np.array([[1.0, 2.0], [2.0, 1.0], [0.5, 0.5]])
    summary = front_summary(points, np.zeros(2))
    assert summary["hypervolume"] == pytest.approx(3.0)
    assert summary["non_dominated"] == [True, True, False]


def test_preference_labels():
    assert format_preference(np.array([0.3, 0.7])) == "0.3"
    assert format_preference(np.array([0.2, 0.4, 0.4])) == "(0.2,0.4,0.4)"


@pytest.mark.parametrize("n", [2, 3])
def test_plot_is_a_png(tmp_path, n):
    grid = resolve_grid(n)
    path = plot_fronts({"RiC": (grid, grid * 2)}, [f"r{i}" for i in range(n)], tmp_path / "f.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert path.stat().st_size > 10_000


def test_report_holds_plot_tables_and_settings(tmp_path):
    from ric.config import MappingConfig
    from ric.core import RewardStats
    from ric.steering import Steering

    w = resolve_grid(2)
    stats = RewardStats.fit(np.random.default_rng(0).normal(size=(50, 2)), ["a", "b"])
    steering = Steering.for_stats(stats, MappingConfig())
    prompts = ["q1", "q2", "q3", "q4"]
    result = SweepResult(
        stats, prompts, w, w * 4 - 2, w, w, samples=None, probe=None, steering=steering
    )
    summary = summary_table(result, ["a", "b"])
    assert list(summary.columns[:2]) == ["w_a", "w_b"] and len(summary) == 11
    metrics = {
        "model": "run",
        "num_prompts": 4,
        "num_preferences": 11,
        "front": front_summary(w, np.zeros(2) - 1),
        "steerability": steerability(w, w, w, ["a", "b"]),
        "probe": {
            name: {
                "desired_low": -2.0,
                "desired_high": 2.0,
                "obtained_low_raw": low,
                "obtained_high_raw": high,
                "difference_sd": 1.25,
                "difference_se": error,
            }
            for name, low, high, error in (("a", 0.5, 0.75, None), ("b", -30.0, -12.0, 0.25))
        },
    }
    metrics["intervals"] = {
        "resamples": 1000,
        "hypervolume": [0.5, 1.5],
        "w1_vs_obtained": {"a": [0.9, 1.0], "b": None},
    }
    text = write_report(tmp_path, metrics, summary, load_config()).read_text()
    assert "![front](front.png)" in text
    assert "**3.45** (95% interval 0.5 to 1.5) against reference point" in text
    assert "| a | +1.00 | +1.00 | +1.00 (95% interval +0.90 to +1.00) |" in text
    assert "| b | +1.00 | +1.00 | -1.00 |" in text
    assert "resample the 4 held-out prompts 1000 times" in text
    assert "## Behavioural probe" in text
    assert "| a | -2.00 / +2.00 | 0.5 | 0.75 | +1.25 sd |" in text  # no standard error known
    # 1.25 +- 1.96 x 0.25
    assert "| b | -2.00 / +2.00 | -30 | -12 | +1.25 sd (95% interval +0.76 to +1.74) |" in text
    assert "| w_a | w_b |" in text and text.count("\n| 0.") >= 10
    assert '"temperature": 0.7' in text


def test_resampled_intervals_by_hand():
    """Two prompts: a draw holds prompt 0 twice, prompt 1 twice, or one of each (probability
    1/4, 1/4, 1/2), so with enough draws the resampled hypervolumes run from the lowest of those
    three values to the highest, and the interval is that range reflected about the sweep's own
    value (the basic bootstrap interval, which takes off the bias the answers' noise adds)."""
    preferences = np.array([[0.0, 1.0], [0.5, 0.5], [1.0, 0.0]])
    per_prompt = np.zeros((3, 2, 2))  # (preference, prompt, objective), raw
    per_prompt[:, 0] = [[1.0, 3.0], [2.0, 2.0], [3.0, 1.0]]  # prompt 0: a clean trade-off
    per_prompt[:, 1] = [[2.0, 2.0], [1.0, 3.0], [3.0, 1.0]]  # prompt 1: out of order
    reference = np.zeros(2)
    result = resampled_intervals(per_prompt, preferences, reference, ["r1", "r2"], 2000)
    values = [hypervolume(per_prompt[:, 0], reference), hypervolume(per_prompt[:, 1], reference)]
    both = hypervolume(per_prompt.mean(axis=1), reference)
    values.append(both)
    assert result["resamples"] == 2000
    assert result["hypervolume"] == pytest.approx([2 * both - max(values), 2 * both - min(values)])
    # mean r1 (1.5, 1.5, 3): preference 2 is above 0 and 1 in every draw (by 1 to 2), 0 and 1
    # change places between draws, so the noise-free order is (0, 1, 2) or (1, 0, 2): +1 or +0.5
    assert result["w1_vs_obtained"]["r1"] == pytest.approx([0.5, 1.0])
    assert result["w1_vs_obtained"]["r2"] == pytest.approx([-1.0, -0.5])
    # the same answers to every prompt: no noise, the intervals are the point values
    same = np.repeat(per_prompt[:, :1], 5, axis=1)
    flat = resampled_intervals(same, preferences, reference, ["r1", "r2"], 50)
    assert flat["hypervolume"] == pytest.approx([values[0], values[0]])
    assert flat["w1_vs_obtained"]["r1"] == pytest.approx([1.0, 1.0])
    # one preference: Spearman is undefined in every draw, so it has no interval
    single = resampled_intervals(per_prompt[:1], preferences[:1], reference, ["r1", "r2"], 50)
    assert single["w1_vs_obtained"] == {"r1": None, "r2": None}
    # 1 x 3 and 2 x 2 alone, 1.5 x 2.5 = 3.75 with both: 2 x 3.75 - (4, 3)
    assert single["hypervolume"] == pytest.approx([3.5, 4.5])


def test_resampled_spearman_is_scipys_rank_correlation_row_by_row():
    from ric.evaluation.metrics import _rank_correlations

    asked = np.array([0.0, 0.1, 0.2, 0.3, 0.5, 0.5, 0.7, 1.0])  # a tie, as grids can have
    obtained = np.random.default_rng(1).integers(0, 4, size=(200, 8)).astype(float)  # ties
    obtained[0] = 2.0  # a constant row: undefined
    expected = [rank_correlation(asked, row) for row in obtained]
    expected_values = np.array([np.nan if rho is None else rho for rho in expected])
    np.testing.assert_allclose(_rank_correlations(asked, obtained), expected_values)
    assert np.isnan(_rank_correlations(np.full(8, 0.5), obtained)).all()  # asked is constant
