"""orjson responses decode to what Flask's own encoder produces."""

from __future__ import annotations

import dataclasses
import datetime
import json
import uuid

import numpy as np
import pytest
from flask import Flask
from flask.json.provider import DefaultJSONProvider

from service.json_provider import OrjsonProvider


@dataclasses.dataclass
class Item:
    name: str
    score: float


@pytest.fixture()
def providers():
    app = Flask(__name__)
    fast, slow = OrjsonProvider(app), DefaultJSONProvider(app)
    for provider in (fast, slow):
        provider.sort_keys, provider.compact = False, True
    return fast, slow


@pytest.mark.parametrize(
    "value",
    [
        {"b": 1, "a": [1.5, 0.1 + 0.2, -3e-7, None, True], "é": "naïve"},
        {
            "when": datetime.datetime(2026, 11, 24, 6, 0, tzinfo=datetime.timezone.utc),
            "day": datetime.date(2026, 1, 2),
            "id": uuid.UUID(int=7),
            "item": Item("x", 0.25),
        },
        {"big": 2**70},
        {1: "non-string key"},
    ],
)
def test_same_document_as_flask(providers, value):
    fast, slow = providers
    assert json.loads(fast.dumps(value)) == json.loads(slow.dumps(value))


def test_numpy_scalars_are_numbers(providers):
    fast, _ = providers
    assert json.loads(fast.dumps({"score": np.float32(0.5), "rank": np.int64(3)})) == {
        "score": 0.5,
        "rank": 3,
    }


def test_key_order_kept_and_compact(providers):
    fast, _ = providers
    assert fast.dumps({"z": 1, "a": {"y": 2, "b": 3}}) == '{"z":1,"a":{"y":2,"b":3}}'


def test_pretty_printing_falls_back(providers):
    fast, slow = providers
    assert fast.dumps({"a": 1}, indent=2) == slow.dumps({"a": 1}, indent=2)


def test_unserialisable_raises_typeerror(providers):
    fast, _ = providers
    with pytest.raises(TypeError):
        fast.dumps({"x": object()})


def _provider(compact: bool = True):
    """An app (kept: a provider holds only a weak reference to it) and its OrjsonProvider."""
    app = Flask(__name__)
    provider = OrjsonProvider(app)
    provider.sort_keys, provider.compact = False, compact
    return app, provider


@pytest.mark.parametrize(
    "value",
    [
        {"z": 1, "a": [1.5, None, True], "é": "naïve \u2028"},
        {"big": 2**70},  # refused by orjson: Flask's encoder
        [1, 2],
    ],
)
@pytest.mark.parametrize("compact", [True, False])
def test_response_as_flask_makes_it_from_the_same_dumps(value, compact):
    app, provider = _provider(compact)
    with app.app_context():
        mine, flasks = provider.response(value), DefaultJSONProvider.response(provider, value)
    assert mine.get_data() == flasks.get_data()
    assert mine.get_data().endswith(b"\n")
    assert list(mine.headers) == list(flasks.headers)
