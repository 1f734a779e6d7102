"""The data-quality report every importer writes beside its tables.

An :class:`ImportReport` counts what was read, what was kept, what was dropped and why, which
links could not be made, and how the derived outcomes are distributed. It is written twice, as
``import_report.json`` (for programs) and ``import_report.md`` (for people); the fields are
described in ``recommender/importers/README.md``.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from ..columns import Columns, Tables
from ..utils.escaping import markdown_cell, markdown_row

C = Columns

#: At most this many warning texts are kept verbatim; the rest are only counted.
MAX_WARNINGS = 200


@dataclass
class ImportReport:
    """What one import read, kept, dropped and derived.

    Attributes
    ----------
    importer : str
        "synthea", "mimic" or "fhir".
    source : str
        The path that was imported.
    layout : str
        The detected input layout, e.g. "synthea-v2", "mimic-iv", "fhir-r4-ndjson".
    parameters : dict
        The rule parameters in force (window lengths, options).
    rows_read : dict of str -> int
        Data rows read per source table or resource type.
    rows_kept : dict of str -> int
        Rows written per canonical table.
    dropped : dict of str -> int
        Source rows left out, by reason ("<source>: <why>").
    unmatched : dict of str -> int
        Links that could not be made, by kind (the row may still be kept).
    derived : dict of str -> int
        Intermediate counts (courses built, admissions, resources by status ...).
    outcomes : dict
        ``distribution`` (outcome value -> rows), ``by_rule`` (rule -> rows), ``adverse`` (rows
        flagged adverse), ``patients``, ``treatments``, ``conditions`` (distinct ids in outcomes).
    warnings : list of str
        The first :data:`MAX_WARNINGS` warnings (invalid resources, unparseable dates ...).
    warning_count : int
        All warnings, including those not kept verbatim.
    """

    importer: str
    source: str
    layout: str = ""
    parameters: dict[str, Any] = field(default_factory=dict)
    rows_read: dict[str, int] = field(default_factory=dict)
    rows_kept: dict[str, int] = field(default_factory=dict)
    dropped: dict[str, int] = field(default_factory=dict)
    unmatched: dict[str, int] = field(default_factory=dict)
    derived: dict[str, int] = field(default_factory=dict)
    outcomes: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    warning_count: int = 0

    # --- recording --------------------------------------------------------------------------

    def read(self, source: str, rows: int) -> None:
        """Record ``rows`` data rows read from ``source`` (added to any earlier count)."""
        self.rows_read[source] = self.rows_read.get(source, 0) + int(rows)

    def drop(self, reason: str, rows: int) -> None:
        """Record ``rows`` source rows left out for ``reason``; zero counts are not recorded."""
        if rows:
            self.dropped[reason] = self.dropped.get(reason, 0) + int(rows)

    def unmatch(self, link: str, rows: int) -> None:
        """Record ``rows`` links of kind ``link`` that found no target; zero is not recorded."""
        if rows:
            self.unmatched[link] = self.unmatched.get(link, 0) + int(rows)

    def count(self, name: str, value: int) -> None:
        """Record an intermediate count (added to any earlier count of ``name``)."""
        self.derived[name] = self.derived.get(name, 0) + int(value)

    def warn(self, message: str) -> None:
        """Record a warning (kept verbatim up to :data:`MAX_WARNINGS`)."""
        self.warning_count += 1
        if len(self.warnings) < MAX_WARNINGS:
            self.warnings.append(message)

    def finish(self, frames: dict[str, pd.DataFrame]) -> None:
        """Fill ``rows_kept`` and ``outcomes`` from the tables about to be written."""
        self.rows_kept = {name: int(len(frame)) for name, frame in frames.items()}
        outcomes = frames[Tables.outcomes]
        values = pd.to_numeric(outcomes[C.outcome]).map(lambda v: f"{v:g}")
        self.outcomes = {
            "distribution": dict(sorted(Counter(values).items(), key=lambda kv: float(kv[0]))),
            "by_rule": dict(Counter(outcomes["rule"])) if "rule" in outcomes else {},
            "adverse": int(pd.to_numeric(outcomes[C.adverse]).sum())
            if C.adverse in outcomes
            else 0,
            "patients": int(outcomes[C.patient].nunique()),
            "treatments": int(outcomes[C.treatment].nunique()),
            "conditions": int(outcomes[C.condition].dropna().nunique())
            if C.condition in outcomes
            else 0,
        }

    # --- rendering --------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return {
            "importer": self.importer,
            "source": self.source,
            "layout": self.layout,
            "parameters": self.parameters,
            "rows_read": self.rows_read,
            "rows_kept": self.rows_kept,
            "dropped": self.dropped,
            "unmatched": self.unmatched,
            "derived": self.derived,
            "outcomes": self.outcomes,
            "warning_count": self.warning_count,
            "warnings": self.warnings,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=False, default=str) + "\n"

    def summary(self) -> str:
        """One line: rows, patients, treatments and the outcome distribution."""
        dist = ", ".join(f"{k}: {v}" for k, v in self.outcomes.get("distribution", {}).items())
        return (
            f"{self.importer} ({self.layout}): {self.rows_kept.get(Tables.outcomes, 0)} outcome "
            f"rows, {self.outcomes.get('patients', 0)} patients, "
            f"{self.outcomes.get('treatments', 0)} treatments; outcomes {{{dist}}}; "
            f"{sum(self.dropped.values())} source rows dropped, {self.warning_count} warnings"
        )

    def to_markdown(self) -> str:
        lines = [
            f"# Import report: {self.importer}",
            "",
            f"- source: `{self.source}`",
            f"- layout: {self.layout}",
            "",
            self.summary(),
            "",
        ]
        lines += _section("Parameters", self.parameters)
        lines += _section("Rows read", self.rows_read)
        lines += _section("Rows kept", self.rows_kept)
        lines += _section("Dropped (source rows, by reason)", self.dropped)
        lines += _section("Unmatched links", self.unmatched)
        lines += _section("Derived counts", self.derived)
        lines += _section(
            "Outcome distribution (value -> rows)", self.outcomes.get("distribution", {})
        )
        lines += _section("Outcomes by rule", self.outcomes.get("by_rule", {}))
        lines += [
            f"Adverse rows: {self.outcomes.get('adverse', 0)}; distinct patients "
            f"{self.outcomes.get('patients', 0)}, treatments "
            f"{self.outcomes.get('treatments', 0)}, conditions "
            f"{self.outcomes.get('conditions', 0)}.",
            "",
        ]
        lines += [f"## Warnings ({self.warning_count})", ""]
        lines += [f"- {markdown_cell(w)}" for w in self.warnings] or ["none"]
        if self.warning_count > len(self.warnings):
            lines.append(f"- ... and {self.warning_count - len(self.warnings)} more")
        return "\n".join(lines) + "\n"


def _section(title: str, values: dict) -> list[str]:
    lines = [f"## {title}", ""]
    if not values:
        return lines + ["none", ""]
    lines += ["| item | value |", "|---|---|"]
    lines += [markdown_row([k, v]) for k, v in values.items()]
    return lines + [""]
