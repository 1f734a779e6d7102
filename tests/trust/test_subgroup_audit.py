"""Subgroup audit: a planted gap is found and flagged, per-group numbers match an independent
computation, small groups stay out of the gap, pseudonymised artifacts, reports and the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from recommender.cli import main
from recommender.data import splits as S
from recommender.data.dataset import Dataset
from recommender.data.pseudonym import Pseudonymizer, create_key_file
from recommender.data.synthetic.planted import generate_cohort
from recommender.data.tables import read_tables, validate_tables, write_tables
from recommender.exceptions import ArtifactError, DataValidationError, ParameterError
from recommender.models import make_model
from recommender.training import train_artifact
from recommender.trust.subgroup_audit import AuditResult, audit
from recommender.trust.subgroup_report import write_audit

SHARED = Path(__file__).resolve().parents[3] / "shared" / "datasets" / "synthea_ibm_california_1000"
K = 3
#: What a site-B patient's record says instead of the truth: what works for others fails.
INVERTED = {
    "responded": "no_response",
    "partial": "worsened",
    "no_response": "responded",
    "worsened": "partial",
    "adverse": "adverse",
}


def planted_tables():
    """A synthetic cohort with a ``site`` column: A (two thirds), B (a third), C (8 patients).

    Site B's outcomes are inverted, so the per-condition success rates learned mostly from site A
    point site B's patients at what fails for them: a quality gap planted by construction.
    Sex is left alone, so it should show no gap.
    """
    cohort = generate_cohort(1000, seed=5, n_conditions=6, treatments_per_condition=8)
    tables = dict(cohort.tables)
    patients = tables["patients"].copy()
    site = np.where(np.arange(len(patients)) % 3 == 0, "B", "A").astype(object)
    site[:8] = "C"
    patients["site"] = site
    outcomes = tables["outcomes"].copy()
    in_b = outcomes["patient_id"].isin(set(patients.loc[patients["site"] == "B", "patient_id"]))
    outcomes.loc[in_b, "outcome"] = outcomes.loc[in_b, "outcome"].map(INVERTED)
    return validate_tables({**tables, "patients": patients, "outcomes": outcomes})


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    root = tmp_path_factory.mktemp("planted")
    data = write_tables(planted_tables(), root / "data")
    artifact = train_artifact(data, root / "artifact", kind="condition-popular")
    return data, artifact


@pytest.fixture(scope="module")
def result(planted) -> AuditResult:
    data, artifact = planted
    return audit(artifact, data, by=["site", "sex"], k=K)


# --- the planted gap ------------------------------------------------------------------------------


def test_planted_gap_is_found_and_flagged(result):
    gaps = result.gaps.set_index(["attribute", "metric"])
    site = gaps.loc[("site", f"hit@{K}")]
    assert site["flagged"] and site["gap"] > 0.25
    assert (site["high_group"], site["low_group"]) == ("A", "B")
    assert site["z"] > 4
    for metric in (f"hit@{K}", f"ndcg@{K}", "mrr"):
        assert gaps.loc[("site", metric), "flagged"]
        assert not gaps.loc[("sex", metric), "flagged"]
        assert gaps.loc[("sex", metric), "gap"] < 0.05
    assert ("site", f"hit@{K}") in set(zip(result.flags["attribute"], result.flags["metric"]))


def test_small_group_is_reported_but_not_used(result):
    groups = result.groups.set_index(["attribute", "group"])
    assert groups.loc[("site", "C"), "small"] and groups.loc[("site", "C"), "n_patients"] == 8
    c_rows = result.metrics[
        (result.metrics["attribute"] == "site") & (result.metrics["group"] == "C")
    ]
    assert not c_rows["used"].any() and (c_rows["n"] > 0).any()
    assert (result.gaps.loc[result.gaps["attribute"] == "site", "n_groups"] <= 2).all()
    # the whole cohort is reported too, and no patient is lost between groups
    assert (
        groups.loc[("site", "A"), "n_queries"]
        + groups.loc[("site", "B"), "n_queries"]
        + groups.loc[("site", "C"), "n_queries"]
        == result.info["split"]["n_queries"]
    )


def test_group_metrics_match_an_independent_computation(planted, result):
    """hit@k and reachable per site from the public recommend_batch() of a model fitted on the
    same split, grouped by hand."""
    data, _ = planted
    tables = read_tables(data)
    train, test = S.leave_last(tables)
    model = make_model("condition-popular").fit(Dataset.from_tables(train))
    site = tables.patients.set_index("patient_id")["site"]
    latest = (
        test.sort_values("timestamp", kind="stable")
        .groupby(["patient_id", "condition_id", "treatment_id"])
        .last()
        .reset_index()
    )
    queries = latest[["patient_id", "condition_id"]].drop_duplicates()
    # whole lists, then their heads: ranking.top_k with k < n may break a tie at the cut
    # differently from the full ranking the evaluation uses (ties should go to the lower index)
    lists = model.recommend_batch(
        queries["patient_id"].tolist(),
        k=model.dataset_.n_treatments,
        condition_ids=queries["condition_id"].tolist(),
    )
    ranked = {
        key: part.sort_values("rank")["treatment_id"].tolist()
        for key, part in lists.groupby(["patient_id", "condition_id"])
    }
    hits, reachable = {}, {}
    for (patient, condition), rows in latest.groupby(["patient_id", "condition_id"]):
        relevant = set(rows.loc[rows["outcome"] > 0, "treatment_id"])
        if not relevant:
            continue
        full = ranked.get((patient, condition), [])
        hits.setdefault(site[patient], []).append(bool(relevant & set(full[:K])))
        reachable.setdefault(site[patient], []).append(bool(relevant & set(full)))
    for group, values in hits.items():
        assert result.value("site", group, f"hit@{K}") == pytest.approx(np.mean(values))
        assert result.value("site", group, "reachable") == pytest.approx(np.mean(reachable[group]))
        row = result.metrics[
            (result.metrics["attribute"] == "site")
            & (result.metrics["group"] == group)
            & (result.metrics["metric"] == f"hit@{K}")
        ].iloc[0]
        assert row["n"] == len(values)
        assert row["se"] == pytest.approx(np.std(values, ddof=1) / np.sqrt(len(values)))


def test_exposure_matches_the_artifacts_own_lists(planted, result):
    data, artifact_path = planted
    from recommender.models.persistence import load_artifact

    model = load_artifact(artifact_path).model
    tables = read_tables(data)
    dataset = model.dataset_
    requests = tables.patient_conditions[
        tables.patient_conditions["condition_id"].isin(
            [
                c
                for c in dataset.conditions.external_ids
                if len(dataset.candidates(dataset.condition_index(c)))
            ]
        )
    ]
    lists = model.recommend_batch(
        requests["patient_id"].tolist(), k=K, condition_ids=requests["condition_id"].tolist()
    )
    lists["site"] = lists["patient_id"].map(tables.patients.set_index("patient_id")["site"])
    expected = lists.groupby("site")["treatment_id"].value_counts(normalize=True)
    exposure = result.exposure[result.exposure["attribute"] == "site"].set_index(
        ["group", "treatment_id"]
    )
    for (group, treatment), share in expected.items():
        assert exposure.loc[(group, treatment), "share"] == pytest.approx(share)
    assert exposure.groupby(level="group")["share"].sum().to_numpy() == pytest.approx(1.0)
    n_requests = result.groups.set_index(["attribute", "group"])["n_requests"]
    assert (
        n_requests[("site", "A")]
        == (
            requests["patient_id"].map(tables.patients.set_index("patient_id")["site"]) == "A"
        ).sum()
    )


# --- options and errors ---------------------------------------------------------------------------


def test_thresholds_are_configurable(planted):
    data, artifact = planted
    strict = audit(artifact, data, by=["site"], k=K, max_gap=0.9)
    assert strict.flags.empty
    everyone = audit(artifact, data, by=["site"], k=K, min_group_size=1, requests="patient")
    assert everyone.metrics.query("attribute == 'site' and group == 'C'")["used"].any()
    assert (
        everyone.info["exposure"]["n_requests"] == everyone.info["exposure"]["n_patients_artifact"]
    )


def test_default_attributes_and_age_bands(planted):
    data, artifact = planted
    tables = read_tables(data)
    result = audit(artifact, tables, k=K)
    assert result.attributes == ["sex", "age_band", "race", "payer"]
    year = int(tables.outcomes["timestamp"].max().year)
    patient = tables.patients.iloc[10]
    low = (year - int(patient["birth_year"])) // 10 * 10
    row = result.queries.loc[result.queries["patient_id"] == patient["patient_id"]]
    if len(row):
        assert row["age_band"].iloc[0] == f"{low}-{low + 9}"
    assert result.info["data"]["reference_year"] == year


@pytest.mark.parametrize(
    "options, error, match",
    [
        ({"by": ["height"]}, DataValidationError, "cannot group by \\['height'\\]"),
        ({"split": "random"}, ParameterError, "unknown split"),
        ({"max_gap": 2}, ParameterError, "max_gap"),
        ({"min_group_size": 0}, ParameterError, "min_group_size"),
        ({"requests": "visit"}, ParameterError, "requests"),
    ],
)
def test_bad_options_fail_clearly(planted, options, error, match):
    data, artifact = planted
    with pytest.raises(error, match=match):
        audit(artifact, data, **options)


def test_pseudonymised_artifact_needs_its_key(planted, tmp_path):
    data, plain = planted
    key_file = create_key_file(tmp_path / "key")
    key = Pseudonymizer.from_file(key_file)
    keyed = train_artifact(data, tmp_path / "keyed", kind="condition-popular", pseudonymizer=key)
    with pytest.raises(ArtifactError, match="pseudonymised.*--pseudonym-key-file"):
        audit(keyed, data, by=["site"], k=K)
    with pytest.raises(ArtifactError, match="does not match"):
        audit(
            keyed,
            data,
            by=["site"],
            k=K,
            pseudonymizer=Pseudonymizer.from_file(create_key_file(tmp_path / "other")),
        )
    with_key = audit(keyed, data, by=["site"], k=K, pseudonymizer=key)
    without = audit(plain, data, by=["site"], k=K)
    assert with_key.info["exposure"]["n_patients_matched"] == 1000
    pd.testing.assert_frame_equal(with_key.exposure, without.exposure)
    pd.testing.assert_frame_equal(with_key.metrics, without.metrics)


# --- reports and CLI ------------------------------------------------------------------------------


def test_report_folder(result, tmp_path):
    out = write_audit(result, tmp_path / "report")
    names = {p.name for p in out.iterdir()}
    assert {
        "audit.json",
        "audit.md",
        "metrics_site.png",
        "metrics_sex.png",
        "exposure_site.png",
        "exposure_sex.png",
    } <= names
    for png in out.glob("*.png"):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
    report = json.loads((out / "audit.json").read_text())
    assert report["k"] == K and report["attributes"] == ["site", "sex"]
    assert any(f["attribute"] == "site" and f["metric"] == f"hit@{K}" for f in report["flags"])
    assert "patient_id" not in (out / "audit.json").read_text()  # aggregates only
    text = (out / "audit.md").read_text()
    assert (
        "## Flags" in text and "**site**" in text and "![metrics by site](metrics_site.png)" in text
    )


def test_cli(planted, tmp_path, capsys):
    data, artifact = planted
    out = tmp_path / "cli-audit"
    args = [
        "audit",
        "--artifact",
        str(artifact),
        "--data",
        str(data),
        "--by",
        "site",
        "-k",
        str(K),
        "--out",
        str(out),
    ]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert f"FLAG site hit@{K}" in printed and (out / "audit.md").is_file()
    assert main(args + ["--fail-on-flag"]) == 1
    assert main(args + ["--max-gap", "0.95", "--fail-on-flag"]) == 0
    assert (
        main(
            [
                "audit",
                "--artifact",
                str(artifact),
                "--data",
                str(data),
                "--by",
                "shoe_size",
                "--out",
                str(tmp_path / "x"),
            ]
        )
        == 2
    )
    assert "cannot group by ['shoe_size']" in capsys.readouterr().err


# --- Synthea California -------------------------------------------------------------------------


@pytest.mark.shared_data
@pytest.mark.skipif(not SHARED.is_dir(), reason=f"shared Synthea data not found at {SHARED}")
def test_synthea_california(tmp_path):
    from recommender.importers.synthea import import_synthea

    import_synthea(SHARED, tmp_path / "data")
    artifact = train_artifact(tmp_path / "data", tmp_path / "artifact", kind="als")
    result = audit(artifact, tmp_path / "data", by=["sex", "age_band", "race"], k=5)
    out = write_audit(result, tmp_path / "audit")
    groups = result.groups.set_index(["attribute", "group"])
    assert groups.loc["sex", "n_patients"].sum() == 1000
    assert set(groups.loc["race"].index) >= {"white", "hispanic", "asian", "black"}
    assert (
        result.info["exposure"]["n_patients_matched"]
        == result.info["exposure"]["n_patients_artifact"]
    )
    assert result.info["notes"] == []
    overall = result.value("all", "all", "hit@5")
    assert 0 < overall <= 1
    for attribute in ("sex", "age_band", "race"):
        assert (out / f"metrics_{attribute}.png").is_file() and (
            out / f"exposure_{attribute}.png"
        ).is_file()
    assert "rxnorm" in (out / "audit.md").read_text()
