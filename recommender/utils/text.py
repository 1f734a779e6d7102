"""Is a string proper text? The check every boundary (HTTP, CDS Hooks, feedback) applies.

A Python ``str`` can hold what no UTF-8 file or JSON parser elsewhere accepts: a lone surrogate
(``"\\ud800"``, which JSON's ``\\uXXXX`` escapes let a client send) cannot be encoded, so it
crashes whatever encodes it later (the pseudonymiser, pandas, a log line). Control characters
(C0, DEL, C1) have no meaning in an identifier or a code and break line-oriented files and
tables; free text may still hold tabs and line breaks.
"""

from __future__ import annotations

import re

#: Lone surrogates and every control character.
_IDENTIFIER_BAD = re.compile("[\ud800-\udfff\x00-\x1f\x7f-\x9f]")
#: Lone surrogates and control characters other than tab, line feed and carriage return.
_FREE_TEXT_BAD = re.compile("[\ud800-\udfff\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")


def text_problem(value: str, free_text: bool = False) -> str | None:
    """Why ``value`` is not proper text, or None when it is.

    Parameters
    ----------
    value : str
    free_text : bool
        Allow tab, line feed and carriage return (prose such as an override reason); otherwise
        (identifiers, codes, labels) every control character is refused.

    Examples
    --------
    >>> text_problem("rxnorm|314076") is None
    True
    >>> text_problem("P1\\ud800")
    'holds a lone surrogate (U+D800) at index 2, which is not Unicode text'
    >>> text_problem("a\\nb")
    'holds the control character U+000A at index 1'
    >>> text_problem("a\\nb", free_text=True) is None
    True
    """
    match = (_FREE_TEXT_BAD if free_text else _IDENTIFIER_BAD).search(value)
    if match is None:
        return None
    char, position = match.group(), match.start()
    if "\ud800" <= char <= "\udfff":
        return (
            f"holds a lone surrogate (U+{ord(char):04X}) at index {position}, "
            "which is not Unicode text"
        )
    return f"holds the control character U+{ord(char):04X} at index {position}"
