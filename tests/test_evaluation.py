"""Evaluation pieces without a model: grids, steerability, front summary, plot and report."""

import numpy as np
import pytest

from ric.config import load_config
from ric.evaluation.grid import PAPER_GRID_3, resolve_grid, simplex_lattice
from ric.evaluation.metrics import front_summary, rank_correlation, steerability
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
    from ric.core import RewardStats

    w = resolve_grid(2)
    stats = RewardStats.fit(np.random.default_rng(0).normal(size=(50, 2)), ["a", "b"])
    result = SweepResult(stats, 4, w, w * 4 - 2, w, w, samples=None, probe=None)
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
            }
            for name, low, high in (("a", 0.5, 0.75), ("b", -30.0, -12.0))
        },
    }
    text = write_report(tmp_path, metrics, summary, load_config()).read_text()
    assert "![front](front.png)" in text
    assert "## Behavioural probe" in text and "| b | -2.00 / +2.00 | -30 | -12 | +1.25 |" in text
    assert "| w_a | w_b |" in text and text.count("\n| 0.") >= 10
    assert '"temperature": 0.7' in text
