"""Preference-to-reward mappings against hand-computed values (docs/design.md §1.4)."""

import math
import re

import numpy as np
import pytest

from ric import check_preference, preference_to_rewards, preference_to_z


def test_linear_hand_computed():
    # R = (4 - -4) * w - 4
    np.testing.assert_allclose(
        preference_to_rewards([0.2, 0.8], [-4, -4], [4, 4], "linear"), [-2.4, 2.4]
    )


def test_p_inf_practical_rule_two_objectives():
    # w1 = 0.2 < 1/2 -> z1 = 2 * 0.2 = 0.4 -> R1 = 8 * 0.4 - 4 = -0.8; w2 >= 1/2 -> r_max.
    np.testing.assert_allclose(
        preference_to_rewards([0.2, 0.8], [-4, -4], [4, 4], "p_inf"), [-0.8, 4.0]
    )
    np.testing.assert_allclose(
        preference_to_rewards([0.5, 0.5], [-4, -4], [4, 4], "p_inf"), [4.0, 4.0]
    )
    np.testing.assert_allclose(
        preference_to_rewards([0.0, 1.0], [-4, -3], [4, 3], "p_inf"), [-4.0, 3.0]
    )


def test_p_inf_three_objectives():
    # N = 3: z = [3 * 0.1, 3 * 0.3, 1] = [0.3, 0.9, 1]; R = 4 z - 2.
    np.testing.assert_allclose(
        preference_to_rewards([0.1, 0.3, 0.6], [-2] * 3, [2] * 3, "p_inf"), [-0.8, 1.6, 2.0]
    )


def test_p_inf_with_explicit_lambda_is_theorem_case_two():
    np.testing.assert_allclose(preference_to_z([0.5, 0.5], "p_inf", lam=[1.0, 4.0]), [1.0, 0.25])


def test_p_norm_p2_is_normalized_w():
    # z = w / ||w||_2 = [0.25, 0.75] / sqrt(0.625)
    np.testing.assert_allclose(
        preference_to_z([0.25, 0.75], "p_norm", p=2), [0.31622777, 0.9486833], rtol=1e-7
    )


def test_p_norm_p3_equal_weights():
    # Equal weights give equal z on the unit 3-norm sphere: z = 2^(-1/3).
    np.testing.assert_allclose(preference_to_z([0.5, 0.5], "p_norm", p=3), [2 ** (-1 / 3)] * 2)


def test_p_norm_three_objectives():
    w = np.array([1, 2, 3]) / 6
    np.testing.assert_allclose(preference_to_z(w, "p_norm", p=2), np.array([1, 2, 3]) / 14**0.5)


def test_p_norm_lambda_not_one_hand_computed():
    # max 0.5 z1 + 0.5 z2 s.t. z1^2 + 4 z2^2 <= 1: z ~ (1, 1/4) -> z = (2/sqrt5, 1/(2 sqrt5)).
    z = preference_to_z([0.5, 0.5], "p_norm", p=2, lam=[1.0, 2.0])
    np.testing.assert_allclose(z, [2 / 5**0.5, 0.5 / 5**0.5])
    assert np.sum((np.array([1.0, 2.0]) * z) ** 2) == pytest.approx(1.0)  # constraint active


@pytest.mark.parametrize("p", [1.5, 2.0, 3.0, 7.0])
@pytest.mark.parametrize("n", [2, 3, 5])
def test_convex_agrees_with_closed_form(p, n):
    rng = np.random.default_rng(n * 10 + int(p * 10))
    near_tie = np.full(n, 1 / n) + np.linspace(-1e-3, 1e-3, n)  # ordering constraints nearly bind
    for w in [near_tie, *rng.dirichlet(np.ones(n), size=5)]:
        np.testing.assert_allclose(
            preference_to_z(w, "convex", p=p), preference_to_z(w, "p_norm", p=p), atol=1e-5
        )


@pytest.mark.parametrize("n", [2, 3, 4])
def test_convex_p_inf_agrees_with_practical_rule(n):
    rng = np.random.default_rng(n)
    for _ in range(5):
        w = rng.dirichlet(np.ones(n))
        lam = np.where(w >= 1 / n, 1.0, 1 / (n * w))
        np.testing.assert_allclose(
            preference_to_z(w, "convex", p=math.inf, lam=lam),
            preference_to_z(w, "p_inf"),
            atol=1e-9,
        )


def test_convex_unordered_agrees_with_closed_form_for_any_lambda():
    w, lam = [0.2, 0.3, 0.5], [1.0, 1.2, 1.5]
    np.testing.assert_allclose(
        preference_to_z(w, "convex", p=3, lam=lam, ordered=False),
        preference_to_z(w, "p_norm", p=3, lam=lam),
        atol=1e-5,
    )


def test_convex_ordering_constraint_binds_where_closed_form_breaks_order():
    # Here w_i / lam_i^3 is ordered against w, so the closed form reverses the order of w; the
    # ordered program makes all z equal: z = (1 + 1.2^3 + 1.5^3)^(-1/3).
    w, lam = [0.2, 0.3, 0.5], [1.0, 1.2, 1.5]
    closed = preference_to_z(w, "p_norm", p=3, lam=lam)
    assert closed[0] > closed[2]
    ordered = preference_to_z(w, "convex", p=3, lam=lam)
    np.testing.assert_allclose(ordered, [(1 + 1.2**3 + 1.5**3) ** (-1 / 3)] * 3, atol=1e-5)


@pytest.mark.parametrize(
    ("w", "message"),
    [
        ([0.5, 0.3], "sum to 1"),
        ([1.2, -0.2], ">= 0"),
        ([0.5, 0.5, 0.0], "preference has 3 weights but r_min has shape (2,)"),
        ([float("nan"), 1.0], "finite"),
        ([], "non-empty"),
    ],
)
def test_invalid_preference_names_the_problem(w, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        preference_to_rewards(w, [-4, -4], [4, 4])


def test_sum_tolerance_is_one_millionth():
    check_preference([0.5, 0.5 + 5e-7])
    with pytest.raises(ValueError):
        check_preference([0.5, 0.5 + 5e-6])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"method": "banana"}, "valid: linear, p_norm, p_inf, convex"),
        ({"method": "p_norm", "p": 1.0}, "p must be > 1"),
        ({"method": "p_norm", "p": math.inf}, "finite"),
        ({"method": "p_norm", "lam": [0.5, 1.0]}, ">= 1"),
        ({"method": "p_norm", "lam": [1.0]}, "2 values"),
    ],
)
def test_bad_settings_rejected(kwargs, message):
    with pytest.raises(ValueError, match=message):
        preference_to_rewards([0.5, 0.5], [-4, -4], [4, 4], **kwargs)


def test_bad_ranges_rejected():
    with pytest.raises(ValueError, match="r_max must exceed r_min"):
        preference_to_rewards([0.5, 0.5], [1, -4], [1, 4])
