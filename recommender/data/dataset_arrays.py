"""A Dataset as arrays plus JSON metadata, and back: what an artifact stores (no pickle).

Sparse matrices are kept as their ``data``/``indices``/``indptr`` arrays, so a loaded dataset can
be memory-mapped and shared by serving workers.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd
import scipy.sparse as sp

from ..columns import Columns as C
from .dataset import Dataset
from .ids import IdMap
from .policies import ConfidencePolicy, SafetyPolicy
from .side_info import SideInfo

SPARSE_FIELDS = (
    "matrix",
    "history",
    "harmful",
    "patient_conditions",
    "contraindications",
    "condition_outcomes",
    "condition_successes",
    "history_days",
    "interactions",
    "label_counts",
)


#: CSR matrices of the patient's current state (added in artifact format 3; absent before).
STATE_FIELDS = ("latest_observations",)
#: CSR matrices added in artifact format 4 (absent before: each treatment its own ingredient).
INGREDIENT_FIELDS = ("treatment_ingredients",)


def dataset_to_arrays(dataset: Dataset) -> tuple[dict[str, np.ndarray], dict]:
    """Arrays and JSON-able metadata that :func:`dataset_from_arrays` turns back into ``dataset``."""
    arrays: dict[str, np.ndarray] = {
        "patient_ids": dataset.patients.external_ids.astype(str),
        "treatment_support": dataset.treatment_support,
        "demo_sex": dataset.demographics[C.sex].fillna("").to_numpy().astype(str),
        "demo_age_band": dataset.demographics["age_band"].fillna("").to_numpy().astype(str),
    }
    n_p = dataset.n_patients
    arrays["birth_year"] = (
        dataset.birth_year if dataset.birth_year is not None else np.full(n_p, np.nan, np.float32)
    )
    state = {
        "latest_observations": dataset.latest_observations
        if dataset.latest_observations is not None
        else sp.csr_matrix((n_p, len(dataset.observation_ids)), dtype=np.float32),
    }
    shapes = {}
    for name, matrix in state.items():
        shapes[name] = list(matrix.shape)
        for part in ("data", "indices", "indptr"):
            arrays[f"{name}.{part}"] = getattr(matrix, part)
    for name in SPARSE_FIELDS + INGREDIENT_FIELDS:
        matrix = getattr(dataset, name)
        shapes[name] = list(matrix.shape)
        for part in ("data", "indices", "indptr"):
            arrays[f"{name}.{part}"] = getattr(matrix, part)
    meta = {
        "treatment_ids": dataset.treatments.external_ids.tolist(),
        "feature_ids": dataset.features.external_ids.tolist(),
        "condition_ids": dataset.conditions.external_ids.tolist(),
        "observation_ids": dataset.observation_ids.external_ids.tolist(),
        "ingredient_ids": dataset.ingredients.external_ids.tolist(),
        "shapes": shapes,
        "policy": dataset.policy.to_dict(),
        "side_info": dataset.side_info.to_dict(),
        "safety": dataset.safety.to_dict(),
        "harm_threshold": dataset.harm_threshold,
        "reference_year": dataset.reference_year,
        "latest_time": dataset.latest_time,
        "fingerprint": dataset.fingerprint,
        "pseudonym_fingerprint": dataset.pseudonym_fingerprint,
        "treatment_names": dataset.treatment_names,
        "condition_names": dataset.condition_names,
    }
    return arrays, meta


def dataset_from_arrays(arrays: Mapping[str, np.ndarray], meta: Mapping) -> Dataset:
    """Rebuild a Dataset from :func:`dataset_to_arrays` output (arrays may be memory-mapped)."""
    sparse = {
        name: sp.csr_matrix(
            (arrays[f"{name}.data"], arrays[f"{name}.indices"], arrays[f"{name}.indptr"]),
            shape=tuple(meta["shapes"][name]),
        )
        for name in SPARSE_FIELDS
    }
    state = {
        name: sp.csr_matrix(
            (arrays[f"{name}.data"], arrays[f"{name}.indices"], arrays[f"{name}.indptr"]),
            shape=tuple(meta["shapes"][name]),
        )
        for name in STATE_FIELDS
        if f"{name}.data" in arrays  # artifacts before format 3 have none
    }
    ingredients = {}
    if "treatment_ingredients.data" in arrays:  # artifacts before format 4 have none
        ingredients = {
            "ingredients": IdMap(meta["ingredient_ids"], "ingredient"),
            "treatment_ingredients": sp.csr_matrix(
                (
                    arrays["treatment_ingredients.data"],
                    arrays["treatment_ingredients.indices"],
                    arrays["treatment_ingredients.indptr"],
                ),
                shape=tuple(meta["shapes"]["treatment_ingredients"]),
            ),
        }
    demographics = pd.DataFrame(
        {
            C.sex: np.asarray(arrays["demo_sex"]).astype(object),
            "age_band": np.asarray(arrays["demo_age_band"]).astype(object),
        }
    )
    return Dataset(
        patients=IdMap(np.asarray(arrays["patient_ids"]), "patient"),
        treatments=IdMap(meta["treatment_ids"], "treatment"),
        features=IdMap(meta["feature_ids"], "feature"),
        conditions=IdMap(meta["condition_ids"], "condition"),
        treatment_support=np.asarray(arrays["treatment_support"]),
        demographics=demographics,
        policy=ConfidencePolicy(**meta["policy"]),
        side_info=SideInfo(**meta["side_info"]),
        harm_threshold=meta["harm_threshold"],
        safety=SafetyPolicy(**meta["safety"]),
        reference_year=meta["reference_year"],
        latest_time=meta.get("latest_time"),
        fingerprint=meta["fingerprint"],
        pseudonym_fingerprint=meta.get("pseudonym_fingerprint", ""),
        treatment_names=meta.get("treatment_names", {}),
        condition_names=meta.get("condition_names", {}),
        birth_year=np.asarray(arrays["birth_year"]) if "birth_year" in arrays else None,
        observation_ids=IdMap(meta.get("observation_ids", []), "observation"),
        **state,
        **sparse,
        **ingredients,
    )
