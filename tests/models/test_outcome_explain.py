"""The outcome model's one-patient explanation: the occlusions it skips change nothing."""

from __future__ import annotations

import numpy as np
import pytest

from recommender.data.dataset import Dataset
from recommender.data.patient import Query
from recommender.data.synthetic.observational import generate_observational
from recommender.data.tables import validate_tables
from recommender.models import make_model
from recommender.models.outcome import explain


@pytest.fixture(scope="module")
def fitted():
    cohort = generate_observational(3000, seed=4)
    dataset = Dataset.from_tables(validate_tables(cohort.tables))
    return make_model("outcome", n_trees=15, random_state=1).fit(dataset)


def _brute_force(model, X: np.ndarray, success: np.ndarray) -> np.ndarray:
    """delta (groups, rows) with every present group occluded on every row."""
    layout = model.layout_
    table = explain._occlusions(layout, X.shape[1])
    present = explain._present_groups(layout, X[0])
    delta = np.zeros((len(present), len(X)))
    for g, group in enumerate(present):
        occluded = X.copy()
        columns = table.groups[group][1]
        occluded[:, columns] = 0.0 if table.groups[group][0].startswith("diagnosis:") else np.nan
        if table.groups[group][0] == "history":
            occluded[:, layout.columns.index("cf_score")] = 0.0
        delta[g] = success - 1.0 / (1.0 + np.exp(-model._mean_raw(occluded)))
    return delta


def test_skipped_occlusions_are_exactly_zero_and_the_rest_unchanged(fitted):
    dataset = fitted.dataset_
    checked = skipped = 0
    for patient in range(0, 600, 7):
        for condition in np.unique(dataset.patient_conditions[patient].indices)[:1].tolist():
            candidates = dataset.candidates(condition)
            if not len(candidates):
                continue
            query = Query.known(dataset, np.array([patient]), np.array([condition]))
            X, segments, leaves = fitted._one_patient(query, candidates, condition)
            success = 1.0 / (1.0 + np.exp(-fitted._mean_raw(X)))
            full = _brute_force(fitted, X, success)
            on_path = fitted.forest_.path_features(leaves, fitted._bags)
            table = explain._occlusions(fitted.layout_, X.shape[1])
            present = explain._present_groups(fitted.layout_, X[0])
            moved = (table.bits[present][:, None, :] & on_path[None]).any(axis=2)
            np.testing.assert_array_equal(full[~moved], 0.0)  # skipped: nothing changes
            skipped += int((~moved).sum())
            checked += full.size
            shown = explain._contributions(fitted, X, success, leaves)
            for i, entries in enumerate(shown):
                order = np.argsort(-np.abs(full[:, i]), kind="stable")[: explain.MAX_CONTRIBUTIONS]
                expected = [
                    round(float(full[g, i]), 4)
                    for g in order
                    if abs(full[g, i]) >= explain.MIN_CONTRIBUTION
                ]
                assert [e["contribution"] for e in entries] == expected
    assert checked > 500 and skipped > 0  # the pruning was exercised, not vacuous


def test_one_patients_block_equals_its_row_of_the_many_patients_block(fitted):
    from recommender.data.covariates import current_covariates
    from recommender.models.outcome.features import patient_block
    from recommender.models.outcome.model import _treatment_columns

    dataset, layout = fitted.dataset_, fitted.layout_
    patients = np.arange(0, 300, 3)
    query = Query.known(dataset, patients, np.full(len(patients), -1))
    history = _treatment_columns(query.rows, dataset.n_treatments)
    users = fitted.patient_factors_[patients]
    covariates = current_covariates(dataset, patients, layout.observations)
    many = patient_block(layout, covariates, history, users)
    for i, patient in enumerate(patients.tolist()):
        one = Query.known(dataset, np.array([patient]), np.array([-1]))
        block = patient_block(
            layout,
            current_covariates(dataset, np.array([patient]), layout.observations),
            _treatment_columns(one.rows, dataset.n_treatments),
            fitted.patient_factors_[[patient]],
        )
        np.testing.assert_array_equal(block[0], many[i])  # NaN positions too


def test_answers_from_many_threads_equal_the_serial_ones(fitted):
    """The service's threaded workers share one model: concurrent requests get the answers
    one request at a time would (LightGBM's Booster alone mixes them up)."""
    import threading

    dataset = fitted.dataset_
    asks = [
        (str(dataset.patients.external_ids[p]), str(dataset.conditions.external_ids[c]))
        for p in range(0, 400, 9)
        for c in dataset.patient_conditions[p].indices[:1].tolist()
    ]
    serial = {ask: fitted.recommend(ask[0], k=3, condition_id=ask[1]).to_dict() for ask in asks}
    wrong = []

    def work(seed: int) -> None:
        for i in np.random.default_rng(seed).integers(len(asks), size=60).tolist():
            try:
                answer = fitted.recommend(asks[i][0], k=3, condition_id=asks[i][1]).to_dict()
            except Exception as exc:  # noqa: BLE001 - a mixed-up leaf index raises here
                answer = repr(exc)
            if answer != serial[asks[i]]:
                wrong.append(asks[i])

    threads = [threading.Thread(target=work, args=(seed,)) for seed in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(serial) > 20 and wrong == []


def test_an_explained_request_traverses_the_candidates_once(fitted, monkeypatch):
    """Scoring the candidates and explaining the chosen share one traversal of the forest,
    whatever integer type each side holds the candidates in (the dataset's are int32)."""
    dataset = fitted.dataset_
    traversals = []
    original = type(fitted.forest_).raw_segments_and_leaves

    def counted(forest, X):
        traversals.append(len(X))
        return original(forest, X)

    monkeypatch.setattr(type(fitted.forest_), "raw_segments_and_leaves", counted)
    p = next(p for p in range(50) if len(dataset.patient_conditions[p].indices))
    patient = str(dataset.patients.external_ids[p])
    condition = str(dataset.conditions.external_ids[dataset.patient_conditions[p].indices[0]])
    answer = fitted.recommend(patient, k=3, condition_id=condition)
    assert answer.recommendations and all(r.explanation for r in answer.recommendations)
    assert len(traversals) == 1


def test_a_warmed_model_explains_as_lightgbm_does(fitted):
    """Warming compiles the success trees; the answers, contributions included, stay those
    LightGBM's scores give (to the rounding shown)."""
    import pickle

    dataset = fitted.dataset_
    cold = pickle.loads(pickle.dumps(fitted))  # nothing compiled
    assert cold.forest_.compiled is None
    warm = pickle.loads(pickle.dumps(fitted))
    warm.warm_up()
    assert warm.forest_.compiled is not None
    asks = [
        (str(dataset.patients.external_ids[p]), str(dataset.conditions.external_ids[c]))
        for p in range(0, 600, 7)
        for c in dataset.patient_conditions[p].indices[:1].tolist()
    ]
    shown = 0
    for patient, condition in asks:
        expected = cold.recommend(patient, k=3, condition_id=condition).to_dict()
        assert warm.recommend(patient, k=3, condition_id=condition).to_dict() == expected
        shown += sum(len(r["explanation"]["contributions"]) for r in expected["recommendations"])
    assert len(asks) > 40 and shown > 100
