"""The model page: the model card as HTML, and the report figures kept with the artifact.

An artifact folder may hold the reports of its own evaluation, written there by the operator::

    ARTIFACT/reports/audit/        recommender audit --artifact ARTIFACT ... --out ARTIFACT/reports/audit
    ARTIFACT/reports/evaluation/   recommender evaluate ... --ope --out ARTIFACT/reports/evaluation

When present, the card is built with them (subgroup results, validation, off-policy values), the
audit's PNG charts and the evaluation's ``metrics_vs_k.png`` are shown, and the off-policy
estimates (``ope.json``) are drawn as intervals. The reports are not part of the artifact's
checksums; they are read-only inputs of this page, never of a recommendation.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

from markdown_it import MarkdownIt

from recommender.exceptions import DataValidationError
from recommender.trust.model_card import AUDIT_FILE, EVALUATION_FILE, OPE_FILE, model_card_markdown

from .present import interval_bar, percent

log = logging.getLogger(__name__)
REPORTS = "reports"
AUDIT_DIR, EVALUATION_DIR = "audit", "evaluation"
_FIGURE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,200}\.png$")
#: Raw HTML in the Markdown is shown as text, never as markup (``html`` is off in this preset).
_MARKDOWN = MarkdownIt("js-default")


@dataclass
class Figure:
    """A PNG of a report: where it is, and the URL name and caption the page uses."""

    name: str  # "audit/metrics_sex.png"
    path: Path
    caption: str


@dataclass
class ModelPage:
    card_html: str
    figures: list[Figure] = field(default_factory=list)
    ope: dict | None = None
    problems: list[str] = field(default_factory=list)


def reports_dir(artifact_path: Path) -> Path:
    return Path(artifact_path) / REPORTS


def figures(artifact_path: Path) -> list[Figure]:
    """The PNG charts of the audit and evaluation reports kept with the artifact."""
    found = []
    for folder in (AUDIT_DIR, EVALUATION_DIR):
        base = reports_dir(artifact_path) / folder
        if not base.is_dir():
            continue
        for path in sorted(base.glob("*.png")):
            if _FIGURE.match(path.name) and path.is_file() and not path.is_symlink():
                found.append(Figure(f"{folder}/{path.name}", path, _caption(folder, path.name)))
    return found


def _caption(folder: str, name: str) -> str:
    stem = name[: -len(".png")]
    if stem.startswith("metrics_") and folder == AUDIT_DIR:
        return f"Subgroup audit: quality by {stem[len('metrics_') :].replace('_', ' ')}"
    if stem.startswith("exposure_"):
        return f"Subgroup audit: exposure by {stem[len('exposure_') :].replace('_', ' ')}"
    if stem == "metrics_vs_k":
        return "Evaluation: ranking metrics by list length k"
    return f"{folder.capitalize()}: {stem.replace('_', ' ')}"


def figure_path(artifact_path: Path, name: str) -> Path | None:
    """The file of figure ``name`` (as listed by :func:`figures`), or None."""
    return next((f.path for f in figures(artifact_path) if f.name == name), None)


def build(served) -> ModelPage:
    """The model page of the served snapshot (reports that cannot be read are named, skipped)."""
    base = reports_dir(served.path)
    problems = []
    audit = _report(base / AUDIT_DIR, AUDIT_FILE, problems)
    evaluation = _report(base / EVALUATION_DIR, EVALUATION_FILE, problems)
    ope = _report(base / EVALUATION_DIR, OPE_FILE, problems)
    if evaluation is not None and ope is not None:
        evaluation["ope"] = ope
    try:
        text = model_card_markdown(served.artifact, audit=audit, evaluation=evaluation)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        problems.append(f"the reports do not have the expected shape ({type(exc).__name__})")
        text = model_card_markdown(served.artifact)
    try:
        ope_figure = ope_view(ope)
    except DataValidationError as exc:
        problems.append(str(exc))
        ope_figure = None
    return ModelPage(_MARKDOWN.render(text), figures(served.path), ope_figure, problems)


def _report(folder: Path, name: str, problems: list[str]) -> dict | None:
    path = folder / name
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        problems.append(f"{folder.name}/{name} could not be read ({type(exc).__name__})")
        log.warning("model page: %s skipped: %s", path, exc)
        return None
    if not isinstance(data, dict):
        problems.append(f"{folder.name}/{name} is not a JSON object")
        return None
    return data


def ope_view(ope: dict | None) -> dict | None:
    """Off-policy estimates as interval bars: per model, DR / SNIPS / IPS with their 95% CI."""
    if not ope or not isinstance(ope.get("models"), dict):
        return None
    behaviour = (ope.get("behaviour") or {}).get("value")
    rows = []
    try:
        for name, entry in ope["models"].items():
            for estimator in ("dr", "snips", "ips"):
                estimate = (entry.get("estimates") or {}).get(estimator)
                if not estimate:
                    continue
                low, high = estimate["ci95"][:2]
                value = estimate["value"]
                rows.append(
                    {
                        "model": name,
                        "estimator": estimator.upper(),
                        "text": percent(value),
                        "low": percent(low),
                        "high": percent(high),
                        "bar": interval_bar(low, high, value),
                        "episodes": entry.get("episodes"),
                        "unsupported": percent(estimate.get("unsupported_share")),
                    }
                )
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise DataValidationError(f"ope.json has an unexpected shape ({exc})") from None
    return {
        "rows": rows,
        "behaviour": percent(behaviour) if behaviour is not None else None,
        "behaviour_x": None if behaviour is None else round(100 * float(behaviour), 2),
        "split": (ope.get("split") or {}).get("method"),
    }
