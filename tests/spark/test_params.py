"""The parameter correspondence between implicit's ALS and Spark's (no Spark needed)."""

from __future__ import annotations

import numpy as np
import pytest

from recommender.data.policies import ConfidencePolicy
from recommender.exceptions import ParameterError
from recommender.spark.params import (
    TINY_RATING,
    correspond,
    effective_penalties,
    median_positive_count,
    spark_ratings,
    split_params,
)


def spark_confidence(ratings: np.ndarray, alpha: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """(preference, confidence) as Spark's implicit ALS reads a rating."""
    return (ratings > 0).astype(float), 1 + alpha * np.abs(ratings)


def implicit_confidence(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(preference, confidence) as implicit (alpha 1) reads a signed confidence."""
    return (values > 0).astype(float), np.abs(values)


def test_policy_values_map_to_the_same_preference_and_confidence():
    policy = ConfidencePolicy(alpha=4.0)
    outcomes = np.array([1.0, 0.5, 0.1, 0.0, -0.3, -0.5, -1.0], np.float32)
    values = np.append(policy.values(outcomes), policy.side_value)
    ratings, inexact = spark_ratings(values)
    assert inexact == 0
    np.testing.assert_allclose(spark_confidence(ratings)[0], implicit_confidence(values)[0])
    np.testing.assert_allclose(
        spark_confidence(ratings)[1], implicit_confidence(values)[1], rtol=1e-6
    )
    # The rating is the outcome in policy units: alpha * o (worked), -alpha * max(|o|, floor).
    np.testing.assert_allclose(ratings[:3], 4.0 * outcomes[:3], rtol=1e-6)
    np.testing.assert_allclose(
        ratings[3:7], -4.0 * np.maximum(np.abs(outcomes[3:]), 0.5), rtol=1e-6
    )


def test_confidences_below_one_are_counted_as_inexact():
    ratings, inexact = spark_ratings(np.array([0.4, 1.0, -0.6, -1.0, 2.0], np.float32))
    assert inexact == 2
    np.testing.assert_allclose(ratings, [TINY_RATING, TINY_RATING, 0.0, 0.0, 1.0], atol=1e-9)
    assert (ratings[:2] > 0).all()  # a positive value keeps preference 1


def test_regularisation_is_divided_by_the_median_positive_count():
    counts = np.array([0, 2, 4, 4, 9])
    assert median_positive_count(counts) == 4.0
    params = correspond(
        {"factors": 8, "iterations": 5, "regularization": 0.2, "random_state": 7},
        counts,
        default_blocks=3,
    )
    assert params.reg_param == pytest.approx(0.05)
    assert params.to_spark() == {
        "rank": 8,
        "maxIter": 5,
        "regParam": pytest.approx(0.05),
        "alpha": 1.0,
        "seed": 7,
        "numUserBlocks": 3,
        "numItemBlocks": 3,
        "implicitPrefs": True,
        "nonnegative": False,
    }
    assert effective_penalties(params.reg_param, counts) == {
        "min": pytest.approx(0.1),
        "median": pytest.approx(0.2),
        "max": pytest.approx(0.45),
    }


def test_overrides_and_no_seed():
    params = correspond(
        {"factors": 4, "iterations": 2, "regularization": 1.0, "random_state": None},
        np.array([]),
        default_blocks=2,
        spark_only={"spark_reg_param": 0.3, "spark_blocks": 5},
    )
    assert params.reg_param == 0.3 and params.num_user_blocks == 5
    assert "seed" not in params.to_spark()


def test_split_params_separates_and_checks_spark_only_settings():
    als, spark = split_params({"factors": 4, "spark_reg_param": 0.1, "spark_blocks": 2})
    assert als == {"factors": 4} and spark == {"spark_reg_param": 0.1, "spark_blocks": 2}
    with pytest.raises(ParameterError, match=r"spark_blocks must be an int >= 1 .*; got 0"):
        split_params({"spark_blocks": 0})
    with pytest.raises(ParameterError, match="spark_reg_param"):
        split_params({"spark_reg_param": -1})
