"""Import FHIR R4 resources (Bundle JSON or NDJSON) into canonical tables.

Rules, in plain language
------------------------
- **Input.** A Bundle ``.json`` (or single resource, or JSON array), an ``.ndjson`` file, either
  optionally ``.gz``, or a folder of them. Patient, Condition, MedicationRequest,
  MedicationStatement, Procedure, AllergyIntolerance, Medication and Observation resources are
  read and
  validated with the ``fhir.resources`` R4B models; other types are counted and skipped.
  Lenient (default): an invalid resource is skipped with a warning naming it and its first
  invalid field. ``strict=True``: the first invalid resource raises ``DataValidationError``
  naming the resource (``Type/id``), the file position and the field.
- **Codes** keep their system: ``system|code`` with the prefixes of
  :data:`~recommender.importers.common.SYSTEM_URLS` (RxNorm -> ``rxnorm``, SNOMED CT ->
  ``snomed``, ICD-10(-CM) -> ``icd10``, ICD-9-CM -> ``icd9``, NDC -> ``ndc`` ...). Per resource
  the preferred system is taken first (drugs: rxnorm, ndc, atc, snomed; conditions: snomed,
  icd10, icd9; procedures: snomed, cpt, icd10). A code of an unknown system keeps the system URI
  (scheme stripped) as prefix; a concept with text only becomes ``text|<lower-cased text>``.
- **Treatments.** MedicationRequest (start ``authoredOn``) and MedicationStatement (start
  ``effective[x]``) with a ``medicationCodeableConcept`` or a ``medicationReference`` to a
  contained or bundled Medication. Stop: the dosage bounds or validity period end, else open
  when the status is active/on-hold/intended, else the start day. Status entered-in-error,
  cancelled, draft or not-taken drops the resource. With ``include_procedures`` a Procedure
  (``performed[x]``) is a treatment too. A drug's active ingredients (``treatments.ingredients``)
  are read from its code's display or text (an RxNorm clinical-drug name, as Synthea writes;
  :func:`~recommender.data.ingredients.ingredient_ids`); a Procedure lists none.
- **Indication.** The first ``reasonReference`` that resolves to an imported Condition is the
  episode itself; else the first ``reasonCode`` is the indication, linked to the same patient's
  Condition of that code with the latest onset on or before the start. No reason: dropped.
- **Outcomes** follow :mod:`recommender.importers.rules` (the Synthea rule set): a Condition's
  ``abatement[x]`` within the window after the start = resolved; another drug for the same
  indication episode = switched (failure); ``Patient.deceasedDateTime`` or an
  AllergyIntolerance whose onset falls within the window after the start and whose substance
  (``code`` or ``reaction.substance``) is the treatment (same code or its name in the drug name)
  = adverse.
- **Patients.** ``gender`` (male/female/other/unknown -> M/F/O/U), year of ``birthDate``, US Core
  race and ethnicity (the extension's ``text``, else its first ombCategory display), death date.
  **patient_conditions**: every Condition (kind "diagnosis") and AllergyIntolerance (kind
  "allergy"), Conditions or allergies marked entered-in-error or refuted are dropped;
  ``timestamp`` = ``onsetDateTime``, else ``onsetPeriod.start``, else ``recordedDate``, as
  written (a date stays a date, a date-time is written in UTC with ``Z``).
- **Observations** (``include_observations``): an Observation's ``valueQuantity`` (``value``;
  unit = ``unit``, else ``code``) or ``valueInteger`` becomes one row, coded by its ``code``
  (loinc preferred, then snomed; other systems as above), timed ``effectiveDateTime``, else
  ``effectivePeriod.start``, else ``effectiveInstant``, else ``issued``. Each ``component``
  with such a value (a blood-pressure panel's systolic and diastolic) is one more row with the
  component's code and the Observation's time. Dropped and counted: status entered-in-error or
  cancelled, a non-numeric value (``valueString``, ``valueCodeableConcept`` ...), a value with
  a ``comparator`` (``<5``: censored), no value (``dataAbsentReason``), a code without a code
  system (text only), no subject, no time or one coarser than a day, unknown patients.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from ..columns import Columns, Tables
from ..exceptions import DataValidationError
from . import common
from .fhir_source import Resource, read_resources, reference_key
from .report import ImportReport
from .rules import OutcomeRules, link_episodes, outcome_table

C = Columns

DRUG_SYSTEMS = ("rxnorm", "ndc", "atc", "snomed")
CONDITION_SYSTEMS = ("snomed", "icd10", "icd9")
PROCEDURE_SYSTEMS = ("snomed", "cpt", "icd10")
ALLERGY_SYSTEMS = ("rxnorm", "snomed", "ndc", "atc")
OBSERVATION_SYSTEMS = ("loinc", "snomed")
#: value[x] types of an Observation (or component) that are not a number.
_OTHER_VALUES = (
    "valueCodeableConcept",
    "valueString",
    "valueBoolean",
    "valueRange",
    "valueRatio",
    "valueSampledData",
    "valueTime",
    "valueDateTime",
    "valuePeriod",
)
SEX = {"male": "M", "female": "F", "other": "O", "unknown": "U"}
DROPPED_STATUS = {"entered-in-error", "cancelled", "draft", "not-taken", "not-done"}
OPEN_STATUS = {"active", "on-hold", "intended"}
REFUTED = {"entered-in-error", "refuted"}


def import_fhir(
    path: str | Path,
    out: str | Path,
    *,
    strict: bool = False,
    include_procedures: bool = False,
    include_observations: bool = True,
    resolution_window_days: int = 90,
    switch_window_days: int = 365,
    adverse_window_days: int = 30,
    chronic_min_days: int = 180,
    chronic_outcome: float | None = 0.5,
    allergy_match: str = "substance",
) -> ImportReport:
    """Convert FHIR R4 resources into a folder of canonical tables.

    Parameters
    ----------
    path : path
        A Bundle/resource ``.json``, an ``.ndjson`` (optionally ``.gz``), or a folder of them.
    out : path
        Output folder, replaced whole (atomically) by the tables and ``import_report.*``.
    strict : bool
        Raise on the first invalid resource instead of skipping it with a warning.
    include_procedures : bool
        Also treat Procedures with a reason as treatments.
    include_observations : bool
        Write Observation results (numbers only) as the observations table.
    resolution_window_days, switch_window_days, adverse_window_days, chronic_min_days,
    chronic_outcome, allergy_match
        The outcome rules (:class:`~recommender.importers.rules.OutcomeRules`).

    Returns
    -------
    ImportReport

    Raises
    ------
    DataValidationError
        If ``path`` holds no FHIR file, or (strict) a resource is invalid.
    """
    rules = OutcomeRules(
        resolution_window_days,
        switch_window_days,
        adverse_window_days,
        chronic_min_days,
        chronic_outcome,
        allergy_match,
    )
    report = ImportReport(
        "fhir",
        str(path),
        parameters={
            "strict": strict,
            "include_procedures": include_procedures,
            "include_observations": include_observations,
            **rules.to_dict(),
        },
    )
    resources, urls = read_resources(path, report, strict)
    report.layout = "fhir-r4"
    ctx = _Context(resources, urls, report, strict)
    patients = ctx.patients()
    episodes = ctx.conditions()
    allergies = ctx.allergies()
    rows = ctx.treatment_rows(include_procedures)
    rows = _link(rows, episodes, report)
    known = set(patients[C.patient]) if len(patients) else None
    if known is None:
        report.warn(
            "no Patient resource: patient demographics are missing and no patients table is written"
        )
    deaths = (
        patients.set_index(C.patient)["death"].dropna()
        if len(patients)
        else pd.Series([], dtype="datetime64[ns, UTC]")
    )
    outcomes = outcome_table(rows, known, deaths, allergies, rules, report)
    frames = {
        Tables.outcomes: outcomes,
        Tables.patient_conditions: common.patient_conditions(episodes, allergies, known, report),
    }
    if known is not None:
        frames[Tables.patients] = patients.drop(columns="death")
    frames[Tables.treatments] = common.with_ingredients(
        common.dictionary(
            rows["treatment"], rows["treatment_name"], C.treatment, set(outcomes[C.treatment])
        ),
        rows["treatment"],
        rows["treatment_name"],
        report,
        drugs=rows["source"] != "Procedure",
    )
    frames[Tables.conditions] = common.condition_dictionary(
        episodes,
        allergies,
        rows,
        set(outcomes[C.condition].dropna()) | set(frames[Tables.patient_conditions][C.condition]),
    )
    if include_observations and ctx.by_type.get("Observation"):
        frames[Tables.observations] = ctx.observations(known)
    elif ctx.by_type.get("Observation"):
        report.drop("Observation: include_observations is off", len(ctx.by_type["Observation"]))
    common.write_output(out, frames, report)
    return report


class _Context:
    """The resources of one import, with reference resolution and per-type extraction."""

    def __init__(
        self, resources: list[Resource], urls: dict[str, str], report: ImportReport, strict: bool
    ):
        self.report, self.urls, self.strict = report, urls, strict
        self.by_type: dict[str, list[Resource]] = {}
        self.by_key: dict[str, Resource] = {}
        for resource in resources:
            self.by_type.setdefault(resource.type, []).append(resource)
            self.by_key[resource.key] = resource
        self.unknown_systems: set[str] = set()

    # --- helpers ----------------------------------------------------------------------------

    def code(self, concept: dict | None, prefer: tuple[str, ...]) -> tuple[str | None, str]:
        """(``system|code``, display name) of the preferred coding of a CodeableConcept."""
        if not isinstance(concept, dict):
            return None, ""
        codings = [c for c in concept.get("coding") or [] if c.get("code")]
        text = (concept.get("text") or "").strip()
        ranked = sorted(
            codings,
            key=lambda c: (
                prefer.index(common.system_prefix(c.get("system")))
                if common.system_prefix(c.get("system")) in prefer
                else len(prefer)
            ),
        )
        if ranked:
            best = ranked[0]
            system = best.get("system") or ""
            prefix = common.system_prefix(system)
            if prefix is None:
                prefix = system.split("://", 1)[-1].rstrip("/").lower() or "unknown"
                if system not in self.unknown_systems:
                    self.unknown_systems.add(system)
                    self.report.warn(
                        f"code system {system or '(none)'!r} is not one of "
                        f"{list(common.SYSTEM_URLS)}; kept as prefix {prefix!r}"
                    )
            return f"{prefix}|{best['code'].strip()}", (best.get("display") or text).strip()
        if text:
            return f"text|{' '.join(text.lower().split())}", text
        return None, ""

    def patient_of(self, resource: Resource) -> str | None:
        data = resource.data
        ref = (data.get("subject") or data.get("patient") or {}).get("reference")
        key = reference_key(ref, self.urls)
        if key and key.startswith("Patient/"):
            return key.split("/", 1)[1]
        return None

    def skip(self, resource: Resource, why: str) -> None:
        """Drop an unusable resource (strict: raise naming the resource and field)."""
        if self.strict and why.startswith("no "):
            raise DataValidationError(f"{resource.key}: {why}", file=resource.where)
        self.report.drop(f"{resource.type}: {why}", 1)

    # --- per type ---------------------------------------------------------------------------

    def patients(self) -> pd.DataFrame:
        records = []
        for resource in self.by_type.get("Patient", []):
            data = resource.data
            records.append(
                {
                    C.patient: resource.key.split("/", 1)[1],
                    C.sex: SEX.get((data.get("gender") or "").lower(), ""),
                    C.birth_year: int(data["birthDate"][:4]) if data.get("birthDate") else None,
                    "race": _us_core(data, "us-core-race"),
                    "ethnicity": _us_core(data, "us-core-ethnicity"),
                    "death_date": (data.get("deceasedDateTime") or "")[:10],
                }
            )
        frame = pd.DataFrame(
            records, columns=[C.patient, C.sex, C.birth_year, "race", "ethnicity", "death_date"]
        )
        frame[C.birth_year] = frame[C.birth_year].astype("Int64")
        dupes = frame[C.patient].duplicated()
        self.report.drop("Patient: duplicate id (first kept)", int(dupes.sum()))
        frame = frame[~dupes].reset_index(drop=True)
        frame["death"] = common.parse_times(
            frame["death_date"], self.report, "Patient.deceasedDateTime"
        )
        return frame

    def conditions(self) -> pd.DataFrame:
        records = []
        for resource in self.by_type.get("Condition", []):
            data = resource.data
            if _status(data.get("verificationStatus")) in REFUTED:
                self.report.drop("Condition: entered-in-error or refuted", 1)
                continue
            patient = self.patient_of(resource)
            code, name = self.code(data.get("code"), CONDITION_SYSTEMS)
            start = (
                data.get("onsetDateTime")
                or (data.get("onsetPeriod") or {}).get("start")
                or data.get("recordedDate")
            )
            if not patient or not code or not start:
                self.skip(resource, "no subject, code or onset")
                continue
            stop = (
                data.get("abatementDateTime")
                or (data.get("abatementPeriod") or {}).get("end")
                or ""
            )
            records.append(
                {
                    "patient": patient,
                    "condition": code,
                    "name": name,
                    "start": start,
                    "stop": stop,
                    "episode": resource.key,
                }
            )
        frame = pd.DataFrame(
            records, columns=["patient", "condition", "name", "start", "stop", "episode"]
        )
        dupes = frame["episode"].duplicated()
        self.report.drop("Condition: duplicate id (first kept)", int(dupes.sum()))
        frame = frame[~dupes].reset_index(drop=True)
        raw_start = frame["start"]
        for column in ("start", "stop"):
            frame[column] = common.parse_times(frame[column], self.report, f"Condition.{column}")
        frame["start_text"] = common.time_texts(raw_start, frame["start"])
        return frame

    def allergies(self) -> pd.DataFrame:
        """One row per (allergy, substance code): patient, onset, code, name, primary (bool)."""
        records = []
        for resource in self.by_type.get("AllergyIntolerance", []):
            data = resource.data
            if _status(data.get("verificationStatus")) in REFUTED:
                self.report.drop("AllergyIntolerance: entered-in-error or refuted", 1)
                continue
            patient = self.patient_of(resource)
            code, name = self.code(data.get("code"), ALLERGY_SYSTEMS)
            onset = (
                data.get("onsetDateTime")
                or (data.get("onsetPeriod") or {}).get("start")
                or data.get("recordedDate")
                or ""
            )
            if not patient or not code:
                self.skip(resource, "no patient or code")
                continue
            records.append(
                {"patient": patient, "onset": onset, "code": code, "name": name, "primary": True}
            )
            for reaction in data.get("reaction") or []:
                other, other_name = self.code(reaction.get("substance"), ALLERGY_SYSTEMS)
                if other and other != code:
                    records.append(
                        {
                            "patient": patient,
                            "onset": onset,
                            "code": other,
                            "name": other_name,
                            "primary": False,
                        }
                    )
        frame = pd.DataFrame(records, columns=["patient", "onset", "code", "name", "primary"])
        raw_onset = frame["onset"]
        frame["onset"] = common.parse_times(frame["onset"], self.report, "AllergyIntolerance.onset")
        frame["onset_text"] = common.time_texts(raw_onset, frame["onset"])
        return frame

    def observations(self, known: set | None) -> pd.DataFrame:
        """One row per numeric value of an Observation or of one of its components."""
        records = []
        for resource in self.by_type.get("Observation", []):
            data = resource.data
            status = (data.get("status") or "").lower()
            if status in DROPPED_STATUS:
                self.report.drop(f"Observation: status {status}", 1)
                continue
            patient = self.patient_of(resource) or ""
            period = data.get("effectivePeriod") or {}
            time = (
                data.get("effectiveDateTime")
                or period.get("start")
                or data.get("effectiveInstant")
                or data.get("issued")
                or ""
            )
            code, code_problem = self._observation_code(data.get("code"))
            if self.strict and (not patient or not time):
                self.skip(resource, "no subject or effective[x]/issued time")
            values = []
            if any(key.startswith("value") for key in data) or not data.get("component"):
                values.append((code, code_problem, *_numeric_value(data)))
            for component in data.get("component") or []:
                values.append(
                    (*self._observation_code(component.get("code")), *_numeric_value(component))
                )
            for row_code, problem, value, unit, value_problem in values:
                records.append(
                    {
                        "patient": patient,
                        "code": row_code,
                        "value": value,
                        "unit": unit,
                        "time": time,
                        "problem": problem or value_problem,
                    }
                )
        columns = ["patient", "code", "value", "unit", "time", "problem"]
        frame = pd.DataFrame(records, columns=columns)
        frame["value"] = frame["value"].astype(float)
        return common.observation_table(frame, known, self.report, "Observation")

    def _observation_code(self, concept: dict | None) -> tuple[str | None, str]:
        """(``system|code``, "") of an Observation code, or (None, why it has none)."""
        codings = [c for c in (concept or {}).get("coding") or [] if c.get("code")]
        if not any(c.get("system") for c in codings):
            return None, "code without a code system (text only or no system)"
        code, _ = self.code(
            {**concept, "coding": [c for c in codings if c.get("system")]}, OBSERVATION_SYSTEMS
        )
        return code, ""

    def treatment_rows(self, include_procedures: bool) -> pd.DataFrame:
        records = []
        types = ["MedicationRequest", "MedicationStatement"] + (
            ["Procedure"] if include_procedures else []
        )
        for rtype in types:
            for resource in self.by_type.get(rtype, []):
                record = self._treatment(resource)
                if record is not None:
                    records.append(record)
        if not include_procedures and self.by_type.get("Procedure"):
            self.report.drop("Procedure: include_procedures is off", len(self.by_type["Procedure"]))
        columns = [
            "patient",
            "treatment",
            "treatment_name",
            "start",
            "stop",
            "reason_code",
            "reason_name",
            "reason_ref",
            "source",
            "switchable",
        ]
        frame = pd.DataFrame(records, columns=columns)
        for column in ("start", "stop"):
            frame[column] = common.parse_times(frame[column], self.report, f"treatment {column}")
        return frame

    def _treatment(self, resource: Resource) -> dict | None:
        data, rtype = resource.data, resource.type
        status = (data.get("status") or "").lower()
        if status in DROPPED_STATUS:
            self.report.drop(f"{rtype}: status {status}", 1)
            return None
        if rtype == "Procedure":
            code, name = self.code(data.get("code"), PROCEDURE_SYSTEMS)
            period = data.get("performedPeriod") or {}
            start = data.get("performedDateTime") or period.get("start")
            stop = period.get("end") or start
        else:
            code, name = self._medication(resource)
            start, stop = medication_times(data, rtype)
            if not stop and status not in OPEN_STATUS:
                stop = start
        patient = self.patient_of(resource)
        if not patient or not code or not start:
            self.skip(resource, "no subject, code or start date")
            return None
        reason_code, reason_name = None, ""
        for concept in data.get("reasonCode") or []:
            reason_code, reason_name = self.code(concept, CONDITION_SYSTEMS)
            if reason_code:
                break
        refs = [
            reference_key(r.get("reference"), self.urls) for r in data.get("reasonReference") or []
        ]
        reason_ref = next(
            (k for k in refs if k in self.by_key and k.startswith("Condition/")), None
        )
        if refs and reason_ref is None:
            self.report.unmatch(f"{rtype}: reasonReference to no imported Condition", 1)
        if reason_code is None and reason_ref is None:
            self.report.drop(f"{rtype}: no reasonCode or reasonReference (no indication)", 1)
            return None
        return {
            "patient": patient,
            "treatment": code,
            "treatment_name": name,
            "start": start,
            "stop": stop or "",
            "reason_code": reason_code,
            "reason_name": reason_name,
            "reason_ref": reason_ref,
            "source": rtype,
            "switchable": rtype != "Procedure",
        }

    def _medication(self, resource: Resource) -> tuple[str | None, str]:
        data = resource.data
        if data.get("medicationCodeableConcept"):
            return self.code(data["medicationCodeableConcept"], DRUG_SYSTEMS)
        ref = (data.get("medicationReference") or {}).get("reference") or ""
        if ref.startswith("#"):
            target = next(
                (
                    c
                    for c in data.get("contained") or []
                    if c.get("resourceType") == "Medication" and c.get("id") == ref[1:]
                ),
                None,
            )
        else:
            found = self.by_key.get(reference_key(ref, self.urls) or "")
            target = found.data if found is not None else None
        if target is None:
            self.report.unmatch(f"{resource.type}: medicationReference to no Medication", 1)
            return None, ""
        return self.code(target.get("code"), DRUG_SYSTEMS)


def _numeric_value(element: dict) -> tuple[float, str, str]:
    """(value, unit, problem) of the value[x] of an Observation or component (problem "" when
    it is a number: ``valueQuantity.value`` without comparator, or ``valueInteger``)."""
    if "valueQuantity" in element:
        quantity = element["valueQuantity"] or {}
        unit = str(quantity.get("unit") or quantity.get("code") or "")
        value = quantity.get("value")
        if quantity.get("comparator"):
            return float("nan"), unit, common.CENSORED
        if value is None:
            return float("nan"), unit, common.NO_VALUE
        numbers, problem = common.numeric_values(pd.Series([str(value)]))
        return float(numbers[0]), unit, problem.iloc[0]
    if "valueInteger" in element and not isinstance(element["valueInteger"], bool):
        return float(element["valueInteger"]), "", ""
    other = next((key for key in _OTHER_VALUES if key in element), None)
    if other is not None:
        return float("nan"), "", f"not numeric ({other})"
    return float("nan"), "", common.NO_VALUE


def _status(concept: dict | None) -> str:
    codings = (concept or {}).get("coding") or []
    return (codings[0].get("code") or "").lower() if codings else ""


def _us_core(patient: dict, name: str) -> str:
    for extension in patient.get("extension") or []:
        if not (extension.get("url") or "").endswith(name):
            continue
        parts = extension.get("extension") or []
        text = next((p.get("valueString") for p in parts if p.get("url") == "text"), None)
        if not text:
            text = next(
                (
                    (p.get("valueCoding") or {}).get("display")
                    for p in parts
                    if p.get("url") == "ombCategory"
                ),
                None,
            )
        return (text or "").strip().lower()
    return ""


def medication_times(data: dict, rtype: str) -> tuple[str | None, str | None]:
    """(start, stop) ISO-8601 texts of a MedicationStatement/MedicationRequest resource ``data``
    of type ``rtype``; None where the resource does not say."""
    if rtype == "MedicationStatement":
        period = data.get("effectivePeriod") or {}
        start = data.get("effectiveDateTime") or period.get("start") or data.get("dateAsserted")
        return start, period.get("end")
    bounds = {}
    for dosage in data.get("dosageInstruction") or []:
        bounds = ((dosage.get("timing") or {}).get("repeat") or {}).get("boundsPeriod") or {}
        if bounds:
            break
    validity = (data.get("dispenseRequest") or {}).get("validityPeriod") or {}
    start = data.get("authoredOn") or bounds.get("start") or validity.get("start")
    return start, bounds.get("end") or validity.get("end")


def _link(rows: pd.DataFrame, episodes: pd.DataFrame, report: ImportReport) -> pd.DataFrame:
    """Indication and episode: the referenced Condition, else the latest same-code episode."""
    rows = rows.assign(indication=rows["reason_code"], indication_name=rows["reason_name"])
    referenced = rows["reason_ref"].isin(set(episodes["episode"]))
    by_ref = rows[referenced].merge(
        episodes[["episode", "condition", "stop"]].rename(columns={"stop": "episode_stop"}),
        left_on="reason_ref",
        right_on="episode",
        how="left",
    )
    by_ref["indication"] = by_ref.pop("condition")
    by_code = link_episodes(rows[~referenced], episodes)
    report.unmatch(
        "treatments: reasonCode without a Condition of that code with onset on or before the start",
        int(by_code["episode"].isna().sum()),
    )
    return pd.concat([by_ref, by_code], ignore_index=True).drop(columns="reason_ref")
