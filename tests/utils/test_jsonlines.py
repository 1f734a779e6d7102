"""JSON-lines appends: whole lines or nothing, torn tails moved aside, readers that skip."""

from __future__ import annotations

import errno
import json
import logging
import os

import pytest

from recommender.utils import jsonlines
from recommender.utils.jsonlines import (
    AppendError,
    append_line,
    locked,
    open_for_append,
    read_records,
)


def line(i: int, pad: int = 0) -> bytes:
    return (json.dumps({"id": i, "pad": "p" * pad}) + "\n").encode()


def append(path, data: bytes) -> None:
    fd = open_for_append(path)
    try:
        with locked(fd):
            append_line(fd, data, path)
    finally:
        os.close(fd)


def test_lines_are_appended_and_read_back(tmp_path):
    path = tmp_path / "log.jsonl"
    for i in range(3):
        append(path, line(i))
    found = read_records(path)
    assert [(n, r["id"]) for n, r in found.records] == [(1, 0), (2, 1), (3, 2)]
    assert found.unparsable == [] and found.end == path.stat().st_size
    assert oct(path.stat().st_mode & 0o777) == "0o600"


def test_a_record_must_be_one_line(tmp_path):
    with pytest.raises(ValueError, match="one line"):
        append(tmp_path / "x", b'{"a": 1}\n{"b": 2}\n')
    with pytest.raises(ValueError, match="one line"):
        append(tmp_path / "x", b'{"a": 1}')


def _short_writes(monkeypatch, keep: int | None):
    """os.write in the helper writes only ``keep`` bytes (None: fails with ENOSPC, like Linux
    when nothing fits)."""
    real = os.write

    def write(fd, data):
        if keep is None:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(fd, bytes(data)[:keep])

    monkeypatch.setattr(jsonlines.os, "write", write)


@pytest.mark.parametrize("keep", [None, 0, 1, 17])
def test_a_short_write_is_cut_back_and_reported(tmp_path, monkeypatch, keep):
    # Simulated: the real ENOSPC is the tmpfs test below (it needs root to mount).
    path = tmp_path / "log.jsonl"
    append(path, line(0))
    before = path.read_bytes()
    with monkeypatch.context() as patch:
        _short_writes(patch, keep)
        with pytest.raises(AppendError, match="cannot append"):
            append(path, line(1, pad=100))
    assert path.read_bytes() == before  # the fragment is gone
    append(path, line(2))
    assert [r["id"] for _, r in read_records(path).records] == [0, 2]


def test_a_torn_tail_is_moved_aside_before_the_next_line(tmp_path, caplog):
    path = tmp_path / "log.jsonl"
    append(path, line(0))
    with open(path, "ab") as handle:  # what a power loss mid-write can leave
        handle.write(b'{"id": 1, "pa')
    assert [r["id"] for _, r in read_records(path).records] == [0]  # not yet: no newline
    with caplog.at_level(logging.WARNING):
        append(path, line(2))
    assert [r["id"] for _, r in read_records(path).records] == [0, 2]
    assert (tmp_path / "log.jsonl.torn").read_bytes() == b'{"id": 1, "pa\n'
    assert "torn line (13 bytes" in caplog.text and "log.jsonl.torn" in caplog.text


def test_a_file_that_is_one_long_fragment_is_repaired(tmp_path, monkeypatch):
    monkeypatch.setattr(jsonlines, "_CHUNK", 7)  # several backward steps
    path = tmp_path / "log.jsonl"
    path.write_bytes(b"x" * 50)
    append(path, line(0))
    assert path.read_bytes() == line(0)
    assert (tmp_path / "log.jsonl.torn").read_bytes() == b"x" * 50 + b"\n"


def test_readers_skip_and_count_what_does_not_parse(tmp_path):
    path = tmp_path / "log.jsonl"
    path.write_bytes(
        line(0) + b'{"id": 1, "pa{"id": 2}\n' + b"\xff\xfe\n" + b"[1]\n" + b"\n" + line(5) + b"{"
    )
    found = read_records(path)
    assert [(n, r["id"]) for n, r in found.records] == [(1, 0), (6, 5)]
    assert found.unparsable == [2, 3, 4]
    assert found.end == path.stat().st_size - 1  # the torn last byte is not read
    assert read_records(path, found.end).records == []
    assert read_records(tmp_path / "missing").records == []


def test_the_store_survives_a_real_full_disk(tiny_disk):
    """On a full tmpfs, every append either lands whole or raises; after space returns the
    file is intact, holds every acknowledged line, and takes new ones."""
    path = tiny_disk.path / "log.jsonl"
    append(path, line(0))
    tiny_disk.fill()
    acknowledged, failures = [0], []
    for i in range(1, 200):
        try:
            append(path, line(i, pad=300))
            acknowledged.append(i)
        except AppendError as exc:
            failures.append(str(exc))
    assert failures and all("short write" in f or "No space" in f for f in failures)
    assert any("short write" in f for f in failures)  # a real partial write was cut back
    found = read_records(path)
    assert found.unparsable == [] and found.end == path.stat().st_size
    assert [r["id"] for _, r in found.records] == acknowledged
    tiny_disk.free()
    append(path, line(999))
    assert [r["id"] for _, r in read_records(path).records] == [*acknowledged, 999]
