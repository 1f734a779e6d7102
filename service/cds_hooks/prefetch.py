"""Prefetched FHIR R4 resources -> what the engine takes: outcome history, conditions and
allergies, active treatments, sex and birth year.

The prefetch templates (:data:`PREFETCH`) ask for the patient, the conditions (active and past:
resolved, inactive, in remission), the medication requests and statements (active, on hold,
completed and stopped, with the Medication resources they refer to, ``_include``) and the
allergies, so that the outcome rules ("switched", "resolved", "adverse") can work for a patient
the model has never seen. CDS Hooks 2.0 templates cannot carry a date, so the look-back window
is applied here: a stopped or completed medication that ended more than ``lookback_days`` ago is
not read. Codes become the importer's ``system|code`` ids (``rxnorm|860975``,
``snomed|44054006``), preferring the coding the model knows.

Liberal in what it accepts: a resource that is not valid FHIR R4 or not of the key's type is
skipped and counted (:attr:`Prefetched.skipped`; every card says so), not a reason to refuse the
call. A resource about another patient than ``context.patientId`` still refuses the call (400):
mixing two patients' records is not a small flaw.

The outcome history follows the FHIR importer's rule set (:mod:`recommender.importers.rules`,
default windows) for this one patient, without pandas so that a call stays fast: medication
requests of one therapy for one indication episode form a course, and its outcome is, in this
order, *adverse* (an allergy to it began within 30 days of its start, or the patient died),
*switched* (another therapy for the same episode started within 365 days; outcome 0),
*resolved* (the episode ended within 90 days; 1), *chronic* (still running or lasted 180 days;
0.5), else no outcome. Requests without a reason (no indication) give no outcome but still count
as active treatments for the interaction check. ``tests/service/test_cds_prefetch.py`` checks
the result against the importer on the same resources.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timezone

from recommender.importers import fhir as fhir_import
from recommender.importers.common import SYSTEM_URLS, system_prefix
from recommender.importers.fhir_source import reference_key
from recommender.importers.rules import RULE_OUTCOMES, OutcomeRules

from ..errors import ApiError
from .medications import Resolution, active_treatments

#: Prefetch key -> FHIR query template (the CDS Hooks discovery document publishes these).
PREFETCH = {
    "patient": "Patient/{{context.patientId}}",
    "conditions": "Condition?patient={{context.patientId}}"
    "&clinical-status=active,recurrence,relapse,inactive,remission,resolved",
    "medications": "MedicationRequest?patient={{context.patientId}}"
    "&status=active,on-hold,completed,stopped&_include=MedicationRequest:medication",
    "medicationStatements": "MedicationStatement?patient={{context.patientId}}"
    "&status=active,intended,on-hold,completed,stopped&_include=MedicationStatement:medication",
    "allergies": "AllergyIntolerance?patient={{context.patientId}}",
}
#: What each key may hold (besides Medication resources a request refers to).
EXPECTED = {
    "patient": "Patient",
    "conditions": "Condition",
    "medications": "MedicationRequest",
    "medicationStatements": "MedicationStatement",
    "allergies": "AllergyIntolerance",
}
#: Days of medication history read by default (stopped / completed ones ended within it).
LOOKBACK_DAYS = 3650
#: Keys without which a patient the model does not know cannot be checked safely.
REQUIRED_FOR_NEW_PATIENTS = ("conditions", "medications", "allergies")
ACTIVE_CLINICAL = {"", "active", "recurrence", "relapse"}
RULES = OutcomeRules()


@dataclass
class Prefetched:
    """A patient's prefetched data in engine terms.

    Attributes
    ----------
    provided : set of str
        Prefetch keys the client satisfied (a null value counts: "no such data").
    history : list of dict
        Outcome items (``treatment_id``, ``outcome``, ``timestamp``, ``adverse``).
    conditions : list of str
        Every diagnosis not refuted (contraindication checks), in prefetch order.
    active_conditions : list of str
        The active ones (what suggestions are for).
    allergies : list of str
        Allergy substance codes (contraindication checks).
    active_treatments : list of str
        Therapies of active medication requests (interaction checks).
    sex, birth_year
        From the Patient resource.
    names : dict
        Id -> display text seen in the codings.
    unresolved : list of Unresolved
        Active medications the safety checks could not use (:mod:`.medications`).
    skipped : dict
        ``(key, resource type)`` -> how many resources were skipped as not valid FHIR R4 or
        not of the key's type.
    dosages : dict
        Therapy id -> the ``dosageInstruction`` of the patient's latest request of it.
    """

    provided: set = field(default_factory=set)
    history: list = field(default_factory=list)
    conditions: list = field(default_factory=list)
    active_conditions: list = field(default_factory=list)
    allergies: list = field(default_factory=list)
    active_treatments: list = field(default_factory=list)
    sex: str | None = None
    birth_year: int | None = None
    names: dict = field(default_factory=dict)
    unresolved: list = field(default_factory=list)
    skipped: dict = field(default_factory=dict)
    dosages: dict = field(default_factory=dict)

    def missing_for_new_patient(self) -> list[str]:
        return [key for key in REQUIRED_FOR_NEW_PATIENTS if key not in self.provided]


def parse_prefetch(
    prefetch: Mapping | None,
    patient_id: str,
    known: Callable[[str], bool],
    *,
    is_treatment: Callable[[str], bool] | None = None,
    fetch_medication: Callable[[str], Mapping | None] | None = None,
    ingredients_of: Callable[[str], list[str]] | None = None,
    lookback_days: int | None = LOOKBACK_DAYS,
    today: date | None = None,
) -> Prefetched:
    """Validate and convert a request's ``prefetch`` object.

    Parameters
    ----------
    prefetch : mapping or None
        Key -> resource, searchset Bundle, null (no data) or OperationOutcome (the client could
        not fetch it: the key counts as not provided).
    patient_id : str
        ``context.patientId``; every resource must be about this patient.
    known : callable
        Whether the model knows an id (used to choose among a concept's codings).
    is_treatment : callable, optional
        Whether the model knows a therapy id (``active_treatments`` holds only those); default
        ``known``.
    fetch_medication : callable, optional
        ``Medication/<id>`` -> the resource from the EHR's FHIR server, or None; used for a
        ``medicationReference`` the prefetch does not resolve.
    ingredients_of : callable, optional
        A medication's name -> the ingredient ids the model knows in it
        (:func:`.medications.ingredient_reader`): an active medication the model does not know
        is still checked for duplicate therapy through them.
    lookback_days : int or None
        Stopped or completed medications that ended longer ago are not read (None: all).
    today : date, optional
        The day the window counts back from (default: today, UTC).

    Raises
    ------
    ApiError
        400 ``invalid_prefetch`` for a value that is not a resource, Bundle or null, or a
        resource about another patient. Keys this service did not ask for are not read.
    """
    result = Prefetched()
    resources: dict[str, list[dict]] = {}
    urls: dict[str, dict] = {}  # an entry's fullUrl -> its Medication
    for key, value in (prefetch or {}).items():
        if key not in PREFETCH:
            continue  # not one of our templates: not read (the client should not send it)
        items = _resources(key, value, result.skipped, urls)
        if items is None:
            continue  # an OperationOutcome: not provided
        result.provided.add(key)
        for item in items:
            _check_subject(key, item, patient_id)
        resources[key] = items
    medications = [
        r for items in resources.values() for r in items if r["resourceType"] == "Medication"
    ]
    context = Coder(patient_id, known, medications, fetch=fetch_medication, urls=urls)
    patients = [r for r in resources.get("patient", []) if r["resourceType"] == "Patient"]
    if patients:
        result.sex, result.birth_year = _demographics(patients[0])
    context.read_conditions(result, _of(resources, "conditions"))
    context.read_allergies(result, _of(resources, "allergies"))
    records = _within(
        _of(resources, "medications") + _of(resources, "medicationStatements"),
        lookback_days,
        today or datetime.now(timezone.utc).date(),
    )
    taken = active_treatments(
        records, context.resolve_medication, is_treatment or known, ingredients_of
    )
    result.active_treatments, result.unresolved = taken.active_treatments, taken.unresolved
    context.read_medications(result, records, patients[:1])
    result.names = context.names
    return result


def provided_keys(prefetch: Mapping | None) -> set[str]:
    """The template keys a ``prefetch`` object satisfies (present, not an OperationOutcome)."""
    return {
        key
        for key, value in (prefetch or {}).items()
        if key in PREFETCH
        and not (isinstance(value, Mapping) and value.get("resourceType") == "OperationOutcome")
    }


def _of(resources: dict, key: str) -> list[dict]:
    return [r for r in resources.get(key, []) if r["resourceType"] == EXPECTED[key]]


def _within(records: list[dict], lookback_days: int | None, today: date) -> list[dict]:
    """``records`` without the stopped / completed ones that ended before the window."""
    if lookback_days is None:
        return records
    kept = []
    for data in records:
        status = str(data.get("status") or "").lower()
        if status in fhir_import.OPEN_STATUS:
            kept.append(data)
            continue
        start, stop = fhir_import.medication_times(data, data["resourceType"])
        ended = _day(stop) or _day(start)
        if ended is None or (today - ended).days <= lookback_days:
            kept.append(data)
    return kept


def _resources(key: str, value, skipped: dict, urls: dict) -> list[dict] | None:
    """The valid resources of one prefetch value; None for an OperationOutcome.

    Invalid resources and resources of another type are counted in ``skipped``; the Medication
    entries of a Bundle are recorded under their ``fullUrl`` in ``urls``.
    """
    if value is None:
        return []
    if not isinstance(value, Mapping) or not isinstance(value.get("resourceType"), str):
        raise ApiError(
            400,
            "invalid_prefetch",
            f"prefetch {key!r} must be a FHIR resource, a Bundle or null",
            {"key": key},
        )
    if value["resourceType"] == "OperationOutcome":
        return None
    if value["resourceType"] == "Bundle":
        entries = value.get("entry") or []
        if not isinstance(entries, list):
            raise ApiError(
                400,
                "invalid_prefetch",
                f"prefetch {key!r}: Bundle.entry must be a list",
                {"key": key},
            )
        pairs = [
            (entry.get("resource"), entry.get("fullUrl"))
            for entry in entries
            if isinstance(entry, Mapping)
        ]
        pairs = [(item, url) for item, url in pairs if isinstance(item, Mapping)]
    else:
        pairs = [(value, None)]
    allowed = {EXPECTED[key], "Medication"}
    kept = []
    for item, url in pairs:
        rtype = item.get("resourceType")
        if rtype == "OperationOutcome":
            continue  # a search warning the client passed along
        rtype = rtype if isinstance(rtype, str) else "(no resourceType)"
        if rtype not in allowed or invalid_resource(rtype, item):
            skipped[(key, rtype)] = skipped.get((key, rtype), 0) + 1
            continue
        kept.append(dict(item))
        if rtype == "Medication" and isinstance(url, str):
            urls[url] = kept[-1]
    return kept


_MODELS: dict = {}


def invalid_resource(rtype: str, data: Mapping) -> str | None:
    from fhir.resources.R4B import get_fhir_model_class
    from pydantic import ValidationError

    model = _MODELS.get(rtype)
    if model is None:
        model = _MODELS[rtype] = get_fhir_model_class(rtype)
    try:
        model.model_validate(dict(data))
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first.get("loc", ())) or "(resource)"
        return f"field '{where}': {' '.join(str(first.get('msg', 'invalid')).split())}"
    return None


def _check_subject(key: str, resource: Mapping, patient_id: str) -> None:
    rtype = resource["resourceType"]
    if rtype == "Medication":
        return
    if rtype == "Patient":
        owner = f"Patient/{resource.get('id')}" if resource.get("id") else None
    else:
        reference = (resource.get("subject") or resource.get("patient") or {}).get("reference")
        owner = reference_key(reference, {})
    if owner is not None and owner != f"Patient/{patient_id}":
        raise ApiError(
            400,
            "invalid_prefetch",
            f"prefetch {key!r} holds a {rtype} of another patient than context.patientId",
            {"key": key},
        )


def _demographics(patient: Mapping) -> tuple[str | None, int | None]:
    sex = fhir_import.SEX.get((patient.get("gender") or "").lower()) or None
    birth = patient.get("birthDate") or ""
    return sex, int(birth[:4]) if birth[:4].isdigit() else None


def _status(concept: Mapping | None) -> str:
    codings = (concept or {}).get("coding") or []
    return (codings[0].get("code") or "").lower() if codings else ""


def _day(text) -> date | None:
    """The UTC calendar day of a FHIR date or dateTime (partial dates: first day)."""
    if not isinstance(text, str) or len(text) < 4:
        return None
    try:
        if len(text) <= 10:
            parts = (text + "-01-01")[:10] if len(text) == 4 else (text + "-01")[:10]
            return date.fromisoformat(parts if len(text) < 10 else text)
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
        if moment.tzinfo is not None:
            moment = moment.astimezone(timezone.utc)
        return moment.date()
    except ValueError:
        return None


@dataclass
class _Course:
    treatment: str
    name: str
    indication: str | None
    episode: str | None
    episode_stop: date | None
    start: date
    stop: date | None  # None: still running
    switchable: bool = True


class Coder:
    """Code choice, episodes and courses for one patient's prefetch (also reads draft orders)."""

    def __init__(
        self,
        patient_id: str,
        known: Callable[[str], bool],
        medications: list[dict],
        fetch: Callable[[str], Mapping | None] | None = None,
        urls: Mapping[str, dict] | None = None,
    ):
        self.patient_id, self.known, self.fetch = patient_id, known, fetch
        self.medications = {f"Medication/{m['id']}": m for m in medications if m.get("id")}
        self.urls = dict(urls or {})
        self.fetched: dict[str, Mapping | None] = {}  # Medication/<id> -> server's answer
        self.episodes: dict[str, tuple[str, date | None, date | None]] = {}  # key -> code, on, off
        self.allergy_rows: list[tuple[str, str, date | None]] = []  # code, name, onset
        self.names: dict[str, str] = {}  # id -> display text seen in the codings

    def code(self, concept: Mapping | None, prefer: tuple[str, ...]) -> tuple[str | None, str]:
        """(``system|code``, display): the first known coding in preference order, else the
        preferred one (as the importer chooses), else the text."""
        if not isinstance(concept, Mapping):
            return None, ""
        text = concept.get("text")
        text = text.strip() if isinstance(text, str) else ""
        codings = concept.get("coding")
        ids = []
        for coding in codings if isinstance(codings, list) else []:
            if not isinstance(coding, Mapping) or not isinstance(coding.get("code"), str):
                continue  # a draft order may be incomplete: read what is well formed
            code = coding["code"].strip()
            system = coding.get("system") if isinstance(coding.get("system"), str) else ""
            if not code:
                continue
            prefix = system_prefix(system)
            rank = prefer.index(prefix) if prefix in prefer else len(prefer)
            if prefix is None:
                prefix = system.split("://", 1)[-1].rstrip("/").lower() or "unknown"
            display = coding.get("display") if isinstance(coding.get("display"), str) else ""
            ids.append((rank, f"{prefix}|{code}", (display or text).strip()))
        ids.sort(key=lambda item: item[0])
        chosen = next(((i, d) for _, i, d in ids if self.known(i)), None)
        if chosen is None and ids:
            chosen = ids[0][1], ids[0][2]
        if chosen is None and text:
            chosen = f"text|{' '.join(text.lower().split())}", text
        if chosen is None:
            return None, ""
        if chosen[1]:
            self.names.setdefault(*chosen)
        return chosen

    def read_conditions(self, result: Prefetched, conditions: list[dict]) -> None:
        for data in conditions:
            if _status(data.get("verificationStatus")) in fhir_import.REFUTED:
                continue
            code, _ = self.code(data.get("code"), fhir_import.CONDITION_SYSTEMS)
            if code is None:
                continue
            onset = _day(
                data.get("onsetDateTime")
                or (data.get("onsetPeriod") or {}).get("start")
                or data.get("recordedDate")
            )
            stop = _day(
                data.get("abatementDateTime") or (data.get("abatementPeriod") or {}).get("end")
            )
            if data.get("id"):
                self.episodes[f"Condition/{data['id']}"] = (code, onset, stop)
            _add(result.conditions, code)
            if _status(data.get("clinicalStatus")) in ACTIVE_CLINICAL:
                _add(result.active_conditions, code)

    def read_allergies(self, result: Prefetched, allergies: list[dict]) -> None:
        for data in allergies:
            if _status(data.get("verificationStatus")) in fhir_import.REFUTED:
                continue
            onset = _day(
                data.get("onsetDateTime")
                or (data.get("onsetPeriod") or {}).get("start")
                or data.get("recordedDate")
            )
            concepts = [data.get("code")] + [r.get("substance") for r in data.get("reaction") or []]
            for concept in concepts:
                code, name = self.code(concept, fhir_import.ALLERGY_SYSTEMS)
                if code is not None:
                    _add(result.allergies, code)
                    self.allergy_rows.append((code, name, onset))

    def medication(self, data: Mapping) -> tuple[str | None, str]:
        """The therapy of a MedicationRequest (coded, or through a referenced Medication)."""
        resolution = self.resolve_medication(data)
        return resolution.treatment, resolution.display

    def resolve_medication(self, data: Mapping) -> Resolution:
        """A record's medication: its own concept, else the Medication it refers to (contained,
        in the Bundle, else fetched), else the reference's display as text."""
        if data.get("medicationCodeableConcept"):
            return Resolution(
                *self.code(data["medicationCodeableConcept"], fhir_import.DRUG_SYSTEMS)
            )
        reference = data.get("medicationReference")
        reference = reference if isinstance(reference, Mapping) else {}
        ref = reference.get("reference") if isinstance(reference.get("reference"), str) else ""
        target = self._medication_target(data, ref) if ref else None
        display = reference.get("display")
        display = display.strip() if isinstance(display, str) else ""
        if target is not None:
            treatment, name = self.code(target.get("code"), fhir_import.DRUG_SYSTEMS)
            return Resolution(treatment, name or display)
        if display:
            return Resolution(f"text|{' '.join(display.lower().split())}", display, bool(ref))
        return Resolution(None, "", bool(ref))

    def _medication_target(self, data: Mapping, ref: str) -> Mapping | None:
        if ref.startswith("#"):
            contained = data.get("contained") if isinstance(data.get("contained"), list) else []
            return next(
                (
                    c
                    for c in contained
                    if isinstance(c, Mapping)
                    and c.get("resourceType") == "Medication"
                    and c.get("id") == ref[1:]
                ),
                None,
            )
        if ref in self.urls:
            return self.urls[ref]
        key = reference_key(ref, {}) or ""
        if key in self.medications or not key.startswith("Medication/"):
            return self.medications.get(key)
        if self.fetch is None:
            return None
        if key not in self.fetched:
            self.fetched[key] = self.fetch(key)
        return self.fetched[key]

    def read_medications(
        self, result: Prefetched, records: list[dict], patients: list[dict]
    ) -> None:
        """Outcome history (courses) and each therapy's latest dosage, from requests and
        statements (active treatments are read by :func:`.medications.active_treatments`)."""
        courses: dict[tuple, _Course] = {}
        latest: dict[str, date] = {}
        for data in records:
            status = (data.get("status") or "").lower()
            if status in fhir_import.DROPPED_STATUS:
                continue
            treatment, name = self.medication(data)
            if treatment is None:
                continue
            course = self._course(data, treatment, name, status)
            self._keep_dosage(result, data, treatment, latest)
            if course is None:
                continue
            key = (course.treatment, course.indication, course.episode)
            if key in courses:
                merged = courses[key]
                merged.start = min(merged.start, course.start)
                merged.stop = (
                    None
                    if merged.stop is None or course.stop is None
                    else max(merged.stop, course.stop)
                )
            else:
                courses[key] = course
        death = _day(patients[0].get("deceasedDateTime")) if patients else None
        listed = list(courses.values())
        for course in listed:
            item = self._outcome(course, listed, death)
            if item is not None:
                result.history.append(item)

    @staticmethod
    def _keep_dosage(result: Prefetched, data: Mapping, treatment: str, latest: dict) -> None:
        dosage = data.get("dosageInstruction") or data.get("dosage")
        if not isinstance(dosage, list) or not dosage:
            return
        when = _day(fhir_import.medication_times(data, data["resourceType"])[0]) or date.min
        if treatment not in latest or when >= latest[treatment]:
            latest[treatment] = when
            result.dosages[treatment] = [dict(d) for d in dosage if isinstance(d, Mapping)]

    def _course(self, data: Mapping, treatment: str, name: str, status: str) -> _Course | None:
        # Start and stop text as the FHIR importer reads a MedicationRequest (authoredOn, else
        # the first dosage boundsPeriod, else dispenseRequest.validityPeriod).
        start_text, stop_text = fhir_import.medication_times(data, data["resourceType"])
        start = _day(start_text)
        if start is None:
            return None
        stop = _day(stop_text)
        if stop is None and status not in fhir_import.OPEN_STATUS:
            stop = start
        for reference in data.get("reasonReference") or []:
            key = reference_key(reference.get("reference"), {})
            if key in self.episodes:
                code, _, off = self.episodes[key]
                return _Course(treatment, name, code, key, off, start, stop)
        for concept in data.get("reasonCode") or []:
            code, _ = self.code(concept, fhir_import.CONDITION_SYSTEMS)
            if code:
                episode, off = self._episode_of(code, start)
                return _Course(treatment, name, code, episode, off, start, stop)
        return None  # no indication: no outcome (the importer drops such requests too)

    def _episode_of(self, code: str, start: date) -> tuple[str | None, date | None]:
        """The latest episode of ``code`` that began on or before ``start``."""
        best = None
        for key, (episode_code, onset, off) in self.episodes.items():
            if episode_code == code and onset is not None and onset <= start:
                if best is None or onset >= best[1]:
                    best = (key, onset, off)
        return (best[0], best[2]) if best else (None, None)

    def _outcome(self, course: _Course, courses: list[_Course], death: date | None) -> dict | None:
        window = RULES.adverse_window_days
        adverse = death is not None and 0 <= (death - course.start).days <= window
        for code, name, onset in self.allergy_rows:
            if onset is None or not 0 <= (onset - course.start).days <= window:
                continue
            lowered = name.lower().strip()
            if code == course.treatment or (len(lowered) >= 4 and lowered in course.name.lower()):
                adverse = True
        switch = None
        group = course.episode or f"indication:{course.indication}"
        for other in courses:
            gap = (other.start - course.start).days
            if (
                other.treatment != course.treatment
                and (other.episode or f"indication:{other.indication}") == group
                and 0 < gap <= RULES.switch_window_days
            ):
                switch = other.start if switch is None else min(switch, other.start)
        end = course.episode_stop
        switched = switch is not None and not (end is not None and end <= switch)
        resolved = (
            end is not None and 0 <= (end - course.start).days <= RULES.resolution_window_days
        )
        chronic = course.stop is None or (course.stop - course.start).days >= RULES.chronic_min_days
        if adverse:
            rule = "adverse"
        elif switched:
            rule = "switched"
        elif resolved:
            rule = "resolved"
        elif chronic and RULES.chronic_outcome is not None:
            rule = "chronic"
        else:
            return None
        outcome = RULES.chronic_outcome if rule == "chronic" else RULE_OUTCOMES[rule]
        return {
            "treatment_id": course.treatment,
            "outcome": round(float(outcome), 3),
            "timestamp": course.start.isoformat(),
            "adverse": int(adverse),
        }


def _add(values: list, value: str) -> None:
    if value not in values:
        values.append(value)


def coding_of(identifier: str, display: str | None = None) -> dict:
    """A FHIR CodeableConcept for an engine id (``rxnorm|860975`` -> the RxNorm coding).

    Ids of an unknown system or without one become text only.
    """
    prefix, _, code = identifier.partition("|")
    text = display or identifier
    if code and prefix in SYSTEM_URLS:
        coding = {"system": SYSTEM_URLS[prefix][0], "code": code}
        if display:
            coding["display"] = display
        return {"coding": [coding], "text": text}
    if prefix == "text" and code:
        return {"text": display or code}
    return {"text": text}
