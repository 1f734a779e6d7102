"""Safety rules: which treatments a patient must never be offered, and why.

Each rule is a guarantee applied in every ranking path (Python API, CLI, batch, service): an
excluded treatment is removed before the top-k is taken, never merely scored low.

=======================  ==========================================================  =====
reason                   rule                                                        bit
=======================  ==========================================================  =====
``previous_harm``        the patient had an adverse outcome with it (adverse flag,     2
                         or an outcome below the dataset's ``harm_threshold``, at
                         any time); applies even with ``include_tried``
``contraindicated``      one of the patient's conditions or allergies                  4
                         contraindicates it (``contraindications`` table)
``severe_interaction``   it interacts severely with one of the patient's active        8
                         treatments (``interactions`` table); a *moderate*
                         interaction does not exclude, it is flagged
``duplicate_therapy``    it is an active treatment, or shares an active ingredient     32
                         with one (``treatments.ingredients``; an ingredient id
                         given as active counts too); with the site policy
                         ``duplicates="flag"`` a treatment sharing an ingredient is
                         kept and flagged as a dose change, the active treatment
                         itself is still excluded
``insufficient_evidence`` fewer than ``min_support`` patients received it in the      16
                         training data: no suggestion rests on one or two people
                         (this also protects their privacy)
``already_tried``        the patient has an outcome recorded for it (unless            1
                         ``include_tried``)
=======================  ==========================================================  =====

*Active treatments* are those given in the request, plus those the patient's own record shows
as working and started within ``active_window_days`` of the patient's latest recorded outcome.
A request may also name an active *ingredient* (``drug|hydrochlorothiazide``, an id of
``Dataset.ingredients`` that is no treatment id): it is checked for duplicate therapy only.
:func:`resolve_active` sorts a request's ids into treatments, ingredients and unknown ids (an
unknown id is reported, never checked).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp

from ..data.dataset import Dataset
from ..data.patient import Query
from ..data.policies import MODERATE, SEVERE
from ..utils import sparse_rows
from ..utils.sparse_rows import row_arrays

TRIED, HARM, CONTRAINDICATED, INTERACTION, LOW_EVIDENCE, DUPLICATE = 1, 2, 4, 8, 16, 32
#: Bit -> reason code, in reporting priority (the first that applies is the reason given).
REASONS = {
    HARM: "previous_harm",
    CONTRAINDICATED: "contraindicated",
    INTERACTION: "severe_interaction",
    DUPLICATE: "duplicate_therapy",
    LOW_EVIDENCE: "insufficient_evidence",
    TRIED: "already_tried",
}


@dataclass(frozen=True)
class RequestedActive:
    """The active ids of a request, sorted by what the model knows them as.

    ``treatments`` and ``ingredients`` are indices (into ``Dataset.treatments`` and
    ``Dataset.ingredients``) in request order; ``unknown`` the ids that are neither, which no
    rule can check.
    """

    treatments: list[int] = field(default_factory=list)
    ingredients: list[int] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)


def resolve_active(dataset: Dataset, ids: Iterable[str] | None) -> RequestedActive:
    """Sort the active ids of a request: a treatment id first, else an ingredient id, else
    unknown (repeats kept once)."""
    if not ids:
        return RequestedActive()
    ids = list(dict.fromkeys(str(t) for t in ids))
    treatments = dataset.treatments.to_internal(ids, strict=False).tolist()
    rest = [t for t, i in zip(ids, treatments) if i < 0]
    ingredients = dataset.ingredients.to_internal(rest, strict=False).tolist() if rest else []
    return RequestedActive(
        [i for i in treatments if i >= 0],
        [i for i in ingredients if i >= 0],
        [t for t, i in zip(rest, ingredients) if i < 0],
    )


def _bits(pattern: sp.csr_matrix, bit: int) -> sp.csr_matrix:
    """Int8 CSR with ``bit`` wherever ``pattern`` has an entry (duplicates merged)."""
    result = sp.csr_matrix(
        (np.full(pattern.nnz, bit, np.int8), pattern.indices, pattern.indptr),
        shape=pattern.shape,
        copy=True,
    )  # sum_duplicates works in place
    result.sum_duplicates()
    result.data[:] = bit
    return result


def active_treatments(
    dataset: Dataset, query: Query, requested: sp.csr_matrix | None = None
) -> sp.csr_matrix:
    """Boolean CSR (n, n_t): each patient's active treatments (see the module docstring)."""
    history, days = query.history, query.history_days
    if history.shape[0] == 1 and requested is None:  # the service's path: no sparse arithmetic
        chosen = patient_active(dataset, query)
        return sparse_rows.single_row(chosen, np.ones(len(chosen), bool), history.shape[1])
    counts = np.diff(history.indptr)
    latest = np.full(history.shape[0], -np.inf)  # each patient's latest day on record
    filled = counts > 0  # reduceat needs non-empty segments
    if len(days.data):
        latest[filled] = np.maximum.reduceat(days.data, history.indptr[:-1][filled])
    recent = (
        dataset.policy.worked(history.data)
        & (days.data >= 0)
        & (np.repeat(latest, counts) - days.data <= dataset.safety.active_window_days)
    )
    active = sp.csr_matrix(
        (recent, history.indices, history.indptr), shape=history.shape, copy=True
    )  # eliminate_zeros works in place: never on shared arrays
    active.eliminate_zeros()
    if requested is not None:
        active = (active + requested).astype(bool).tocsr()
    return active


def patient_active(dataset: Dataset, query: Query) -> list[int]:
    """The active treatments (sorted indices) the record of the single patient of ``query``
    shows: what :func:`active_treatments` gives that patient, without sparse matrices."""
    history, days = query.history, query.history_days
    if not len(days.data):
        return []
    # float32 arithmetic, as for a batch: a day 180.00001 after the latest rounds to 180
    recent = (
        dataset.policy.worked(history.data)
        & (days.data >= 0)
        & (days.data.max() - days.data <= dataset.safety.active_window_days)
    )
    return history.indices[recent].tolist()  # a canonical row's columns: sorted, unique


def patient_codes(
    dataset: Dataset,
    query: Query,
    include_tried: bool,
    active: list[int],
    active_ingredients: Sequence[int] = (),
) -> dict[int, int]:
    """Treatment index -> bitmask of the rules excluding it, for the single patient of
    ``query`` with the ``active`` treatment indices (and the ingredient indices a request
    named as active): the entries of its row of :func:`exclusion_codes`, read from the few
    rows involved with plain Python (the service's path, where a request's patient has a
    handful of entries in each table)."""
    codes: dict[int, int] = dict.fromkeys(row_arrays(query.harmful, 0)[0].tolist(), HARM)
    marked = [
        (CONTRAINDICATED, contraindicated.tolist())
        for contraindicated, _ in _nonempty_rows(
            dataset.contraindications, row_arrays(query.patient_conditions, 0)[0]
        )
    ]
    marked += [
        (INTERACTION, partners[severity == SEVERE].tolist())
        for partners, severity in _nonempty_rows(dataset.interactions, active)
    ]
    marked.append((DUPLICATE, excluded_duplicates(dataset, active, active_ingredients)))
    if not include_tried:
        marked.append((TRIED, row_arrays(query.history, 0)[0].tolist()))
    for bit, treatments in marked:
        for t in treatments:
            codes[t] = codes.get(t, 0) | bit
    return codes


def exclusion_codes(
    dataset: Dataset, query: Query, include_tried: bool, active: sp.csr_matrix
) -> sp.csr_matrix:
    """Bitmask CSR (n, n_t) int8 of the per-patient rules that exclude each treatment.

    ``insufficient_evidence`` is the same for everyone and lives in :func:`low_evidence`.
    """
    if query.history.shape[0] == 1:
        return _single_row_codes(dataset, query, include_tried, active)
    contraindicated = (
        query.patient_conditions.astype(np.float32) @ dataset.contraindications.astype(np.float32)
    ).tocsr()
    contraindicated.eliminate_zeros()
    codes = _bits(query.harmful, HARM) + _bits(contraindicated, CONTRAINDICATED)
    if dataset.interactions.nnz and active.nnz:
        severe = dataset.interactions.multiply(dataset.interactions == SEVERE).astype(np.float32)
        interacting = (active.astype(np.float32) @ severe).tocsr()
        interacting.eliminate_zeros()
        codes = codes + _bits(interacting, INTERACTION)
    if active.nnz:
        codes = codes + _bits(_duplicate_pattern(dataset, active), DUPLICATE)
    if not include_tried:
        codes = codes + _bits(query.history, TRIED)
    return codes.astype(np.int8).tocsr()


def _duplicate_pattern(dataset: Dataset, active: sp.csr_matrix) -> sp.csr_matrix:
    """CSR (n, n_t) whose pattern is what ``duplicate_therapy`` excludes for each row's
    ``active`` treatments: those sharing an ingredient with one (``duplicates="exclude"``), or
    the active treatments only (``"flag"``, or when no two treatments share an ingredient)."""
    if dataset.safety.duplicates == "flag" or not dataset.shares_ingredients:
        return active
    held = (active.astype(np.float32) @ dataset.treatment_ingredients.astype(np.float32)).tocsr()
    shared = (held @ dataset.ingredient_treatments.astype(np.float32)).tocsr()
    shared.eliminate_zeros()
    return shared


def _single_row_codes(
    dataset: Dataset, query: Query, include_tried: bool, active: sp.csr_matrix
) -> sp.csr_matrix:
    """:func:`exclusion_codes` for one patient: :func:`patient_codes` as a (1, n_t) row."""
    return codes_row(
        patient_codes(dataset, query, include_tried, row_arrays(active, 0)[0].tolist()),
        dataset.n_treatments,
    )


def codes_row(codes: Mapping[int, int], n_treatments: int) -> sp.csr_matrix:
    """(1, ``n_treatments``) int8 CSR of one patient's :func:`patient_codes`."""
    indices = sorted(codes)
    return sparse_rows.single_row(
        np.array(indices, np.int32), np.array([codes[t] for t in indices], np.int8), n_treatments
    )


def _nonempty_rows(
    matrix: sp.csr_matrix, rows: Sequence[int] | np.ndarray
) -> list[tuple[np.ndarray, np.ndarray]]:
    """(indices, data) of those of ``rows`` that hold entries (rule tables are mostly empty)."""
    rows = np.asarray(rows, dtype=np.int64)
    filled = rows[matrix.indptr[rows + 1] > matrix.indptr[rows]]
    return [row_arrays(matrix, r) for r in filled.tolist()]


def shared_ingredients(
    dataset: Dataset, active: Sequence[int], active_ingredients: Sequence[int] = ()
) -> dict[int, list[tuple[int, int]]]:
    """Treatment index -> the (active, ingredient) pairs it shares an ingredient through.

    ``active`` are treatment indices, ``active_ingredients`` ingredient indices a request named
    as active; in a pair ``active`` is -1 for those. An active treatment is listed too (it
    shares every one of its ingredients with itself). A few row reads per active treatment.
    """
    held = [
        (a, i) for a in sorted(set(active)) for i in row_arrays(dataset.treatment_ingredients, a)[0]
    ]
    held += [(-1, i) for i in sorted(set(active_ingredients))]
    shared: dict[int, list[tuple[int, int]]] = {}
    for a, i in held:
        for t in row_arrays(dataset.ingredient_treatments, int(i))[0].tolist():
            shared.setdefault(t, []).append((a, int(i)))
    return shared


def excluded_duplicates(
    dataset: Dataset, active: Sequence[int], active_ingredients: Sequence[int] = ()
) -> list[int]:
    """The treatments ``duplicate_therapy`` excludes for one patient: the ``active`` ones and,
    unless the policy flags them instead, those sharing an ingredient with them or with an
    active ingredient of the request."""
    if dataset.safety.duplicates == "flag" or (
        not dataset.shares_ingredients and not len(active_ingredients)
    ):
        return list(active)
    return sorted(set(active).union(shared_ingredients(dataset, active, active_ingredients)))


def duplicate_flags(
    dataset: Dataset, active: Sequence[int], active_ingredients: Sequence[int] = ()
) -> dict[int, list[dict]]:
    """Treatment index -> its ``duplicate_therapy`` flags when the policy keeps such candidates
    (``duplicates="flag"``): one per (active, ingredient) pair it shares, each
    ``{"type": "duplicate_therapy", "action": "dose_change", "with": <active id>,
    "ingredient": <ingredient id>}`` (``with`` is the ingredient id for an ingredient given as
    active). Empty under ``"exclude"``; never an entry for an active treatment itself."""
    if dataset.safety.duplicates != "flag":
        return {}
    own = set(active)
    treatment_ids, ingredient_ids = (
        dataset.treatments.external_ids,
        dataset.ingredients.external_ids,
    )
    return {
        t: [
            {
                "type": "duplicate_therapy",
                "action": "dose_change",
                "with": str(treatment_ids[a] if a >= 0 else ingredient_ids[i]),
                "ingredient": str(ingredient_ids[i]),
            }
            for a, i in pairs
        ]
        for t, pairs in shared_ingredients(dataset, active, active_ingredients).items()
        if t not in own
    }


def low_evidence(dataset: Dataset, treatments: np.ndarray | None = None) -> np.ndarray:
    """Boolean (n_t,), or (len(treatments),) for those indices: treatments received by fewer
    than ``min_support`` patients."""
    support = (
        dataset.treatment_support if treatments is None else dataset.treatment_support[treatments]
    )
    return support < dataset.safety.min_support


def moderate_partners(dataset: Dataset, active: Sequence[int] | np.ndarray) -> dict[int, list[int]]:
    """Treatment index -> the active treatments (sorted indices) it interacts moderately with.

    Read from the active treatments' rows (``interactions`` is symmetric), so the cost grows
    with the few active treatments, not with the candidates.
    """
    partners: dict[int, list[int]] = {}
    if not dataset.interactions.nnz:
        return partners
    for a in sorted(set(np.asarray(active).tolist())):
        others, severity = row_arrays(dataset.interactions, a)
        for other in others[severity == MODERATE].tolist():
            partners.setdefault(other, []).append(a)
    return partners


def primary_reason(code: int) -> str:
    return next(reason for bit, reason in REASONS.items() if code & bit)


def describe(
    dataset: Dataset,
    treatment: int,
    code: int,
    conditions: Sequence[int] | np.ndarray,
    active: Sequence[int] | np.ndarray,
    active_ingredients: Sequence[int] = (),
) -> str:
    """A sentence a clinician can read about why ``treatment`` is excluded."""
    if code & HARM:
        return "an adverse outcome with this treatment is on record for this patient"
    if code & CONTRAINDICATED:
        culprits = dataset.conditions.to_external(
            [c for c in conditions if treatment in row_arrays(dataset.contraindications, c)[0]]
        )
        return "contraindicated by " + ", ".join(map(str, culprits))
    if code & INTERACTION:
        partners, severity = row_arrays(dataset.interactions, treatment)
        severe = set(partners[severity == SEVERE].tolist())
        partners = dataset.treatments.to_external([a for a in active if a in severe])
        return "severe interaction with active treatment " + ", ".join(map(str, partners))
    if code & DUPLICATE:
        return _describe_duplicate(dataset, treatment, active, active_ingredients)
    return "already tried by this patient (pass include_tried to rank it again)"


def _describe_duplicate(
    dataset: Dataset, treatment: int, active, active_ingredients: Sequence[int]
) -> str:
    """The sentence of a ``duplicate_therapy`` exclusion: the active treatment itself, or the
    active treatments (or ingredients) and the ingredients it shares with them."""
    if treatment in set(np.asarray(active).tolist()):
        return "duplicate therapy: already an active treatment of this patient"
    pairs = shared_ingredients(dataset, active, active_ingredients).get(treatment, [])
    ingredient_ids = dataset.ingredients.external_ids
    parts = [
        f"{ingredient_ids[i]} with active treatment {_label(dataset, a)}"
        if a >= 0
        else f"{ingredient_ids[i]}, given as active"
        for a, i in pairs
    ]
    return "duplicate therapy: same active ingredient, " + "; ".join(parts)


def _label(dataset: Dataset, treatment: int) -> str:
    """A treatment's id, with its display name when the data has one."""
    treatment_id = str(dataset.treatments.external_ids[treatment])
    name = dataset.treatment_names.get(treatment_id)
    return f"{treatment_id} ({name})" if name else treatment_id
