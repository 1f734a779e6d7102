"""The outcome model: P(success) and P(harm) of each candidate therapy for this patient.

Learned from treatment *decisions* (:mod:`recommender.data.decisions`), each with the patient as
they were at that time (:mod:`recommender.data.covariates`) and their outcome history as
collaborative-filtering factors and therapy associations (:mod:`.history`, :mod:`.associations`). One feature row per (decision, therapy)
(:mod:`.features`); gradient-boosted trees (LightGBM) learn success and harm, with
inverse-propensity weights from a model of the clinicians' choices (:mod:`.propensity`) to
correct confounding by indication. Bootstrap replicates of the success model give each
prediction an interval; a therapy rarely given to patients like this one is flagged and its
interval widened to what the few comparable patients support.

Scores are predicted success probabilities in [0, 1]. The safety rules apply as for every model
(:mod:`recommender.ranking`).
"""

from __future__ import annotations

import functools

import numpy as np
import scipy.sparse as sp
from scipy import stats

from ...data.covariates import covariates_at, current_covariates, new_patient_covariates
from ...data.dataset import Dataset
from ...data.decisions import Decisions, decisions, history_at, prior_history
from ...data.patient import Query
from ...exceptions import ParameterError
from ...ranking.evidence import wilson_intervals
from ...utils.sparse_rows import lookup, single_row, take_rows
from ..base import Recommender
from ..params import integer, optional_seed, real
from .associations import crossfit_scores, fit_associations, pair_scores
from .explain import explain_predictions
from .features import FeatureLayout, choose_layout, pair_rows, patient_block
from .forest import Forest, train_booster
from .history import fit_item_factors, fold_in
from .propensity import choice_sets, normalise, stabilised_weights

WEIGHTINGS = ("ipw", "none")
#: Up to this many treatments, one patient's scores take the one-call path.
SMALL = 256
#: Smallest leaf of the propensity booster (decisions x candidates rows).
PROPENSITY_MIN_CHILD = 200


class OutcomeRecommender(Recommender):
    """Covariate-aware, confounding-adjusted outcome model (see the module docstring).

    Parameters
    ----------
    factors : int
        Outcome-history factors (explicit matrix factorisation of what worked, :mod:`.history`),
        with the therapy-to-therapy associations (:mod:`.associations`); 0 uses no outcome
        history (a plain covariate model: the S-learner baseline with ``weighting="none"``).
    regularization, als_iterations : float, int
        The factorisation's ridge penalty and sweeps.
    n_bags : int
        Bootstrap replicates of the success model (the prediction is their mean log-odds;
        their spread gives the interval). 1: no interval beyond the overlap one.
    n_trees, learning_rate, num_leaves, min_child_samples : LightGBM settings of each booster.
    weighting : {"ipw", "none"}
        Stabilised inverse-propensity weights on the training decisions, or none.
    max_weight : float
        Weights are clipped to [1 / max_weight, max_weight]. (On the observational generator,
        100k patients: unweighted 0.881 of the achievable gap, clipped at 3: 0.865, at 10:
        0.834; all confounders are recorded there, so weighting can only add variance; it
        guards against an outcome model that is wrong where a therapy is rarely given.)
    max_decisions : int
        At most this many decisions (whole patients, drawn with ``random_state``) are learned
        from; the propensity model learns from at most half as many.
    max_candidates : int
        Choice-set size of the propensity model per condition (best supported therapies).
    max_diagnoses, max_observations : int
        The most frequent diagnoses and observation codes used as covariates.
    overlap_threshold : float
        A propensity below this flags the therapy as rarely given to patients like this one.
    shrinkage : float
        Pseudo-decisions that shrink each therapy-to-therapy association toward 0.
    random_state : int or None
    """

    kind = "outcome"
    _constraints = {
        "factors": integer(0, 512),
        "regularization": real(0),
        "als_iterations": integer(1, 1000),
        "n_bags": integer(1, 100),
        "n_trees": integer(1, 10_000),
        "learning_rate": real(0, 1, low_open=True),
        "num_leaves": integer(2, 4096),
        "min_child_samples": integer(1),
        "weighting": (lambda v: v in WEIGHTINGS, f"one of {list(WEIGHTINGS)}"),
        "max_weight": real(1),
        "max_decisions": integer(100),
        "max_candidates": integer(2),
        "max_diagnoses": integer(0, 10_000),
        "max_observations": integer(0, 10_000),
        "overlap_threshold": real(0, 1),
        "shrinkage": real(0),
        "random_state": optional_seed(),
    }

    def __init__(
        self,
        factors: int = 4,
        regularization: float = 5.0,
        als_iterations: int = 10,
        n_bags: int = 4,
        n_trees: int = 40,
        learning_rate: float = 0.15,
        num_leaves: int = 15,
        min_child_samples: int = 40,
        weighting: str = "ipw",
        max_weight: float = 3.0,
        max_decisions: int = 400_000,
        max_candidates: int = 50,
        max_diagnoses: int = 30,
        max_observations: int = 20,
        overlap_threshold: float = 0.02,
        shrinkage: float = 20.0,
        random_state: int | None = 0,
    ):
        self.factors = factors
        self.regularization = regularization
        self.als_iterations = als_iterations
        self.n_bags = n_bags
        self.n_trees = n_trees
        self.learning_rate = learning_rate
        self.num_leaves = num_leaves
        self.min_child_samples = min_child_samples
        self.weighting = weighting
        self.max_weight = max_weight
        self.max_decisions = max_decisions
        self.max_candidates = max_candidates
        self.max_diagnoses = max_diagnoses
        self.max_observations = max_observations
        self.overlap_threshold = overlap_threshold
        self.shrinkage = shrinkage
        self.random_state = random_state

    # --- fitting ----------------------------------------------------------------------------------

    def _fit(self, dataset: Dataset, show_progress: bool) -> None:
        made = decisions(dataset)
        if not len(made):
            raise ParameterError(
                "the outcome model learns from treatment decisions, and no outcome row names "
                "the condition it treated (condition_id); use another model or add conditions"
            )
        rng = np.random.default_rng(self.random_state)
        made = _whole_patients(made, self.max_decisions, rng)
        layout = choose_layout(dataset, self.factors, self.max_diagnoses, self.max_observations)
        items = users = history = None
        if self.factors:
            items = fit_item_factors(
                dataset, self.factors, self.regularization, self.als_iterations, self.random_state
            )
            history = prior_history(dataset, made)
            users = fold_in(items, history, self.regularization)
            self.associations_ = fit_associations(
                history, made.treatment, made.success, dataset.n_treatments, self.shrinkage
            )
            pairs = crossfit_scores(
                history,
                made.treatment,
                made.success,
                made.patient,
                dataset.n_treatments,
                self.shrinkage,
                self.random_state,
            )
        else:
            self.associations_ = sp.csr_matrix((dataset.n_treatments,) * 2, dtype=np.float32)
            pairs = None
        covariates = covariates_at(dataset, made.patient, made.time, layout.observations)
        block = patient_block(layout, covariates, history, users)
        block[:, layout.columns.index("line")] = made.line
        X = pair_rows(
            layout, block, np.arange(len(made)), made.treatment, made.condition, users, items, pairs
        )
        self.layout_ = layout
        propensity_booster, propensity = self._fit_propensity(
            dataset, made, layout, block, users, items, history, rng
        )
        weight = (
            stabilised_weights(propensity, made.condition, made.treatment, self.max_weight)
            if self.weighting == "ipw"
            else np.ones(len(made))
        )
        boosters = {}
        patients = np.unique(made.patient, return_inverse=True)[1]
        for b in range(self.n_bags):
            draws = rng.poisson(1.0, patients.max() + 1) if self.n_bags > 1 else None
            bag_weight = weight * draws[patients] if draws is not None else weight
            boosters[f"success{b}"] = train_booster(
                X, made.success, bag_weight, layout.categorical, self._params(b), self.n_trees
            )
        boosters["harm"] = train_booster(
            X,
            made.harm,
            weight,
            layout.categorical,
            self._params(self.n_bags),
            self.n_trees // 2 or 1,
        )
        boosters["propensity"] = propensity_booster
        self.forest_ = Forest.merge(boosters)
        self.item_factors_ = (
            items if items is not None else np.zeros((dataset.n_treatments, 0), np.float32)
        )
        self.patient_factors_ = (
            fold_in(items, dataset.matrix[:, : dataset.n_treatments].tocsr(), self.regularization)
            if items is not None
            else np.zeros((dataset.n_patients, 0), np.float32)
        )
        self.condition_decisions_ = np.bincount(made.condition, minlength=len(dataset.conditions))
        self.primary_condition_ = _primary_conditions(dataset)
        self.n_decisions_ = len(made)

    def _params(self, seed_offset: int) -> dict:
        seed = (self.random_state or 0) + seed_offset
        return {
            "learning_rate": self.learning_rate,
            "num_leaves": self.num_leaves,
            "min_child_samples": self.min_child_samples,
            "seed": seed,
            "deterministic": True,
            "force_row_wise": True,
            "num_threads": 0,
            "max_cat_to_onehot": 8,
            "cat_smooth": 20.0,
        }

    def _fit_propensity(self, dataset, made: Decisions, layout, block, users, items, history, rng):
        """The choice booster (on at most max_decisions / 2 decisions) and e(chosen | x) of every
        training decision."""
        sample = np.sort(
            rng.choice(len(made), min(len(made), max(self.max_decisions // 2, 1)), replace=False)
        )
        position, treatment, chosen = choice_sets(dataset, made.take(sample), self.max_candidates)
        rows = sample[position]
        X = pair_rows(
            layout,
            block,
            rows,
            treatment,
            made.condition[rows],
            users,
            items,
            self._pairs(history, rows, treatment),
        )
        # smoother than the outcome boosters: inverse propensities magnify over-confident tails
        params = {
            **self._params(10_000),
            "min_child_samples": max(self.min_child_samples, PROPENSITY_MIN_CHILD),
            "learning_rate": self.learning_rate / 2,
            "lambda_l2": 10.0,
        }
        booster = train_booster(X, chosen, None, layout.categorical, params, self.n_trees)
        position, treatment, chosen = choice_sets(dataset, made, self.max_candidates)
        X = pair_rows(
            layout,
            block,
            position,
            treatment,
            made.condition[position],
            users,
            items,
            self._pairs(history, position, treatment),
        )
        e = normalise(np.asarray(booster.predict(X, raw_score=True)), position)
        return booster, e[chosen]

    # --- the patient now ---------------------------------------------------------------------------

    def _state(self) -> dict[str, np.ndarray]:
        forest = self.forest_
        return {
            "forest": forest.to_array(),
            "forest_sizes": np.asarray(forest.sizes, np.int64),
            "item_factors": self.item_factors_,
            "patient_factors": self.patient_factors_,
            "condition_decisions": self.condition_decisions_,
            "primary_condition": self.primary_condition_,
            "associations.data": self.associations_.data,
            "associations.indices": self.associations_.indices,
            "associations.indptr": self.associations_.indptr,
            **self.layout_.to_arrays(),
        }

    def state_shapes(self, arrays) -> dict[str, tuple]:
        dataset = self.dataset_
        n_t = dataset.n_treatments
        if np.size(arrays.get("layout_n_factors", ())) != 1:
            return {"layout_n_factors": (1,)}  # the check names the file missing or misshapen
        d = int(np.asarray(arrays["layout_n_factors"]).reshape(-1)[0])
        return {
            "item_factors": (n_t, d + 1 if d else 0),  # the bias ``b_t`` last
            "patient_factors": (dataset.n_patients, d),
            "condition_decisions": (len(dataset.conditions),),
            "primary_condition": (n_t,),
            "associations.data": ("associations",),
            "associations.indices": ("associations",),
            "associations.indptr": (n_t + 1,),
            "forest": ("forest",),
            "forest_sizes": (self.n_bags + 2,),  # the success bags, harm, propensity
            "layout_diagnoses": ("diagnoses",),
            "layout_observations": ("observations",),
            "layout_sexes": ("sexes",),
            "layout_n_factors": (1,),
        }

    def _load_state(self, arrays) -> None:
        sizes = np.asarray(arrays["forest_sizes"]).tolist()
        names = [f"success{b}" for b in range(len(sizes) - 2)] + ["harm", "propensity"]
        self.forest_ = Forest.from_array(arrays["forest"], names, sizes)
        self.item_factors_ = np.asarray(arrays["item_factors"])
        self.patient_factors_ = arrays["patient_factors"]
        self.condition_decisions_ = np.asarray(arrays["condition_decisions"])
        self.primary_condition_ = np.asarray(arrays["primary_condition"])
        n_t = len(self.primary_condition_)
        self.associations_ = sp.csr_matrix(
            (
                arrays["associations.data"],
                arrays["associations.indices"],
                arrays["associations.indptr"],
            ),
            shape=(n_t, n_t),
        )
        self.layout_ = FeatureLayout.from_arrays(arrays)

    def warm_up(self) -> None:
        """Compile the forest for the one-patient path (lleaves: a request's candidates under
        every segment, then its few dozen occluded rows, are scored several times faster than
        through LightGBM), then what every model warms. Seconds, once per loaded model;
        without it LightGBM scores every row."""
        self.check_fitted()
        self.forest_.compile(sums=[self._bags])
        super().warm_up()

    @property
    def _bags(self) -> list[str]:
        return [name for name in self.forest_.names if name.startswith("success")]

    def _patients(self, query: Query) -> tuple[np.ndarray, np.ndarray | None, object]:
        """(patient block without ``line``, history factors, the query's history rows),
        computed once per query."""
        cached = query.cache.get("outcome.patients")
        if cached is None:
            cached = query.cache["outcome.patients"] = self._read_patients(query)
        return cached

    def _read_patients(self, query: Query) -> tuple[np.ndarray, np.ndarray | None, object]:
        dataset, layout = self.dataset_, self.layout_
        history = _treatment_columns(query.rows, dataset.n_treatments)
        if query.patients is not None and query.times is not None and dataset.events is not None:
            # a past decision: the record as it was then (evaluation)
            covariates = covariates_at(dataset, query.patients, query.times, layout.observations)
            history = history_at(dataset, query.patients, query.times)
            users = (
                fold_in(self.item_factors_, history, self.regularization)
                if layout.n_factors
                else None
            )
        elif query.patients is not None:
            covariates = current_covariates(dataset, query.patients, layout.observations)
            users = self.patient_factors_[query.patients] if layout.n_factors else None
        else:
            info = query.new_patient
            covariates = new_patient_covariates(
                dataset,
                dataset.conditions.to_external(query.patient_conditions.indices),
                layout.observations,
                sex=info.sex if info else None,
                birth_year=info.birth_year if info else None,
                observations=info.observations if info else None,
            )
            users = (
                fold_in(self.item_factors_, history, self.regularization)
                if layout.n_factors
                else None
            )
        block = patient_block(layout, covariates, history, users)
        return block, users, history

    def _rows(self, query: Query, rows: np.ndarray, treatments: np.ndarray, conditions: np.ndarray):
        """Feature rows for query rows ``rows`` x ``treatments`` under ``conditions`` (-1: each
        treatment's usual condition)."""
        block, users, history = self._patients(query)
        conditions = np.where(conditions >= 0, conditions, self.primary_condition_[treatments])
        block = block[rows].copy()
        block[:, self.layout_.columns.index("line")] = self._tried_for(history, rows, conditions)
        return pair_rows(
            self.layout_,
            block,
            np.arange(len(rows)),
            treatments,
            conditions,
            users[rows] if users is not None else None,
            self.item_factors_,
            self._pairs(history, rows, treatments),
        )

    def _pairs(self, history, rows: np.ndarray, treatments: np.ndarray) -> np.ndarray | None:
        """The candidates' association scores (None without history columns)."""
        if not self.layout_.n_factors or history is None:
            return None
        if history.shape[0] == 1 and len(treatments) <= SMALL:  # one patient: no sparse algebra
            return _one_patient_pairs(self.associations_, history, treatments)
        return pair_scores(self.associations_, history, rows, treatments)

    def _tried_for(self, history: sp.csr_matrix, rows: np.ndarray, conditions: np.ndarray):
        """Per row: therapies in the patient's history that are candidates of the row's
        condition (the therapies already tried in this episode, as training counts them)."""
        out = np.zeros(len(rows))
        if history.shape[0] == 1:  # one patient: a sorted lookup per condition, no masks
            for c in set(conditions.tolist()):
                if c >= 0:
                    found = lookup(self.dataset_.candidates(c), history.indices)[1]
                    out[conditions == c] = int(found.sum())
            return out
        owner = np.repeat(np.arange(history.shape[0]), np.diff(history.indptr))
        for c in np.unique(conditions).tolist():
            at = np.flatnonzero(conditions == c)
            if c < 0:
                continue
            hit = np.isin(history.indices, self.dataset_.candidates(c))
            per_row = np.bincount(owner[hit], minlength=history.shape[0])
            out[at] = per_row[rows[at]]
        return out

    def score_treatments(self, query: Query, treatments: np.ndarray) -> np.ndarray:
        """P(success) float32 (len(query), len(treatments)) for the query's conditions."""
        self.check_fitted()
        treatments = np.asarray(treatments, np.int64)
        n, m = len(query), len(treatments)
        if n == 1 and m <= SMALL:  # the service's path: every segment in one call, kept
            condition = int(query.conditions[0])
            segments = self._segments(query, treatments, condition)
            bags = [self.forest_.names.index(b) for b in self._bags]
            return _sigmoid(segments[:, bags].mean(axis=1))[None, :].astype(np.float32)
        rows = np.repeat(np.arange(n), m)
        X = self._rows(query, rows, np.tile(treatments, n), np.repeat(query.conditions, m))
        return _sigmoid(self._mean_raw(X)).reshape(n, m).astype(np.float32)

    def _mean_raw(self, X: np.ndarray) -> np.ndarray:
        """Mean log-odds of success over the bootstrap replicates (one call of the forest)."""
        bags = self._bags
        return self.forest_.raw_sum(X, bags) / len(bags)

    def _score(self, query: Query) -> np.ndarray:
        """Every treatment's P(success); with a condition, its candidates only (-inf elsewhere)."""
        dataset = self.dataset_
        scores = np.full((len(query), dataset.n_treatments), -np.inf, np.float32)
        for c in np.unique(query.conditions).tolist():
            at = np.flatnonzero(query.conditions == c)
            treatments = dataset.candidates(c) if c >= 0 else np.arange(dataset.n_treatments)
            if not len(treatments):
                continue
            sub = _take(query, at)
            scores[np.ix_(at, treatments)] = self.score_treatments(sub, treatments)
        return scores

    # --- explanations ------------------------------------------------------------------------------

    def explanations(self, query: Query, treatments: np.ndarray, condition: int) -> list[dict]:
        """Per treatment: predicted success with its interval, harm, overlap and the patient's
        features that moved the prediction (see :mod:`.explain`)."""
        return explain_predictions(self, query, np.asarray(treatments, np.int64), condition)

    def _segments(self, query: Query, treatments: np.ndarray, condition: int) -> np.ndarray:
        """Raw scores (len(treatments), n_segments) for the single patient of ``query`` (kept
        on the query: the ranker asks for scores, then explains the chosen)."""
        return self._one_patient(query, treatments, condition)[1]

    def _one_patient(self, query: Query, treatments: np.ndarray, condition: int):
        """(feature rows, raw scores of every segment, leaves (rows, trees) or None where the
        compiled forest scored them) of ``treatments`` for the single patient of ``query``,
        computed once per query and condition."""
        # int64 in the key: the ranker scores the condition's candidates as int64, the
        # explanation asks with the dataset's int32 candidates; both must hit one entry
        treatments = np.asarray(treatments, np.int64)
        key = ("outcome.rows", condition, treatments.tobytes())
        cached = query.cache.get(key)
        if cached is None:
            rows = np.zeros(len(treatments), np.int64)
            X = self._rows(query, rows, treatments, np.full(len(treatments), condition))
            cached = query.cache[key] = (X, *self.forest_.raw_segments_and_leaves(X))
        return cached

    def interval(
        self, bag_raw: np.ndarray, n_effective: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """95% interval per row of (m, B) bag log-odds, widened to the Wilson interval of
        ``n_effective`` comparable patients."""
        p = _sigmoid(bag_raw.mean(axis=1))
        if bag_raw.shape[1] > 1:
            spread = _sigmoid(bag_raw).std(axis=1, ddof=1) * _t975(bag_raw.shape[1] - 1)
        else:
            spread = np.zeros(len(p))
        low, high = np.clip(p - spread, 0, 1), np.clip(p + spread, 0, 1)
        n = np.asarray(n_effective, np.float64)
        w_low, w_high = wilson_intervals(p * n, n)
        return np.minimum(low, w_low), np.maximum(high, w_high)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.asarray(x, np.float64)))


def _take(query: Query, rows: np.ndarray) -> Query:
    """The query restricted to ``rows``."""
    return Query(
        rows=take_rows(query.rows, rows),
        patients=None if query.patients is None else query.patients[rows],
        conditions=query.conditions[rows],
        patient_conditions=take_rows(query.patient_conditions, rows),
        history=take_rows(query.history, rows),
        harmful=take_rows(query.harmful, rows),
        history_days=take_rows(query.history_days, rows),
        new_patient=query.new_patient,
        times=None if query.times is None else query.times[rows],
    )


def _whole_patients(made: Decisions, limit: int, rng: np.random.Generator) -> Decisions:
    """At most ``limit`` decisions, taking whole patients (drawn at random) so that no
    patient's history is cut."""
    if len(made) <= limit:
        return made
    patients = np.unique(made.patient)
    order = rng.permutation(patients)
    counts = np.bincount(made.patient)[order]
    kept = order[np.cumsum(counts) <= limit]
    return made.take(np.flatnonzero(np.isin(made.patient, kept)))


def _primary_conditions(dataset: Dataset) -> np.ndarray:
    """Per treatment, the condition it was most often given for (-1: none recorded)."""
    counts = dataset.condition_outcomes.tocsc()
    primary = np.full(dataset.n_treatments, -1, np.int64)
    for t in range(dataset.n_treatments):
        start, stop = counts.indptr[t], counts.indptr[t + 1]
        if stop > start:
            primary[t] = counts.indices[start + int(np.argmax(counts.data[start:stop]))]
    return primary


def _treatment_columns(rows: sp.csr_matrix, n_t: int) -> sp.csr_matrix:
    """The first ``n_t`` columns (the outcomes) of matrix rows, without scipy's slicing for
    one row."""
    if rows.shape[0] != 1:
        return rows[:, :n_t].tocsr()
    keep = rows.indices < n_t
    return single_row(rows.indices[keep], rows.data[keep], n_t)


def _one_patient_pairs(W: sp.csr_matrix, history: sp.csr_matrix, treatments: np.ndarray):
    """:func:`~.associations.pair_scores` of one history row, by lookups in W's rows."""
    columns = history.indices
    signs = np.where(history.data > 0, 1.0, -1.0)
    out = np.zeros(len(treatments))
    if not len(columns):
        return out
    for i, t in enumerate(treatments.tolist()):
        lo, hi = W.indptr[t], W.indptr[t + 1]
        at, found = lookup(W.indices[lo:hi], columns)
        if found.any():
            out[i] = float(W.data[lo:hi][at[found]] @ signs[found])
    return out


@functools.lru_cache(maxsize=64)
def _t975(degrees: int) -> float:
    """Student t's 97.5% quantile (the bootstrap interval's half-width per replicate sd)."""
    return float(stats.t.ppf(0.975, degrees))
