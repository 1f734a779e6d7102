"""How the local ALS engine's parameters and confidence policy map onto Spark MLlib's ALS.

Both engines minimise Hu, Koren & Volinsky's weighted loss
``sum_ui c_ui (p_ui - x_u . y_i)^2 + penalty``; they differ in how a matrix entry becomes
``(p_ui, c_ui)`` and in the penalty.

Confidence and preference
-------------------------
The local engine fits implicit with ``alpha = 1`` on signed confidences ``v``
(:mod:`recommender.data.policies`): ``p = 1, c = v`` for ``v > 0`` and ``p = 0, c = |v|`` for
``v < 0``. Spark reads a rating ``r`` as ``p = 1`` if ``r > 0`` else ``0`` and
``c = 1 + alpha_spark * |r|``. With ``alpha_spark = 1`` and

    ``r = v - 1`` for ``v > 0``        ``r = v + 1`` for ``v < 0``   (``r = sign(v) (|v| - 1)``)

both see the same ``(p, c)``: for the policy's values ``1 + alpha * o`` this is just
``r = alpha * o`` (worked), ``r = -alpha * max(|o|, floor)`` (failed) and
``r = alpha * side_weight`` (side columns). Missing entries are ``p = 0, c = 1`` in both.
Spark cannot express a confidence below 1: a ``|v| < 1`` (only possible with a negative
``positive_threshold``) becomes ``c = 1``; :func:`spark_ratings` counts such entries and the
trainer logs them. ``v = 1`` (a zero ``side_weight``) becomes a tiny positive ``r`` so that its
preference stays 1.

Regularisation
--------------
implicit adds ``lambda * I`` to every patient's and every column's normal equations. Spark
follows ALS-WR (Zhou et al. 2008): it adds ``reg_param * n * I`` where ``n`` is the number of
*positive* ratings (``r > 0``) of that patient or column. No single ``reg_param`` reproduces a
constant penalty, so the correspondence matches it where it matters: on the patient side, whose
rows are short and whose solves the penalty shapes, ``reg_param = lambda / median n_u`` over
patients with a positive entry. The column side is solved against thousands of patients, where
either penalty is small next to the data term; the effective column penalties
(``reg_param * n_i``) are recorded in the manifest so the difference is visible. A patient with
no positive entry gets no penalty in Spark, but nothing pulls its factors away from zero either:
they are zero in both engines.

Everything else maps one to one: ``factors -> rank``, ``iterations -> maxIter``,
``random_state -> seed`` (initial factors differ anyway: each library draws its own),
``implicitPrefs = True``, ``nonnegative = False``. ``use_cg`` has no Spark counterpart (Spark
solves each system exactly by Cholesky); it is kept in the artifact for the fold-in of patients
outside the training data, which runs implicit's solver with the implicit-convention
``regularization`` on the Spark-trained treatment factors.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass

import numpy as np

from ..exceptions import ParameterError

#: Rating that stands for ``v = 1`` (preference 1, confidence 1 + 1e-6).
TINY_RATING = 1e-6
#: Spark-only settings accepted in the training parameters (``--params``), with their checks.
SPARK_ONLY = {
    "spark_reg_param": "a number >= 0 (replaces the derived reg_param)",
    "spark_blocks": "an int >= 1 (user and item blocks; default: Spark's default parallelism)",
}


@dataclass(frozen=True)
class SparkALSParams:
    """Arguments of ``pyspark.ml.recommendation.ALS`` (snake_case here, camelCase there)."""

    rank: int
    max_iter: int
    reg_param: float
    alpha: float = 1.0
    seed: int | None = None
    num_user_blocks: int = 10
    num_item_blocks: int = 10
    implicit_prefs: bool = True
    nonnegative: bool = False

    def to_spark(self) -> dict:
        """Keyword arguments for ``pyspark.ml.recommendation.ALS``."""
        names = {
            "rank": "rank",
            "max_iter": "maxIter",
            "reg_param": "regParam",
            "alpha": "alpha",
            "seed": "seed",
            "num_user_blocks": "numUserBlocks",
            "num_item_blocks": "numItemBlocks",
            "implicit_prefs": "implicitPrefs",
            "nonnegative": "nonnegative",
        }
        return {names[k]: v for k, v in asdict(self).items() if not (k == "seed" and v is None)}

    def to_dict(self) -> dict:
        return self.to_spark()


def spark_ratings(values: np.ndarray) -> tuple[np.ndarray, int]:
    """Spark ratings (float32, same shape) for signed confidences ``values``.

    Returns the ratings and the number of entries Spark cannot represent exactly
    (``0 < |v| < 1``, see the module docstring).
    """
    v = np.asarray(values, dtype=np.float64)
    ratings = np.where(v > 1, v - 1, np.where(v > 0, TINY_RATING, np.where(v <= -1, v + 1, 0.0)))
    inexact = int(np.count_nonzero((np.abs(v) < 1) & (v != 0)))
    return ratings.astype(np.float32), inexact


def median_positive_count(counts: np.ndarray) -> float:
    """Median of the positive-rating counts ``counts`` over entities that have any (1 if none)."""
    counts = np.asarray(counts)
    counts = counts[counts > 0]
    return float(np.median(counts)) if len(counts) else 1.0


def split_params(params: Mapping | None) -> tuple[dict, dict]:
    """Split training parameters into ALSRecommender ones and the Spark-only ones (``SPARK_ONLY``)."""
    params = dict(params or {})
    spark = {name: params.pop(name) for name in list(params) if name in SPARK_ONLY}
    if "spark_reg_param" in spark:
        value = spark["spark_reg_param"]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            raise ParameterError(
                f"spark_reg_param must be {SPARK_ONLY['spark_reg_param']}; got {value!r}"
            )
    if "spark_blocks" in spark:
        value = spark["spark_blocks"]
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ParameterError(
                f"spark_blocks must be {SPARK_ONLY['spark_blocks']}; got {value!r}"
            )
    return params, spark


def correspond(
    model_params: Mapping,
    patient_positive_counts: np.ndarray,
    default_blocks: int,
    spark_only: Mapping | None = None,
) -> SparkALSParams:
    """Spark ALS arguments equivalent to an ALSRecommender's ``model_params``.

    Parameters
    ----------
    model_params : mapping
        ``ALSRecommender.get_params()`` (factors, regularization, iterations, random_state).
    patient_positive_counts : ndarray of int, shape (n_p,)
        Number of positive ratings (``r > 0``) per patient.
    default_blocks : int
        User and item blocks when ``spark_only`` does not set ``spark_blocks``.
    spark_only : mapping, optional
        ``spark_reg_param`` and ``spark_blocks`` overrides (see ``SPARK_ONLY``).
    """
    spark_only = dict(spark_only or {})
    reg_param = spark_only.get(
        "spark_reg_param",
        float(model_params["regularization"]) / median_positive_count(patient_positive_counts),
    )
    blocks = int(spark_only.get("spark_blocks", max(1, default_blocks)))
    seed = model_params.get("random_state")
    return SparkALSParams(
        rank=int(model_params["factors"]),
        max_iter=int(model_params["iterations"]),
        reg_param=float(reg_param),
        alpha=1.0,
        seed=None if seed is None else int(seed),
        num_user_blocks=blocks,
        num_item_blocks=blocks,
    )


def effective_penalties(reg_param: float, counts: np.ndarray) -> dict:
    """Summary of Spark's effective L2 penalty ``reg_param * n`` over entities with ``n > 0``."""
    counts = np.asarray(counts)
    counts = counts[counts > 0]
    if not len(counts):
        return {"min": 0.0, "median": 0.0, "max": 0.0}
    penalties = reg_param * counts.astype(np.float64)
    return {
        "min": float(penalties.min()),
        "median": float(np.median(penalties)),
        "max": float(penalties.max()),
    }
