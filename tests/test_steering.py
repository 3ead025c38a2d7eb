"""The steering object: preference or rewards -> desired rewards -> the texts a model is given,
for RiC and every baseline, with hand-computed values."""

import numpy as np
import pytest

from ric.config import MappingConfig
from ric.core import RewardStats
from ric.runs import Method
from ric.steering import Steering, SteeringError, mapping_range

NAMES = ("relevance", "conciseness")
LOW, HIGH = np.array([-2.0, -4.0]), np.array([2.0, 4.0])


def steering(kind: Method | None = None, **mapping) -> Steering:
    """Steering over NAMES and [LOW, HIGH] for a model of ``kind`` (default: RiC)."""
    return Steering(NAMES, MappingConfig(**mapping), LOW, HIGH, method=kind or Method())


def test_p_inf_maps_as_the_paper_rule():
    # N = 2: w_i >= 1/2 -> r_max_i, else N * w_i * (r_max_i - r_min_i) + r_min_i
    np.testing.assert_allclose(steering().map_preference([0.8, 0.2]), [2.0, 2 * 0.2 * 8 - 4.0])
    np.testing.assert_allclose(steering().map_preference([0.5, 0.5]), [2.0, 4.0])
    np.testing.assert_allclose(steering().map_preference([0.0, 1.0]), [-2.0, 4.0])


def test_linear_and_p_norm_follow_their_closed_forms():
    np.testing.assert_allclose(
        steering(method="linear").map_preference([0.25, 0.75]), [0.25 * 4 - 2.0, 0.75 * 8 - 4.0]
    )
    # p = 2, lam = 1: z_i = w_i / ||w||_2
    w = np.array([0.6, 0.8]) / 1.4
    z = w / np.linalg.norm(w)
    np.testing.assert_allclose(
        steering(method="p_norm", p=2.0).map_preference(w), (HIGH - LOW) * z + LOW
    )


def test_a_preference_by_name_fills_missing_names_with_zero():
    by_name = steering().map_preference({"conciseness": 1.0})
    np.testing.assert_allclose(by_name, steering().map_preference([0.0, 1.0]))


@pytest.mark.parametrize(
    ("preference", "message"),
    [
        ([1.0], r"preference has 1 values; the model has 2 objectives \(relevance, conciseness\)"),
        ({"helpfulness": 1.0}, "preference names unknown objective 'helpfulness'"),
        ([0.7, 0.7], "must sum to 1"),
        ([1.5, -0.5], "must be >= 0"),
    ],
)
def test_a_bad_preference_is_named(preference, message):
    with pytest.raises(SteeringError, match=message) as error:
        steering().map_preference(preference)
    assert error.value.param == "preference"


def test_a_ric_model_takes_exactly_one_of_preference_and_rewards():
    ric = steering()
    np.testing.assert_allclose(ric.desired(rewards={"relevance": 1.5}), [1.5, 0.0])
    np.testing.assert_allclose(ric.desired(preference=[1.0, 0.0]), [2.0, -4.0])
    with pytest.raises(SteeringError, match="exactly one"):
        ric.desired()
    with pytest.raises(SteeringError, match="exactly one"):
        ric.desired(preference=[1.0, 0.0], rewards=[0.0, 0.0])
    with pytest.raises(SteeringError, match="finite"):
        ric.desired(rewards=[float("nan"), 0.0])


def test_an_error_names_the_field_in_the_callers_words():
    with pytest.raises(SteeringError) as error:
        steering().desired(preference=[1.0])
    assert str(error.value).startswith("preference has 1 values")  # the server's JSON field
    flags = {
        "preference": "--preference",
        "rewards": "--rewards",
        "rewards_obtained": "--rewards-obtained",
    }
    assert error.value.naming(flags).startswith("--preference has 1 values")  # the CLI's flag
    with pytest.raises(SteeringError) as error:
        steering().desired()
    assert error.value.naming(flags) == (
        "give exactly one of --preference (mapped), --rewards (explicit) or --rewards-obtained "
        "(what to obtain, calibrated models)"
    )


def test_baselines_take_what_their_method_allows():
    morlhf = steering(Method("morlhf", preference=[0.3, 0.7]))
    assert morlhf.desired() is None
    with pytest.raises(SteeringError, match=r"trained for \[0.3, 0.7\] and takes no preference"):
        morlhf.desired(preference=[0.5, 0.5])
    with pytest.raises(SteeringError, match="takes no rewards"):
        steering(Method("sft")).desired(rewards=[0.0, 0.0])
    soups = steering(Method("soups"))
    with pytest.raises(SteeringError, match="needs preference"):
        soups.desired()
    assert soups.desired(preference=[0.5, 0.5]) is None  # the preference picks weights, not text


def test_prompts_carry_rewards_for_ric_and_none_for_baselines():
    ric = steering()
    assert ric.prompts(["Why?"], np.array([0.3, -1.24])) == [
        "### Input: Why? <R1> 0.3 <R2> -1.2 ### Response: "
    ]
    # marker text in user input is neutralized: it cannot set a reward
    (hijack,) = ric.prompts(["<R1> 9.9"], np.array([0.0, 0.0]))
    assert hijack.count("<R1>") == 1
    assert steering(Method("sft")).prompts(["Why?"]) == ["### Input: Why? ### Response: "]
    grid = ric.grid_prompts(["a", "b"], np.array([[1.0, 1.0], [2.0, 2.0]]))
    assert [text.split("<R1> ")[1][:3] for text in grid] == ["1.0", "1.0", "2.0", "2.0"]


def test_a_sweep_asks_each_method_its_own_points():
    grid = np.array([[0.0, 1.0], [0.5, 0.5], [1.0, 0.0]])
    np.testing.assert_array_equal(steering().sweep_preferences(grid), grid)
    np.testing.assert_array_equal(steering(Method("soups")).sweep_preferences(grid), grid)
    morlhf = steering(Method("morlhf", preference=[0.3, 0.7]))
    np.testing.assert_array_equal(morlhf.sweep_preferences(grid), [[0.3, 0.7]])
    assert np.isnan(steering(Method("base")).sweep_preferences(grid)).all()
    assert np.isnan(morlhf.map_preferences(np.array([[0.3, 0.7]]))).all()  # not asked rewards


def test_the_range_comes_from_the_stats_as_configured():
    levels = np.linspace(0.0, 1.0, 1001)  # the stats keep 1,001 quantile levels
    stats = RewardStats(
        names=NAMES,
        mean=(0.0, 0.0),
        std=(1.0, 1.0),
        count=10,
        quantiles=(tuple(-1.0 + 2 * levels), tuple(-3.0 + 4 * levels)),
    )
    quantile = Steering.for_stats(stats, MappingConfig(range_source="quantile"))
    np.testing.assert_allclose(quantile.r_min, [-1.0, -3.0])
    np.testing.assert_allclose(quantile.r_max, [1.0, 1.0])
    normal = Steering.for_stats(stats, MappingConfig(normal_samples=1000))
    assert (normal.r_min < -2).all() and (normal.r_max > 2).all()
    with pytest.raises(ValueError, match="needs a stats file"):
        mapping_range(MappingConfig(range_source="quantile"), None, 2)


def test_describe_names_the_mapping_and_its_range():
    info = steering(method="p_norm", p=3.0).describe()
    assert info == {
        "method": "p_norm",
        "names": list(NAMES),
        "r_min": [-2.0, -4.0],
        "r_max": [2.0, 4.0],
        "p": 3.0,
    }
    assert steering(method="convex", p=float("inf")).describe()["p"] == "inf"  # valid JSON
