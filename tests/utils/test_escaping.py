"""Reports treat ids as data: CSV cells cannot run as formulas, Markdown cells cannot break rows."""

from __future__ import annotations

import csv

import pandas as pd
import pytest

from recommender.utils.escaping import csv_cell, csv_safe, markdown_cell, markdown_row

ATTACK = "=cmd|' /C calc'!A0"


@pytest.mark.parametrize("start", ["=", "+", "-", "@", "\t", "\r"])
def test_text_that_starts_a_formula_is_quoted(start):
    assert csv_cell(f"{start}1+1") == f"'{start}1+1"


def test_numbers_and_plain_text_are_kept():
    frame = pd.DataFrame(
        {
            "patient_id": [ATTACK, "P1", "-P2"],
            "outcome": [-1.0, 0.5, -0.25],
            "rank": [1, 2, -3],
            "label": pd.Categorical(["@x", "ok", "ok"]),
            "name": pd.array(["+a", None, "b"], dtype="string"),
            "mixed": ["=x", -1.0, None],
        }
    )
    safe = csv_safe(frame)
    assert safe["patient_id"].tolist() == ["'" + ATTACK, "P1", "'-P2"]
    assert safe["outcome"].tolist() == [-1.0, 0.5, -0.25] and safe["rank"].tolist() == [1, 2, -3]
    assert safe["label"].tolist() == ["'@x", "ok", "ok"]
    assert safe["name"].tolist()[0] == "'+a" and pd.isna(safe["name"].tolist()[1])
    assert safe["mixed"].tolist()[:2] == ["'=x", -1.0]
    assert frame["patient_id"][0] == ATTACK  # the input is not changed


def test_recommend_output_csv_is_neutralised(tmp_path):
    from recommender.cli.recommend import write_frame

    frame = pd.DataFrame({"patient_id": [ATTACK], "treatment_id": ["T1"], "score": [-0.5]})
    write_frame(frame, tmp_path / "out.csv")
    with open(tmp_path / "out.csv", newline="") as handle:
        rows = list(csv.reader(handle))
    assert rows[1] == ["'" + ATTACK, "T1", "-0.5"]


def test_markdown_cells_cannot_end_a_cell_or_a_row():
    assert markdown_cell("north\nsite | x") == "north\\nsite \\| x"
    assert markdown_cell("a\\|b") == "a\\\\\\|b"  # a backslash cannot undo the escape
    assert markdown_cell("\r\x1b") == "\\r\\x1b" and markdown_cell(0.5) == "0.5"
    row = markdown_row(["G\nH", "|", 1])
    assert "\n" not in row and row.count(" | ") == 2


def test_every_markdown_table_writer_escapes(tmp_path):
    from recommender.evaluation.report import _table as evaluation_table
    from recommender.importers.report import _section
    from recommender.trust.model_card import _table as card_table
    from recommender.trust.subgroup_report import _table as audit_table

    evil = "north\n| injected | row |"
    frame = pd.DataFrame({"group": [evil], "value": ["1"]})
    tables = [
        audit_table(frame),
        evaluation_table(frame),
        card_table(["group", "value"], [[evil, "1"]]),
        "\n".join(_section("Rows", {evil: 1})[2:]),
    ]
    for text in tables:
        lines = text.splitlines()
        assert len(lines) == 3 and all(line.startswith("|") for line in lines), text
        assert "north\\n\\| injected \\| row \\|" in lines[2]
