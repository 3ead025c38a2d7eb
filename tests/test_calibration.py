"""Calibrated steering's math (ric.core.calibration): the fit recovers a known model, the inverse
inverts it, the calibrated mapping reduces to the paper's where the paper's assumption holds, and
asks for nothing the model cannot give where it does not."""

import json

import numpy as np
import pytest

from ric.config import MappingConfig
from ric.core import Calibration, design_levels, fit_calibration, preference_to_rewards
from ric.core.calibration import REACH_TOLERANCE
from ric.evaluation.calibrate import calibration_plan, design_points
from ric.steering import Steering, SteeringError

NAMES = ("relevance", "conciseness")
GRID = np.array([[k / 10, 1 - k / 10] for k in range(11)])


def identity_calibration(r_min, r_max, levels=5) -> Calibration:
    """The paper's assumption: obtained = desired, no side effects."""
    grid = design_levels(np.asarray(r_min), np.asarray(r_max), levels)
    return Calibration(NAMES, grid, grid.copy(), np.zeros((2, 2)), grid.mean(axis=1), 0)


def synthetic_answers(rng, levels, per_point=40, noise=0.3):
    """Answers on the full factorial of ``levels`` from a known additive model: a saturating
    curve per objective and side effects cross[j, i]."""
    truth_cross = np.array([[0.0, -0.25], [-0.15, 0.0]])

    def curve(j, x):
        return [np.tanh, lambda v: 0.5 * v + 0.2 * v**3 / 4][j](x)

    points = np.array([(a, b) for a in levels[0] for b in levels[1]])
    desired = np.repeat(points, per_point, axis=0)
    centre = levels.mean(axis=1)
    own = np.column_stack([curve(j, desired[:, j]) for j in range(2)])
    obtained = own + (desired - centre) @ truth_cross.T
    obtained += rng.normal(0, noise, size=obtained.shape)
    truth = np.array([[curve(j, x) for x in levels[j]] for j in range(2)])
    return desired, obtained, truth, truth_cross


def test_the_fit_recovers_curves_and_side_effects_of_a_known_model():
    rng = np.random.default_rng(0)
    levels = design_levels(np.array([-2.0, -2.0]), np.array([2.0, 2.0]), 7)
    desired, obtained, truth, truth_cross = synthetic_answers(rng, levels)
    calibration = fit_calibration(NAMES, levels, desired, obtained)
    assert np.max(np.abs(calibration.curves - truth)) < 0.15
    assert np.max(np.abs(calibration.cross - truth_cross)) < 0.03
    assert np.all(np.diff(calibration.curves, axis=1) > 0)  # strictly: the inverse is a function
    assert calibration.samples == len(desired)


def test_the_isotonic_fit_is_monotone_even_when_the_answers_are_not():
    levels = design_levels(np.array([0.0, 0.0]), np.array([3.0, 3.0]), 4)
    desired = np.array([[x, y] for x in levels[0] for y in levels[1]] * 3)
    obtained = desired.copy()
    obtained[:, 0] = np.where(desired[:, 0] == levels[0, 2], 0.0, desired[:, 0])  # a dip at level 3
    calibration = fit_calibration(NAMES, levels, desired, obtained)
    assert np.all(np.diff(calibration.curves[0]) > 0)
    # Pool-adjacent-violators: levels 2 and 3 (1 and 0 on average) pool to 0.5, placed at their
    # centre (1.5), and the curve runs straight between the centres 0, 1.5 and 3.
    np.testing.assert_allclose(calibration.curves[0], [0, 1 / 3, 4 / 3, 3], atol=1e-5)


def test_solve_inverts_predict_inside_the_design_range():
    rng = np.random.default_rng(1)
    levels = design_levels(np.array([-2.0, -1.5]), np.array([2.0, 1.5]), 7)
    calibration = fit_calibration(NAMES, levels, *synthetic_answers(rng, levels)[:2])
    for desired in ([0.3, -0.4], [-1.9, 1.2], [1.0, 1.0]):
        found, miss = calibration.solve(calibration.predict(np.array(desired)))
        assert miss < 1e-6
        np.testing.assert_allclose(found, desired, atol=1e-4)


@pytest.mark.parametrize("p", [2.0, 3.0, float("inf")])
def test_calibrated_mapping_is_the_papers_where_obtained_equals_desired(p):
    r_min, r_max = np.array([-1.8, -2.6]), np.array([1.6, 2.0])
    calibration = identity_calibration(r_min, r_max)
    method = "p_inf" if np.isinf(p) else "p_norm"
    for w in GRID:
        desired, promised = calibration.map_preference(w, p)
        expected = preference_to_rewards(w, r_min, r_max, method=method, p=p)
        np.testing.assert_allclose(desired, expected, atol=1e-6)
        np.testing.assert_allclose(promised, desired, atol=1e-5)


def test_calibrated_mapping_gives_distinct_reachable_points_along_the_grid():
    rng = np.random.default_rng(2)
    levels = design_levels(np.array([-2.0, -2.0]), np.array([2.0, 2.0]), 7)
    calibration = fit_calibration(NAMES, levels, *synthetic_answers(rng, levels)[:2])
    _lowest, highest = calibration.reach
    mapped = [calibration.map_preference(w, 2.0) for w in GRID]
    desired = np.array([d for d, _ in mapped])
    promised = np.array([o for _, o in mapped])
    assert len({tuple(np.round(row, 6)) for row in desired}) == len(GRID)  # no ties
    assert np.all(desired >= levels[:, 0] - 1e-9) and np.all(desired <= levels[:, -1] + 1e-9)
    # The promise moves one way along the grid on each objective.
    assert np.all(np.diff(promised[:, 0]) > 0) and np.all(np.diff(promised[:, 1]) < 0)
    assert np.all(promised <= highest + REACH_TOLERANCE + 0.3)  # side effects may add a little


def test_a_ray_beyond_the_joint_reach_is_scaled_back_to_it():
    """Strong side effects: both objectives at 71% of their reach cannot be had at once; the
    mapping asks for the furthest point along that direction the model reaches."""
    levels = design_levels(np.array([-1.0, -1.0]), np.array([1.0, 1.0]), 5)
    cross = np.array([[0.0, -0.9], [-0.9, 0.0]])
    calibration = Calibration(NAMES, levels, levels.copy(), cross, np.zeros(2), 0)
    _desired, promised = calibration.map_preference(np.array([0.5, 0.5]), 2.0)
    lowest, highest = calibration.reach
    z = (promised - lowest) / (highest - lowest)
    assert z[0] == pytest.approx(z[1], abs=1e-3)  # along the preference's ray
    assert z[0] < np.sqrt(0.5) - 0.05  # scaled back: the full ray is out of reach
    assert calibration.solve(promised)[1] <= REACH_TOLERANCE


def test_calibration_survives_json_and_rejects_inconsistent_files():
    calibration = identity_calibration([-1, -1], [1, 1])
    again = Calibration.from_json(json.loads(json.dumps(calibration.to_json())))
    np.testing.assert_array_equal(again.curves, calibration.curves)
    broken = calibration.to_json() | {"cross": [[0.0]]}
    with pytest.raises(ValueError, match="badly shaped cross"):
        Calibration.from_json(broken)
    falling = calibration.to_json() | {"curves": [[1.0, 0.5, 0, -0.5, -1], [0, 1, 2, 3, 4]]}
    with pytest.raises(ValueError, match="curves must increase"):
        Calibration.from_json(falling)


def test_the_design_is_balanced_and_deals_prompts_evenly():
    full = design_points(7, 2, 64, seed=0)
    assert len(full) == 49 and len({tuple(p) for p in full}) == 49
    drawn = design_points(7, 3, 64, seed=0)  # 343 combinations > 64: a Latin hypercube
    assert drawn.shape == (64, 3)
    for column in drawn.T:
        counts = np.bincount(column, minlength=7)
        assert counts.max() - counts.min() <= 1
    levels = design_levels(np.zeros(2), np.ones(2), 7)
    plan = calibration_plan([f"q{i}" for i in range(10)], list(NAMES), levels, full, 4, 0)
    assert len(plan) == 196
    uses = plan["prompt"].value_counts()
    assert uses.max() - uses.min() <= 1
    for _point, rows in plan.groupby("point"):
        assert rows["prompt"].nunique() == 4  # a point's answers go to different prompts
        assert rows["target_relevance"].nunique() == 1


def steering_with(calibration: Calibration, method: str = "calibrated") -> Steering:
    return Steering(
        NAMES,
        MappingConfig(method=method),
        calibration.low,
        calibration.high,
        calibration=calibration,
    )


def test_obtained_targets_get_the_desired_rewards_that_produce_them():
    levels = design_levels(np.array([-2.0, -2.0]), np.array([2.0, 2.0]), 5)
    curves = levels / 2  # the model gives half of what it is asked for
    steering = steering_with(Calibration(NAMES, levels, curves, np.zeros((2, 2)), np.zeros(2), 0))
    np.testing.assert_allclose(steering.desired(rewards_obtained=[0.5, -0.25]), [1.0, -0.5])
    # Keyed by name: a missing objective asks for the middle of its reach.
    np.testing.assert_allclose(steering.desired(rewards_obtained={"relevance": 0.8}), [1.6, 0.0])
    with pytest.raises(
        SteeringError, match=r"beyond this model's reach.*relevance -1\.00\.\.\+1\.00"
    ):
        steering.desired(rewards_obtained=[1.5, 0.0])
    with pytest.raises(SteeringError, match="exactly one of"):
        steering.desired(preference=[0.5, 0.5], rewards_obtained=[0.0, 0.0])


def test_promises_are_the_calibrations_prediction_or_the_desired_rewards():
    levels = design_levels(np.array([-2.0, -2.0]), np.array([2.0, 2.0]), 5)
    calibration = Calibration(NAMES, levels, levels / 2, np.zeros((2, 2)), np.zeros(2), 0)
    desired = np.array([[1.0, -1.0]])
    np.testing.assert_allclose(steering_with(calibration).promised(desired), [[0.5, -0.5]])
    np.testing.assert_allclose(steering_with(calibration, "p_inf").promised(desired), desired)


def test_calibrated_mapping_without_a_calibration_says_how_to_make_one():
    steering = Steering(NAMES, MappingConfig(method="calibrated"), np.zeros(2) - 1, np.ones(2))
    with pytest.raises(ValueError, match="ric calibrate --model RUN --output DIR"):
        steering.map_preference([0.5, 0.5])
    with pytest.raises(SteeringError, match="not calibrated, so it cannot take"):
        steering.desired(rewards_obtained=[0.0, 0.0])


def test_the_cards_side_effects_and_rank_correlations_by_hand():
    import pandas as pd

    from ric.evaluation.card import distinct_points, kendall, side_effects

    samples = pd.DataFrame(
        {
            "probed": ["relevance"] * 4 + ["conciseness"] * 4,
            "end": ["low", "low", "high", "high"] * 2,
            "standardized_relevance": [0.0, 1.0, 2.0, 3.0, 1.0, 1.0, 0.5, 0.5],
            "standardized_conciseness": [0.0, 0.0, -1.0, -1.0, -2.0, -2.0, 2.0, 1.0],
        }
    )
    effects = side_effects(samples, ["relevance", "conciseness"])
    assert effects["relevance"] == {"relevance": 2.0, "conciseness": -1.0}
    assert effects["conciseness"] == {"relevance": -0.5, "conciseness": 3.5}
    # Kendall's tau-b: 4 points, one discordant pair of 6 -> (5 - 1) / 6.
    assert kendall(np.array([1.0, 2, 3, 4]), np.array([1.0, 3, 2, 4])) == pytest.approx(4 / 6)
    assert kendall(np.array([1.0, 1, 1]), np.array([1.0, 2, 3])) is None
    assert distinct_points(np.array([[1.0, 2.0], [1.0, 2.001], [1.1, 2.0]])) == 2


def test_side_effects_within_the_noise_are_dropped():
    rng = np.random.default_rng(3)
    levels = design_levels(np.array([-2.0, -2.0]), np.array([2.0, 2.0]), 5)
    desired = np.array([[a, b] for a in levels[0] for b in levels[1]] * 8)
    obtained = desired / 2 + rng.normal(0, 1.0, size=desired.shape)  # no side effect at all
    assert np.all(fit_calibration(NAMES, levels, desired, obtained).cross == 0)
