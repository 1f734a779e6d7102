"""The command line: contract names, outputs and one-line errors (no traceback)."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from recommender.cli import main
from recommender.data.tables import write_tables
from tests.cohorts import checkerboard


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    tables, _ = checkerboard(80, 4)
    write_tables(tables, root / "data")
    assert (
        main(
            [
                "train",
                "--data",
                str(root / "data"),
                "--out",
                str(root / "model"),
                "--model",
                "als",
                "--factors",
                "8",
                "--iterations",
                "10",
                "--seed",
                "3",
            ]
        )
        == 0
    )
    return root


def test_recommend_one_patient_prints_the_contract_json(trained, capsys):
    capsys.readouterr()
    assert (
        main(
            [
                "recommend",
                "--artifact",
                str(trained / "model"),
                "--patient",
                "P0080",
                "--condition",
                "C",
                "-k",
                "2",
            ]
        )
        == 0
    )
    answer = json.loads(capsys.readouterr().out)
    assert set(answer) >= {"patient_id", "condition_id", "model", "recommendations", "excluded"}
    assert answer["patient_id"] == "P0080" and answer["condition_id"] == "C"
    assert answer["model"]["type"] == "als"
    assert [r["rank"] for r in answer["recommendations"]] == [1, 2]
    first = answer["recommendations"][0]
    assert (
        {"rank", "treatment_id", "score"}
        <= set(first)
        <= {"rank", "treatment_id", "score", "explanation", "flags"}
    )
    assert set(first["explanation"]) == {"basis", "contributions", "evidence"}


def test_table_format(trained, capsys):
    capsys.readouterr()
    main(
        [
            "recommend",
            "--artifact",
            str(trained / "model"),
            "--patient",
            "P0001",
            "--format",
            "table",
        ]
    )
    out = capsys.readouterr().out
    assert out.startswith("patient P0001") and "already_tried" in out


def test_requests_file_and_all(trained, tmp_path):
    requests = tmp_path / "requests.csv"
    pd.DataFrame({"patient_id": ["P0080", "P0081"], "condition_id": ["C", ""]}).to_csv(
        requests, index=False
    )
    assert (
        main(
            [
                "recommend",
                "--artifact",
                str(trained / "model"),
                "--requests",
                str(requests),
                "--out",
                str(tmp_path / "out.csv"),
                "-k",
                "2",
            ]
        )
        == 0
    )
    out = pd.read_csv(tmp_path / "out.csv", keep_default_na=False)
    assert list(out.columns) == ["patient_id", "condition_id", "rank", "treatment_id", "score"]
    assert out.patient_id.tolist()[:2] == ["P0080", "P0080"]
    assert (
        main(
            [
                "recommend",
                "--artifact",
                str(trained / "model"),
                "--all",
                "--out",
                str(tmp_path / "all.parquet"),
                "-k",
                "1",
            ]
        )
        == 0
    )
    assert len(pd.read_parquet(tmp_path / "all.parquet")) > 0


@pytest.mark.parametrize(
    "argv,message",
    [
        (["recommend", "--artifact", "{m}", "--patient", "nobody"], "unknown patient id 'nobody'"),
        (["recommend", "--artifact", "{d}", "--patient", "P1"], "not a complete artifact"),
        (["train", "--data", "{d}/missing", "--out", "{d}/x"], "is not a folder"),
        (
            [
                "train",
                "--data",
                "{d}/data",
                "--out",
                "{d}/x",
                "--model",
                "popular",
                "--factors",
                "3",
            ],
            "--factors does not apply to the popular model",
        ),
        (["recommend", "--artifact", "{m}", "--all"], "--out is required"),
    ],
)
def test_user_errors_are_one_line(trained, capsys, argv, message):
    argv = [a.format(m=trained / "model", d=trained) for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and "Traceback" not in err


def test_bad_option_values_are_rejected_by_argparse(capsys):
    with pytest.raises(SystemExit) as info:
        main(["train", "--data", "d", "--out", "o", "--side-info", "conditions,shoe_size"])
    assert info.value.code == 2
    assert "shoe_size" in capsys.readouterr().err


def test_names_from_the_dictionaries_are_shown(tmp_path, capsys):
    import pandas as pd

    from recommender.data.tables import validate_tables

    tables, _ = checkerboard(40, 2)
    names = pd.DataFrame(
        {
            "treatment_id": ["S0", "S1", "T0", "T1", "T2", "TX"],
            "name": ["Statin 0", "Statin 1", "Therapy 0", "Therapy 1", "Therapy 2", "X"],
        }
    )
    tables = validate_tables(
        {
            "outcomes": tables.outcomes,
            "treatments": names,
            "patient_conditions": tables.patient_conditions,
        }
    )
    write_tables(tables, tmp_path / "data")
    main(
        [
            "train",
            "--data",
            str(tmp_path / "data"),
            "--out",
            str(tmp_path / "m"),
            "--model",
            "popular",
        ]
    )
    capsys.readouterr()
    main(["recommend", "--artifact", str(tmp_path / "m"), "--patient", "P0040", "-k", "1"])
    first = json.loads(capsys.readouterr().out)["recommendations"][0]
    assert (
        first["treatment_name"] == dict(zip(names.treatment_id, names.name))[first["treatment_id"]]
    )
    main(
        [
            "recommend",
            "--artifact",
            str(tmp_path / "m"),
            "--patient",
            "P0040",
            "-k",
            "1",
            "--format",
            "table",
        ]
    )
    assert first["treatment_name"] in capsys.readouterr().out


def test_recommend_refuses_an_artifact_with_nan_factors(trained, tmp_path, capsys):
    import shutil

    from tests.artifact_edits import nan_factors

    artifact = shutil.copytree(trained / "model", tmp_path / "nan-model")
    nan_factors(artifact)  # checksums re-signed: only the content is wrong
    capsys.readouterr()
    argv = ["recommend", "--artifact", str(artifact), "--patient", "P0001", "-k", "3"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1
    assert "model/item_factors.npy: finite values check failed" in err


def test_duplicate_therapy_in_the_cli(tmp_path, capsys):
    """train --duplicates, recommend --active and the --duplicates override."""
    from recommender.data.tables import read_tables
    from tests.ranking.test_duplicates import HCTZ_6, HCTZ_25, LISINOPRIL, TREATMENTS

    rows = [
        (f"P{i}", t, "responded" if (i + j) % 3 else "no_response", "2020-01-01")
        for i in range(12)
        for j, t in enumerate(TREATMENTS)
    ] + [("NEW", LISINOPRIL, "responded", "2020-01-01")]
    treatments = pd.DataFrame(
        [(t, name, held) for t, (name, held) in TREATMENTS.items()],
        columns=["treatment_id", "name", "ingredients"],
    )
    outcomes = pd.DataFrame(rows, columns=["patient_id", "treatment_id", "outcome", "timestamp"])
    write_tables({"outcomes": outcomes, "treatments": treatments}, tmp_path / "data")
    assert read_tables(tmp_path / "data").treatments["ingredients"].iloc[0]
    train = ["train", "--data", str(tmp_path / "data"), "--model", "popular"]
    assert main([*train, "--out", str(tmp_path / "m")]) == 0
    assert main([*train, "--out", str(tmp_path / "f"), "--duplicates", "flag"]) == 0
    capsys.readouterr()

    def offered(model, *more):
        argv = ["recommend", "--artifact", str(tmp_path / model), "--patient", "NEW", "-k", "9"]
        assert main([*argv, "--active", HCTZ_25, *more]) == 0
        return json.loads(capsys.readouterr().out)

    excluded = offered("m")
    assert HCTZ_6 not in {r["treatment_id"] for r in excluded["recommendations"]}
    assert {e["treatment_id"]: e["reason"] for e in excluded["excluded"]}[HCTZ_6] == (
        "duplicate_therapy"
    )
    for answer in (offered("f"), offered("m", "--duplicates", "flag")):
        (item,) = [r for r in answer["recommendations"] if r["treatment_id"] == HCTZ_6]
        assert item["flags"][0]["type"] == "duplicate_therapy"
    assert offered("f", "--duplicates", "exclude")["excluded"] == excluded["excluded"]
    assert main(["recommend", "--artifact", str(tmp_path / "m"), "--all", "--active", "x"]) == 2
    assert "--active describes one patient" in capsys.readouterr().err
