"""Patient groups of a subgroup audit: which attribute values define them, and who is in each.

Groups come from the ``patients`` table: ``age_band`` from ``birth_year`` at the data's
reference year (the year of its latest outcome, :func:`recommender.data.side_info.age_band`),
any other column as recorded (``sex``, ``race``, ``ethnicity``, ``payer`` ...). A patient with
no value is in the group ``unknown``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import pandas as pd

from ..columns import Columns as C
from ..data.pseudonym import KEY_FILE_VARIABLE, Pseudonymizer, check_key
from ..data.side_info import age_band
from ..data.tables import CohortTables
from ..exceptions import ArtifactError, DataValidationError
from ..models.persistence import Artifact

log = logging.getLogger(__name__)

AGE_BAND = "age_band"


UNKNOWN = "unknown"


ALL = "all"


#: Attributes audited by default, each when the data has it.
DEFAULT_ATTRIBUTES = (C.sex, AGE_BAND, "race", "ethnicity", "payer")


def reference_year(tables: CohortTables) -> int | None:
    """Year of the latest outcome (the Dataset's rule for age bands); None without timestamps."""
    times = tables.outcomes[C.timestamp]
    return int(times.max().year) if times.notna().any() else None


def resolve_attributes(
    tables: CohortTables, by: Sequence[str] | None, year: int | None
) -> list[str]:
    """The attributes to audit: ``by`` checked against the data, or the available defaults."""
    columns = set(tables.patients.columns) - {C.patient} if tables.patients is not None else set()
    available = columns - {C.birth_year}
    if C.birth_year in columns and year is not None:
        available.add(AGE_BAND)
    if by is None:
        chosen = [a for a in DEFAULT_ATTRIBUTES if a in available]
        if not chosen:
            raise DataValidationError(
                "no attribute to audit: the patients table is missing or has none of "
                f"{list(DEFAULT_ATTRIBUTES)}; name columns with by=... (--by)",
                file="patients",
            )
        return chosen
    chosen = list(dict.fromkeys(a.strip() for a in by if a.strip()))
    missing = [a for a in chosen if a not in available]
    if missing or not chosen:
        why = (
            " (age_band needs birth_year in patients and timestamps in outcomes)"
            if AGE_BAND in missing
            else ""
        )
        raise DataValidationError(
            f"cannot group by {missing or chosen}{why}; the data has "
            f"{sorted(available) or 'no patient attributes'}",
            file="patients",
        )
    return chosen


def patient_groups(
    tables: CohortTables, attributes: Sequence[str], year: int | None
) -> pd.DataFrame:
    """Group label (str, ``unknown`` when missing) of every patient id in any table.

    Returns a DataFrame indexed by raw patient id with one column per attribute.
    """
    ids = [tables.outcomes[C.patient]]
    ids += [t[C.patient] for t in (tables.patients, tables.patient_conditions) if t is not None]
    index = pd.Index(pd.unique(pd.concat(ids, ignore_index=True)), name=C.patient)
    patients = (
        tables.patients.set_index(C.patient)
        if tables.patients is not None
        else pd.DataFrame(index=pd.Index([], name=C.patient))
    )
    frame = pd.DataFrame(index=index)
    for attribute in attributes:
        if attribute == AGE_BAND:
            years = patients[C.birth_year].reindex(index)
            values = pd.Series([age_band(y, year) for y in years.to_numpy()], index=index)
        else:
            values = patients[attribute].reindex(index)
        values = values.astype(object).where(values.notna(), "").astype(str).str.strip()
        frame[attribute] = values.where(values != "", UNKNOWN).astype(object)
    return frame


def match_patients(
    artifact: Artifact, raw_ids: pd.Index, pseudonymizer: Pseudonymizer | None
) -> np.ndarray:
    """Row in ``raw_ids`` of each artifact patient (-1: absent), through the key when keyed."""
    dataset = artifact.dataset
    keys = raw_ids.to_numpy().astype(str)
    if dataset.pseudonym_fingerprint:
        pseudonymizer = pseudonymizer or dataset.pseudonymizer
        if pseudonymizer is None:
            raise ArtifactError(
                f"{artifact.path}: its patient ids are pseudonymised, so its patients cannot be "
                "matched to their groups in the audit data; give the training key with "
                f"--pseudonym-key-file or {KEY_FILE_VARIABLE}"
            )
        check_key(artifact.manifest["pseudonyms"], pseudonymizer, str(artifact.path))
        keys = pseudonymizer.many(keys).astype(str)
    return pd.Index(keys).get_indexer(dataset.patients.external_ids.astype(str)).astype(np.int64)


def group_order(label: str):
    """Sort groups naturally (age bands by their lower bound), ``unknown`` last."""
    if label == UNKNOWN:
        return (2, 0, "")
    head = label.split("-", 1)[0]
    return (0, int(head), label) if head.isdigit() else (1, 0, label)
