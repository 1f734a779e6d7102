"""Feedback: append-only, idempotent, validated, and usable as a weak training signal."""

from __future__ import annotations

import json
import multiprocessing

import pytest

from recommender.cli import main
from recommender.data.dataset import Dataset
from recommender.data.feedback import FeedbackStore, read_feedback
from recommender.data.tables import write_tables
from recommender.exceptions import DataValidationError
from tests.cohorts import checkerboard


def record(i, decision="accepted", patient="P0200", treatment="T2"):
    return {
        "feedback_id": f"f{i}",
        "patient": patient,
        "treatment_id": treatment,
        "decision": decision,
        "principal": "dr-1",
        "source": "api",
        "model_version": "v1",
    }


def test_append_is_idempotent_and_readable(tmp_path):
    store = FeedbackStore(tmp_path / "fb" / "feedback.jsonl")
    assert store.append(record(1)) is True
    assert store.append(record(1)) is False
    assert FeedbackStore(store.path).append(record(1)) is False  # another process, same file
    assert store.append(record(2, "overridden")) is True
    frame = read_feedback(store.path)
    assert frame.feedback_id.tolist() == ["f1", "f2"] and frame.decision.tolist() == [
        "accepted",
        "overridden",
    ]
    assert oct(store.path.stat().st_mode & 0o777) == "0o600"


def _append_many(path, start):
    store = FeedbackStore(path)
    for i in range(start, start + 50):
        store.append(record(i % 60))


def test_concurrent_writers_never_duplicate_or_tear_lines(tmp_path):
    path = tmp_path / "feedback.jsonl"
    workers = [multiprocessing.Process(target=_append_many, args=(path, s)) for s in (0, 25, 40)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    lines = path.read_text().splitlines()
    ids = [json.loads(line)["feedback_id"] for line in lines]
    assert len(ids) == len(set(ids)) == 60


@pytest.mark.parametrize(
    "bad,field",
    [
        ({"decision": "maybe"}, "decision"),
        ({"patient": ""}, "patient"),
        ({"feedback_id": None}, "feedback_id"),
    ],
)
def test_malformed_records_are_refused(tmp_path, bad, field):
    with pytest.raises(DataValidationError, match=field):
        FeedbackStore(tmp_path / "f.jsonl").append({**record(1), **bad})


def test_lines_that_do_not_parse_are_skipped_and_counted(tmp_path, caplog):
    path = tmp_path / "f.jsonl"
    path.write_text(
        json.dumps(record(1)) + "\n{not json\n" + json.dumps({**record(3), "decision": "x"}) + "\n"
    )
    frame = read_feedback(path)
    assert frame.feedback_id.tolist() == ["f1"] and frame.attrs["skipped_lines"] == [2, 3]
    assert f"{path}: skipped 2 line(s)" in caplog.text


def test_a_torn_tail_never_breaks_the_store(tmp_path):
    """The issue's failure: a record half written on a full disk, then the next one glued on."""
    store = FeedbackStore(tmp_path / "f.jsonl")
    store.append(record(1))
    with open(store.path, "a") as handle:
        handle.write(json.dumps(record(2))[:40])
    assert FeedbackStore(store.path).append(record(3)) is True  # another process's store
    assert store.append(record(4)) is True
    assert read_feedback(store.path).feedback_id.tolist() == ["f1", "f3", "f4"]
    assert (tmp_path / "f.jsonl.torn").read_text() == json.dumps(record(2))[:40] + "\n"


@pytest.mark.parametrize(
    "field,value", [("patient", "P\ud800"), ("treatment_id", "T\x00"), ("reason", "a\x1bb")]
)
def test_text_that_is_not_unicode_is_refused(tmp_path, field, value):
    with pytest.raises(DataValidationError, match=field):
        FeedbackStore(tmp_path / "f.jsonl").append({**record(1), field: value})
    store = FeedbackStore(tmp_path / "g.jsonl")
    assert store.append({**record(1), "reason": "line one\nline two"})


def test_every_acknowledged_decision_survives_a_full_disk(tiny_disk):
    store = FeedbackStore(tiny_disk.path / "f.jsonl")
    store.append(record(0))
    tiny_disk.fill()
    stored, refused = ["f0"], 0
    for i in range(1, 120):
        try:
            if store.append({**record(i), "reason": "r" * 200}):
                stored.append(f"f{i}")
        except OSError:
            refused += 1
    assert refused
    assert read_feedback(store.path).feedback_id.tolist() == stored
    tiny_disk.free()
    assert store.append(record(500)) and store.append(record(1)) is False
    frame = read_feedback(store.path)
    assert frame.feedback_id.tolist() == [*stored, "f500"] and frame.attrs["skipped_lines"] == []


def test_feedback_adds_a_weak_preference_only_where_no_outcome_exists(tmp_path):
    tables, _ = checkerboard(40, 2)
    store = FeedbackStore(tmp_path / "f.jsonl")
    store.append(record(1, "accepted", "P0040", "T2"))  # probe: no outcome for T2
    store.append(record(2, "overridden", "P0041", "T0"))  # probe: no outcome for T0
    store.append(record(3, "overridden", "P0000", "T0"))  # P0000 has an outcome for T0: ignored
    store.append(record(4, "accepted", "NOBODY", "T0"))  # unknown patient: ignored
    plain = Dataset.from_tables(tables)
    fed = Dataset.from_tables(tables, feedback=read_feedback(store.path), feedback_weight=0.5)
    difference = (fed.matrix - plain.matrix).tocoo()
    changed = {
        (plain.patients.external_ids[r], plain.treatments.external_ids[c]): v
        for r, c, v in zip(difference.row, difference.col, difference.data)
        if v
    }
    value = 1 + plain.policy.alpha * 0.5
    assert changed == {("P0040", "T2"): value, ("P0041", "T0"): -value}
    assert (fed.history != plain.history).nnz == 0  # a decision is not an outcome


def test_an_overridden_safety_warning_is_stored_but_is_no_preference(tmp_path):
    tables, _ = checkerboard(40, 2)
    store = FeedbackStore(tmp_path / "f.jsonl")
    assert store.append(record(1, "warning_overridden", "P0040", "T2"))  # alone: no signal
    store.append({**record(2, "accepted", "P0041", "T2"), "time": "2024-01-01T00:00:00Z"})
    store.append(
        {
            **record(3, "warning_overridden", "P0041", "T2"),  # later: does not replace
            "time": "2024-02-01T00:00:00Z",
        }
    )  # the preference
    frame = read_feedback(store.path)
    assert frame.decision.tolist() == ["warning_overridden", "accepted", "warning_overridden"]
    plain = Dataset.from_tables(tables)
    fed = Dataset.from_tables(tables, feedback=frame, feedback_weight=0.5)
    difference = (fed.matrix - plain.matrix).tocoo()
    changed = {
        (plain.patients.external_ids[r], plain.treatments.external_ids[c]): v
        for r, c, v in zip(difference.row, difference.col, difference.data)
        if v
    }
    assert changed == {("P0041", "T2"): 1 + plain.policy.alpha * 0.5}
    only_warnings = Dataset.from_tables(tables, feedback=frame.iloc[[0]], feedback_weight=0.5)
    assert (only_warnings.matrix != plain.matrix).nnz == 0


def test_train_with_feedback_from_the_cli(tmp_path):
    tables, _ = checkerboard(40, 2)
    write_tables(tables, tmp_path / "data")
    FeedbackStore(tmp_path / "f.jsonl").append(record(1, "accepted", "P0040", "T2"))
    assert (
        main(
            [
                "train",
                "--data",
                str(tmp_path / "data"),
                "--out",
                str(tmp_path / "m"),
                "--model",
                "als",
                "--factors",
                "4",
                "--feedback",
                str(tmp_path / "f.jsonl"),
            ]
        )
        == 0
    )
    assert (
        main(
            [
                "train",
                "--data",
                str(tmp_path / "data"),
                "--out",
                str(tmp_path / "m"),
                "--feedback",
                str(tmp_path / "missing.jsonl"),
            ]
        )
        == 2
    )
