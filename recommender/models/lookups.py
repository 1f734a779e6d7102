"""Questions a caller asks a fitted model in external ids: the service's window on the engine.

Every method takes and returns the ids of the canonical tables (``treatment_id``,
``condition_id``, raw ``patient_id``); indices, matrices and the Dataset stay inside the engine,
so a service never depends on how a model lays out its data.
"""

from __future__ import annotations

from collections.abc import Callable

from ..data.dataset import Dataset
from ..data.patient import StoredRecord, stored_record
from ..ranking.evidence import evidence, warm_evidence


class Lookups:
    """Mixed into :class:`~recommender.models.base.Recommender`; needs a fitted ``dataset_``."""

    dataset_: Dataset
    check_fitted: Callable[[], None]  # Recommender's: raises NotFittedError before fit or load

    def treatment_ids(self) -> list[str]:
        """Every treatment the model knows, in its order."""
        self.check_fitted()
        return [str(t) for t in self.dataset_.treatments.external_ids]

    def condition_ids(self) -> list[str]:
        """Every condition (diagnosis or allergy) the model knows, in its order."""
        self.check_fitted()
        return [str(c) for c in self.dataset_.conditions.external_ids]

    def ingredient_ids(self) -> list[str]:
        """Every active-ingredient id the model knows (``drug|<name>``, or a treatment's own id
        when its data lists no ingredients), in its order; ``recommend``'s
        ``active_treatments`` accepts these as well as treatment ids."""
        self.check_fitted()
        return [str(i) for i in self.dataset_.ingredients.external_ids]

    def display_names(self) -> tuple[dict[str, str], dict[str, str]]:
        """(treatment id -> name, condition id -> name) from the training data's dictionaries."""
        self.check_fitted()
        return self.dataset_.treatment_names, self.dataset_.condition_names

    def patient_record(self, patient_id: str) -> StoredRecord | None:
        """What the training data holds of ``patient_id`` (a raw id; pseudonymised here when
        the model is keyed), or None when the model does not know the patient."""
        self.check_fitted()
        index = int(self.dataset_.patient_indices([patient_id], strict=False)[0])
        return None if index < 0 else stored_record(self.dataset_, index)

    def has_candidates(self, condition_id: str) -> bool:
        """Whether any treatment is on record for ``condition_id`` (False for unknown ids)."""
        self.check_fitted()
        condition = self._condition_or_none(condition_id)
        return condition is not None and len(self.dataset_.candidates(condition)) > 0

    def is_candidate(self, treatment_id: str, condition_id: str) -> bool:
        """Whether ``treatment_id`` is on record for ``condition_id`` (False for unknown ids)."""
        self.check_fitted()
        condition = self._condition_or_none(condition_id)
        treatment = int(self.dataset_.treatments.to_internal([treatment_id], strict=False)[0])
        if condition is None or treatment < 0:
            return False
        return treatment in set(self.dataset_.candidates(condition).tolist())

    def evidence(self, treatment_id: str, condition_id: str | None = None) -> dict:
        """Outcomes on record for ``treatment_id`` (for ``condition_id``, or every condition):
        the ``evidence`` entry of an explanation (:mod:`recommender.ranking.evidence`).

        Raises
        ------
        UnknownIdError
            For a treatment or condition the model does not know.
        """
        self.check_fitted()
        treatment = self.dataset_.treatments.index_of(treatment_id)
        return evidence(self.dataset_, treatment, self.dataset_.condition_index(condition_id))

    def warm_lookups(self) -> None:
        """Build the id indices and the evidence entries now (see ``Recommender.warm_up``)."""
        dataset = self.dataset_
        dataset.patients.to_internal(dataset.patients.external_ids[:1], strict=False)
        dataset.treatments.to_internal(dataset.treatments.external_ids[:1], strict=False)
        warm_evidence(dataset)

    def _condition_or_none(self, condition_id: str) -> int | None:
        index = int(self.dataset_.conditions.to_internal([condition_id], strict=False)[0])
        return None if index < 0 else index
