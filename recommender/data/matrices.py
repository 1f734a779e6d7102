"""The sparse matrices of a :class:`~recommender.data.dataset.Dataset`, built from coded rows.

Every builder here is a pure function of arrays (or small tables) and id maps, so the local
Dataset and the Spark encoder (:mod:`recommender.spark.encode`) build identical matrices from
the same facts. Shapes and meanings of the results: :mod:`recommender.data.dataset`.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp

from ..columns import Columns as C
from .codes import NAT, CohortCodes, group_edges
from .ids import IdMap
from .policies import SEVERITY_CODES, ConfidencePolicy

#: Outcome labels counted as evidence, in the column order of ``Dataset.label_counts``.
OUTCOME_BUCKETS = ("responded", "partial", "no_response", "worsened", "adverse")


def outcome_buckets(
    outcomes: np.ndarray, adverse: np.ndarray, positive_threshold: float
) -> np.ndarray:
    """Index (int8) into :data:`OUTCOME_BUCKETS` of each outcome (adverse flag wins)."""
    outcomes = np.asarray(outcomes, dtype=np.float32)
    bucket = np.full(outcomes.shape, 4, np.int8)  # the first matching rule below wins
    for index, rule in (
        (3, outcomes > -0.75),
        (2, outcomes >= 0),
        (1, outcomes > positive_threshold),
        (0, outcomes >= 0.75),
    ):
        bucket[rule] = index
    bucket[np.asarray(adverse) == 1] = 4
    return bucket


def frame_or_empty(frame: pd.DataFrame | None, columns: list[str]) -> pd.DataFrame:
    return (
        frame if frame is not None else pd.DataFrame({c: pd.Series(dtype=object) for c in columns})
    )


def display_names(dictionary: pd.DataFrame | None, column: str, ids: IdMap) -> dict[str, str]:
    """id -> display name for the ids the dataset knows (empty without a dictionary)."""
    if dictionary is None or "name" not in dictionary:
        return {}
    names = dictionary.drop_duplicates(column).set_index(column)["name"].astype(str)
    known = names[names.index.isin(set(ids.external_ids))]
    return {str(k): v for k, v in known.items() if v}


def has_entry(matrix: sp.csr_matrix, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Whether (row, col) is stored in ``matrix`` (explicit zeros count)."""
    pattern = sp.csr_matrix(
        (np.ones(matrix.nnz, np.int8), matrix.indices, matrix.indptr), shape=matrix.shape
    )
    return np.asarray(pattern[rows, cols]).ravel() > 0


def days_since_epoch(timestamps: pd.Series) -> np.ndarray:
    """Days since 1970-01-01 (float32), -1 where the timestamp is unknown."""
    values = pd.to_datetime(pd.Series(timestamps).reset_index(drop=True), utc=True)
    days = (values - pd.Timestamp("1970-01-01", tz="UTC")) / pd.Timedelta(days=1)
    return days.fillna(-1).to_numpy(dtype=np.float32)


def days_of_nanoseconds(nanoseconds: np.ndarray) -> np.ndarray:
    """:func:`days_since_epoch` of int64 nanoseconds since the epoch (:data:`NAT` unknown)."""
    days = nanoseconds.astype(np.float64)
    days /= 86_400_000_000_000.0
    days = days.astype(np.float32)
    days[nanoseconds == NAT] = -1.0
    return days


def interaction_matrix(interactions: pd.DataFrame | None, treatments: IdMap) -> sp.csr_matrix:
    """Symmetric int8 CSR (n_t, n_t) of the worst severity per pair of known treatments."""
    n_t = len(treatments)
    if interactions is None or not len(interactions):
        return sp.csr_matrix((n_t, n_t), dtype=np.int8)
    a = treatments.to_internal(interactions[C.treatment_a], strict=False)
    b = treatments.to_internal(interactions[C.treatment_b], strict=False)
    severity = interactions[C.severity].map(SEVERITY_CODES).fillna(0).to_numpy()
    keep = (a >= 0) & (b >= 0) & (severity > 0) & (a != b)
    rows = np.concatenate([a[keep], b[keep]])
    cols = np.concatenate([b[keep], a[keep]])
    values = np.concatenate([severity[keep], severity[keep]]).astype(np.int8)
    order = np.lexsort((-values, cols, rows))  # per pair, the worst severity first
    rows, cols, values = rows[order], cols[order], values[order]
    first = np.ones(len(rows), bool)
    first[1:] = (rows[1:] != rows[:-1]) | (cols[1:] != cols[:-1])
    return sp.csr_matrix(
        (values[first], (rows[first], cols[first])), shape=(n_t, n_t), dtype=np.int8
    )


def latest_rows(outcomes: pd.DataFrame) -> np.ndarray:
    """Positions of the latest row per (patient, treatment); NaT sorts first, file order breaks ties."""
    keys = [C.patient, C.treatment] if C.patient in outcomes else [C.treatment]
    order = outcomes.assign(_pos=np.arange(len(outcomes)))
    if C.timestamp in order and order[C.timestamp].notna().any():
        order = order.sort_values([C.timestamp, "_pos"], na_position="first", kind="stable")
    return order.drop_duplicates(keys, keep="last")["_pos"].sort_values().to_numpy()


def csr_of(rows, cols, values, shape, sum_dupes: bool = False) -> sp.csr_matrix:
    """CSR float32 from coordinates; explicit zeros are kept (they mean "tried, no effect")."""
    rows, cols = np.asarray(rows, np.int64), np.asarray(cols, np.int64)
    values = np.asarray(values, np.float32)
    order = np.lexsort((cols, rows))
    rows, cols, values = rows[order], cols[order], values[order]
    if sum_dupes and len(rows):
        keys = rows * shape[1] + cols
        unique, start = np.unique(keys, return_index=True)
        values = np.add.reduceat(values, start)
        rows, cols = unique // shape[1], unique % shape[1]
    return sp.csr_matrix((values, cols.astype(np.int32), indptr_of(rows, shape[0])), shape=shape)


def indptr_of(rows: np.ndarray, n_rows: int) -> np.ndarray:
    """CSR row pointer (int64, n_rows + 1) of entries whose sorted row indices are ``rows``."""
    indptr = np.zeros(n_rows + 1, np.int64)
    np.cumsum(np.bincount(rows, minlength=n_rows), out=indptr[1:])
    return indptr


def pattern_of(rows, cols, shape) -> sp.csr_matrix:
    """Boolean CSR with True at each (row, col), duplicates merged."""
    matrix = csr_of(rows, cols, np.ones(len(rows), np.float32), shape, sum_dupes=True)
    return sp.csr_matrix((np.ones(matrix.nnz, bool), matrix.indices, matrix.indptr), shape=shape)


def pattern_unique(rows: np.ndarray, cols: np.ndarray, shape: tuple[int, int]) -> sp.csr_matrix:
    """:func:`pattern_of` for many entries: scipy's counting sort by row (repeats are or-ed)."""
    pattern = sp.coo_matrix((np.ones(len(rows), bool), (rows, cols)), shape=shape).tocsr()
    pattern.sum_duplicates()
    return pattern


def demographics_of(
    patients: IdMap, table: pd.DataFrame, reference_year: int | None
) -> pd.DataFrame:
    """Per patient index: sex and age band (strings, None when unknown)."""
    rows = patients.to_internal(table[C.patient], strict=False)
    known = rows >= 0
    return coded_demographics(
        len(patients),
        rows[known],
        table[C.sex].to_numpy(object)[known] if C.sex in table else None,
        table[C.birth_year].astype("Int64").array[known] if C.birth_year in table else None,
        reference_year,
    )


def coded_demographics(
    n_patients: int,
    rows: np.ndarray | None,
    sex: np.ndarray | None,
    birth_year,
    reference_year: int | None,
) -> pd.DataFrame:
    """Sex and age band per patient index from the patients-table rows ``rows`` (patient indices).

    Sex is None where blank and NaN for a patient without a row, as a left join leaves it; the
    age band is None where unknown.
    """
    if rows is None:
        rows = np.zeros(0, np.int64)
    if sex is None:
        sex_column = np.full(n_patients, None, dtype=object)
    else:
        sex_column = np.full(n_patients, np.nan, dtype=object)
        sex_column[rows] = np.where(sex == "", np.array(None, dtype=object), sex)
    bands = np.full(n_patients, None, dtype=object)
    if birth_year is not None and reference_year and len(rows):
        known = ~np.asarray(pd.isna(birth_year))
        years = np.asarray(birth_year[known], dtype=np.int64)
        low = np.maximum(0, (reference_year - years) // 10 * 10)
        lows, codes = np.unique(low, return_inverse=True)
        labels = np.array([f"{value}-{value + 9}" for value in lows.tolist()], dtype=object)
        bands[rows[known]] = labels[codes]
    frame = pd.DataFrame({C.sex: pd.Series(sex_column, dtype=object)})
    frame["age_band"] = bands
    return frame


def outcome_matrices(
    p: np.ndarray,
    t: np.ndarray,
    outcome: np.ndarray,
    timestamp: np.ndarray,
    harm: np.ndarray,
    shape: tuple[int, int],
    order: np.ndarray | None = None,
):
    """history, history_days, harmful (CSR ``shape``) and treatment_support from outcome rows.

    One stable sort of the rows by (patient, treatment) (``order``, computed when None) gives
    every matrix: the latest row of each pair (by timestamp, NaT first, then file order) fills
    ``history`` and ``history_days``; a pair is harmful if any of its rows is.
    """
    n_p, n_t = shape
    if order is None:
        key = p.astype(np.int64)
        key *= n_t
        key += t
        order = np.argsort(key, kind="stable")
        del key
    head, last = group_edges(p[order], t[order])  # first / last row of each pair, sorted
    latest = _latest_of_groups(order, head, last, timestamp)
    harmed = np.zeros(len(latest), bool)
    harmed[np.cumsum(head, dtype=_counter(len(head)))[harm[order]] - 1] = True
    del order, head, last
    rows, cols = p[latest], t[latest]
    indptr = indptr_of(rows, n_p)
    history = sp.csr_matrix((outcome[latest], cols, indptr), shape=shape)
    history_days = sp.csr_matrix(
        (days_of_nanoseconds(timestamp[latest]), cols.copy(), indptr), shape=shape
    )
    harmful = sp.csr_matrix(
        (np.ones(int(harmed.sum()), bool), cols[harmed], indptr_of(rows[harmed], n_p)), shape=shape
    )
    support = np.bincount(cols, minlength=n_t).astype(np.int64)
    return history, history_days, harmful, support


def _counter(n: int) -> type:
    """The smallest integer dtype (int32 or int64) that counts to ``n``."""
    return np.int32 if n < 2**31 else np.int64


def _latest_of_groups(
    order: np.ndarray, head: np.ndarray, last: np.ndarray, timestamp: np.ndarray
) -> np.ndarray:
    """Row of each group of a stable sort (``order``; ``head`` / ``last`` mark where groups
    begin and end) with the latest timestamp (:data:`NAT` earliest), the later row in file
    order on a tie."""
    latest = order[last]
    members = np.flatnonzero(~(head & last))  # rows of groups with more than one row
    if len(members):
        group: np.ndarray = (
            np.cumsum(head[: members[-1] + 1], dtype=_counter(len(head)))[members] - 1
        )
        rows = order[members]
        last_first = np.lexsort((timestamp[rows], group))  # stable: file order within a tie
        group, rows = group[last_first], rows[last_first]
        final = np.append(group[1:] != group[:-1], True)
        latest[group[final]] = rows[final]
    return latest


def condition_counts(codes: CohortCodes, policy: ConfidencePolicy, n_c: int, n_t: int):
    """condition_outcomes, condition_successes (CSR (n_c, n_t)) and label_counts
    (CSR (n_c + 1, n_t * n_buckets)) from the outcome rows, by counting distinct
    (condition, treatment, label, worked) keys."""
    n_b = len(OUTCOME_BUCKETS)
    key = np.where(codes.condition >= 0, codes.condition, n_c).astype(np.int64)
    key *= n_t
    key += codes.treatment
    key *= n_b
    key += outcome_buckets(codes.outcome, codes.adverse, policy.positive_threshold)
    key *= 2
    key += policy.worked(codes.outcome)
    which, uniques = pd.factorize(key)
    del key
    counts = np.bincount(which, minlength=len(uniques))
    del which
    order = np.argsort(uniques)
    uniques, counts = uniques[order], counts[order]
    by_label, (n, n_worked) = _sum_sorted(uniques // 2, counts, counts * (uniques % 2))
    by_pair, (n_pair, worked_pair) = _sum_sorted(by_label // n_b, n, n_worked)
    with_c = by_pair < n_c * n_t
    pair_rows = by_pair[with_c] // n_t
    pair_cols = (by_pair[with_c] % n_t).astype(np.int32)
    shape_ct = (n_c, n_t)
    condition_outcomes = sp.csr_matrix(
        (n_pair[with_c].astype(np.float32), pair_cols, indptr_of(pair_rows, n_c)), shape=shape_ct
    )
    condition_successes = sp.csr_matrix(
        (worked_pair[with_c].astype(np.float32), pair_cols.copy(), indptr_of(pair_rows, n_c)),
        shape=shape_ct,
    )
    width = n_t * n_b
    with_c = by_label < n_c * width
    every = np.bincount(by_label % width, weights=n, minlength=width)
    columns = np.flatnonzero(every)
    label_rows = np.concatenate([by_label[with_c] // width, np.full(len(columns), n_c)])
    label_counts = sp.csr_matrix(
        (
            np.concatenate([n[with_c], every[columns]]).astype(np.float32),
            np.concatenate([by_label[with_c] % width, columns]).astype(np.int32),
            indptr_of(label_rows, n_c + 1),
        ),
        shape=(n_c + 1, width),
    )
    return condition_outcomes, condition_successes, label_counts


def _sum_sorted(keys: np.ndarray, *values: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
    """Distinct sorted ``keys`` and each of ``values`` summed over equal keys."""
    if not len(keys):
        return keys, [v for v in values]
    starts = np.flatnonzero(np.append(True, keys[1:] != keys[:-1]))
    return keys[starts], [np.add.reduceat(v, starts) for v in values]


def hstack_csr(blocks: list[sp.csr_matrix]) -> sp.csr_matrix:
    """``scipy.sparse.hstack(blocks, format="csr", dtype=float32)`` for canonical CSR blocks of
    the same rows, written straight into the result (no concatenated copies of the blocks)."""
    n_rows, n_cols = blocks[0].shape[0], sum(block.shape[1] for block in blocks)
    nnz = sum(block.nnz for block in blocks)
    index = np.int32 if max(nnz, n_cols) <= np.iinfo(np.int32).max else np.int64
    counts = [np.diff(block.indptr) for block in blocks]
    indptr = np.zeros(n_rows + 1, index)
    np.cumsum(sum(counts), out=indptr[1:])
    indices, data = np.empty(nnz, index), np.empty(nnz, np.float32)
    row_start, first_column = indptr[:-1].astype(np.int64), 0
    for block, count in zip(blocks, counts):  # each block's part of a row follows the last one's
        where = np.repeat((row_start - block.indptr[:-1]).astype(index), count)
        where += np.arange(block.nnz, dtype=index)
        indices[where] = block.indices + first_column if first_column else block.indices
        data[where] = block.data
        del where
        row_start += count
        first_column += block.shape[1]
    return sp.csr_matrix((data, indices, indptr), shape=(n_rows, n_cols))


def one_per_row(
    columns: list[np.ndarray], offset: int, n_rows: int, n_cols: int, value: np.float32
) -> sp.csr_matrix:
    """CSR (n_rows, n_cols) with ``value`` at column ``columns[k][r] - offset`` of row ``r`` for
    each k where that column is >= 0; later arrays of ``columns`` hold later columns."""
    if not columns:
        return sp.csr_matrix((n_rows, n_cols), dtype=np.float32)
    stacked = np.stack(columns, axis=1)
    present = stacked >= 0
    indices = (stacked[present] - offset).astype(np.int32)
    indptr = np.zeros(n_rows + 1, np.int64)
    np.cumsum(present.sum(axis=1), out=indptr[1:])
    return sp.csr_matrix(
        (np.full(len(indices), value, np.float32), indices, indptr), shape=(n_rows, n_cols)
    )


def coded_birth_years(n_patients: int, rows: np.ndarray | None, birth_year) -> np.ndarray:
    """Birth year per patient index, float32 (n_patients,), NaN where unknown, from the
    patients-table rows ``rows`` (patient indices) and their ``birth_year`` (IntegerArray)."""
    years = np.full(n_patients, np.nan, np.float32)
    if rows is not None and birth_year is not None and len(rows):
        values = np.asarray(
            pd.array(birth_year, dtype="Float64").to_numpy(na_value=np.nan), np.float32
        )
        years[rows] = values
    return years
