"""Model card: every section, the artifact's identity, reports folded in, every model kind, CLI."""

from __future__ import annotations

import copy
import json

import pytest

from recommender.cli import main
from recommender.data.tables import write_tables
from recommender.exceptions import ArtifactError, DataValidationError
from recommender.models import MODELS
from recommender.models.persistence import load_artifact, read_manifest
from recommender.training import train_artifact
from recommender.trust.model_card import ALGORITHMS, SECTIONS, model_card_markdown
from tests.conftest import make_cohort

AUDIT = {
    "k": 5,
    "min_group_size": 30,
    "max_gap": 0.1,
    "attributes": ["site"],
    "artifact": {"version": None},
    "split": {"method": "leave-last", "n_queries": 400},
    "gaps": [
        {
            "attribute": "site",
            "metric": "hit@5",
            "gap": 0.31,
            "high_group": "A",
            "high": 0.8,
            "low_group": "B",
            "low": 0.49,
            "flagged": True,
        },
        {
            "attribute": "site",
            "metric": "map@5",
            "gap": 0.2,
            "high_group": "A",
            "high": 0.6,
            "low_group": "B",
            "low": 0.4,
            "flagged": True,
        },
    ],
    "flags": [{"attribute": "site", "metric": "hit@5"}],
    "groups": [
        {"attribute": "site", "group": "C", "n_queries": 7, "small": True},
        {"attribute": "site", "group": "A", "n_queries": 300, "small": False},
    ],
}
EVALUATION = {
    "k": 10,
    "split": {"method": "leave-last", "n_train_rows": 900, "n_test_rows": 80},
    "models": {
        "als": {"summary": {"hit@10": 0.71, "ndcg@10": 0.42, "mrr": 0.33}},
        "popular": {"summary": {"hit@10": 0.5}},
    },
    "planted": {
        "hit@1": {"als": 0.4},
        "bayes_rate": 0.6,
        "popularity_rate": 0.45,
        "n_episodes": 70,
    },
}


@pytest.fixture(scope="module")
def artifact(tmp_path_factory):
    root = tmp_path_factory.mktemp("card")
    data = write_tables(make_cohort(seed=1), root / "data")
    return train_artifact(
        data,
        root / "artifact",
        kind="als",
        params={"factors": 4, "iterations": 2},
        metrics={"hit@10": 0.5},
    )


def headings(text: str) -> list[str]:
    return [line[3:] for line in text.splitlines() if line.startswith("## ")]


def test_every_section_and_the_artifacts_identity(artifact):
    manifest = read_manifest(artifact)
    text = model_card_markdown(load_artifact(artifact))
    assert headings(text) == list(SECTIONS)
    assert manifest["version"] in text and manifest["data"]["fingerprint"] in text
    assert ALGORITHMS["als"] in text
    assert "never replace" in text.lower() and "clinician" in text
    assert "| hit@10 | 0.500 |" in text  # metrics recorded in the manifest
    assert "No subgroup audit was given" in text
    for rule in ("previous_harm", "contraindicated", "already_tried"):
        assert f"`{rule}`" in text
    for limitation in (
        "Observational data",
        "Confounding by indication",
        "Exposure bias",
        "Small groups",
        "Synthetic versus real data",
    ):
        assert limitation in text
    assert f"{manifest['data']['n_patients']} patients" in text


def test_reports_are_folded_in(artifact, tmp_path):
    audit = copy.deepcopy(AUDIT)
    audit["artifact"]["version"] = read_manifest(artifact)["version"]
    (tmp_path / "audit").mkdir()
    (tmp_path / "audit" / "audit.json").write_text(json.dumps(audit))
    (tmp_path / "evaluation.json").write_text(json.dumps(EVALUATION))
    text = model_card_markdown(
        artifact, audit=tmp_path / "audit", evaluation=tmp_path / "evaluation.json"
    )
    assert "| site | hit@5 | 0.310 | A 0.800 | B 0.490 | **yes** |" in text
    assert (
        "map@5" not in text.split("## Subgroup results")[1].split("##")[0]
    )  # headline metrics only
    assert "1 gap(s) flagged." in text and "site=C (7)" in text
    assert "| als (this model's kind) | 0.710 | 0.420 |" in text
    assert "Bayes-optimal 0.600" in text and "synthetic cohort with planted truth" in text
    assert "Warning" not in text


def test_audit_of_another_artifact_is_called_out(artifact):
    audit = copy.deepcopy(AUDIT)
    audit["artifact"]["version"] = "bpr-20200101T000000Z-deadbeef"
    text = model_card_markdown(artifact, audit=audit)
    assert "this audit is of artifact `bpr-20200101T000000Z-deadbeef`" in text


@pytest.mark.parametrize("kind", sorted(MODELS))
def test_every_model_kind_is_explained(artifact, kind):
    manifest = copy.deepcopy(read_manifest(artifact))
    manifest["model"].update(type=kind, params={})
    text = model_card_markdown(manifest)
    assert ALGORITHMS[kind] in text and headings(text) == list(SECTIONS)


def test_bad_sources_fail_clearly(artifact, tmp_path):
    with pytest.raises(DataValidationError, match="expected a folder with audit.json"):
        model_card_markdown(artifact, audit=tmp_path / "missing")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(DataValidationError, match="not valid JSON"):
        model_card_markdown(artifact, evaluation=tmp_path / "bad.json")
    with pytest.raises(ArtifactError, match="no artifact folder"):
        model_card_markdown(tmp_path / "nowhere")


def test_cli(artifact, tmp_path, capsys):
    out = tmp_path / "card" / "MODEL_CARD.md"
    assert main(["model-card", "--artifact", str(artifact), "--out", str(out)]) == 0
    assert headings(out.read_text()) == list(SECTIONS)
    assert main(["model-card", "--artifact", str(artifact)]) == 0
    assert "# Model card: " in capsys.readouterr().out
    assert main(["model-card", "--artifact", str(tmp_path / "nowhere")]) == 2
    assert "error:" in capsys.readouterr().err


def test_policy_values_and_off_policy_results_are_folded_in(artifact, tmp_path):
    folder = tmp_path / "evaluation"
    folder.mkdir()
    truth = {
        "values": {"outcome": {"all": 0.74, "warm": 0.75, "cold": 0.69}},
        "gaps": {"outcome": {"all": 0.87, "warm": 0.86, "cold": 0.9}},
    }
    (folder / "results.json").write_text(json.dumps({**EVALUATION, "truth": truth}))
    ope = {
        "models": {
            "als": {
                "episodes": 812,
                "estimates": {
                    e: {"value": 0.61, "ci95": [0.55, 0.66]} for e in ("ips", "snips", "dr")
                },
            }
        },
        "behaviour": {"value": 0.58},
        "split": {"method": "temporal(cutoff=2021-01-01)"},
    }
    (folder / "ope.json").write_text(json.dumps(ope))
    text = model_card_markdown(artifact, evaluation=folder)
    assert "| outcome | 0.740 | 0.870 | 0.860 | 0.900 |" in text
    assert "| als | 812 | 0.610 [0.550, 0.660] |" in text
    assert "observed rate was 0.580" in text
