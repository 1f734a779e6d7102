"""The canonical tables as integer codes: what :meth:`Dataset.from_codes` builds its matrices from.

The three tables that grow with the cohort (outcomes, patient_conditions, patients) are held as
int32 codes into arrays of distinct ids, plus numeric columns; the dictionaries
(contraindications, interactions, treatments, conditions) stay small DataFrames. Two producers
give the same codes: :meth:`CohortCodes.from_tables` from validated pandas tables, and
:func:`recommender.data.arrow_read.read_codes` straight from the files (the training path, which never
builds the pandas tables).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from ..columns import Columns as C
from .tables import CohortTables

#: ``timestamp`` value of an outcome without a time (numpy's NaT as int64 nanoseconds).
NAT = np.iinfo(np.int64).min


@dataclass
class CohortCodes:
    """Validated, normalised tables as codes (the rows of ``CohortTables`` in the same order).

    Attributes
    ----------
    patient_ids : pandas.Index of str
        Distinct patient ids in order of first appearance in outcomes, then patient_conditions,
        then patients (the order of the Dataset's patient indices).
    treatment_ids : pandas.Index of str
        Distinct treatment ids of the outcomes, sorted (the Dataset's treatment order).
    condition_ids : pandas.Index of str
        Distinct condition ids of outcomes, patient_conditions and contraindications, sorted
        (the Dataset's condition order).
    patient, treatment, condition : ndarray of int32, shape (n_rows,)
        Outcome rows as codes into the id arrays; ``condition`` is -1 where the row has none.
    outcome : ndarray of float32, shape (n_rows,)
        Outcome in [-1, 1].
    timestamp : ndarray of int64, shape (n_rows,)
        Nanoseconds since 1970-01-01 UTC, :data:`NAT` where unknown.
    adverse : ndarray of int8, shape (n_rows,)
    pc_patient, pc_condition : ndarray of int32, shape (n_pairs,)
        (patient, condition) diagnoses (a repeated pair counts once).
    pc_time : ndarray of int64, shape (n_pairs,), or None
        Onset of each diagnosis in nanoseconds since the epoch, :data:`NAT` where unknown (None
        when the table has no timestamp column).
    table_patients : ndarray of int32 or None
        Patient code of each row of the patients table (None without the table).
    sex : ndarray of object or None
        Sex of each patients-table row ("" when blank); None without the column.
    birth_year : pandas IntegerArray or None
        Birth year of each patients-table row (NA when blank); None without the column.
    contraindications, interactions, treatments, conditions : DataFrame or None
        The small tables as :func:`recommender.data.tables.validate_tables` normalises them.
    observations : DataFrame or None
        The observations table as :func:`recommender.data.tables.validate_tables` normalises it.
    fingerprint : str
        As ``CohortTables.fingerprint``.
    pair_order : ndarray of int or None
        The outcome rows in a stable order by (patient, treatment) code, when the producer
        sorted them already (the Dataset then does not sort them again).
    """

    patient_ids: pd.Index
    treatment_ids: pd.Index
    condition_ids: pd.Index
    patient: np.ndarray
    treatment: np.ndarray
    condition: np.ndarray
    outcome: np.ndarray
    timestamp: np.ndarray
    adverse: np.ndarray
    pc_patient: np.ndarray
    pc_condition: np.ndarray
    table_patients: np.ndarray | None = None
    sex: np.ndarray | None = None
    birth_year: pd.api.extensions.ExtensionArray | None = None
    contraindications: pd.DataFrame | None = None
    interactions: pd.DataFrame | None = None
    treatments: pd.DataFrame | None = None
    conditions: pd.DataFrame | None = None
    pc_time: np.ndarray | None = None
    observations: pd.DataFrame | None = None
    fingerprint: str = ""
    pair_order: np.ndarray | None = None

    @property
    def n_rows(self) -> int:
        """Number of outcome rows."""
        return len(self.patient)

    def pseudonymised(self, pseudonymizer) -> CohortCodes:
        """The same codes with every patient id replaced by its pseudonym (one hash per id)."""
        return replace(
            self, patient_ids=pd.Index(pseudonymizer.many(self.patient_ids), dtype=object)
        )

    @classmethod
    def from_tables(cls, tables: CohortTables) -> CohortCodes:
        """Codes of validated tables (:func:`recommender.data.tables.read_tables` or ``validate_tables``)."""
        outcomes, pc, patients = tables.outcomes, tables.patient_conditions, tables.patients
        sizes = [len(outcomes), len(pc) if pc is not None else 0]
        patient_codes, patient_ids = _factorize(
            pd.concat(
                [frame[C.patient] for frame in (outcomes, pc, patients) if frame is not None],
                ignore_index=True,
            )
        )
        treatment, treatment_ids = sorted_codes(*_factorize(outcomes[C.treatment]))
        condition, condition_ids = sorted_codes(
            *_factorize(
                pd.concat(
                    [outcomes[C.condition]] + ([pc[C.condition]] if pc is not None else []),
                    ignore_index=True,
                )
            ),
            _column(tables.contraindications, C.condition),
        )
        has = patients is not None
        table = patients if patients is not None else pd.DataFrame()
        return cls(
            patient_ids=patient_ids,
            treatment_ids=treatment_ids,
            condition_ids=condition_ids,
            patient=patient_codes[: sizes[0]],
            treatment=treatment,
            condition=condition[: sizes[0]],
            outcome=outcomes[C.outcome].to_numpy(np.float32),
            timestamp=_nanoseconds(outcomes[C.timestamp]),
            adverse=outcomes[C.adverse].to_numpy(np.int8),
            pc_patient=patient_codes[sizes[0] : sum(sizes)],
            pc_condition=condition[sizes[0] :],
            table_patients=patient_codes[sum(sizes) :] if has else None,
            sex=table[C.sex].to_numpy(object) if C.sex in table else None,
            birth_year=(
                table[C.birth_year].astype("Int64").array if C.birth_year in table else None
            ),
            contraindications=tables.contraindications,
            interactions=tables.interactions,
            treatments=tables.treatments,
            conditions=tables.conditions,
            pc_time=_nanoseconds(pc[C.timestamp]) if pc is not None else None,
            observations=tables.observations,
            fingerprint=tables.fingerprint,
        )


def sorted_codes(codes: np.ndarray, ids: pd.Index, more_ids=()) -> tuple[np.ndarray, pd.Index]:
    """``codes`` into ``ids`` renumbered into the sorted distinct ids of ``ids`` and ``more_ids``
    (-1 stays -1); returns (int32 codes, sorted ids)."""
    values = np.sort(
        pd.unique(
            np.concatenate([np.asarray(ids, dtype=object), np.asarray(more_ids, dtype=object)])
        )
    )
    position = pd.Index(values).get_indexer(np.asarray(ids, dtype=object)).astype(np.int32)
    return take_codes(position, codes, -1), pd.Index(values, dtype=object)


def _column(frame: pd.DataFrame | None, column: str) -> np.ndarray:
    return frame[column].to_numpy(dtype=object) if frame is not None else np.zeros(0, object)


def group_edges(*keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Boolean masks of the first and of the last row of each run of equal rows of ``keys``
    (arrays of one length, sorted so that equal rows are adjacent)."""
    n = len(keys[0])
    head = np.ones(n, bool)
    for key in keys:
        head[1:] &= key[1:] == key[:-1]
    if n:
        head[0] = False
    np.logical_not(head, out=head)
    last = np.ones(n, bool)
    last[:-1] = head[1:]
    return head, last


def take_codes(values: np.ndarray, codes: np.ndarray, missing) -> np.ndarray:
    """``values[codes]`` with ``missing`` where a code is -1 (in the dtype of ``values``)."""
    return np.append(values, np.asarray(missing, dtype=values.dtype))[codes]


def _factorize(values: pd.Series) -> tuple[np.ndarray, pd.Index]:
    """(int32 codes, -1 for missing; distinct values in order of first appearance)."""
    codes, uniques = pd.factorize(values)
    return codes.astype(np.int32), pd.Index(uniques, dtype=object)


def _nanoseconds(timestamps: pd.Series) -> np.ndarray:
    """int64 nanoseconds since the epoch of UTC timestamps, :data:`NAT` where unknown."""
    return np.asarray(pd.to_datetime(timestamps, utc=True).array.as_unit("ns").asi8, np.int64)
