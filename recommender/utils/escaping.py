"""Writing untrusted text into reports: CSV cells that cannot run, Markdown cells that cannot break.

Ids, codes and group values come from EHR exports and API clients, so a report must treat them
as data:

- :func:`csv_safe` neutralises spreadsheet formulas the OWASP way ("CSV Injection"): a *text*
  cell that begins with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return gets a leading
  single quote, so ``=cmd|' /C calc'!A0`` is shown as text, never evaluated. The CSV writer
  quotes cells holding separators or quotes as usual.
- :func:`markdown_cell` escapes what would end a Markdown table cell or row: pipes, line breaks
  (as the visible ``\\n``) and other control characters, and backslashes (so that an escape
  cannot be undone by the value).

The canonical data tables (``write_tables``, the importers' output) are not reports: the
project reads them back, and a quote added to an id would change the id, so they are written as
they are.
"""

from __future__ import annotations

import re

import pandas as pd

#: First characters a spreadsheet reads as the start of a formula (OWASP).
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
_MARKDOWN_SPECIAL = re.compile(r"[\\|\x00-\x1f\x7f]")
_MARKDOWN_ESCAPES = {"\\": "\\\\", "|": "\\|", "\n": "\\n", "\r": "\\r", "\t": " "}


def csv_cell(value):
    """``value`` with a leading ``'`` if it is text that a spreadsheet would run as a formula.

    Only ``str`` values change: a number (``-1.0``, an outcome) is a number, not a formula, and
    is returned as it is.

    Examples
    --------
    >>> csv_cell("=cmd|' /C calc'!A0")
    "'=cmd|' /C calc'!A0"
    >>> csv_cell(-1.0), csv_cell("rxnorm|314076")
    (-1.0, 'rxnorm|314076')
    """
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


def csv_safe(frame: pd.DataFrame) -> pd.DataFrame:
    """A copy of ``frame`` whose text cells are neutralised by :func:`csv_cell`.

    Columns of numeric, boolean or datetime dtype are left untouched, so negative numbers stay
    negative numbers; text columns (object, string, categorical) go through :func:`csv_cell`
    cell by cell, and non-text values in them (a float in an object column) are kept.
    The column names are neutralised too.
    """
    safe = frame.copy()
    for column in safe.columns:
        values = safe[column]
        if isinstance(values.dtype, pd.CategoricalDtype) or values.dtype == object:
            safe[column] = values.astype(object).map(csv_cell)
        elif pd.api.types.is_string_dtype(values.dtype):
            safe[column] = values.map(csv_cell, na_action="ignore")
    safe.columns = [csv_cell(name) for name in safe.columns]
    return safe


def markdown_cell(value) -> str:
    """``str(value)`` safe inside one cell of a Markdown table row.

    Examples
    --------
    >>> markdown_cell("a|b\\nc")
    'a\\\\|b\\\\nc'
    """
    text = str(value)
    if not _MARKDOWN_SPECIAL.search(text):
        return text
    return _MARKDOWN_SPECIAL.sub(
        lambda match: _MARKDOWN_ESCAPES.get(match.group(), f"\\x{ord(match.group()):02x}"), text
    )


def markdown_row(cells) -> str:
    """One Markdown table row of ``cells``, each escaped by :func:`markdown_cell`."""
    return "| " + " | ".join(markdown_cell(cell) for cell in cells) + " |"
