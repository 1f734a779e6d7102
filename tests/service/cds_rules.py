"""The CDS Hooks 2.0 rules a response must keep, as a checker the tests share.

From the specification's "CDS Service Response" and "Use of JSON" sections: ``cards`` present;
each card has a ``summary`` under 140 characters, an ``indicator`` of ``info`` / ``warning`` /
``critical`` and a ``source`` with a ``label``; ``selectionBehavior`` whenever there are
``suggestions``; suggestion actions of type create / update / delete with a description, a
resource for create and update, a ``resourceId`` for delete; override reasons are Codings with
a display; links have a label, url and type ``absolute`` or ``smart``; optional fields without
a value are omitted (never null, "", [] or {}). FHIR resources in actions must be valid R4
(``fhir.resources``).
"""

from __future__ import annotations

import json
import uuid

from fhir.resources.R4B import get_fhir_model_class

INDICATORS = ("info", "warning", "critical")
SELECTION = ("at-most-one", "any")
ACTION_TYPES = ("create", "update", "delete")


def no_empty_values(value, path: str = "$") -> list[str]:
    problems = []
    if value is None or value == "" or value == [] or value == {}:
        return [f"{path} is null or empty"]
    if isinstance(value, dict):
        for key, item in value.items():
            problems += no_empty_values(item, f"{path}.{key}")
    elif isinstance(value, list):
        for number, item in enumerate(value):
            problems += no_empty_values(item, f"{path}[{number}]")
    return problems


def check_response(body: dict) -> list[dict]:
    """Assert ``body`` keeps the rules; returns its cards."""
    assert set(body) <= {"cards", "systemActions"}, body.keys()
    assert isinstance(body["cards"], list)
    for card in body["cards"]:
        check_card(card)
    return body["cards"]


def check_card(card: dict) -> None:
    problems = no_empty_values(card)
    assert not problems, problems
    assert set(card) <= {
        "uuid",
        "summary",
        "detail",
        "indicator",
        "source",
        "suggestions",
        "selectionBehavior",
        "overrideReasons",
        "links",
    }, card.keys()
    assert isinstance(card["summary"], str) and len(card["summary"]) < 140, card["summary"]
    assert card["indicator"] in INDICATORS
    assert isinstance(card["source"]["label"], str) and card["source"]["label"]
    assert set(card["source"]) <= {"label", "url", "icon", "topic"}
    if "topic" in card["source"]:
        assert {"code", "system"} <= set(card["source"]["topic"])
    uuid.UUID(card["uuid"])
    if "detail" in card:
        assert isinstance(card["detail"], str)
    if "suggestions" in card:
        assert card["selectionBehavior"] in SELECTION
        recommended = [s for s in card["suggestions"] if s.get("isRecommended")]
        if card["selectionBehavior"] == "at-most-one":
            assert len(recommended) <= 1
        for suggestion in card["suggestions"]:
            check_suggestion(suggestion)
    for reason in card.get("overrideReasons", []):
        assert {"code", "system", "display"} <= set(reason) and reason["display"]
    for link in card.get("links", []):
        assert link["label"] and link["url"].startswith(("https://", "http://"))
        assert link["type"] in ("absolute", "smart")
        assert "appContext" not in link or link["type"] == "smart"


def check_suggestion(suggestion: dict) -> None:
    assert isinstance(suggestion["label"], str) and suggestion["label"]
    uuid.UUID(suggestion["uuid"])
    for action in suggestion.get("actions", []):
        assert action["type"] in ACTION_TYPES
        assert isinstance(action["description"], str) and action["description"]
        if action["type"] in ("create", "update"):
            resource = action["resource"]
            get_fhir_model_class(resource["resourceType"]).model_validate(resource)
        else:
            kind, _, rid = action["resourceId"].partition("/")
            assert kind and rid, action


def check_discovery(body: dict) -> list[dict]:
    assert isinstance(body["services"], list)
    for service in body["services"]:
        assert not no_empty_values(service)
        assert {"hook", "description", "id"} <= set(service)
        for key, template in service.get("prefetch", {}).items():
            assert isinstance(key, str) and "{{context.patientId}}" in template
    json.dumps(body)
    return body["services"]
