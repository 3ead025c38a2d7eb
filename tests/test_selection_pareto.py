"""MORS keep rule, thresholds, Pareto front and hypervolume against brute force."""

import itertools

import numpy as np
import pytest

from ric import hypervolume, mors_mask, pareto_front, pareto_mask, quantile_thresholds


def test_mors_keeps_samples_beating_any_threshold():
    rewards = np.array([[0.0, 0.0], [2.0, 0.0], [0.0, 2.0], [1.0, 1.0], [2.0, 2.0]])
    keep = mors_mask(rewards, np.array([1.0, 1.0]))
    # [1, 1] is at (not above) both thresholds: removed, like [0, 0].
    assert keep.tolist() == [False, True, True, False, True]


def test_quantile_thresholds_hand_computed():
    rewards = np.arange(11, dtype=float)[:, None] * np.array([1.0, -1.0])
    np.testing.assert_allclose(quantile_thresholds(rewards, 0.7), [7.0, -3.0])


def test_mors_with_q07_keeps_about_half_of_independent_data():
    rng = np.random.default_rng(0)
    rewards = rng.standard_normal((20000, 2))
    keep = mors_mask(rewards, quantile_thresholds(rewards, 0.7))
    assert keep.mean() == pytest.approx(1 - 0.7**2, abs=0.01)  # removed: below both


def test_mors_input_errors():
    with pytest.raises(ValueError, match=r"shape \(2,\)"):
        mors_mask(np.zeros((3, 2)), np.zeros(3))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        quantile_thresholds(np.zeros((3, 2)), 1.5)


def _dominates(a, b):
    return np.all(a >= b) and np.any(a > b)


def test_pareto_front_against_brute_force():
    rng = np.random.default_rng(1)
    for n in (2, 3):
        points = rng.integers(0, 6, size=(30, n)).astype(float)
        expected = [not any(_dominates(q, p) for q in points) for p in points]
        assert pareto_mask(points).tolist() == expected
        np.testing.assert_array_equal(pareto_front(points), points[expected])


def _brute_force_volume(points, reference):
    """Count the unit cells above the reference that some point dominates (integer points)."""
    axes = [range(int(r), int(points[:, i].max())) for i, r in enumerate(reference)]
    return sum(
        any(np.all(point >= np.array(cell) + 1) for point in points)
        for cell in itertools.product(*axes)
    )


@pytest.mark.parametrize("n", [2, 3])
def test_hypervolume_against_brute_force_count(n):
    rng = np.random.default_rng(n)
    for _ in range(5):
        points = rng.integers(1, 8, size=(6, n)).astype(float)
        reference = np.zeros(n)
        assert hypervolume(points, reference) == pytest.approx(
            _brute_force_volume(points, reference)
        )


def test_hypervolume_hand_computed_and_ignores_points_below_reference():
    points = np.array([[1.0, 2.0], [2.0, 1.0], [-1.0, 5.0]])
    assert hypervolume(points, np.array([0.0, 0.0])) == pytest.approx(3.0)
    assert hypervolume(points[2:], np.array([0.0, 0.0])) == 0.0
