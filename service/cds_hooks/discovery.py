"""The CDS services this deployment offers (``GET /cds-services``)."""

from __future__ import annotations

from .prefetch import PREFETCH

PATIENT_VIEW, ORDER_SELECT = "patient-view", "order-select"
USAGE = (
    "Suggestions rest on historical treatment outcomes of similar patients; they support, "
    "never replace, the clinician's judgment. A patient the model was not trained on needs "
    "the conditions, medications and allergies prefetch (otherwise 412). The service does "
    "not call the EHR's FHIR server. Feedback is accepted at {id}/feedback."
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


def discovery_document() -> dict:
    """The body of ``GET /cds-services``."""
    return {
        "services": [
            {**service, "usageRequirements": USAGE.format(id=service["id"])}
            for service in SERVICES.values()
        ]
    }
