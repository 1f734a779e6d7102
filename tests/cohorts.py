"""Small cohorts built in memory for tests, with answers known by construction."""

from __future__ import annotations

import numpy as np
import pandas as pd

from recommender.data.tables import CohortTables, validate_tables


def checkerboard(n_patients: int = 200, n_probes: int = 10) -> tuple[CohortTables, dict[str, str]]:
    """Two hidden groups; what worked for condition D reveals which therapy works for C.

    Group A: S0 worked and S1 failed for D; T0 works and T1 fails for C. Group B the opposite.
    Probe patients have only their D outcome on record and a C diagnosis, so the right answer
    for them (returned as ``{probe_id: best_treatment}``) needs personalisation.
    A third therapy T2 for C is mediocre for everyone and TX is contraindicated by allergy ALG.
    """
    rows, conditions, truth = [], [], {}
    for i in range(n_patients + n_probes):
        group, pid = i % 2, f"P{i:04d}"
        good_d, bad_d = ("S0", "S1") if group == 0 else ("S1", "S0")
        good_c, bad_c = ("T0", "T1") if group == 0 else ("T1", "T0")
        rows += [
            (pid, bad_d, "no_response", "2020-01-01", "D"),
            (pid, good_d, "responded", "2020-03-01", "D"),
        ]
        conditions += [(pid, "D"), (pid, "C")]
        if i >= n_patients:
            truth[pid] = good_c
            continue
        if i % 5 == 0:
            rows.append((pid, "T2", "partial", "2021-01-01", "C"))
        rows += [
            (pid, bad_c, "no_response", "2021-02-01", "C"),
            (pid, good_c, "responded", "2021-04-01", "C"),
        ]
    outcomes = pd.DataFrame(
        rows, columns=["patient_id", "treatment_id", "outcome", "timestamp", "condition_id"]
    )
    outcomes.loc[len(outcomes)] = ["P0001", "TX", "responded", "2019-01-01", "C"]
    conditions.append(("P0002", "ALG"))
    frames = {
        "outcomes": outcomes,
        "patient_conditions": pd.DataFrame(conditions, columns=["patient_id", "condition_id"]),
        "contraindications": pd.DataFrame({"treatment_id": ["TX"], "condition_id": ["ALG"]}),
    }
    return validate_tables(frames), truth


def random_cohort(
    seed: int,
    n_patients: int = 60,
    n_treatments: int = 12,
    n_conditions: int = 4,
    n_rows: int = 400,
    ingredients: bool = False,
) -> CohortTables:
    """Random outcomes, diagnoses, allergies and contraindications (for property tests); with
    ``ingredients`` a treatments table whose ingredients several treatments share (and some
    treatments list none, so they are their own)."""
    rng = np.random.default_rng(seed)
    labels = np.array(["responded", "partial", "no_response", "worsened", "adverse"])
    outcomes = pd.DataFrame(
        {
            "patient_id": [f"P{i}" for i in rng.integers(0, n_patients, n_rows)],
            "treatment_id": [f"T{i}" for i in rng.integers(0, n_treatments, n_rows)],
            "outcome": labels[rng.integers(0, len(labels), n_rows)],
            "timestamp": pd.to_datetime("2020-01-01")
            + pd.to_timedelta(rng.integers(0, 900, n_rows), "D"),
            "condition_id": [f"C{i}" for i in rng.integers(0, n_conditions, n_rows)],
        }
    )
    outcomes["timestamp"] = outcomes["timestamp"].dt.strftime("%Y-%m-%d")
    n_pc = n_patients
    patient_conditions = pd.DataFrame(
        {
            "patient_id": [f"P{i}" for i in rng.integers(0, n_patients, n_pc)],
            "condition_id": [
                f"{'A' if j % 3 == 0 else 'C'}{j % n_conditions}" for j in rng.integers(0, 30, n_pc)
            ],
        }
    )
    contraindications = pd.DataFrame(
        {
            "treatment_id": [f"T{i}" for i in rng.integers(0, n_treatments, 5)],
            "condition_id": [
                f"{'A' if j % 2 else 'C'}{j % n_conditions}" for j in rng.integers(0, 30, 5)
            ],
        }
    )
    pairs = np.array([rng.choice(n_treatments, size=2, replace=False) for _ in range(4)])
    interactions = pd.DataFrame(
        {
            "treatment_a": [f"T{a}" for a in pairs[:, 0]],
            "treatment_b": [f"T{b}" for b in pairs[:, 1]],
            "severity": ["severe", "moderate", "severe", "minor"],
        }
    )
    frames = {
        "outcomes": outcomes,
        "patient_conditions": patient_conditions,
        "contraindications": contraindications,
        "interactions": interactions,
    }
    if ingredients:
        ids = [f"T{i}" for i in range(n_treatments)]
        shared = [f"drug|g{i}" for i in rng.integers(0, max(n_treatments // 3, 1), n_treatments)]
        frames["treatments"] = pd.DataFrame(
            {
                "treatment_id": ids,
                "name": ids,
                "ingredients": [
                    "" if i % 5 == 0 else (f"{g};drug|x{i}" if i % 3 == 0 else g)
                    for i, g in enumerate(shared)
                ],
            }
        )
    return validate_tables(frames)
