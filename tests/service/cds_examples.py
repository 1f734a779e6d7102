"""The public CDS Hooks examples kept verbatim in ``tests/service/cds_examples/`` (sources in
its ``SOURCES.md``), read as JSON the way a reader of the page would."""

from __future__ import annotations

import json
import re
from pathlib import Path

FOLDER = Path(__file__).parent / "cds_examples"
_COMMENT = re.compile(r'//[^"\n]*$', re.MULTILINE)


def example(name: str):
    """The example ``name`` (file stem without ``.json.txt``) as a Python value."""
    text = (FOLDER / f"{name}.json.txt").read_text()
    if text.startswith("POST "):  # the HTTP request line printed before the body
        text = text.split("\n", 1)[1]
    text = _COMMENT.sub("", text)
    if text.lstrip().startswith('"'):  # a bare member such as "context": {...}
        text = "{" + text + "}"
    return json.loads(text)
