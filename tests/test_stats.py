"""RewardStats: standardization, JSON round trip, ranges."""

import numpy as np
import pytest

from ric import RewardStats, normal_reward_range


def _stats():
    raw = np.array([[1.0, 10.0], [3.0, 30.0], [5.0, 20.0], [7.0, 40.0]])
    return raw, RewardStats.fit(raw, ["a", "b"], ["type-a {}", "type-b {}"], "abc")


def test_fit_hand_computed():
    raw, stats = _stats()
    assert stats.mean == (4.0, 25.0)
    assert stats.std == pytest.approx((5**0.5, 125**0.5))  # population std
    z = stats.standardize(raw)
    np.testing.assert_allclose(z.mean(axis=0), 0, atol=1e-12)
    np.testing.assert_allclose(z.std(axis=0), 1)
    np.testing.assert_allclose(stats.unstandardize(z), raw)
    assert stats.count == 4


def test_json_round_trip():
    _, stats = _stats()
    again = RewardStats.from_json(stats.to_json())
    assert again == stats


def test_json_unknown_key_named():
    _, stats = _stats()
    text = stats.to_json().replace('"count"', '"cnt"')
    with pytest.raises(ValueError, match="cnt"):
        RewardStats.from_json(text)


def test_constant_reward_rejected_by_name():
    raw = np.array([[1.0, 2.0], [1.0, 3.0]])
    with pytest.raises(ValueError, match=r"\['flat'\]"):
        RewardStats.fit(raw, ["flat", "ok"])


def test_non_finite_rewards_name_rows():
    raw = np.array([[1.0, 2.0], [np.nan, 3.0], [2.0, np.inf]])
    with pytest.raises(ValueError, match=r"rows \[1, 2\]"):
        RewardStats.fit(raw, ["a", "b"])


def test_normal_range_seeded_and_paper_sized():
    low, high = normal_reward_range(3)
    again_low, again_high = normal_reward_range(3)
    np.testing.assert_array_equal(low, again_low)
    np.testing.assert_array_equal(high, again_high)
    assert low.shape == (3,) and np.all(low < -3.5) and np.all(high > 3.5)
    assert np.all(low > -5.5) and np.all(high < 5.5)
    assert not np.array_equal(normal_reward_range(3, seed=1)[0], low)


def test_quantile_range_matches_data():
    rng = np.random.default_rng(0)
    raw = rng.uniform(0, 10, size=(5000, 2))
    stats = RewardStats.fit(raw, ["a", "b"])
    z = stats.standardize(raw)
    low, high = stats.reward_range("quantile", lower=0.05, upper=0.95)
    np.testing.assert_allclose(low, np.quantile(z, 0.05, axis=0), atol=1e-3)
    np.testing.assert_allclose(high, np.quantile(z, 0.95, axis=0), atol=1e-3)
    full_low, full_high = stats.reward_range("quantile")
    np.testing.assert_allclose(full_low, z.min(axis=0))
    np.testing.assert_allclose(full_high, z.max(axis=0))


def test_width_checked():
    _, stats = _stats()
    with pytest.raises(ValueError, match="last dimension 2"):
        stats.standardize(np.zeros((3, 3)))
