"""OMOP concepts as ``system|code`` ids, their names, and drug concepts' RxNorm ingredients.

- **Ids.** A concept the ``concept`` table describes is ``<prefix>|<concept_code>``, the prefix
  named from ``vocabulary_id`` as the other importers name systems (:func:`vocabulary_prefix`):
  celecoxib (concept 1118084, RxNorm code 140587) is ``rxnorm|140587``, gastrointestinal
  hemorrhage (concept 192671, SNOMED 74474003) ``snomed|74474003``, so ids agree with Synthea's
  and FHIR's. A concept the table does not describe (or with no table) is ``omop|<concept_id>``,
  counted as unmatched. Concept 0 ("No matching concept") gives no id.
- **Names.** ``concept_name``; for an undescribed concept the name of the row's source concept
  (``*_source_concept_id``) when the table describes it, else the row's ``*_source_value``, else
  the id itself.
- **Ingredients.** A drug concept whose ``concept_class_id`` is Ingredient is its own
  ingredient. Others are mapped, when the copy holds them, through ``concept_ancestor`` (every
  ancestor of class Ingredient) or else ``concept_relationship`` (``RxNorm has ing`` to a concept
  of class Ingredient); a combination product maps to each of its ingredients, as ``drug_era``
  does. Without either table, or for a concept they do not reach, the drug concept is kept.
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd

from . import common
from .omop_source import OmopSource

#: OMOP ``vocabulary_id`` (lower case) -> the prefix the other importers use for that system.
VOCABULARY_PREFIXES = {
    "rxnorm": "rxnorm",
    "snomed": "snomed",
    "icd10cm": "icd10",
    "icd10": "icd10",
    "icd9cm": "icd9",
    "loinc": "loinc",
    "ndc": "ndc",
    "cpt4": "cpt",
    "atc": "atc",
    "cvx": "cvx",
}
#: The prefix of a concept the concept table does not describe: ``omop|<concept_id>``.
UNDESCRIBED = "omop"
#: ``concept_relationship.relationship_id`` from a drug to its ingredient.
HAS_INGREDIENT = ("RxNorm has ing",)
INGREDIENT_CLASS = "ingredient"

_CONCEPT_COLUMNS = ("concept_id", "concept_name", "vocabulary_id", "concept_code")


def vocabulary_prefix(vocabulary_id: str) -> str:
    """The ``system`` of a concept's id, from its OMOP ``vocabulary_id``.

    The systems the other importers know keep their prefix; any other vocabulary is its
    ``vocabulary_id`` lower-cased, other characters than letters and digits made one dash.

    >>> vocabulary_prefix("RxNorm"), vocabulary_prefix("ICD10CM"), vocabulary_prefix("SNOMED")
    ('rxnorm', 'icd10', 'snomed')
    >>> vocabulary_prefix("RxNorm Extension"), vocabulary_prefix("mimiciv_drug_ndc")
    ('rxnorm-extension', 'mimiciv-drug-ndc')
    """
    key = str(vocabulary_id).strip().lower()
    known = VOCABULARY_PREFIXES.get(key) or common.system_prefix(key)
    return known or re.sub(r"[^a-z0-9]+", "-", key).strip("-") or UNDESCRIBED


class Concepts:
    """The rows of ``concept`` for the concept ids an import uses.

    Parameters
    ----------
    source : OmopSource
    used : set of str
        Concept ids (canonical text) to look up; only those rows are read.
    """

    def __init__(self, source: OmopSource, used: set[str]):
        self.present = source.has("concept")
        self.used = set(used)
        table = source.read(
            "concept",
            _CONCEPT_COLUMNS,
            ("concept_class_id", "domain_id"),
            where=("concept_id", used),
        )
        if table is None:
            self.frame = pd.DataFrame(columns=["id", "name", "code", "prefix", "klass"]).set_index(
                "id"
            )
            return
        frame = pd.DataFrame(
            {
                "id": table.ids("concept_id"),
                "name": table.text("concept_name"),
                "code": table.text("concept_code"),
                "prefix": table.text("vocabulary_id").map(vocabulary_prefix),
                "klass": table.text("concept_class_id").str.lower(),
            }
        )
        self.frame = frame.drop_duplicates("id").set_index("id")

    def known(self, ids: pd.Series) -> np.ndarray:
        """Whether each concept id is described by the concept table (bool, same length)."""
        return ids.isin(self.frame.index).to_numpy(dtype=bool)

    def code_ids(self, ids: pd.Series) -> pd.Series:
        """``system|code`` of each concept id; ``omop|<id>`` when undescribed; None for 0/""."""
        prefix = ids.map(self.frame["prefix"])
        code = ids.map(self.frame["code"])
        described = prefix.notna() & code.fillna("").ne("")
        out = (prefix + "|" + code).where(described, UNDESCRIBED + "|" + ids)
        return out.where(~ids.isin(["", "0"]), None).astype(object)

    def names(self, ids: pd.Series) -> pd.Series:
        """``concept_name`` of each concept id ("" when undescribed)."""
        return ids.map(self.frame["name"]).fillna("").astype(object)

    def classes(self, ids: pd.Series) -> pd.Series:
        """``concept_class_id`` of each concept id, lower case ("" when undescribed)."""
        return ids.map(self.frame["klass"]).fillna("").astype(object)

    def name_rows(self, ids: pd.Series, source_ids: pd.Series, source_values: pd.Series):
        """The names of event rows (see the module docstring): concept, source concept, value."""
        name = self.names(ids)
        name = name.where(name != "", self.names(source_ids))
        return name.where(name != "", source_values.fillna("").astype(str).str.strip())


def ingredient_map(source: OmopSource, drugs: set[str]) -> tuple[pd.DataFrame, str]:
    """(drug -> ingredient rows, how) for the drug concept ids ``drugs``.

    Returns a DataFrame with columns drug and ingredient (text concept ids; a combination
    product has one row per ingredient) read from ``concept_ancestor``, else
    ``concept_relationship``, and which table gave it ("concept_ancestor",
    "concept_relationship" or "" when the copy has neither). Whether a target is an ingredient
    is read from the concept table, so without it nothing is mapped.
    """
    drugs = drugs - {"", "0"}
    if source.has("concept_ancestor"):
        table = source.read(
            "concept_ancestor",
            ("ancestor_concept_id", "descendant_concept_id"),
            where=("descendant_concept_id", drugs),
        )
        pairs = pd.DataFrame(
            {
                "drug": table.ids("descendant_concept_id"),
                "ingredient": table.ids("ancestor_concept_id"),
            }
        )
        how = "concept_ancestor"
    elif source.has("concept_relationship"):
        table = source.read(
            "concept_relationship",
            ("concept_id_1", "concept_id_2", "relationship_id"),
            where=("concept_id_1", drugs),
        )
        keep = table.text("relationship_id").isin(HAS_INGREDIENT).to_numpy()
        pairs = pd.DataFrame(
            {"drug": table.ids("concept_id_1")[keep], "ingredient": table.ids("concept_id_2")[keep]}
        )
        how = "concept_relationship"
    else:
        return pd.DataFrame({"drug": [], "ingredient": []}, dtype=object), ""
    return pairs.drop_duplicates().reset_index(drop=True), how


def descendants(source: OmopSource, ancestors: set[str]) -> set[str]:
    """``ancestors`` and, when the copy holds ``concept_ancestor``, all their descendants."""
    if not source.has("concept_ancestor") or not ancestors:
        return set(ancestors)
    table = source.read(
        "concept_ancestor",
        ("ancestor_concept_id", "descendant_concept_id"),
        where=("ancestor_concept_id", ancestors),
    )
    return set(ancestors) | set(table.ids("descendant_concept_id"))
