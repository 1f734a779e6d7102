"""The duplicate_therapy rule: one active ingredient is never offered twice, in every path."""

from __future__ import annotations

import dataclasses
import hashlib
import json

import numpy as np
import pandas as pd
import pytest

from recommender.data.dataset import Dataset
from recommender.data.patient import Query
from recommender.data.policies import SafetyPolicy
from recommender.data.tables import validate_tables
from recommender.exceptions import DataValidationError, ParameterError
from recommender.models import make_model
from recommender.models.persistence import load_artifact
from recommender.ranking import recommend_all, safety
from tests.cohorts import random_cohort

#: Synthea's RxNorm codes and descriptions of the issue's example.
HCTZ_25, HCTZ_6 = "rxnorm|310798", "rxnorm|429503"
LISINOPRIL, COMBO, AMLODIPINE = "rxnorm|314076", "rxnorm|197885", "rxnorm|197361"
TREATMENTS = {
    HCTZ_25: ("Hydrochlorothiazide 25 MG Oral Tablet", "drug|hydrochlorothiazide"),
    HCTZ_6: ("hydrochlorothiazide 6.25 MG Oral Capsule", "drug|hydrochlorothiazide"),
    LISINOPRIL: ("lisinopril 10 MG Oral Tablet", "drug|lisinopril"),
    COMBO: (
        "Hydrochlorothiazide 12.5 MG / Lisinopril 10 MG Oral Tablet",
        "drug|hydrochlorothiazide;drug|lisinopril",
    ),
    AMLODIPINE: ("Amlodipine 5 MG Oral Tablet", ""),  # no ingredient listed: its own
}


def cohort(duplicates: str = "exclude") -> Dataset:
    """Twelve patients give every therapy support; patient A is on HCTZ 25 MG (it worked)."""
    rows = [
        (f"P{i}", t, "responded" if (i + j) % 3 else "no_response", "2020-01-01", "hypertension")
        for i in range(12)
        for j, t in enumerate(TREATMENTS)
    ]
    rows.append(("A", HCTZ_25, "responded", "2021-06-01", "hypertension"))
    outcomes = pd.DataFrame(
        rows, columns=["patient_id", "treatment_id", "outcome", "timestamp", "condition_id"]
    )
    treatments = pd.DataFrame(
        [(t, name, ingredients) for t, (name, ingredients) in TREATMENTS.items()],
        columns=["treatment_id", "name", "ingredients"],
    )
    tables = validate_tables({"outcomes": outcomes, "treatments": treatments})
    return Dataset.from_tables(tables, safety=SafetyPolicy(duplicates=duplicates))


def test_a_patient_on_hydrochlorothiazide_25_is_never_offered_6_25():
    model = make_model("popular").fit(cohort())
    answer = model.recommend("A", k=10, include_tried=True, condition_id="hypertension")
    assert HCTZ_6 not in answer.treatment_ids and COMBO not in answer.treatment_ids
    assert HCTZ_25 not in answer.treatment_ids  # the active treatment itself
    assert set(answer.treatment_ids) == {LISINOPRIL, AMLODIPINE}
    excluded = {e.treatment_id: e for e in answer.excluded}
    assert excluded[HCTZ_6].reason == excluded[HCTZ_6].rule == "duplicate_therapy"
    assert "drug|hydrochlorothiazide" in excluded[HCTZ_6].detail
    assert (
        HCTZ_25 in excluded[HCTZ_6].detail
        and "Hydrochlorothiazide 25 MG" in excluded[HCTZ_6].detail
    )
    assert "already an active treatment" in excluded[HCTZ_25].detail


def test_with_the_flag_policy_it_is_offered_and_flagged_as_a_dose_change():
    model = make_model("popular").fit(cohort(duplicates="flag"))
    answer = model.recommend("A", k=10, include_tried=True)
    assert HCTZ_6 in answer.treatment_ids and COMBO in answer.treatment_ids
    assert HCTZ_25 not in answer.treatment_ids  # the same product is no dose change
    (hctz_6,) = [r for r in answer.recommendations if r.treatment_id == HCTZ_6]
    assert hctz_6.flags == [
        {
            "type": "duplicate_therapy",
            "action": "dose_change",
            "with": HCTZ_25,
            "ingredient": "drug|hydrochlorothiazide",
        }
    ]
    (lisinopril,) = [r for r in answer.recommendations if r.treatment_id == LISINOPRIL]
    assert lisinopril.flags == []


def test_a_new_patient_with_active_treatments_ingredients_or_unknown_ids():
    model = make_model("popular").fit(cohort())
    on_25 = model.recommend_new([], conditions=[], k=10, active_treatments=[HCTZ_25])
    assert set(on_25.treatment_ids) == {LISINOPRIL, AMLODIPINE}
    on_ingredient = model.recommend_new(
        [], conditions=[], k=10, active_treatments=["drug|hydrochlorothiazide"]
    )
    assert set(on_ingredient.treatment_ids) == {LISINOPRIL, AMLODIPINE}
    detail = {e.treatment_id: e.detail for e in on_ingredient.excluded}[HCTZ_25]
    assert "drug|hydrochlorothiazide, given as active" in detail
    assert any("duplicate therapy only" in note for note in on_ingredient.notes)
    unknown = model.recommend_new([], conditions=[], k=10, active_treatments=["rxnorm|999"])
    assert len(unknown.treatment_ids) == len(TREATMENTS)
    assert any("not checked" in n and "rxnorm|999" in n for n in unknown.notes)
    combo = model.recommend_new([], conditions=[], k=10, active_treatments=[COMBO])
    assert set(combo.treatment_ids) == {AMLODIPINE}  # both of its ingredients are taken


def test_a_treatment_without_listed_ingredients_duplicates_only_itself():
    model = make_model("popular").fit(cohort())
    answer = model.recommend_new([], conditions=[], k=10, active_treatments=[AMLODIPINE])
    assert set(answer.treatment_ids) == set(TREATMENTS) - {AMLODIPINE}
    assert model.dataset_.ingredients.index_of(AMLODIPINE) >= 0


@pytest.mark.parametrize("duplicates", ["exclude", "flag"])
def test_batch_paths_apply_the_rule(duplicates):
    model = make_model("als", factors=4, iterations=3).fit(cohort(duplicates))
    batch = model.recommend_batch(["A", "P0"], k=10, include_tried=True)
    offered = set(batch.treatment_id[batch.patient_id == "A"])
    assert HCTZ_25 not in offered
    assert (HCTZ_6 in offered) == (duplicates == "flag")
    everyone = recommend_all(model, k=10, include_tried=True)
    keyed = everyone.patient_id == "A"
    assert set(everyone.treatment_id[keyed]) == offered


def test_the_artifact_keeps_ingredients_and_policy(tmp_path):
    model = make_model("popular").fit(cohort(duplicates="flag"))
    loaded = load_artifact(model.save(tmp_path / "a")).model
    assert loaded.dataset_.safety.duplicates == "flag"
    assert loaded.dataset_.ingredients == model.dataset_.ingredients
    assert (loaded.dataset_.treatment_ingredients != model.dataset_.treatment_ingredients).nnz == 0
    before, after = model.recommend("A", k=10), loaded.recommend("A", k=10)
    assert after.recommendations == before.recommendations and after.excluded == before.excluded


def test_an_artifact_of_format_3_loads_each_treatment_its_own_ingredient(tmp_path):
    path = make_model("popular").fit(cohort()).save(tmp_path / "a")
    manifest = json.loads((path / "manifest.json").read_text())
    for part in ("data", "indices", "indptr"):
        (path / f"dataset/treatment_ingredients.{part}.npy").unlink()
        del manifest["files"][f"dataset/treatment_ingredients.{part}.npy"]
    del manifest["data"]["ingredient_ids"], manifest["data"]["shapes"]["treatment_ingredients"]
    del manifest["data"]["safety"]["duplicates"]
    manifest["format_version"] = 3
    text = json.dumps(manifest, indent=2, sort_keys=True)
    (path / "manifest.json").write_text(text)
    (path / "manifest.json.sha256").write_text(hashlib.sha256(text.encode()).hexdigest() + "\n")
    old = load_artifact(path).model
    assert old.dataset_.safety.duplicates == "exclude"
    assert old.dataset_.ingredients.external_ids.tolist() == sorted(TREATMENTS)
    answer = old.recommend("A", k=10, include_tried=True)
    assert HCTZ_6 in answer.treatment_ids and HCTZ_25 not in answer.treatment_ids


def test_the_policy_and_the_column_are_validated():
    with pytest.raises(ParameterError, match="duplicates must be one of"):
        SafetyPolicy(duplicates="warn")
    outcomes = pd.DataFrame({"patient_id": ["P"], "treatment_id": ["T"], "outcome": [1]})
    treatments = pd.DataFrame({"treatment_id": ["T"], "name": ["t"], "ingredients": ["a;;b"]})
    with pytest.raises(DataValidationError, match=r"treatments.*row 1.*ingredients.*empty"):
        validate_tables({"outcomes": outcomes, "treatments": treatments})


def test_a_file_with_ingredients_trains_through_both_readers(tmp_path):
    from recommender.data.arrow_read import read_codes

    dataset = cohort()
    outcomes = pd.DataFrame(
        {"patient_id": ["P", "Q"], "treatment_id": ["T", "U"], "outcome": [1, 0]}
    )
    outcomes.to_csv(tmp_path / "outcomes.csv", index=False)
    pd.DataFrame(
        {"treatment_id": ["T", "U"], "name": ["t", "u"], "ingredients": [" drug|a ; drug|b", ""]}
    ).to_csv(tmp_path / "treatments.csv", index=False)
    built = Dataset.from_codes(read_codes(tmp_path))
    assert built.ingredients.external_ids.tolist() == ["U", "drug|a", "drug|b"]
    assert built.treatment_ingredients.toarray().tolist() == [
        [False, True, True],
        [True, False, False],
    ]
    pd.DataFrame({"treatment_id": ["T"], "name": ["t"], "ingredients": [";"]}).to_csv(
        tmp_path / "treatments.csv", index=False
    )
    with pytest.raises(DataValidationError, match="treatments.csv.*row 1.*ingredients"):
        read_codes(tmp_path)
    assert dataset.shares_ingredients


@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize("duplicates", ["exclude", "flag"])
def test_one_patient_codes_equal_the_batch_codes_with_shared_ingredients(seed, duplicates):
    tables = random_cohort(seed, n_patients=40, n_treatments=12, n_rows=300, ingredients=True)
    dataset = Dataset.from_tables(tables, safety=SafetyPolicy(duplicates=duplicates))
    assert dataset.shares_ingredients
    everyone = np.arange(len(dataset.patients))
    batch = Query.known(dataset, everyone, np.full(len(everyone), -1))
    active = safety.active_treatments(dataset, batch)
    codes = safety.exclusion_codes(dataset, batch, True, active)
    for p in everyone:
        one = Query.known(dataset, np.array([p]), np.array([-1]))
        mine = safety.patient_codes(dataset, one, True, safety.patient_active(dataset, one))
        assert mine == dict(zip(codes[[p]].indices.tolist(), codes[[p]].data.tolist()))


def test_the_duplicate_bit_fits_the_int8_codes():
    assert max(safety.REASONS) * 2 - 1 <= np.iinfo(np.int8).max
    assert list(safety.REASONS.values()).index("duplicate_therapy") < list(
        safety.REASONS.values()
    ).index("already_tried")
    assert dataclasses.fields(SafetyPolicy)[-1].name == "duplicates"
