"""Drug names -> active ingredient ids, on hand-picked names and on real Synthea descriptions."""

from __future__ import annotations

import pandas as pd
import pytest

from recommender.data.ids import IdMap
from recommender.data.ingredients import (
    incidence,
    ingredient_ids,
    ingredient_name,
    join_ingredients,
    known_names,
    parse_ingredients,
)
from tests.importers.conftest import shared_dataset


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("Hydrochlorothiazide 25 MG Oral Tablet", ["hydrochlorothiazide"]),
        ("hydrochlorothiazide 6.25 MG Oral Capsule", ["hydrochlorothiazide"]),
        ("Hydrochlorothiazide 6.25 MG", ["hydrochlorothiazide"]),
        (
            "Amlodipine 5 MG / Hydrochlorothiazide 12.5 MG / Olmesartan medoxomil 20 MG Oral Tablet",
            ["amlodipine", "hydrochlorothiazide", "olmesartan"],
        ),
        ("24 HR Metformin hydrochloride 500 MG Extended Release Oral Tablet", ["metformin"]),
        ("24 HR metoprolol succinate 100 MG Extended Release Oral Tablet [Toprol]", ["metoprolol"]),
        ("metoprolol tartrate 25 MG Oral Tablet", ["metoprolol"]),
        ("Acetaminophen/Hydrocodone", ["acetaminophen", "hydrocodone"]),
        ("Acetaminophen w/Codeine", ["acetaminophen", "codeine"]),
        ("Dorzolamide 2%/Timolol 0.5% Ophth.", ["dorzolamide", "timolol"]),
        ("Penicillin G 375 MG/ML Injectable Solution", ["penicillin g"]),
        ("Penicillin V Potassium 250 MG Oral Tablet", ["penicillin v"]),
        ("Potassium Chloride", ["potassium chloride"]),
        ("ferrous sulfate 325 MG Oral Tablet", ["ferrous sulfate"]),
        ("NDA020800 0.3 ML Epinephrine 1 MG/ML Auto-Injector", ["epinephrine"]),
        ("Clonidine Patch 0.1 mg/24 hr", ["clonidine"]),
        ("Vitamin B12 5 MG/ML Injectable Solution", ["vitamin b12"]),
        ("Sulfamethoxazole-Trimethoprim", ["sulfamethoxazole-trimethoprim"]),  # nothing known
        ("", []),
        ("5 MG Oral Tablet", []),
    ],
)
def test_ingredient_ids_of_names(name, expected):
    assert ingredient_ids(name) == [f"drug|{e}" for e in expected]


def test_a_hyphen_splits_only_with_a_known_piece():
    known = known_names(["Oxycodone 5 mg Tab", "Acetaminophen", "Filgrastim", "Ipratropium-X"])
    assert known == {"oxycodone", "acetaminophen", "filgrastim"}  # a hyphenated name is not one
    assert ingredient_ids("OxyCODONE--Acetaminophen (5mg-325mg)", known) == [
        "drug|oxycodone",
        "drug|acetaminophen",
    ]
    assert ingredient_ids("Humulin-R Insulin", known) == ["drug|humulin-r insulin"]
    assert ingredient_ids("Pentamidine-Inhalation", known) == ["drug|pentamidine"]
    assert ingredient_name("Diltiazem Extended-Release") == "diltiazem"


def test_the_column_values_round_trip_and_refuse_empty_ids():
    assert parse_ingredients(" drug|a ; drug|b;drug|a ") == ["drug|a", "drug|b"]
    assert parse_ingredients("") == [] and parse_ingredients(None) == []
    assert join_ingredients(["drug|a", "drug|b", "drug|a"]) == "drug|a;drug|b"
    with pytest.raises(ValueError, match="empty ingredient id"):
        parse_ingredients("drug|a;")


def test_incidence_makes_an_unlisted_treatment_its_own_ingredient():
    treatments = IdMap(["A", "B", "C"], "treatment")
    listed = pd.DataFrame(
        {"treatment_id": ["A", "B", "Z"], "ingredients": ["drug|x;drug|y", "", "drug|z"]}
    )
    ingredients, matrix = incidence(treatments, listed, "treatment_id")
    assert ingredients.external_ids.tolist() == ["B", "C", "drug|x", "drug|y"]
    assert matrix.toarray().astype(int).tolist() == [[0, 0, 1, 1], [1, 0, 0, 0], [0, 1, 0, 0]]


def _descriptions(name: str) -> pd.Series:
    folder = shared_dataset(name)
    path = next(folder.glob("medications.csv*"))
    frame = pd.read_csv(path, dtype=str, usecols=lambda c: c.upper() == "DESCRIPTION")
    return frame.iloc[:, 0].dropna().str.strip().drop_duplicates()


@pytest.mark.shared_data
@pytest.mark.parametrize(
    ("dataset", "descriptions", "ingredients", "combinations"),
    [("synthea_ibm_california_1000", 137, 119, 14), ("synthea_nebraska_111", 132, 97, 15)],
)
def test_real_synthea_descriptions(dataset, descriptions, ingredients, combinations):
    """Every description names an ingredient; the counts are those docs/ingredients.md lists."""
    names = _descriptions(dataset)
    ids = {name: ingredient_ids(name) for name in names}
    assert all(ids.values())
    assert len(ids) == descriptions
    assert len({i for found in ids.values() for i in found}) == ingredients
    assert sum(len(found) > 1 for found in ids.values()) == combinations
    hctz = {name for name, found in ids.items() if "drug|hydrochlorothiazide" in found}
    assert hctz and all("hydrochlorothiazide" in name.lower() for name in hctz)
