"""Semantic checks of a loaded artifact: is what the checksums protect actually a usable model?

Checksums prove that files are the ones the writer wrote, not that the writer wrote a model
that can answer (a training bug, a buggy converter). Before a model is served - at start-up,
on reload, in the CLI, and by training before it renames a new artifact into place - these
checks run in order, and the first failure raises :class:`ArtifactVerificationError` naming
the file and the check:

1. **id maps**: the patient, treatment, feature and condition id maps have the lengths the
   manifest records, and the dataset's arrays have one row per patient / treatment;
2. **shapes**: every learned array has the shape its model family declares
   (:meth:`~recommender.models.base.Recommender.state_shapes`), consistent with the id maps
   and with each other (a named dimension such as the factor count must agree everywhere);
3. **finite**: every floating-point array holds finite values only;
4. **smoke queries** (:func:`smoke_queries`): one known patient and one new patient are
   ranked, and each answer must be non-empty with finite scores.

Steps 1-3 read arrays only; step 4 runs the model, so a server that forks after loading runs
it in a child process (``service/model_store.py``).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from ..data.dataset import Dataset
from ..data.patient import Query
from ..exceptions import ArtifactError
from ..ranking.single import recommend_stored_conditions, recommend_unknown

#: An expected shape: an int is an exact length; a str names a dimension whose length must be
#: the same in every array that names it (e.g. ``"factors"``).
Shape = tuple[int | str, ...]
#: Patients tried for the known-patient smoke query: the first whose answer can be non-empty.
SMOKE_PATIENTS = 16
#: Elements per slice when scanning an array for non-finite values (bounds the temporary).
CHUNK = 1 << 22


class ArtifactVerificationError(ArtifactError):
    """An artifact whose files are intact but whose content cannot be served."""

    def __init__(self, where: str, check: str, detail: str):
        super().__init__(f"{where}: {check} check failed: {detail}")
        self.where, self.check, self.detail = where, check, detail


def check_id_maps(dataset: Dataset, manifest: Mapping) -> None:
    """Id maps against the manifest's counts, and the matrices against the id maps."""
    data = manifest.get("data", {})
    counts = {
        "patient": (len(dataset.patients), data.get("n_patients"), "dataset/patient_ids.npy"),
        "treatment": (dataset.n_treatments, data.get("n_treatments"), "manifest treatment_ids"),
        "feature": (len(dataset.features), data.get("n_features"), "manifest feature_ids"),
        "condition": (len(dataset.conditions), data.get("n_conditions"), "manifest condition_ids"),
    }
    for kind, (actual, recorded, where) in counts.items():
        if recorded is not None and actual != recorded:
            raise ArtifactVerificationError(
                where, "id map", f"{actual} {kind} ids, the manifest records {recorded}"
            )
    n_p, n_t, n_f, n_c = (
        dataset.n_patients,
        dataset.n_treatments,
        len(dataset.features),
        len(dataset.conditions),
    )
    expected = {
        "matrix": (n_p, n_t + n_f),
        "history": (n_p, n_t),
        "harmful": (n_p, n_t),
        "history_days": (n_p, n_t),
        "patient_conditions": (n_p, n_c),
    }
    for name, shape in expected.items():
        actual = getattr(dataset, name).shape
        if tuple(actual) != shape:
            raise ArtifactVerificationError(
                f"dataset/{name}.*.npy",
                "id map",
                f"matrix of shape {tuple(actual)}, the id maps need {shape}",
            )
    if data.get("n_outcomes") is not None and dataset.history.nnz != data["n_outcomes"]:
        raise ArtifactVerificationError(
            "dataset/history.data.npy",
            "id map",
            f"{dataset.history.nnz} outcomes, the manifest records {data['n_outcomes']}",
        )


def check_shapes(group: str, arrays: Mapping[str, np.ndarray], expected: Mapping) -> None:
    """Each array named in ``expected`` is present and of its shape (see :data:`Shape`)."""
    bound: dict[str, tuple[int, str]] = {}
    for name, shape in expected.items():
        where = f"{group}/{name}.npy"
        if name not in arrays:
            raise ArtifactVerificationError(where, "shape", "the file is not in the artifact")
        actual = tuple(np.shape(arrays[name]))
        if len(actual) != len(shape):
            raise ArtifactVerificationError(
                where, "shape", f"{len(actual)}-d array {actual}, expected {_show(shape)}"
            )
        for axis, (length, want) in enumerate(zip(actual, shape)):
            if isinstance(want, str):
                first = bound.setdefault(want, (length, name))
                if first[0] != length:
                    raise ArtifactVerificationError(
                        where,
                        "shape",
                        f"axis {axis} ({want}) has length {length}, but {group}/{first[1]}.npy "
                        f"has {first[0]}",
                    )
            elif length != want:
                raise ArtifactVerificationError(
                    where,
                    "shape",
                    f"shape {actual}, expected {_show(shape)} from the artifact's id maps",
                )


def check_finite(group: str, arrays: Mapping[str, np.ndarray], allowed=frozenset()) -> None:
    """Every floating-point array of ``arrays`` (but those named in ``allowed``) is finite."""
    for name, array in arrays.items():
        array = np.asarray(array)
        if name in allowed or not np.issubdtype(array.dtype, np.floating):
            continue
        flat = array.reshape(-1)
        for start in range(0, len(flat), CHUNK):
            part = flat[start : start + CHUNK]
            bad = ~np.isfinite(part)
            if bad.any():
                total = int(bad.sum()) + sum(
                    int((~np.isfinite(flat[s : s + CHUNK])).sum())
                    for s in range(start + CHUNK, len(flat), CHUNK)
                )
                raise ArtifactVerificationError(
                    f"{group}/{name}.npy",
                    "finite values",
                    f"{total} of {len(flat)} values are NaN or infinite",
                )


def smoke_queries(model) -> None:
    """Rank one known and one new patient; each answer must be non-empty and finite.

    The known patient is the first of the first :data:`SMOKE_PATIENTS` rows whose own record
    leaves a therapy allowed (``include_tried``: only the safety rules exclude); every one of
    them must score finite. The new patient has tried the most supported therapy with success.
    """
    try:
        _smoke_queries(model)
    except ArtifactVerificationError:
        raise
    except (ArithmeticError, LookupError, ValueError, TypeError) as exc:  # a broken state
        raise ArtifactVerificationError(
            "model/", "smoke query", f"ranking failed ({type(exc).__name__}: {exc})"
        ) from None


def _smoke_queries(model) -> None:
    dataset = model.dataset_
    n_t = dataset.n_treatments
    if n_t == 0 or dataset.n_patients == 0:
        raise ArtifactVerificationError("manifest", "smoke query", "the model has no therapies")
    rows = np.arange(min(SMOKE_PATIENTS, dataset.n_patients))
    scores = model.score(Query.known(dataset, rows, np.full(len(rows), -1)))
    if scores.shape != (len(rows), n_t):
        raise ArtifactVerificationError(
            "model/", "smoke query", f"scores of shape {scores.shape}, expected {(len(rows), n_t)}"
        )
    if not np.isfinite(scores).all():
        raise ArtifactVerificationError(
            "model/",
            "smoke query",
            f"{int((~np.isfinite(scores)).sum())} of {scores.size} scores of the first "
            f"{len(rows)} known patients are NaN or infinite",
        )
    answered = False
    for index in range(min(SMOKE_PATIENTS, dataset.n_patients)):
        patient = str(dataset.patients.external_ids[index])
        (answer,) = recommend_stored_conditions(
            model, index, patient, [None], k=3, include_tried=True, explain=False
        )
        _check_answer(model, answer, f"known patient at row {index}")
        answered = answered or bool(answer.recommendations)
        if answered:
            break
    if not answered:
        raise ArtifactVerificationError(
            "model/",
            "smoke query",
            f"no therapy allowed for any of the first {SMOKE_PATIENTS} known patients: "
            "the scores are not finite or every therapy is excluded",
        )
    best = str(dataset.treatments.external_ids[int(np.argmax(dataset.treatment_support))])
    answer = recommend_unknown(
        model,
        [{"treatment_id": best, "outcome": "responded"}],
        (),
        k=3,
        include_tried=True,
        explain=False,
    )
    _check_answer(model, answer, "new patient")
    if not answer.recommendations:
        raise ArtifactVerificationError(
            "model/",
            "smoke query",
            "the new patient got an empty answer: " + "; ".join(answer.notes),
        )


def _check_answer(model, answer, who: str) -> None:
    scores = [item.score for item in answer.recommendations]
    if not all(np.isfinite(scores)):
        raise ArtifactVerificationError(
            "model/", "smoke query", f"the {who} got non-finite scores {scores}"
        )


def _show(shape: Shape) -> str:
    return "(" + ", ".join(str(n) for n in shape) + ("," if len(shape) == 1 else "") + ")"
