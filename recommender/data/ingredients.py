"""Active ingredients of treatments: drug names -> ``drug|<name>`` ingredient ids, and the
treatment x ingredient incidence the ``duplicate_therapy`` safety rule reads.

Two normalisations of a drug's text live here:

- :func:`normalise_drug` names MIMIC's treatments (``drug|<name>``); it is kept as it was so that
  treatment ids stay stable across releases.
- :func:`ingredient_name` names an *ingredient*: the same rules plus units, dose forms, brand
  names in brackets, application numbers and more salt words removed, so that
  "Hydrochlorothiazide 25 MG Oral Tablet" and "hydrochlorothiazide 6.25 MG Oral Capsule" are
  both ``drug|hydrochlorothiazide``. :func:`ingredient_ids` splits a combination product first.

Every importer writes ingredients in this one id space (``drug|`` + :func:`ingredient_name`), so
an OMOP copy (RxNorm ingredient concept names), a Synthea or FHIR copy (RxNorm clinical-drug
descriptions) and a MIMIC copy (free-text drug names) agree on ``drug|metformin``. The mapping
reads only the text: it does not know brand names outside brackets (``Lasix``), misspellings,
or that two names are one moiety (``vitamin b12`` and ``cyanocobalamin``); see
``docs/ingredients.md`` for what it gets right and wrong on real data.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

import numpy as np
import pandas as pd
import scipy.sparse as sp

from .ids import IdMap

#: The prefix of an ingredient id.
PREFIX = "drug|"
#: Separator of ingredient ids in the ``treatments.ingredients`` column.
SEPARATOR = ";"

_FORM_WORDS = frozenset(
    "flush neb nebulizer soln solution iv po pr sl liquid suspension syrup elixir tab tabs tablet "
    "tablets cap caps capsule capsules inj injection oral syringe vial bag mini plus premix sr er "
    "xl xr ec dr ir cr immediate extended delayed release replacement desensitization hr".split()
)
_SALTS = frozenset(
    "hcl hydrochloride sodium potassium sulfate tartrate succinate citrate "
    "mesylate maleate besylate bromide fumarate acetate phosphate".split()
)
_CATIONS = frozenset(
    "sodium potassium magnesium calcium ferrous zinc aluminum lithium ammonium".split()
)
#: Names that start with one of these keep a trailing salt word (``silver nitrate``).
_KEEP_SALT = _CATIONS | {"silver"}
#: Dose forms, routes, devices and packaging that :func:`ingredient_name` also drops.
_MORE_FORMS = frozenset(
    "injectable prefilled pen injector auto metered dose inhaler dry powder inhalation inhalant "
    "inhal topical cream ointment oint gel lotion transdermal patch system implant drug "
    "intrauterine mucosal spray sublingual vaginal ring pack day chewable disintegrating "
    "film coated enteric abuse deterrent ophthalmic ophth opht otic nasal rectal suppository "
    "kit per w ds ss susp liq vag sprinkles p.f pf e.r preserv".split()
)
#: Units of strength and volume (a token made only of these and "/" is dropped).
_UNITS = frozenset("mg ml mcg g kg l unt unit units iu meq mmol actuat % hr h min".split())
#: Units that are also letters of a name ("Penicillin G"): dropped only after a number.
_LETTER_UNITS = frozenset("g l h".split())
#: Salt and form-of-the-moiety words dropped at the end of an ingredient's name.
_MORE_SALTS = frozenset(
    "bitartrate hydrobromide monohydrate propionate dipropionate furoate medoxomil "
    "macrocrystals trihydrate dihydrate anhydrous hyclate calcium magnesium porcine bovine "
    "acetonide gluconate nitrate na sod succ".split()
)
#: Combination separators between ingredients: " / ", " + ", " and ", " with ", " or ", "w/".
_COMBINATION = re.compile(r"\s/\s|\s\+\s|\s+(?:and|with|or)\s+|\bw/", re.IGNORECASE)
#: An FDA application number (Synthea writes ``NDA020503 200 ACTUAT ...``).
_APPLICATION = re.compile(r"^(?:nda|anda|bla)\d+$")


def normalise_drug(name: str) -> str:
    """The drug identity used in MIMIC's ``drug|<name>`` treatment ids ("" when nothing is left).

    >>> normalise_drug("HYDROmorphone (Dilaudid)"), normalise_drug("Vancomycin HCl")
    ('hydromorphone', 'vancomycin')
    >>> normalise_drug("Potassium Chloride"), normalise_drug("Sodium Chloride 0.9%  Flush")
    ('potassium chloride', 'sodium chloride')
    """
    text = re.sub(r"\([^)]*\)", " ", str(name).lower())
    text = re.sub(r"[^a-z0-9%./+\- ]", " ", text)
    tokens = [
        t
        for t in text.split()
        if not re.search(r"\d", t) and t not in _FORM_WORDS and t.strip(".-/+%")
    ]
    if len(tokens) > 1 and tokens[-1] in _SALTS and tokens[0] not in _CATIONS:
        tokens = tokens[:-1]
    return " ".join(tokens)


def ingredient_name(text: str) -> str:
    """The name of the one ingredient ``text`` describes ("" when nothing is left).

    Lower-cased; parenthesised and bracketed parts (brand names, "USP") dropped; tokens that
    start with a digit (strengths, "24hr"), unit tokens ("MG/ML"), dose forms, routes, devices
    and application numbers dropped; trailing salt words dropped unless the name starts with a
    cation (``potassium chloride`` stays).

    >>> ingredient_name("24 HR Metformin hydrochloride 500 MG Extended Release Oral Tablet")
    'metformin'
    >>> ingredient_name("1 ML heparin sodium  porcine 5000 UNT/ML Injection")
    'heparin'
    >>> ingredient_name("Vitamin B 12 5 MG/ML"), ingredient_name("Carbamazepine[Tegretol]")
    ('vitamin b12', 'carbamazepine')
    """
    text = re.sub(r"\([^)]*\)|\[[^\]]*\]", " ", str(text).lower())
    text = re.sub(r"\bvitamin\s+([a-z])\s+(\d+)\b", r"vitamin \1\2", text)
    text = re.sub(r"[^a-z0-9%./+\-' ]", " ", text)
    raw = text.split()
    tokens = [
        kept
        for before, t in zip(["", *raw], raw)
        if not (t in _LETTER_UNITS and before[:1].isdigit()) and (kept := _kept_token(t))
    ]
    while len(tokens) > 1 and tokens[-1] in _SALTS | _MORE_SALTS and tokens[0] not in _KEEP_SALT:
        tokens.pop()
    return " ".join(tokens)


def _kept_token(token: str) -> str:
    """``token`` as it stays in an ingredient name, "" when it is dropped; a hyphenated token
    loses its form-word pieces ("pentamidine-inhalation" -> "pentamidine")."""
    token = token.strip(".,'")
    if not token or token[0].isdigit() or _APPLICATION.match(token):
        return ""
    if token not in _LETTER_UNITS and all(
        p in _UNITS or not p or p[0].isdigit() for p in token.split("/")
    ):
        return ""
    pieces = [p for p in token.split("-") if p and p not in _FORM_WORDS | _MORE_FORMS]
    if not pieces or not any(c.isalpha() for c in token):
        return ""
    return "-".join(pieces)


def ingredient_ids(name: str, known: Iterable[str] | None = None) -> list[str]:
    """The ``drug|<name>`` ingredient ids of a drug description, in order, without repeats.

    A combination is split on " / ", " + ", " and ", " with ", " or ", "w/", and on a "/"
    before a word that is not a unit ("Acetaminophen/Hydrocodone"); each part is named by
    :func:`ingredient_name`. A hyphen splits a part only when one of its pieces is in ``known``
    (ingredient names, without the prefix, of single-ingredient drugs of the same data): MIMIC
    writes "oxycodone-acetaminophen", but also "filgrastim-sndz" and "humulin-r insulin".
    An empty list when the text names no ingredient.

    >>> ingredient_ids("Amlodipine 5 MG / Hydrochlorothiazide 12.5 MG / Olmesartan medoxomil "
    ...                "20 MG Oral Tablet")
    ['drug|amlodipine', 'drug|hydrochlorothiazide', 'drug|olmesartan']
    >>> ingredient_ids("hydrochlorothiazide 6.25 MG Oral Capsule")
    ['drug|hydrochlorothiazide']
    >>> ingredient_ids("Oxycodone-Acetaminophen", known={"acetaminophen"})
    ['drug|oxycodone', 'drug|acetaminophen']
    """
    known = frozenset(known or ())
    names: list[str] = []
    for part in combination_parts(name):
        pieces = [ingredient_name(p) for p in re.split(r"-+", part)] if known else []
        if len(pieces) > 1 and any(p in known for p in pieces):
            names.extend(p for p in pieces if p)
        elif whole := ingredient_name(part):
            names.append(whole)
    return [PREFIX + n for n in dict.fromkeys(names)]


def combination_parts(name: str) -> list[str]:
    """The text of each ingredient of a combination (see :func:`ingredient_ids`), unnamed."""
    text = re.sub(r"\([^)]*\)|\[[^\]]*\]", " ", str(name))
    parts = []
    for chunk in _COMBINATION.split(" " + text + " "):
        words, current = chunk.split(), []
        for word in words:
            halves = word.split("/")
            if len(halves) > 1 and _joins_words(halves):
                current.append(halves[0])
                parts.append(" ".join(current))
                parts.extend(halves[1:-1])
                current = [halves[-1]]
            else:
                current.append(word)
        parts.append(" ".join(current))
    return [p for p in parts if p.strip()]


def _joins_words(halves: list[str]) -> bool:
    """Whether the "/" of a word separates ingredients: each half after it a word that is not
    a unit, each half before it a word or a strength ("Dorzolamide 2%/Timolol 0.5%")."""
    words = [h.isalpha() and h.lower() not in _UNITS for h in halves]
    return all(words[1:]) and (words[0] or halves[0][:1].isdigit())


def known_names(names: Iterable[str]) -> set[str]:
    """Ingredient names of the single-ingredient drugs among ``names`` (the ``known`` set of
    :func:`ingredient_ids`, built from every drug name of one import)."""
    found = set()
    for name in names:
        parts = combination_parts(name)
        if len(parts) == 1 and "-" not in parts[0] and (single := ingredient_name(parts[0])):
            found.add(single)
    return found


def parse_ingredients(text: str) -> list[str]:
    """The ids of one ``treatments.ingredients`` value: ";"-separated, stripped, repeats
    dropped; [] for a blank value. Raises ValueError for an empty id between separators."""
    text = "" if text is None or (isinstance(text, float) and np.isnan(text)) else str(text)
    if not text.strip():
        return []
    ids = [piece.strip() for piece in text.split(SEPARATOR)]
    if not all(ids):
        raise ValueError(f"empty ingredient id in {text!r} (ids are separated by {SEPARATOR!r})")
    return list(dict.fromkeys(ids))


def join_ingredients(ids: Iterable[str]) -> str:
    """A ``treatments.ingredients`` value of ``ids`` (the inverse of :func:`parse_ingredients`)."""
    return SEPARATOR.join(dict.fromkeys(ids))


def incidence(
    treatments: IdMap, listed: pd.DataFrame | None, column: str
) -> tuple[IdMap, sp.csr_matrix]:
    """The ingredient id map and the bool CSR (n_t, n_i) of which treatment holds which.

    ``listed`` is the treatments table (``column`` the treatment id column) with an optional,
    validated ``ingredients`` column. A treatment with no listed ingredient (absent from the
    table, a blank value or no column) is its own ingredient: its treatment id. Ingredient ids
    are sorted.
    """
    pairs: dict[str, tuple[str, ...]] = dict.fromkeys(treatments.external_ids.tolist(), ())
    if listed is not None and "ingredients" in listed:
        for treatment, value in zip(listed[column].tolist(), listed["ingredients"].tolist()):
            if treatment in pairs and (ids := parse_ingredients(value)):
                pairs[treatment] = tuple(dict.fromkeys((*pairs[treatment], *ids)))
    own = {t: ids or (t,) for t, ids in pairs.items()}
    ingredients = IdMap(sorted({i for ids in own.values() for i in ids}), "ingredient")
    rows = np.repeat(np.arange(len(own)), [len(ids) for ids in own.values()])
    columns = ingredients.to_internal([i for ids in own.values() for i in ids])
    matrix = sp.csr_matrix(
        (np.ones(len(rows), bool), (rows, columns)), shape=(len(own), len(ingredients))
    )
    matrix.sum_duplicates()
    matrix.sort_indices()
    return ingredients, matrix


def identity(treatments: IdMap) -> tuple[IdMap, sp.csr_matrix]:
    """Each treatment its own ingredient (a dataset or artifact without ingredients)."""
    return incidence(treatments, None, "")
