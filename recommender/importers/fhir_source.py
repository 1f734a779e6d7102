"""Read FHIR R4 resources from Bundle JSON or NDJSON files and validate them.

A path is a ``.json`` file (a Bundle, a single resource or a JSON array of resources), an
``.ndjson`` file (one resource or Bundle per line), either optionally gzip-compressed, or a folder
searched recursively for such files (in sorted order). Resources are validated with the R4B
models of the ``fhir.resources`` package. Lenient mode skips an invalid resource and records a
warning naming the resource, the file position and the first invalid field; strict mode raises
:class:`~recommender.exceptions.DataValidationError` with the same text instead.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ..exceptions import DataValidationError, RecommenderError
from ..utils.limits import ReadLimits, open_bounded
from .report import ImportReport

#: Resource types the importer reads; every other type is counted and skipped.
SUPPORTED = (
    "Patient",
    "Condition",
    "MedicationRequest",
    "MedicationStatement",
    "Procedure",
    "AllergyIntolerance",
    "Medication",
    "Observation",
)
SUFFIXES = (".json", ".ndjson", ".json.gz", ".ndjson.gz")


@dataclass
class Resource:
    """One resource: its type, key (``Type/id``), JSON content and where it was read."""

    type: str
    key: str
    data: dict
    where: str


def read_resources(
    path: str | Path, report: ImportReport, strict: bool
) -> tuple[list[Resource], dict[str, str]]:
    """The valid supported resources under ``path`` and a map of Bundle fullUrl -> ``Type/id``.

    Raises
    ------
    DataValidationError
        If ``path`` holds no FHIR file, or (strict) a file or resource is invalid.
    RecommenderError
        If the ``fhir.resources`` package is not installed.
    """
    files = _files(Path(path))
    models = _models()
    resources, urls = [], {}
    for where, full_url, data in _raw_resources(files, report, strict):
        rtype = data.get("resourceType") if isinstance(data, dict) else None
        report.read(rtype or "(no resourceType)", 1)
        if rtype not in SUPPORTED:
            report.drop(f"{rtype or '(no resourceType)'}: resource type not imported", 1)
            continue
        problem = _validate(models, rtype, data)
        rid = data.get("id") or full_url or f"#{where}"
        if problem:
            message = f"{rtype}/{rid} is not a valid FHIR R4 {rtype}: {problem}"
            if strict:
                raise DataValidationError(message, file=where)
            report.warn(f"{where}: {message}; skipped")
            report.drop(f"{rtype}: invalid FHIR resource (skipped)", 1)
            continue
        key = f"{rtype}/{rid}"
        if full_url:
            urls[full_url] = key
        resources.append(Resource(rtype, key, data, where))
    return resources, urls


def reference_key(reference: str | None, urls: dict[str, str]) -> str | None:
    """``Type/id`` for a reference (``Patient/1``, ``urn:uuid:...``, an absolute URL); else None."""
    if not reference:
        return None
    if reference in urls:
        return urls[reference]
    if reference.startswith(("urn:", "#")):
        return None
    parts = reference.rstrip("/").split("/")
    if "_history" in parts:
        parts = parts[: parts.index("_history")]
    return "/".join(parts[-2:]) if len(parts) >= 2 else None


# --- internals -----------------------------------------------------------------------------------


def _files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    if path.is_dir():
        found = sorted(
            p for p in path.rglob("*") if p.is_file() and p.name.lower().endswith(SUFFIXES)
        )
        if found:
            return found
        raise DataValidationError(
            f"holds no FHIR file (expected {', '.join(SUFFIXES)})", file=str(path)
        )
    raise DataValidationError(
        "does not exist; expected a FHIR Bundle .json, an .ndjson file or a folder of them",
        file=str(path),
    )


def _models():
    try:
        from fhir.resources.R4B import get_fhir_model_class
    except ImportError:  # pragma: no cover - depends on the environment
        raise RecommenderError(
            "the FHIR importer needs the fhir.resources package: pip install 'fhir.resources>=8,<9'"
        ) from None
    return {rtype: get_fhir_model_class(rtype) for rtype in SUPPORTED}


def _validate(models, rtype: str, data: dict) -> str | None:
    """None when ``data`` is a valid ``rtype``; else "field 'a.b': message" of the first error."""
    from pydantic import ValidationError

    try:
        models[rtype].model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(part) for part in first.get("loc", ())) or "(resource)"
        message = " ".join(str(first.get("msg", "invalid")).split())
        return f"field '{field}': {message}"
    return None


def _open(path: Path):
    """Text of ``path`` (gunzipped as a stream), within the read limits."""
    return io.TextIOWrapper(open_bounded(path), encoding="utf-8")


def _raw_resources(
    files: list[Path], report: ImportReport, strict: bool
) -> Iterator[tuple[str, str | None, dict]]:
    """(where, fullUrl, resource dict) for every resource in every file, Bundles flattened."""
    for path in files:
        name = path.name.lower()
        ndjson = name.endswith((".ndjson", ".ndjson.gz"))
        try:
            with _open(path) as handle:
                if ndjson:
                    limits = ReadLimits.from_env()
                    for number, line in enumerate(handle, start=1):
                        limits.check_rows(number, path)
                        if line.strip():
                            yield from _parse(line, f"{path} line {number}", report, strict)
                else:
                    yield from _parse(handle.read(), str(path), report, strict)
        except (OSError, UnicodeDecodeError, EOFError) as exc:
            if strict:
                raise DataValidationError(f"cannot be read: {exc}", file=str(path)) from None
            report.warn(f"{path}: cannot be read ({exc}); skipped")
            report.drop("files: unreadable", 1)


def _parse(
    text: str, where: str, report: ImportReport, strict: bool
) -> Iterator[tuple[str, str | None, dict]]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        if strict:
            raise DataValidationError(f"is not valid JSON: {exc}", file=where) from None
        report.warn(f"{where}: not valid JSON ({exc}); skipped")
        report.drop("JSON documents: not valid JSON", 1)
        return
    items = data if isinstance(data, list) else [data]
    for index, item in enumerate(items):
        item_where = where if len(items) == 1 else f"{where} item {index}"
        yield from _flatten(item, item_where)


def _flatten(data, where: str, full_url: str | None = None):
    if isinstance(data, dict) and data.get("resourceType") == "Bundle":
        for index, entry in enumerate(data.get("entry") or []):
            if isinstance(entry, dict) and "resource" in entry:
                yield from _flatten(
                    entry["resource"], f"{where} entry {index}", entry.get("fullUrl")
                )
        return
    yield where, full_url, data
