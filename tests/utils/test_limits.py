"""Read limits: a gzip bomb stops with one error naming the file, real files read unchanged."""

from __future__ import annotations

import gzip
import resource

import pandas as pd
import pytest

from recommender.cli import main
from recommender.exceptions import DataValidationError
from recommender.utils import limits as limits_module
from recommender.utils.limits import InputTooLargeError, ReadLimits, check_parquet, open_bounded


def gzip_bomb(path, header: bytes, expanded: int) -> None:
    """``header`` then ``expanded`` bytes of the same CSV row, gzip-compressed (about 1000x)."""
    row = b"P1,T1,responded,2020-01-01\n"
    with gzip.open(path, "wb", compresslevel=6) as handle:
        handle.write(header)
        block = row * ((1 << 20) // len(row))
        for _ in range(expanded // len(block) + 1):
            handle.write(block)


def test_a_file_within_its_budget_reads_whole(tmp_path):
    path = tmp_path / "t.csv.gz"
    with gzip.open(path, "wb") as handle:
        handle.write(b"a,b\n1,2\n")
    with open_bounded(path, ReadLimits(max_bytes=8)) as handle:  # exactly 8 bytes: allowed
        assert handle.read() == b"a,b\n1,2\n"
    with (
        pytest.raises(InputTooLargeError, match="more than 7 bytes"),
        open_bounded(path, ReadLimits(max_bytes=7)) as handle,
    ):
        handle.read()


def test_the_ratio_bounds_a_compressed_file(tmp_path, monkeypatch):
    monkeypatch.setattr(limits_module, "RATIO_FLOOR", 1000)
    path = tmp_path / "bomb.csv.gz"
    gzip_bomb(path, b"patient_id,treatment_id,outcome,timestamp\n", 5_000_000)
    budget, setting = ReadLimits().byte_budget(path)
    assert budget == max(100 * path.stat().st_size, 1000) and "RATIO" in setting
    with pytest.raises(InputTooLargeError, match="RECOMMENDER_MAX_COMPRESSION_RATIO") as info:
        with open_bounded(path) as handle:
            while handle.read(1 << 16):
                pass
    assert info.value.file == str(path)
    plain = tmp_path / "plain.csv"
    plain.write_bytes(b"x" * 10_000)
    assert ReadLimits().byte_budget(plain)[0] == limits_module.DEFAULT_MAX_BYTES


def test_limits_come_from_the_environment():
    environ = {
        "RECOMMENDER_MAX_FILE_BYTES": "1000",
        "RECOMMENDER_MAX_FILE_ROWS": "5",
        "RECOMMENDER_MAX_COMPRESSION_RATIO": "12.5",
    }
    assert ReadLimits.from_env(environ) == ReadLimits(1000, 5, 12.5)
    assert ReadLimits.from_env({}) == ReadLimits()
    with pytest.raises(DataValidationError, match="RECOMMENDER_MAX_FILE_ROWS must be a positive"):
        ReadLimits.from_env({"RECOMMENDER_MAX_FILE_ROWS": "-3"})


def test_a_truncated_gzip_is_a_clear_error(tmp_path):
    path = tmp_path / "t.csv.gz"
    path.write_bytes(gzip.compress(b"a,b\n" * 1000)[:40])
    with (
        pytest.raises(DataValidationError, match="cannot be decompressed"),
        open_bounded(path) as handle,
    ):
        handle.read()


def test_parquet_rows_are_bounded_from_the_footer(tmp_path):
    path = tmp_path / "outcomes.parquet"
    pd.DataFrame({"a": range(10)}).to_parquet(path)
    check_parquet(path, ReadLimits(max_rows=10))
    with pytest.raises(InputTooLargeError, match="more than 9 rows"):
        check_parquet(path, ReadLimits(max_rows=9))


def _data_folder(tmp_path, outcomes_rows: int):
    folder = tmp_path / "data"
    folder.mkdir()
    rows = "".join(f"P{i},T{i % 3},responded,2020-01-01\n" for i in range(outcomes_rows))
    (folder / "outcomes.csv").write_text("patient_id,treatment_id,outcome,timestamp\n" + rows)
    return folder


@pytest.mark.parametrize("reader", ["read_tables", "read_codes"])
def test_table_readers_stop_at_the_row_limit(tmp_path, monkeypatch, reader):
    from recommender.data.arrow_read import read_codes
    from recommender.data.tables import read_tables

    folder = _data_folder(tmp_path, 30)
    read = {"read_tables": read_tables, "read_codes": read_codes}[reader]
    read(folder)
    monkeypatch.setenv("RECOMMENDER_MAX_FILE_ROWS", "29")
    with pytest.raises(InputTooLargeError, match="more than 29 rows") as info:
        read(folder)
    assert info.value.file.endswith("outcomes.csv")


def test_train_on_a_gzip_bomb_is_one_error_line(tmp_path, monkeypatch, capsys):
    """The issue's probe at test size: a small .csv.gz that expands far beyond its budget."""
    monkeypatch.setenv("RECOMMENDER_MAX_FILE_BYTES", str(5_000_000))
    folder = tmp_path / "data"
    folder.mkdir()
    bomb = folder / "outcomes.csv.gz"
    gzip_bomb(bomb, b"patient_id,treatment_id,outcome,timestamp\n", 60_000_000)
    assert bomb.stat().st_size < 1_000_000
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    status = main(["train", "--data", str(folder), "--out", str(tmp_path / "m")])
    grown_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    err = capsys.readouterr().err
    assert status == 2 and err.count("\n") == 1 and err.startswith("error: ")
    assert str(bomb) in err and "RECOMMENDER_MAX_FILE_BYTES" in err
    assert grown_mib < 500  # a 60 MB expansion is stopped at 5 MB, not parsed whole
