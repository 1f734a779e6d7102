"""CDS Hooks feedback -> the recommender's feedback store (decisions about patient x therapy).

A feedback item names a card (and, when accepted, the suggestions taken). The CDS store says
what the card was about, so each item becomes decisions for
:class:`recommender.data.feedback.FeedbackStore`:

- a suggestion card **accepted**: ``accepted`` for the therapy of each accepted suggestion;
- a suggestion card **overridden**: ``overridden`` for every therapy the card offered, with the
  override reason's code and display (the clinician's free-text ``userComment`` is not stored:
  it may identify the patient);
- a **warning** card (``order-select``: a drafted therapy a safety rule excludes)
  **overridden**: ``warning_overridden`` for the drafted therapy, with the override reason. Its
  meaning is the opposite of a suggestion's override (the clinician kept the therapy the card
  advised against), and it is not a preference either way: ``recommender train --feedback``
  ignores it (:data:`recommender.data.feedback.PREFERENCES`); it is kept for safety review (which
  rules are overridden, how often, and why);
- a warning card **accepted**: the card offers no suggestion to accept (CDS Hooks requires
  ``acceptedSuggestions`` with ``accepted``), so the clinician heeding it says nothing about the
  therapy beyond what the rule already enforces: recorded in the audit log only.

Each decision's ``feedback_id`` is derived from the card, suggestion or therapy and outcome, so
a client sending the same feedback again (the specification allows it) stores nothing new.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from ..errors import ApiError
from .store import CardRecord, CdsStore

MAX_ITEMS = 100
_CODING = {
    "type": "object",
    "required": ["code", "system"],
    "properties": {
        "code": {"type": "string", "minLength": 1, "maxLength": 256},
        "system": {"type": "string", "minLength": 1, "maxLength": 1024},
        "display": {"type": "string", "maxLength": 1024, "x-free-text": True},
    },
}


def feedback_schema() -> dict:
    """The body of ``POST /cds-services/{id}/feedback`` (CDS Hooks 2.0 "Feedback")."""
    item = {
        "type": "object",
        "required": ["card", "outcome", "outcomeTimestamp"],
        "properties": {
            "card": {"type": "string", "minLength": 1, "maxLength": 128},
            "outcome": {"type": "string", "enum": ["accepted", "overridden"]},
            "acceptedSuggestions": {
                "type": "array",
                "maxItems": 50,
                "items": {
                    "type": "object",
                    "required": ["id"],
                    "properties": {"id": {"type": "string", "minLength": 1, "maxLength": 128}},
                },
            },
            "overrideReason": {
                "type": "object",
                "properties": {
                    "reason": _CODING,
                    "userComment": {"type": "string", "maxLength": 10_000, "x-free-text": True},
                },
            },
            "outcomeTimestamp": {"type": "string", "format": "date-time"},
            "extension": {"type": "object"},
        },
    }
    return {
        "type": "object",
        "required": ["feedback"],
        "properties": {
            "feedback": {"type": "array", "minItems": 1, "maxItems": MAX_ITEMS, "items": item},
            "extension": {"type": "object"},
        },
    }


@dataclass
class Decisions:
    """What one feedback request amounts to."""

    records: list[dict] = field(default_factory=list)  # for FeedbackStore.append
    patients: list[str] = field(default_factory=list)
    treatments: list[str] = field(default_factory=list)
    audit_only: int = 0  # items that store nothing (an accepted warning card)


def decisions(items: list[Mapping], service_id: str, store: CdsStore, principal: str) -> Decisions:
    """The feedback store records of ``items`` (all cards checked first: all or nothing).

    Raises
    ------
    ApiError
        400 ``invalid_body`` for an accepted outcome without suggestions; 404 ``unknown_card``
        when a card (or suggestion) was not answered by this service or is past its time to live.
    """
    cards: list[CardRecord] = []
    unknown = []
    for item in items:
        record = store.card(item["card"])
        if record is None or record.service != service_id:
            unknown.append(item["card"])
        cards.append(record)
    if unknown:
        raise ApiError(
            404,
            "unknown_card",
            f"{len(unknown)} card(s) were not answered by the "
            f"service {service_id!r} (or are older than RECOMMENDER_CDS_CARD_TTL_DAYS); "
            "nothing was stored",
            {"cards": unknown[:MAX_ITEMS]},
        )
    result = Decisions()
    for item, card in zip(items, cards):
        if card.patient not in result.patients:
            result.patients.append(card.patient)
        if card.kind == "warning" and item["outcome"] == "accepted":
            result.audit_only += 1
            result.treatments += [t for t in card.treatments if t not in result.treatments]
            continue
        for decision in _card_decisions(item, card, service_id, principal):
            result.records.append(decision)
            if decision["treatment_id"] not in result.treatments:
                result.treatments.append(decision["treatment_id"])
    return result


def _card_decisions(item: Mapping, card: CardRecord, service_id: str, principal: str):
    base = {
        "patient": card.patient,
        "principal": principal,
        "source": f"cds-hooks:{service_id}",
        "model_version": card.model_version,
        "time": item["outcomeTimestamp"],
    }
    if item["outcome"] == "accepted":
        accepted = item.get("acceptedSuggestions") or []
        if not accepted:
            raise ApiError(
                400,
                "invalid_body",
                f"feedback for card {item['card']!r}: an "
                "accepted outcome needs acceptedSuggestions",
            )
        for suggestion in accepted:
            treatment = card.suggestions.get(suggestion["id"])
            if treatment is None:
                raise ApiError(
                    404,
                    "unknown_card",
                    f"card {item['card']!r} has no suggestion "
                    f"{suggestion['id']!r}; nothing was stored",
                    {"cards": [item["card"]]},
                )
            yield {
                **base,
                "feedback_id": f"cds:{card.uuid}:{suggestion['id']}:accepted",
                "treatment_id": treatment,
                "decision": "accepted",
            }
        return
    reason = (item.get("overrideReason") or {}).get("reason") or {}
    text = None
    if reason:
        text = reason["code"] + (f" ({reason['display']})" if reason.get("display") else "")
    decision = "warning_overridden" if card.kind == "warning" else "overridden"
    for treatment in card.treatments:
        yield {
            **base,
            "feedback_id": f"cds:{card.uuid}:{treatment}:{decision}",
            "treatment_id": treatment,
            "decision": decision,
            "reason": text,
        }
