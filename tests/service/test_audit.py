"""The audit log: a line per patient-data access (failures too), pseudonyms only, durable,
rotation-friendly, and no patient data when a line cannot be written."""

from __future__ import annotations

import json
import multiprocessing
import os
import threading
import time

import pytest

from recommender.data.pseudonym import Pseudonymizer
from recommender.utils import jsonlines
from service import audit as audit_module
from service.audit import AuditError, AuditLog

from .conftest import audit_lines

FIELDS = {
    "time",
    "event",
    "request_id",
    "principal",
    "role",
    "endpoint",
    "method",
    "patient_pseudonym",
    "condition_id",
    "model_version",
    "treatment_ids",
    "status",
    "error_code",
    "remote_addr",
}


def test_one_line_per_access_with_the_documented_fields(client, clinician, site):
    response = client.get("/v1/patients/P0201/recommendations?condition=C&k=2", headers=clinician)
    [line] = audit_lines(site)
    assert set(line) == FIELDS
    assert line["event"] == "patient_data_access" and line["principal"] == "ward-7"
    assert line["request_id"] == response.headers["X-Request-ID"]
    assert line["patient_pseudonym"] == Pseudonymizer.from_file(site.key)("P0201")
    returned = [r["treatment_id"] for r in response.get_json()["recommendations"]]
    assert line["treatment_ids"] == returned
    assert line["status"] == 200 and line["condition_id"] == "C"
    assert line["model_version"] == response.get_json()["model"]["version"]
    assert line["time"].endswith("Z")


def test_failed_accesses_are_audited(client, clinician, admin, site):
    client.get("/v1/patients/NOBODY/recommendations", headers=clinician)
    client.get("/v1/patients/P0001/recommendations", headers=admin)
    client.get("/v1/patients/P0001/recommendations?k=0", headers=clinician)
    client.get("/v1/patients/P0001/recommendations")  # no principal: counted, not audited
    lines = audit_lines(site)
    assert [(line["status"], line["error_code"]) for line in lines] == [
        (404, "unknown_patient"),
        (403, "forbidden"),
        (400, "invalid_parameter"),
    ]
    assert lines[1]["principal"] == "ops" and lines[1]["treatment_ids"] == []


def test_new_patient_requests_are_audited_without_an_identifier(client, clinician, site):
    body = {"history": [{"treatment_id": "S0", "outcome": 1}], "conditions": ["C"]}
    client.post("/v1/recommendations", json=body, headers=clinician)
    [line] = audit_lines(site)
    assert line["patient_pseudonym"] is None and line["history_items"] == 1


def test_raw_patient_ids_appear_in_no_log_metric_or_audit_line(client, clinician, site, caplog):
    caplog.set_level("DEBUG")
    client.get("/v1/patients/P0203/recommendations", headers=clinician)
    client.get("/v1/patients/UNKNOWN-PATIENT-77/recommendations", headers=clinician)
    metrics = client.get("/metrics", headers=clinician).get_data(as_text=True)
    for text in ((site.root / "audit.log").read_text(), caplog.text, metrics):
        assert "P0203" not in text and "UNKNOWN-PATIENT-77" not in text


def test_non_patient_endpoints_are_not_audited(client, clinician, site):
    client.get("/v1/model", headers=clinician)
    client.get("/v1/treatments/T0/similar", headers=clinician)
    assert audit_lines(site) == []


def test_no_patient_data_without_an_audit_line(client, clinician, site):
    path = site.root / "audit.log"
    path.unlink()
    path.mkdir()  # the audit path can no longer be opened for appending
    response = client.get("/v1/patients/P0201/recommendations", headers=clinician)
    assert response.status_code == 503
    body = response.get_json()
    assert body["error"]["code"] == "audit_unavailable" and "recommendations" not in body
    assert client.get("/ready").status_code == 503
    path.rmdir()
    assert client.get("/v1/patients/P0201/recommendations", headers=clinician).status_code == 200
    assert len(audit_lines(site)) == 1


def test_every_line_is_fsynced(tmp_path, monkeypatch):
    synced = []

    def fsync(fd):  # only this test's files: apps of earlier tests may still fsync theirs
        if os.readlink(f"/proc/self/fd/{fd}").startswith(str(tmp_path)):
            synced.append(fd)

    monkeypatch.setattr(audit_module.os, "fsync", fsync)
    log = AuditLog(tmp_path / "audit.log")
    log.write({"event": "x"})
    log.write({"event": "y"})
    assert len(synced) == 2
    AuditLog(tmp_path / "other.log", fsync=False).write({"event": "z"})
    assert len(synced) == 2


def test_rotation_reopens_the_file_by_path(tmp_path):
    log = AuditLog(tmp_path / "audit.log")
    log.write({"n": 1})
    os.rename(tmp_path / "audit.log", tmp_path / "audit.log.1")  # what logrotate does
    log.write({"n": 2})
    (tmp_path / "audit.log").unlink()
    log.write({"n": 3})
    assert [json.loads(x)["n"] for x in (tmp_path / "audit.log.1").read_text().splitlines()] == [1]
    assert [json.loads(x)["n"] for x in (tmp_path / "audit.log").read_text().splitlines()] == [3]
    assert oct((tmp_path / "audit.log").stat().st_mode & 0o777) == "0o600"


def _append_many(path: str, writer: int) -> None:
    log = AuditLog(path, fsync=False)
    for number in range(300):
        log.write({"writer": writer, "n": number, "padding": "x" * 300})


def test_lines_from_concurrent_processes_never_interleave(tmp_path):
    path = str(tmp_path / "audit.log")
    context = multiprocessing.get_context("fork")
    processes = [context.Process(target=_append_many, args=(path, w)) for w in range(4)]
    for process in processes:
        process.start()
    for process in processes:
        process.join()
    lines = [json.loads(line) for line in open(path)]
    assert len(lines) == 1200
    for writer in range(4):
        assert [x["n"] for x in lines if x["writer"] == writer] == list(range(300))


def _append_inherited(log: AuditLog, writer: int) -> None:
    for number in range(300):
        log.write({"writer": writer, "n": number, "padding": "x" * 1500})


def test_workers_forked_with_an_open_log_never_lose_a_line(tmp_path):
    """gunicorn's workers inherit the master's log; sharing its open file would share its
    flock too, and a worker could take another's half-copied line for a torn tail."""
    log = AuditLog(tmp_path / "audit.log", fsync=False)
    log.write({"writer": -1, "n": 0})
    context = multiprocessing.get_context("fork")
    processes = [context.Process(target=_append_inherited, args=(log, w)) for w in range(4)]
    for process in processes:
        process.start()
    for process in processes:
        process.join()
    lines = [json.loads(line) for line in open(tmp_path / "audit.log")]
    assert len(lines) == 1201 and not (tmp_path / "audit.log.torn").exists()


def test_reloads_are_audited(client, admin, site):
    client.post("/v1/admin/reload", headers=admin)
    [line] = audit_lines(site)
    assert line["event"] == "model_reload" and line["principal"] == "ops"
    assert line["status"] == "reloaded"


def _write_synced(path: str, writer: int) -> None:
    log = AuditLog(path)
    for number in range(50):
        log.write({"writer": writer, "n": number})


def _forked_writers(path: str, target, first_argument, writers: int = 3) -> list[dict]:
    """Run ``target(first_argument, writer)`` in ``writers`` forked processes (as gunicorn
    forks its workers); each must exit 0. Returns the lines of the log at ``path``."""
    context = multiprocessing.get_context("fork")
    processes = [context.Process(target=target, args=(first_argument, w)) for w in range(writers)]
    for process in processes:
        process.start()
    for process in processes:
        process.join(60)
        assert process.exitcode == 0
    return [json.loads(line) for line in open(path)]


def test_workers_fsync_their_own_lines_without_waiting_for_each_other(tmp_path, monkeypatch):
    """Every line gets its own fsync, in forked workers too; no lock file is left beside the log."""
    path = str(tmp_path / "audit.log")
    lines = _forked_writers(path, _write_synced, path)
    assert sorted((x["writer"], x["n"]) for x in lines) == [
        (w, n) for w in range(3) for n in range(50)
    ]
    assert os.listdir(tmp_path) == ["audit.log"]
    synced = []
    monkeypatch.setattr(audit_module.os, "fsync", synced.append)
    log = AuditLog(path)
    log.write({"n": "last"})
    assert synced == [log._fd]


def test_lines_are_encoded_exactly_as_json_dumps_writes_them():
    records = [
        {
            "time": "2024-01-01T00:00:00.000Z",
            "event": "patient_data_access",
            "status": 200,
            "error_code": None,
            "treatment_ids": ["T1", "T2"],
            "history_items": 0,
            "ok": True,
        },
        {"condition_id": "été", "principal": "naïve\u2028"},  # non-ASCII: escaped
        {"condition_id": 'a\x00\x1f\x7f\n\t"\\/'},  # control characters and DEL
        {"cards": [{"nested": ["x", 1, None]}], "big": 2**70},  # beyond 64 bits
    ]
    for record in records:
        expected = (json.dumps(record, separators=(",", ":")) + "\n").encode("ascii")
        assert audit_module.encode_line(record) == expected


def test_a_deferred_fsync_runs_after_the_write_within_the_interval(tmp_path, monkeypatch):
    """With an interval the line is in the file when write returns and one background fsync
    covers a burst of lines, within the interval."""
    synced = []
    monkeypatch.setattr(audit_module.os, "fsync", lambda fd: synced.append(os.fstat(fd).st_ino))
    log = AuditLog(tmp_path / "audit.log", fsync_interval=0.5)
    for number in range(20):
        log.write({"n": number})
    assert len((tmp_path / "audit.log").read_text().splitlines()) == 20
    assert synced == []  # not on the request's path
    deadline = time.monotonic() + 5
    while not synced and time.monotonic() < deadline:
        time.sleep(0.01)
    assert synced == [(tmp_path / "audit.log").stat().st_ino]
    time.sleep(0.3)
    assert len(synced) == 1  # nothing written since: nothing more to sync
    log.write({"n": "later"})
    log.close()  # closing syncs what is still pending
    assert len(synced) == 2


def test_lines_are_appended_while_the_background_fsync_runs(tmp_path, monkeypatch):
    """The background fsync holds no lock the writers need: a slow disk delays durability,
    not the worker's other requests."""
    entered, release = threading.Event(), threading.Event()

    def slow_fsync(fd):
        entered.set()
        release.wait(10)

    monkeypatch.setattr(audit_module.os, "fsync", slow_fsync)
    log = AuditLog(tmp_path / "audit.log", fsync_interval=0.01)
    log.write({"n": 1})
    assert entered.wait(5)
    writer = threading.Thread(target=log.write, args=({"n": 2},))
    writer.start()
    writer.join(2)
    blocked = writer.is_alive()
    release.set()
    writer.join()
    assert not blocked
    assert len((tmp_path / "audit.log").read_text().splitlines()) == 2
    log.close()


def test_a_failed_deferred_fsync_closes_the_log(tmp_path, monkeypatch):
    def failing(fd):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(audit_module.os, "fsync", failing)
    log = AuditLog(tmp_path / "audit.log", fsync_interval=0.01)
    log.write({"n": 1})
    deadline = time.monotonic() + 5
    while log.writable() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not log.writable()
    with pytest.raises(AuditError, match="could not be made durable"):
        log.write({"n": 2})
    assert len((tmp_path / "audit.log").read_text().splitlines()) == 1


def test_rotation_syncs_the_old_file_before_leaving_it(tmp_path, monkeypatch):
    synced = []
    log = AuditLog(tmp_path / "audit.log", fsync_interval=60)  # the thread never gets there
    monkeypatch.setattr(audit_module.os, "fsync", lambda fd: synced.append(os.fstat(fd).st_ino))
    log.write({"n": 1})
    old = (tmp_path / "audit.log").stat().st_ino
    os.rename(tmp_path / "audit.log", tmp_path / "audit.log.1")
    log.write({"n": 2})
    assert synced == [old]


def _write_deferred(log: AuditLog, writer: int) -> None:
    synced = []
    audit_module.os.fsync = synced.append  # this child's own module: the parent is unaffected
    for number in range(50):
        log.write({"writer": writer, "n": number})
    deadline = time.monotonic() + 10
    while not synced and time.monotonic() < deadline:
        time.sleep(0.01)
    os._exit(0 if synced else 3)


def test_each_forked_worker_syncs_its_lines_in_its_own_thread(tmp_path):
    """A log opened before the fork (as gunicorn's preloaded master does) works in each
    worker: the worker starts its own background thread, with locks of its own."""
    path = str(tmp_path / "audit.log")
    opened = AuditLog(path, fsync_interval=0.05)
    opened.write({"writer": "master"})  # the master's thread exists, and may hold its lock
    lines = _forked_writers(path, _write_deferred, opened)
    assert sorted((x["writer"], x["n"]) for x in lines if x["writer"] != "master") == [
        (w, n) for w in range(3) for n in range(50)
    ]


def test_the_service_defers_the_fsync_when_configured(make_app, site, clinician, monkeypatch):
    """RECOMMENDER_AUDIT_FSYNC_INTERVAL_MS: the request returns before the fsync, which follows
    within the interval; a failed background fsync turns patient data away (503, not ready)."""
    synced = []
    monkeypatch.setattr(audit_module.os, "fsync", synced.append)
    app = make_app(AUDIT_FSYNC_INTERVAL_MS=50)
    client = app.test_client()
    assert client.get("/v1/patients/P0201/recommendations", headers=clinician).status_code == 200
    assert len(audit_lines(site)) == 1 and synced == []
    deadline = time.monotonic() + 5
    while not synced and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(synced) == 1

    def failing(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(audit_module.os, "fsync", failing)
    client.get("/v1/patients/P0201/recommendations", headers=clinician)
    while client.get("/ready").status_code == 200 and time.monotonic() < deadline + 5:
        time.sleep(0.01)
    assert client.get("/ready").status_code == 503
    response = client.get("/v1/patients/P0201/recommendations", headers=clinician)
    assert response.status_code == 503 and "recommendations" not in response.get_json()


def test_a_short_write_is_cut_back_and_refused(tmp_path, monkeypatch):
    # Simulated here (os.write keeps 10 bytes); tests/service/test_full_disk.py fills a tmpfs.
    log = AuditLog(tmp_path / "audit.log")
    log.write({"n": 1})
    real = os.write
    with monkeypatch.context() as patch:
        patch.setattr(jsonlines.os, "write", lambda fd, data: real(fd, bytes(data)[:10]))
        with pytest.raises(AuditError, match="short write"):
            log.write({"n": 2})
    log.write({"n": 3})
    lines = (tmp_path / "audit.log").read_text().splitlines()
    assert [json.loads(x)["n"] for x in lines] == [1, 3]


def test_a_torn_tail_is_moved_aside_on_open(tmp_path, caplog):
    path = tmp_path / "audit.log"
    path.write_text('{"n":1}\n{"n":2,"endpo')
    log = AuditLog(path)
    assert path.read_text() == '{"n":1}\n' and "torn line" in caplog.text
    assert (tmp_path / "audit.log.torn").read_text() == '{"n":2,"endpo\n'
    log.write({"n": 3})
    assert [json.loads(x)["n"] for x in path.read_text().splitlines()] == [1, 3]


def test_writable_is_a_real_append_check(tmp_path, monkeypatch):
    log = AuditLog(tmp_path / "audit.log")
    monkeypatch.setattr(audit_module, "PROBE_INTERVAL", 0.0)
    assert log.writable()
    with monkeypatch.context() as patch:  # a disk with room for no page
        patch.setattr(audit_module, "can_append", lambda folder: "short write (0 of 4096)")
        assert not log.writable()
    assert log.writable()
    assert audit_module.can_append(tmp_path) is None and list(tmp_path.iterdir()) == [log.path]
    assert "cannot" in audit_module.can_append(tmp_path / "missing")


def test_writable_costs_at_most_one_probe_a_second(tmp_path, monkeypatch):
    log = AuditLog(tmp_path / "audit.log")
    probes = []
    monkeypatch.setattr(audit_module, "can_append", lambda folder: probes.append(folder))
    assert all(log.writable() for _ in range(100)) and len(probes) == 1
