"""What the patient takes, in the engine's terms: the ``active_treatments`` of a call and the
medications that could not be checked.

A MedicationRequest or MedicationStatement counts when it is active (request: ``active`` or
``on-hold``; statement: also ``intended``). Its medication is read from
``medicationCodeableConcept`` or from the Medication its ``medicationReference`` names: a
contained one (``#id``), one in the prefetch Bundle (``Medication/<id>``, an absolute URL or the
entry's ``fullUrl``), else one fetched from the EHR's FHIR server when the call allows it
(:mod:`.fhir_client`). A medication becomes a therapy id the model knows (the known coding is
preferred, as everywhere); one that does not is **unresolved** and every card says that its
interactions and duplicates could not be checked, with the name the record gives it. A
medication is never silently dropped from the safety checks.

An unresolved medication whose name gives active ingredients the model knows
(:func:`recommender.data.ingredients.ingredient_ids`: "Hydrochlorothiazide 25 MG Oral Tablet"
-> ``drug|hydrochlorothiazide``) still reaches the duplicate-therapy rule through those
ingredient ids, and its card line says it was checked for duplicates by ingredient only, not
for interactions.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from recommender.data.ingredients import ingredient_ids

#: Statuses that make a medication record "taken now" (interaction and duplicate checks).
ACTIVE_STATUS = {
    "MedicationRequest": {"active", "on-hold"},
    "MedicationStatement": {"active", "intended", "on-hold"},
}
NOT_FOUND = "its Medication resource is neither in the prefetch nor on the FHIR server"
NOT_CODED = "it carries no code or name"
NOT_KNOWN = "the recommender has no data on it"


@dataclass(frozen=True)
class Unresolved:
    """A medication the safety checks could not use.

    Attributes
    ----------
    name : str
        What the record calls it (a coding's display, the text, the reference's display);
        empty when it says nothing.
    reason : str
        Why, in words a clinician reads (:data:`NOT_FOUND`, :data:`NOT_CODED`,
        :data:`NOT_KNOWN`).
    ingredients : tuple of str
        Ingredient ids read from ``name`` that the model knows and that were passed on as
        active (duplicate therapy checked by ingredient); empty when none.
    """

    name: str
    reason: str
    ingredients: tuple[str, ...] = ()


@dataclass(frozen=True)
class Resolution:
    """One medication record read: the chosen id (or None), its display, whether its
    ``medicationReference`` pointed at a Medication that could not be found."""

    treatment: str | None
    display: str
    missing_reference: bool = False


@dataclass
class MedicationList:
    """``active_treatments`` (ids the engine takes) and what could not be checked."""

    active_treatments: list[str] = field(default_factory=list)
    unresolved: list[Unresolved] = field(default_factory=list)


def ingredient_reader(known: frozenset[str] | set[str]) -> Callable[[str], list[str]]:
    """A medication's name -> the ``drug|<name>`` ingredient ids in it that are in ``known``
    (the model's ingredient ids), for :func:`active_treatments`' fallback."""

    def ingredients_of(name: str) -> list[str]:
        return [i for i in ingredient_ids(name) if i in known] if name else []

    return ingredients_of


def is_active(resource: Mapping) -> bool:
    """Whether a MedicationRequest / MedicationStatement is taken now."""
    status = resource.get("status")
    allowed = ACTIVE_STATUS.get(str(resource.get("resourceType")), set())
    return isinstance(status, str) and status.lower() in allowed


def active_treatments(
    resources: Iterable[Mapping],
    resolve: Callable[[Mapping], Resolution],
    known: Callable[[str], bool],
    ingredients_of: Callable[[str], list[str]] | None = None,
) -> MedicationList:
    """The engine's ``active_treatments`` for a patient's medication records.

    Parameters
    ----------
    resources : iterable of mapping
        MedicationRequest and MedicationStatement resources (any status; inactive ones are
        skipped).
    resolve : callable
        Reads a record's medication (``Coder.resolve_medication``).
    known : callable
        Whether the model knows a therapy id.
    ingredients_of : callable, optional
        A medication's name -> the ingredient ids the model knows in it (empty when none);
        without it an unknown medication gets no ingredient fallback.

    Returns
    -------
    MedicationList
        Known therapy ids and the ingredient ids of unknown medications, in record order
        without repeats, and one :class:`Unresolved` per active record that gave no therapy id (repeats of
        the same name and reason merged).
    """
    found = MedicationList()
    for resource in resources:
        if not is_active(resource):
            continue
        resolution = resolve(resource)
        treatment = resolution.treatment
        if treatment is not None and known(treatment):
            if treatment not in found.active_treatments:
                found.active_treatments.append(treatment)
            continue
        held = tuple(ingredients_of(resolution.display)) if ingredients_of else ()
        for ingredient in held:
            if ingredient not in found.active_treatments:
                found.active_treatments.append(ingredient)
        if resolution.missing_reference:
            reason = NOT_FOUND
        elif treatment is None:
            reason = NOT_CODED
        else:
            reason = NOT_KNOWN
        item = Unresolved(resolution.display, reason, held)
        if item not in found.unresolved:
            found.unresolved.append(item)
    return found
