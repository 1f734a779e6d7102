"""Who the hook is about, in engine terms: the model's own record, the prefetch, or both.

- A patient the model knows and no prefetch: the model's record as trained
  (``model.recommend``).
- Any prefetch given: the prefetch is fresher than the training data (a new allergy, a new
  diagnosis), so the model's record of a known patient is merged with it and the engine is asked
  as for a new patient (``model.recommend_new``), which applies the safety rules to the merged
  record.
- A patient the model does not know needs the conditions, medications and allergies, from the
  prefetch or the EHR's FHIR server (:mod:`.fhir_client`); without them the safety rules cannot
  be applied and the call is refused with 412 (CDS Hooks: "Precondition Failed" when required
  prefetch is missing and the service cannot fetch it).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from recommender.data.patient import StoredRecord

from ..errors import ApiError
from ..model_store import Served
from .prefetch import Prefetched


@dataclass
class PatientInputs:
    """What the engine is asked with for one patient.

    Attributes
    ----------
    patient_id : str
        ``context.patientId`` (raw; pseudonymised by the engine and the audit line).
    known : bool
        The model holds this patient.
    merged : bool
        Prefetch was given: ask with :attr:`history` and :attr:`conditions` (recommend_new).
    history, conditions, active_conditions, active_treatments, sex, birth_year
        As in :class:`~.prefetch.Prefetched`, merged with the model's record when known.
    names : dict
        Display names from the prefetch codings (id -> text).
    dosages : dict
        Therapy id -> the dosage of the patient's latest earlier order of it (prefetch).
    """

    patient_id: str
    known: bool
    merged: bool
    history: list = field(default_factory=list)
    conditions: list = field(default_factory=list)
    active_conditions: list = field(default_factory=list)
    active_treatments: list = field(default_factory=list)
    sex: str | None = None
    birth_year: int | None = None
    names: dict = field(default_factory=dict)
    dosages: dict = field(default_factory=dict)

    def recommend(
        self,
        served: Served,
        condition_id: str | None,
        k: int,
        include_tried: bool,
        extra_active: list[str] = (),
        explain: bool = True,
    ):
        """The engine's :class:`~recommender.ranking.RecommendationList` for this patient."""
        active = [
            *self.active_treatments,
            *[t for t in extra_active if t not in self.active_treatments],
        ]
        if self.merged or not self.known:
            return served.model.recommend_new(
                history=self.history,
                conditions=self.conditions,
                k=k,
                condition_id=condition_id,
                include_tried=include_tried,
                sex=self.sex,
                birth_year=self.birth_year,
                active_treatments=active,
                explain=explain,
            )
        return served.model.recommend(
            self.patient_id,
            k=k,
            condition_id=condition_id,
            include_tried=include_tried,
            active_treatments=active,
            explain=explain,
        )

    def recommend_conditions(
        self, served: Served, condition_ids: list[str], k: int, include_tried: bool
    ) -> list:
        """:meth:`recommend` (with explanations) for each condition, the patient encoded and
        scored once (``recommend_new_conditions`` / ``recommend_conditions``)."""
        if self.merged or not self.known:
            return served.model.recommend_new_conditions(
                self.history,
                self.conditions,
                condition_ids,
                k=k,
                include_tried=include_tried,
                sex=self.sex,
                birth_year=self.birth_year,
                active_treatments=self.active_treatments,
            )
        return served.model.recommend_conditions(
            self.patient_id,
            condition_ids,
            k=k,
            include_tried=include_tried,
            active_treatments=self.active_treatments,
        )

    def treatable(self, served: Served, limit: int) -> list[str]:
        """Active conditions the model has therapies for, in record order, at most ``limit``."""
        found = []
        for condition in self.active_conditions:
            if condition in served.conditions and served.model.has_candidates(condition):
                found.append(condition)
                if len(found) == limit:
                    break
        return found


def gather(
    served: Served, patient_id: str, prefetched: Prefetched, fhir_problem: str | None = None
) -> PatientInputs:
    """The patient's engine inputs (see the module docstring).

    ``fhir_problem`` says why the EHR's FHIR server could not supply what the prefetch lacks
    (None: it was not asked, or it answered).

    Raises
    ------
    ApiError
        412 ``prefetch_missing`` for a patient the model does not know when the conditions,
        medications or allergies are neither prefetched nor fetched.
    """
    stored = served.model.patient_record(patient_id)
    known = stored is not None
    if not known:
        missing = prefetched.missing_for_new_patient()
        if missing:
            where = (
                f"; {fhir_problem}"
                if fhir_problem
                else "; no fhirServer with a usable fhirAuthorization to fetch them from"
            )
            raise ApiError(
                412,
                "prefetch_missing",
                "the model does not know this patient and the "
                f"request lacks the prefetch {missing}{where}: without the patient's "
                "conditions, medications and allergies the safety rules cannot be "
                "applied",
                {"missing_prefetch": missing},
            )
    inputs = PatientInputs(
        patient_id,
        known,
        merged=bool(prefetched.provided),
        history=list(prefetched.history),
        conditions=[*prefetched.conditions, *prefetched.allergies],
        active_conditions=list(prefetched.active_conditions),
        active_treatments=list(prefetched.active_treatments),
        sex=prefetched.sex,
        birth_year=prefetched.birth_year,
        names=dict(prefetched.names),
        dosages=dict(prefetched.dosages),
    )
    if stored is not None:
        _add_stored_record(inputs, stored, "conditions" in prefetched.provided)
    return inputs


def _add_stored_record(inputs: PatientInputs, stored: StoredRecord, fresh_conditions: bool) -> None:
    """Merge the model's record of the patient (outcomes, harm, conditions, sex)."""
    inputs.history = stored.history + inputs.history  # on equal dates the prefetch (later) wins
    inputs.conditions += [c for c in stored.conditions if c not in inputs.conditions]
    if not fresh_conditions:  # no active-conditions prefetch: the model's record says
        inputs.active_conditions += [
            c for c in stored.conditions if c not in inputs.active_conditions
        ]
    if not inputs.sex:
        inputs.sex = stored.sex
