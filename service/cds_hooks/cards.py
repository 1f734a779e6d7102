"""CDS Hooks cards from the engine's answers.

Rules of the specification (2.0, "Card Attributes") every card here keeps: a ``summary`` under
140 characters, ``indicator`` one of ``info`` / ``warning`` / ``critical``, a ``source`` with a
``label``, GitHub-flavoured Markdown in ``detail``, a ``uuid`` (feedback names it), and
``selectionBehavior`` whenever there are ``suggestions``. Optional fields without a value are
omitted, never null or empty (:func:`compact`).

The detail is short by default (``RECOMMENDER_CDS_DETAIL=short``: about
:data:`SHORT_DETAIL` characters, each therapy with its response rate on record, what the safety
rules excluded, the model version; the model card is behind the card's link); ``full`` shows the
whole basis: the patient's outcomes that contributed most, the evidence (outcomes on record,
response rate with its Wilson 95% interval) and the predictions. Either way it says that the
suggestion supports rather than replaces clinical judgment, uses human names (never internal
ids alone), and lists first what could not be checked (:func:`gaps_markdown`), which is never
shortened away. Text that comes from data (therapy and condition names) is Markdown-escaped, so a
name cannot inject a link.

The top suggestion of a card is marked ``isRecommended``. A suggested MedicationRequest carries
``authoredOn`` (now), ``requester`` (the draft's, else ``context.userId``) and, when the
patient's record holds an earlier order of the same therapy, its dosage, said so in a note.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from .prefetch import coding_of

SUMMARY_LIMIT = 139
#: Characters a short detail aims at (what could not be checked is never cut to fit).
SHORT_DETAIL = 400
#: How an id's system is named to a clinician.
SYSTEM_NAMES = {
    "rxnorm": "RxNorm",
    "snomed": "SNOMED CT",
    "icd10": "ICD-10",
    "icd9": "ICD-9",
    "ndc": "NDC",
    "atc": "ATC",
    "loinc": "LOINC",
}
#: FHIR references that can be a MedicationRequest.requester.
REQUESTERS = ("Practitioner/", "PractitionerRole/", "Organization/", "Patient/", "RelatedPerson/")
SOURCE_LABEL = "Treatment recommender"
TOPIC = {
    "system": "urn:treatment-recommender:cds-topic",
    "code": "therapy-suggestion",
    "display": "Therapy suggestion from historical outcomes",
}
OVERRIDE_SYSTEM = "urn:treatment-recommender:override-reason"
SUGGESTION_OVERRIDES = (
    ("patient-preference", "Patient preference"),
    ("other-therapy-chosen", "Another therapy chosen on clinical grounds"),
    ("tried-before", "Already tried (not in the record)"),
    ("contraindication-not-recorded", "Contraindication or allergy not in the record"),
    ("cost-or-access", "Cost, coverage or availability"),
)
WARNING_OVERRIDES = (
    ("benefit-outweighs-risk", "Benefit outweighs the risk; patient will be monitored"),
    ("record-incorrect", "The record is incorrect (e.g. allergy refuted)"),
    ("tolerated-since", "Patient has tolerated it since"),
    ("no-alternative", "No suitable alternative"),
)
#: Exclusion reasons that make a drafted order a warning, and how a card says them.
SAFETY_REASONS = {
    "previous_harm": "an adverse outcome with it is on record",
    "contraindicated": "contraindicated for this patient",
    "severe_interaction": "severe interaction with an active therapy",
    "duplicate_therapy": "the same active ingredient as an active therapy",
}
_OUTCOME_WORDS = (
    (0.75, "responded"),
    (0.25, "partial response"),
    (-0.25, "no response"),
    (-0.75, "worsened"),
)
_MARKDOWN = re.compile(r"([\\`*_{}\[\]()<>#+!|~])")


@dataclass
class Card:
    """A card and what feedback on it will mean (kept in the CDS store)."""

    body: dict
    kind: str  # "suggestion" or "warning"
    treatments: tuple[str, ...]
    suggestions: dict = field(default_factory=dict)  # suggestion uuid -> therapy

    @property
    def uuid(self) -> str:
        return self.body["uuid"]


@dataclass(frozen=True)
class Style:
    """What every card of one answer shares: the model, the site's link and icon, the detail's
    length, what could not be checked (Markdown lines) and the EHR user."""

    model: Mapping  # the engine's ``model`` block: type, version, data_fingerprint, disclaimer
    info_url: str | None = None
    icon_url: str | None = None
    short: bool = True
    notes: tuple[str, ...] = ()
    user: str | None = None

    def source(self) -> dict:
        return compact(
            {"label": SOURCE_LABEL, "url": self.info_url, "icon": self.icon_url, "topic": TOPIC}
        )

    def links(self) -> list[dict]:
        if not self.info_url:
            return []
        return [
            {
                "label": "How these suggestions are made (model card)",
                "url": self.info_url,
                "type": "absolute",
            }
        ]

    def footer(self) -> str:
        if self.short:
            more = " More: the model card (link)." if self.info_url else ""
            return (
                f"Model {self.model.get('version')}. Decision support from historical outcomes: "
                f"it supports, not replaces, clinical judgment.{more}"
            )
        fingerprint = str(self.model.get("data_fingerprint") or "")[:12]
        return (
            f"Model `{self.model.get('version')}` ({self.model.get('type')}), training data "
            f"`{fingerprint}`. Decision support only: this suggestion rests on historical "
            "outcomes of similar patients and supports, rather than replaces, the "
            "clinician's judgment."
        )

    def requester(self) -> dict | None:
        user = self.user
        if isinstance(user, str) and user.startswith(REQUESTERS) and user.count("/") == 1:
            return {"reference": user}
        return None


def compact(value: Any) -> Any:
    """``value`` without None, empty strings, lists or objects, at any depth."""
    if isinstance(value, dict):
        items = ((k, compact(v)) for k, v in value.items())
        return {k: v for k, v in items if v is not None and v != "" and v != [] and v != {}}
    if isinstance(value, list):
        items = (compact(v) for v in value)
        return [v for v in items if v is not None and v != "" and v != [] and v != {}]
    return value


def escape(text: str) -> str:
    """Markdown-escaped text (names from data never become markup)."""
    return _MARKDOWN.sub(r"\\\1", " ".join(str(text).split()))


def code(text: str) -> str:
    """``text`` as a Markdown code span (ids: shown verbatim, never markup)."""
    return "`" + " ".join(str(text).replace("`", "'").split()) + "`"


def summary(template: str, **names: str) -> str:
    """``template`` filled with ``names`` shortened (with an ellipsis) to stay under 140."""
    text = template.format(**names)
    while len(text) > SUMMARY_LIMIT:
        longest = max(names, key=lambda n: len(names[n]))
        if len(names[longest]) <= 8:
            return text[: SUMMARY_LIMIT - 1] + "…"
        names[longest] = (
            names[longest][: max(8, len(names[longest]) - (len(text) - SUMMARY_LIMIT) - 1)].rstrip()
            + "…"
        )
        text = template.format(**names)
    return text


def override_reasons(pairs) -> list[dict]:
    return [
        {"code": code, "system": OVERRIDE_SYSTEM, "display": display} for code, display in pairs
    ]


def _percent(value: float | None) -> str:
    return "?" if value is None else f"{100 * value:.0f}%"


def _outcome_word(value: float) -> str:
    return next((word for bound, word in _OUTCOME_WORDS if value >= bound), "adverse outcome")


def human_id(identifier: str) -> str:
    """An engine id as a clinician reads it: ``rxnorm|29046`` -> ``RxNorm 29046``,
    ``text|hydrochlorothiazide`` -> ``hydrochlorothiazide``."""
    prefix, _, code = str(identifier).partition("|")
    if not code:
        return str(identifier)
    if prefix == "text":
        return code
    return f"{SYSTEM_NAMES.get(prefix, prefix)} {code}"


class Namer:
    """Display names: the model's dictionaries, then the EHR's codings, then the id in words."""

    def __init__(self, model, extra: Mapping[str, str] | None = None):
        self.treatments, self.conditions = model.display_names()
        self.extra = dict(extra or {})

    def treatment(self, identifier: str) -> str:
        return self.treatments.get(identifier) or self.extra.get(identifier) or human_id(identifier)

    def condition(self, identifier: str | None) -> str:
        if identifier is None:
            return "any condition"
        return self.conditions.get(identifier) or self.extra.get(identifier) or human_id(identifier)


# --- detail Markdown ------------------------------------------------------------------------------


def basis_markdown(item: Mapping, condition: str | None, namer: Namer) -> list[str]:
    """Why one recommended therapy: contributing record entries, evidence, flags."""
    lines = []
    for flag in item.get("flags") or []:
        partner = escape(namer.treatment(str(flag.get("with"))))
        if flag.get("type") == "duplicate_therapy":
            lines.append(
                f"**Dose change:** the same active ingredient as {partner} (an active "
                "therapy); order it in place of that therapy, not beside it."
            )
            continue
        lines.append(
            f"**Caution:** {escape(flag.get('severity', ''))} interaction with "
            f"{partner} (an active therapy)."
        )
    explanation = item.get("explanation") or {}
    contributions = explanation.get("contributions") or []
    if explanation.get("basis"):
        lines.append(f"**Basis:** {escape(explanation['basis'])}.")
    if explanation.get("predicted_success") is not None:
        low, high = explanation.get("predicted_success_ci95") or (None, None)
        harm = explanation.get("harm_probability")
        lines.append(
            f"**Predicted success:** {_percent(explanation['predicted_success'])} "
            f"(95% interval {_percent(low)}-{_percent(high)})"
            + (f"; chance of harm {_percent(harm)}." if harm is not None else ".")
        )
        overlap = explanation.get("overlap") or {}
        if overlap.get("low"):
            lines.append(
                "**Few comparable patients:** clinicians rarely chose this therapy for patients "
                f"like this one (propensity {_percent(overlap.get('propensity'))}), so the "
                "estimate rests on little evidence."
            )
    if contributions:
        lines.append("Entries of the record that weighed most:")
        for entry in contributions:
            lines.append(f"- {_contribution(entry, namer)}")
    evidence = explanation.get("evidence")
    if evidence:
        lines.append(_evidence(evidence, condition, namer))
    return lines


def _contribution(entry: Mapping, namer: Namer) -> str:
    direction = "raised" if entry.get("contribution", 0) > 0 else "lowered"
    source = entry.get("source")
    if source == "outcome":
        what = (
            f"{escape(namer.treatment(entry['treatment_id']))}: "
            f"{_outcome_word(entry.get('outcome', 0.0))}"
        )
    elif source == "condition":
        what = f"diagnosis {escape(namer.condition(entry['id']))}"
    elif source == "age_band":
        what = f"age band {escape(entry['id'])}"
    elif source == "sex":
        what = f"sex {escape(str(entry.get('id', entry.get('value', ''))))}"
    elif source == "age":
        what = f"age {escape(str(entry.get('value')))}"
    elif source == "observation":
        what = f"{escape(namer.condition(entry['code']))} {escape(str(entry.get('value')))}"
    elif source == "history":
        what = f"outcomes of {entry.get('treatments_on_record', 0)} earlier therapies"
    elif source == "line":
        what = f"{entry.get('value', 0)} therapies already tried for this condition"
    else:
        what = escape(str(entry.get("id", source)))
    return f"{what} ({direction} the score)"


def _evidence(evidence: Mapping, condition: str | None, namer: Namer) -> str:
    counts = evidence.get("outcomes") or {}
    spread = ", ".join(f"{label.replace('_', ' ')} {n}" for label, n in counts.items())
    scope = (
        f"for {escape(namer.condition(condition))}"
        if condition is not None
        else "for all conditions"
    )
    low, high = (evidence.get("response_rate_ci95") or [None, None])[:2]
    rate = evidence.get("response_rate")
    text = (
        f"**Evidence** ({scope}): {evidence.get('outcomes_recorded', 0)} outcomes recorded, "
        f"{evidence.get('patients_treated', 0)} patients treated in the training data"
    )
    text += f" ({spread})." if spread else "."
    if rate is not None:
        text += (
            f" Response rate (responded or partial) {_percent(rate)}, 95% Wilson interval "
            f"{_percent(low)}-{_percent(high)}."
        )
    return text


def exclusions_markdown(excluded: list[Mapping], namer: Namer) -> list[str]:
    safety = [e for e in excluded if e.get("reason") in SAFETY_REASONS]
    if not safety:
        return []
    listed = "; ".join(
        f"{escape(namer.treatment(e['treatment_id']))} "
        f"({escape(e.get('detail') or SAFETY_REASONS[e['reason']])})"
        for e in safety
    )
    return [f"**Not offered to this patient** (safety rules): {listed}."]


def _listed(unresolved) -> str:
    """At most 8 unresolved medications as "name (reason[; ingredients])", then how many more."""
    shown = []
    for item in unresolved[:8]:
        name = escape(item.name) if item.name else "a medication without a name"
        held = ", ".join(i.removeprefix("drug|") for i in item.ingredients)
        shown.append(f"{name} ({escape(item.reason)}" + (f"; {escape(held)})" if held else ")"))
    more = f"; and {len(unresolved) - 8} more" if len(unresolved) > 8 else ""
    return "; ".join(shown) + more


def gaps_markdown(unresolved, skipped: Mapping, notes) -> list[str]:
    """What the safety checks could not see, as Markdown lines every card of the call shows.

    Parameters
    ----------
    unresolved : list of :class:`~.medications.Unresolved`
        Active medications that gave no therapy the model knows (those with ingredients were
        checked for duplicate therapy through them).
    skipped : mapping
        ``(prefetch key, resource type)`` -> resources skipped as invalid.
    notes : list of str
        What the EHR's FHIR server could not supply (:class:`~.fhir_client.FhirClient`).
    """
    lines = []
    unchecked = [item for item in unresolved if not item.ingredients]
    by_ingredient = [item for item in unresolved if item.ingredients]
    if unchecked:
        lines.append(
            f"**Could not check** interactions and duplicate therapy with "
            f"{len(unchecked)} active medication(s): {_listed(unchecked)}."
        )
    if by_ingredient:
        lines.append(
            f"**Checked for duplicate therapy by active ingredient only**, not for "
            f"interactions: {len(by_ingredient)} active medication(s) the recommender does not "
            f"know: {_listed(by_ingredient)}."
        )
    if skipped:
        listed = ", ".join(
            f"{count} {code(rtype)} in {code(key)}" for (key, rtype), count in skipped.items()
        )
        lines.append(
            f"**Could not check:** {sum(skipped.values())} prefetched resource(s) were not "
            f"valid FHIR R4 (or not of the type asked for) and were skipped ({listed}); the "
            "safety checks did not see them."
        )
    for note in notes:
        lines.append(f"**Could not check:** {escape(note)}.")
    return lines


def _detail(parts: list[list[str]], style: Style, short: list[str] | None = None) -> str:
    """The card's Markdown: the short lines (default) or every part, what could not be checked
    right after the first line, the footer last. Paragraphs (and lists) of Markdown: list items
    stay together, other lines are apart."""
    if style.short and short is not None:
        return _short_detail(short, style)
    lines = [line for part in parts for line in part]
    lines = lines[:1] + list(style.notes) + lines[1:] + [style.footer()]
    text = lines[0]
    for previous, line in zip(lines, lines[1:]):
        together = line.startswith("- ") and (previous.startswith("- ") or previous.endswith(":"))
        text += ("\n" if together else "\n\n") + line
    return text


def _short_detail(lines: list[str], style: Style) -> str:
    """The first line, what could not be checked, then as many of the other lines as fit in
    :data:`SHORT_DETAIL` characters with the footer (a line that does not fit is left out)."""
    fixed = [lines[0], *style.notes]
    footer = style.footer()
    used = sum(len(line) + 2 for line in fixed) + len(footer)
    kept = []
    for line in lines[1:]:
        if used + len(line) + 2 > SHORT_DETAIL:
            continue
        kept.append(line)
        used += len(line) + 2
    return "\n\n".join([*fixed, *kept, footer])


def _rate_text(item: Mapping) -> str:
    """``50% responded (n=200)`` from an item's evidence, or empty."""
    evidence = (item.get("explanation") or {}).get("evidence") or {}
    rate = evidence.get("response_rate")
    if rate is None:
        return ""
    return f"{_percent(rate)} responded (n={evidence.get('outcomes_recorded', 0)})"


def _short_items(items: list[Mapping], namer: Namer) -> str:
    shown = []
    for item in items:
        rate = _rate_text(item)
        flags = [f.get("severity", "") for f in item.get("flags") or []]
        caution = f"; caution: {escape(flags[0])} interaction" if flags else ""
        shown.append(
            f"{item['rank']}. {escape(namer.treatment(item['treatment_id']))}"
            + (f" ({rate}{caution})" if rate or caution else "")
        )
    return "; ".join(shown)


def _short_exclusions(excluded: list[Mapping], namer: Namer) -> list[str]:
    safety = [e for e in excluded if e.get("reason") in SAFETY_REASONS]
    if not safety:
        return []
    listed = "; ".join(
        f"{escape(namer.treatment(e['treatment_id']))} ({escape(SAFETY_REASONS[e['reason']])})"
        for e in safety[:3]
    )
    more = f"; and {len(safety) - 3} more" if len(safety) > 3 else ""
    return [f"Not offered (safety rules): {listed}{more}."]


def notice_card(style: Style) -> Card:
    """A card that only says what could not be checked (when no other card carries it)."""
    body = compact(
        {
            "uuid": str(uuid.uuid4()),
            "summary": "Safety checks incomplete: some of the record could not be checked",
            "indicator": "warning",
            "detail": "\n\n".join(
                [
                    "The recommender found nothing to object to, but it could not check "
                    "everything:",
                    *style.notes,
                    style.footer(),
                ]
            ),
            "source": style.source(),
            "links": style.links(),
        }
    )
    return Card(body, "notice", ())


# --- FHIR resources in suggestions ----------------------------------------------------------------


def medication_request(
    treatment: str,
    name: str,
    patient_id: str,
    *,
    intent: str,
    condition: str | None,
    condition_name: str | None,
    template: Mapping | None = None,
    note: str,
    requester: Mapping | None = None,
    dosage: list | None = None,
) -> dict:
    """A draft MedicationRequest (FHIR R4) for ``treatment``, authored now.

    ``template`` (the draft order being replaced) lends its encounter, requester, category and
    reason when present; else ``requester`` (the EHR user) is the requester. ``dosage`` (the
    patient's earlier order of the same therapy) becomes ``dosageInstruction``; without it the
    dose is left to the prescriber.
    """
    template = template or {}
    from_data = name if name not in (treatment, human_id(treatment)) else None
    from_data_condition = (
        condition_name
        if condition is not None and condition_name not in (condition, human_id(condition))
        else None
    )
    resource = {
        "resourceType": "MedicationRequest",
        "status": "draft",
        "intent": intent,
        "category": _list_of_objects(template.get("category")),
        "medicationCodeableConcept": coding_of(treatment, from_data),
        "subject": {"reference": f"Patient/{patient_id}"},
        "encounter": _reference(template.get("encounter")),
        "authoredOn": datetime.now(timezone.utc).replace(microsecond=0).isoformat(),
        "requester": _reference(template.get("requester")) or _reference(requester),
        "reasonCode": [coding_of(condition, from_data_condition)] if condition else None,
        "reasonReference": [
            r for r in map(_reference, _list_of_objects(template.get("reasonReference")) or []) if r
        ],
        "dosageInstruction": _list_of_objects(dosage),
        "note": [{"text": note}],
    }
    return compact(resource)


def _reference(value) -> dict | None:
    """A Reference copied from a draft order, if well formed."""
    if isinstance(value, Mapping) and isinstance(value.get("reference"), str):
        return {
            key: value[key] for key in ("reference", "display") if isinstance(value.get(key), str)
        }
    return None


def _list_of_objects(value) -> list | None:
    if isinstance(value, list) and all(isinstance(item, Mapping) for item in value):
        return [dict(item) for item in value]
    return None


# --- cards ----------------------------------------------------------------------------------------


def _suggestion_card(
    text: str,
    parts: list[list[str]],
    short: list[str],
    suggestions: list[dict],
    offered: dict[str, str],
    answer: Mapping,
    namer: Namer,
    style: Style,
) -> Card:
    """An ``info`` card offering at most one of ``suggestions``, the first one recommended.

    ``text`` is the summary, ``parts`` the full detail's Markdown paragraphs so far and
    ``short`` the short detail's lines (the answer's safety exclusions are appended to both),
    ``offered`` maps suggestion uuid -> therapy id in suggestion order. The card's own uuid is
    drawn here, after the suggestions' uuids.
    """
    excluded = answer.get("excluded", [])
    parts.append(exclusions_markdown(excluded, namer))
    short = short + _short_exclusions(excluded, namer)
    if suggestions:
        suggestions[0]["isRecommended"] = True
    body = compact(
        {
            "uuid": str(uuid.uuid4()),
            "summary": text,
            "indicator": "info",
            "detail": _detail(parts, style, short),
            "source": style.source(),
            "suggestions": suggestions,
            "selectionBehavior": "at-most-one",
            "overrideReasons": override_reasons(SUGGESTION_OVERRIDES),
            "links": style.links(),
        }
    )
    return Card(body, "suggestion", tuple(offered.values()), offered)


def recommendation_card(
    items: list[Mapping],
    answer: Mapping,
    condition: str,
    patient_id: str,
    encounter_id: str | None,
    namer: Namer,
    style: Style,
    dosages: Mapping | None = None,
) -> Card:
    """patient-view: the best therapies for one condition, each a "propose" suggestion.

    ``dosages`` maps a therapy id to the dosage of the patient's earlier order of it.
    """
    dosages = dosages or {}
    condition_name = namer.condition(condition)
    best = items[0]
    name = namer.treatment(best["treatment_id"])
    evidence = (best.get("explanation") or {}).get("evidence") or {}
    rate, recorded = evidence.get("response_rate"), evidence.get("outcomes_recorded", 0)
    if rate is not None:
        text = summary(
            f"Consider {{t}} for {{c}}: {_percent(rate)} responded (n={recorded})",
            t=name,
            c=condition_name,
        )
    else:
        text = summary("Consider {t} for {c}", t=name, c=condition_name)
    parts = [
        [
            f"Therapies for **{escape(condition_name)}** ({escape(human_id(condition))}) that "
            "worked best for patients comparable to this one, best first:"
        ]
    ]
    short = [
        f"Best supported for **{escape(condition_name)}** in comparable patients: "
        f"{_short_items(items, namer)}."
    ]
    suggestions, offered = [], {}
    encounter = {"encounter": {"reference": f"Encounter/{encounter_id}"}} if encounter_id else None
    for item in items:
        treatment = item["treatment_id"]
        therapy = namer.treatment(treatment)
        parts.append(
            [
                f"**{item['rank']}. {escape(therapy)}** ({escape(human_id(treatment))})",
                *basis_markdown(item, condition, namer),
            ]
        )
        suggestion_id = str(uuid.uuid4())
        offered[suggestion_id] = treatment
        resource = medication_request(
            treatment,
            therapy,
            patient_id,
            intent="proposal",
            condition=condition,
            condition_name=condition_name,
            template=encounter,
            note=f"Proposed from a decision-support suggestion (model "
            f"{style.model.get('version')}); {_dose_note(dosages.get(treatment))}",
            requester=style.requester(),
            dosage=dosages.get(treatment),
        )
        suggestions.append(
            {
                "label": summary("Propose {t}", t=therapy),
                "uuid": suggestion_id,
                "actions": [
                    {
                        "type": "create",
                        "description": f"Draft a proposal of {therapy}",
                        "resource": resource,
                    }
                ],
            }
        )
    return _suggestion_card(text, parts, short, suggestions, offered, answer, namer, style)


def _dose_note(dosage) -> str:
    if dosage:
        return (
            "the dosage is copied from the patient's latest earlier order of it; the "
            "prescriber confirms dose, route and duration."
        )
    return "dose, route and duration are for the prescriber to set."


def warning_card(drafted: str, exclusion: Mapping, namer: Namer, style: Style) -> Card:
    """order-select: the drafted therapy is excluded for this patient by a safety rule."""
    name = namer.treatment(drafted)
    reason = exclusion["reason"]
    text = summary(f"{{t}}: {SAFETY_REASONS[reason]}", t=name)
    rule = str(exclusion.get("rule") or reason).replace("_", " ")
    detail = [
        f"**{escape(name)}** ({escape(human_id(drafted))}) is not advised for this patient: "
        f"{escape(exclusion.get('detail') or SAFETY_REASONS[reason])}.",
        f"Rule: {escape(rule)}. The recommender never suggests "
        "a therapy this rule excludes; it is shown here because it was ordered.",
    ]
    short = [
        f"**{escape(name)}** is not advised for this patient: "
        f"{escape(exclusion.get('detail') or SAFETY_REASONS[reason])} (rule: {escape(rule)})."
    ]
    body = compact(
        {
            "uuid": str(uuid.uuid4()),
            "summary": text,
            "indicator": "warning",
            "detail": _detail([detail], style, short),
            "source": style.source(),
            "overrideReasons": override_reasons(WARNING_OVERRIDES),
            "links": style.links(),
        }
    )
    return Card(body, "warning", (drafted,))


def alternatives_card(
    drafted: str,
    draft: Mapping,
    alternatives: list[Mapping],
    answer: Mapping,
    condition: str | None,
    excluded: bool,
    patient_id: str,
    namer: Namer,
    style: Style,
    dosages: Mapping | None = None,
) -> Card:
    """order-select: replace the draft order with a better-supported therapy (at most one)."""
    dosages = dosages or {}
    name = namer.treatment(drafted)
    first = namer.treatment(alternatives[0]["treatment_id"])
    if len(alternatives) == 1:
        text = summary("Consider {a} instead of {t}", a=first, t=name)
    else:
        text = summary(
            f"Consider {{a}} or {len(alternatives) - 1} other(s) instead of {{t}}", a=first, t=name
        )
    why = (
        "it is excluded for this patient by a safety rule"
        if excluded
        else "the model ranks these higher for this patient and their response rate on record is "
        "at least as high"
    )
    parts = [
        [f"Alternatives to **{escape(name)}** for {escape(namer.condition(condition))}: {why}."]
    ]
    short = [
        f"Instead of **{escape(name)}** for {escape(namer.condition(condition))} ({why}): "
        f"{_short_items(alternatives, namer)}."
    ]
    suggestions, offered = [], {}
    draft_reference = f"MedicationRequest/{draft['id']}"
    for item in alternatives:
        treatment = item["treatment_id"]
        alternative = namer.treatment(treatment)
        parts.append(
            [
                f"**{item['rank']}. {escape(alternative)}** ({escape(human_id(treatment))})",
                *basis_markdown(item, condition, namer),
            ]
        )
        suggestion_id = str(uuid.uuid4())
        offered[suggestion_id] = treatment
        resource = medication_request(
            treatment,
            alternative,
            patient_id,
            intent=draft.get("intent") or "order",
            condition=condition,
            condition_name=namer.condition(condition),
            template=draft,
            note=f"Replaces a draft order of {name} after a decision-support suggestion (model "
            f"{style.model.get('version')}); {_dose_note(dosages.get(treatment))}",
            requester=style.requester(),
            dosage=dosages.get(treatment),
        )
        suggestions.append(
            {
                "label": summary("Replace with {a}", a=alternative),
                "uuid": suggestion_id,
                "actions": [
                    {
                        "type": "delete",
                        "description": f"Remove the draft order of {name}",
                        "resourceId": draft_reference,
                    },
                    {
                        "type": "create",
                        "description": f"Draft an order of {alternative}",
                        "resource": resource,
                    },
                ],
            }
        )
    return _suggestion_card(text, parts, short, suggestions, offered, answer, namer, style)
