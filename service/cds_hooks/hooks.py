"""The two CDS services: what each hook asks the engine and which cards it returns.

``patient-view`` (chart opened): for each active condition the model has therapies for (at most
``RECOMMENDER_CDS_MAX_CARDS`` conditions), one ``info`` card with the engine's best therapies
for this patient (at most ``RECOMMENDER_CDS_SUGGESTIONS``), each with its basis and a
suggestion to propose it (a draft MedicationRequest with intent ``proposal``).

``order-select`` (a medication order selected): for each selected MedicationRequest whose
therapy the model knows,

- a ``warning`` card when a safety rule excludes it for this patient (past harm,
  contraindication, severe interaction with an active therapy or another draft order, or the
  same active ingredient as one: duplicate therapy);
- an ``info`` card with up to ``RECOMMENDER_CDS_SUGGESTIONS`` alternatives when the draft is
  excluded, or when the model ranks therapies above it for this patient whose response rate on
  record (for the same condition) is at least as high; each alternative is a suggestion that
  deletes the draft and creates a draft order of the alternative (``selectionBehavior``
  ``at-most-one``).

A draft order that is allowed and has no better-supported alternative gets no card: silence is
the right answer for a good order, unless something could not be checked (an active medication
the model cannot identify, a skipped resource, data the FHIR server did not give): then one
``warning`` card says so (:func:`~.cards.notice_card`), as every other card of the call does.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from ..errors import ApiError
from ..model_store import Served
from .cards import (
    SAFETY_REASONS,
    Card,
    Namer,
    Style,
    alternatives_card,
    notice_card,
    recommendation_card,
    warning_card,
)
from .patient import PatientInputs
from .prefetch import Coder


@dataclass
class HookAnswer:
    """The cards of one call, and what the audit line records."""

    cards: list[Card] = field(default_factory=list)
    conditions: list[str] = field(default_factory=list)
    treatments: list[str] = field(default_factory=list)


def patient_view(
    served: Served,
    inputs: PatientInputs,
    context: Mapping,
    style: Style,
    max_cards: int,
    suggestions: int,
) -> HookAnswer:
    """Cards for ``patient-view`` (see the module docstring)."""
    namer = Namer(served.model, inputs.names)
    answer = HookAnswer()
    conditions = inputs.treatable(served, max_cards)
    answers = inputs.recommend_conditions(served, conditions, k=suggestions, include_tried=False)
    for condition, answer_of_condition in zip(conditions, answers):
        result = answer_of_condition.to_dict()
        answer.conditions.append(condition)
        items = result["recommendations"]
        if items:
            answer.cards.append(
                recommendation_card(
                    items,
                    result,
                    condition,
                    inputs.patient_id,
                    context.get("encounterId"),
                    namer,
                    style,
                    inputs.dosages,
                )
            )
            answer.treatments += [item["treatment_id"] for item in items]
    return answer


def order_select(
    served: Served,
    inputs: PatientInputs,
    context: Mapping,
    style: Style,
    max_cards: int,
    suggestions: int,
) -> HookAnswer:
    """Cards for ``order-select`` (see the module docstring)."""
    namer = Namer(served.model, inputs.names)
    drafts = _draft_medications(context, served, namer)
    selected = set(context["selections"])
    answer = HookAnswer()
    checked = False  # a selected draft the model knows was checked
    for reference, draft, treatment in drafts:
        if reference not in selected or treatment is None:
            continue
        others = [t for ref, _, t in drafts if ref != reference and t is not None]
        condition = _condition_of(draft, treatment, inputs, served, namer)
        result = inputs.recommend(
            served, condition, k=suggestions + 1, include_tried=True, extra_active=others
        ).to_dict()
        if condition is None or _candidate(served, treatment, condition):
            exclusion = _exclusion(result, treatment)
        else:  # not a candidate for the condition: its exclusions are not in that answer
            broad = inputs.recommend(
                served, None, k=1, include_tried=True, extra_active=others, explain=False
            ).to_dict()
            exclusion = _exclusion(broad, treatment)
        if condition is not None:
            answer.conditions.append(condition)
        if exclusion is not None:
            answer.cards.append(warning_card(treatment, exclusion, namer, style))
            answer.treatments.append(treatment)
        alternatives = _alternatives(result, treatment, condition, exclusion is not None, served)[
            :suggestions
        ]
        if alternatives:
            answer.cards.append(
                alternatives_card(
                    treatment,
                    draft,
                    alternatives,
                    result,
                    condition,
                    exclusion is not None,
                    inputs.patient_id,
                    namer,
                    style,
                    inputs.dosages,
                )
            )
            answer.treatments += [item["treatment_id"] for item in alternatives]
        checked = True
        if len(answer.cards) >= max_cards:
            break
    answer.cards = answer.cards[:max_cards]
    if checked and not answer.cards and style.notes:
        answer.cards.append(notice_card(style))
    return answer


def _draft_medications(context: Mapping, served: Served, namer: Namer):
    """(``MedicationRequest/id``, resource, therapy id or None) of each draft medication order."""
    coder = Coder("", lambda identifier: identifier in served.treatments, [])
    drafts = []
    for entry in context["draftOrders"].get("entry") or []:
        resource = entry.get("resource") if isinstance(entry, Mapping) else None
        if not isinstance(resource, Mapping) or resource.get("resourceType") != "MedicationRequest":
            continue
        treatment, display = coder.medication(resource)
        if treatment is not None and display:
            namer.extra.setdefault(treatment, display)
        known = treatment if treatment in served.treatments else None
        drafts.append((f"MedicationRequest/{resource.get('id')}", resource, known))
    return drafts


def _condition_of(
    draft: Mapping, treatment: str, inputs: PatientInputs, served: Served, namer: Namer
) -> str | None:
    """The condition a draft order treats: its reason if the model knows it, else the patient's
    first active condition for which the model has this therapy on record."""
    coder = Coder("", lambda identifier: identifier in served.conditions, [])
    for concept in draft.get("reasonCode") or []:
        code, display = coder.code(concept, ("snomed", "icd10", "icd9"))
        if code in served.conditions:
            if display:
                namer.extra.setdefault(code, display)
            return code
    for condition in inputs.active_conditions:
        if condition in served.conditions and _candidate(served, treatment, condition):
            return condition
    return None


def _candidate(served: Served, treatment: str, condition: str) -> bool:
    """Whether the model has ``treatment`` on record for ``condition``."""
    return served.model.is_candidate(treatment, condition)


def _exclusion(result: Mapping, treatment: str) -> Mapping | None:
    return next(
        (
            e
            for e in result.get("excluded", [])
            if e["treatment_id"] == treatment and e.get("reason") in SAFETY_REASONS
        ),
        None,
    )


def _alternatives(
    result: Mapping, treatment: str, condition: str | None, excluded: bool, served: Served
) -> list[Mapping]:
    """Ranked therapies to offer instead of the draft (empty when none is better supported)."""
    if condition is None:
        return []  # without the condition treated, an alternative would be a guess
    items = [item for item in result["recommendations"] if item["treatment_id"] != treatment]
    if excluded:
        return items
    ranked = [item["treatment_id"] for item in result["recommendations"]]
    above = items if treatment not in ranked else items[: ranked.index(treatment)]
    own = served.model.evidence(treatment, condition).get("response_rate")
    return [
        item for item in above if _rate(item) is not None and (own is None or _rate(item) >= own)
    ]


def _rate(item: Mapping) -> float | None:
    return (((item.get("explanation") or {}).get("evidence")) or {}).get("response_rate")


def check_selections(context: Mapping) -> None:
    """order-select context: ``selections`` (list of references) and ``draftOrders`` (Bundle).

    Draft orders are work in progress (the hook says details may be missing), so they are not
    validated as complete FHIR resources: only the medication and reason are read.
    """
    selections, drafts = context.get("selections"), context.get("draftOrders")
    if not isinstance(selections, list) or not all(isinstance(s, str) for s in selections):
        raise ApiError(
            400,
            "invalid_body",
            "order-select needs context.selections: a list of "
            "references such as 'MedicationRequest/123'",
        )
    if (
        not isinstance(drafts, Mapping)
        or drafts.get("resourceType") != "Bundle"
        or not isinstance(drafts.get("entry", []), list)
    ):
        raise ApiError(400, "invalid_body", "order-select needs context.draftOrders: a FHIR Bundle")
