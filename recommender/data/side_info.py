"""Side information: the columns of the training matrix that describe a patient rather than an
outcome (diagnoses, age band, sex). They inform the factors and are never recommended.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import pandas as pd

from ..columns import Columns as C
from .ids import IdMap

FEATURE_CONDITION, FEATURE_AGE, FEATURE_SEX = "condition:", "age:", "sex:"


@dataclass(frozen=True)
class SideInfo:
    """Which side-information columns enter the matrix (never recommended)."""

    conditions: bool = True
    age_band: bool = False
    sex: bool = False

    def to_dict(self) -> dict:
        return asdict(self)


def age_band(birth_year, reference_year: int) -> str | None:
    """Ten-year age band such as ``"40-49"`` at ``reference_year``; None when unknown."""
    if birth_year is None or pd.isna(birth_year):
        return None
    low = max(0, (reference_year - int(birth_year)) // 10 * 10)
    return f"{low}-{low + 9}"


def feature_ids(side_info: SideInfo, conditions: IdMap, demographics: pd.DataFrame) -> IdMap:
    ids: list[str] = []
    if side_info.conditions:
        ids += [FEATURE_CONDITION + c for c in conditions.external_ids]
    if side_info.age_band:
        ids += sorted(FEATURE_AGE + b for b in demographics["age_band"].dropna().unique())
    if side_info.sex:
        ids += sorted(FEATURE_SEX + s for s in demographics[C.sex].dropna().unique())
    return IdMap(ids, "feature")
