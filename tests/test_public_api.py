"""The package's public names: each resolves, and importing the package stays cheap."""

from __future__ import annotations

import subprocess
import sys

import pytest

import recommender


@pytest.mark.parametrize("name", recommender.__all__)
def test_every_public_name_resolves_to_its_defining_module(name):
    value = getattr(recommender, name)
    module = getattr(value, "__module__", None)
    if module is not None:  # classes and functions: defined where the table says
        assert module == recommender._PUBLIC[name]


def test_an_unknown_name_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        recommender.nope  # noqa: B018


def test_importing_the_package_loads_no_engine_module():
    code = "import sys, recommender; print(sorted(m for m in sys.modules if m.startswith(('implicit', 'pandas', 'recommender.'))))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
