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

Each decision's ``feedback_id`` is derived from the card, suggestion or therapy, outcome and
override reason code, so a client sending the same feedback again (the specification allows it)
stores nothing new, while a later override that adds a coded reason is stored.

A batch is processed item by item: an item that is invalid or names an unknown card is reported
in its own result (``results``: one per item, in order) and does not cost the others. Only when
no item could be used is the whole request an error (the first item's status and code).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from .. import schemas
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


def item_schema() -> dict:
    """One feedback item (CDS Hooks 2.0 "Feedback")."""
    return {
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


def feedback_schema(items: dict | None = None) -> dict:
    """The body of ``POST /cds-services/{id}/feedback`` (``items``: the item schema checked
    with the envelope; default :func:`item_schema`)."""
    return {
        "type": "object",
        "required": ["feedback"],
        "properties": {
            "feedback": {
                "type": "array",
                "minItems": 1,
                "maxItems": MAX_ITEMS,
                "items": item_schema() if items is None else items,
            },
            "extension": {"type": "object"},
        },
    }


@dataclass
class Decisions:
    """What one feedback request amounts to.

    ``items`` holds, per feedback item in order, its result: ``{"card", "status", "message"?}``
    with status ``invalid`` / ``unknown_card`` (nothing stored) or, once stored, ``stored``,
    ``already_stored`` or ``audit_only``; ``records_of`` maps an item's position to its
    decisions.
    """

    records: list[dict] = field(default_factory=list)  # for FeedbackStore.append
    patients: list[str] = field(default_factory=list)
    treatments: list[str] = field(default_factory=list)
    audit_only: int = 0  # items that store nothing (an accepted warning card)
    items: list[dict] = field(default_factory=list)
    records_of: dict = field(default_factory=dict)
    first_error: ApiError | None = None

    def refuse(self, position: int, card, error: ApiError) -> None:
        self.items.append(
            {
                "card": card if isinstance(card, str) else None,
                "status": "invalid" if error.status == 400 else "unknown_card",
                "message": error.message,
            }
        )
        if self.first_error is None:
            self.first_error = error


def decisions(items: list, service_id: str, store: CdsStore, principal: str) -> Decisions:
    """The feedback store records of ``items``, each item on its own.

    Raises
    ------
    StoreError
        The CDS store cannot be read (nothing is stored then).
    """
    result = Decisions()
    for position, item in enumerate(items):
        card_id = item.get("card") if isinstance(item, Mapping) else None
        problems = schemas.check(item, item_schema(), f"$.feedback[{position}]")
        if problems:
            result.refuse(position, card_id, ApiError(400, "invalid_body", problems[0]))
            continue
        card = store.card(item["card"])
        if card is None or card.service != service_id:
            result.refuse(
                position,
                card_id,
                ApiError(
                    404,
                    "unknown_card",
                    f"card {item['card']!r} was not answered by the service {service_id!r} "
                    "(or is older than RECOMMENDER_CDS_CARD_TTL_DAYS)",
                    {"cards": [item["card"]]},
                ),
            )
            continue
        try:
            found = list(_item_decisions(item, card, service_id, principal))
        except ApiError as exc:
            result.refuse(position, card_id, exc)
            continue
        if card.patient not in result.patients:
            result.patients.append(card.patient)
        if not found:
            result.audit_only += 1
            result.items.append({"card": card.uuid, "status": "audit_only"})
            result.treatments += [t for t in card.treatments if t not in result.treatments]
            continue
        result.records_of[position] = found
        result.items.append({"card": card.uuid, "status": "stored"})
        for decision in found:
            result.records.append(decision)
            if decision["treatment_id"] not in result.treatments:
                result.treatments.append(decision["treatment_id"])
    return result


def _item_decisions(item: Mapping, card: CardRecord, service_id: str, principal: str):
    """An item's decisions (none for what is audited only: an accepted warning, a notice)."""
    if card.kind == "notice" or (card.kind == "warning" and item["outcome"] == "accepted"):
        return iter(())
    return _card_decisions(item, card, service_id, principal)


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
                    f"card {item['card']!r} has no suggestion {suggestion['id']!r}",
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
    # the reason is part of the id: a later override that adds a coded reason is new
    coded = f":{reason['system']}|{reason['code']}" if reason else ""
    for treatment in card.treatments:
        yield {
            **base,
            "feedback_id": f"cds:{card.uuid}:{treatment}:{decision}{coded}",
            "treatment_id": treatment,
            "decision": decision,
            "reason": text,
        }
