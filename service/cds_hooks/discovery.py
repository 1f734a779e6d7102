"""The CDS services this deployment offers (``GET /cds-services``)."""

from __future__ import annotations

from .prefetch import LOOKBACK_DAYS, PREFETCH

PATIENT_VIEW, ORDER_SELECT = "patient-view", "order-select"
USAGE = (
    "Suggestions rest on historical treatment outcomes of similar patients; they support, "
    "never replace, the clinician's judgment. A patient the model was not trained on needs "
    "the conditions, medications and allergies: prefetched, or fetched by the service from "
    "fhirServer with fhirAuthorization (otherwise 412). The templates ask for history too "
    "(stopped and completed medications, resolved and inactive conditions, with the "
    "Medication resources referred to): the outcome rules (switched, resolved, adverse) need "
    "it; medications that ended more than {lookback} days ago are not read. "
    "medicationStatements is optional. Feedback is accepted at {id}/feedback."
)

#: Service id -> its discovery entry (CDS Hooks 2.0 "Discovery").
SERVICES = {
    "therapy-suggestions": {
        "hook": PATIENT_VIEW,
        "title": "Therapy suggestions from historical outcomes",
        "description": "When a chart is opened: for each active condition, the therapies that "
        "worked best for comparable patients, with the patient's outcomes that "
        "weighed most, the evidence on record and what the safety rules "
        "excluded.",
        "id": "therapy-suggestions",
        "prefetch": dict(PREFETCH),
    },
    "therapy-order-check": {
        "hook": ORDER_SELECT,
        "title": "Therapy order check",
        "description": "When a medication order is selected: warns when the therapy is "
        "excluded for this patient (past harm, contraindication, severe "
        "interaction) and offers better-supported alternatives that replace the "
        "draft order.",
        "id": "therapy-order-check",
        "prefetch": dict(PREFETCH),
    },
}


def discovery_document(lookback_days: int = LOOKBACK_DAYS) -> dict:
    """The body of ``GET /cds-services`` (``lookback_days``: the medication history read)."""
    return {
        "services": [
            {
                **service,
                "usageRequirements": USAGE.format(id=service["id"], lookback=lookback_days),
            }
            for service in SERVICES.values()
        ]
    }
