"""Hot reload in one process (admin endpoint) and the master-side logic used under gunicorn."""

from __future__ import annotations

import json
import shutil
import threading

import pytest

from service import ConfigError
from service import reload as reload_module

from .conftest import audit_lines


def _version(client, headers) -> str:
    return client.get("/v1/model", headers=headers).get_json()["version"]


def test_reload_swaps_in_another_artifact(client, admin, clinician, site):
    before = _version(client, clinician)
    response = client.post(
        "/v1/admin/reload", json={"artifact": str(site.other_artifact)}, headers=admin
    )
    assert response.status_code == 200
    body = response.get_json()
    assert body["status"] == "reloaded" and body["previous_version"] == before
    assert _version(client, clinician) == body["model_version"] != before
    assert client.get("/ready").get_json()["model_version"] == body["model_version"]


def test_reload_without_a_body_rereads_the_current_artifact(client, admin):
    response = client.post("/v1/admin/reload", headers=admin)
    assert response.status_code == 200 and response.get_json()["status"] == "reloaded"


def test_bad_artifacts_are_refused_and_the_old_model_keeps_serving(client, admin, clinician, site):
    before = _version(client, clinician)
    tampered = site.copy_artifact(site.other_artifact, "tampered")
    (tampered / "model" / "item_factors.npy").write_bytes(b"garbage")
    for artifact, message in (
        (tampered, "checksum"),
        (site.foreign_artifact, "key does not match"),
        (site.raw_artifact, "not pseudonymised"),
        (site.root / "missing", "no artifact folder"),
    ):
        response = client.post("/v1/admin/reload", json={"artifact": str(artifact)}, headers=admin)
        assert response.status_code == 422
        error = response.get_json()["error"]
        assert error["code"] == "reload_refused" and message in error["message"]
        assert _version(client, clinician) == before
        answer = client.get("/v1/patients/P0001/recommendations", headers=clinician)
        assert answer.status_code == 200
    reloads = [line["status"] for line in audit_lines(site) if line["event"] == "model_reload"]
    assert reloads == ["refused"] * 4


def test_paths_outside_the_artifact_root_are_refused(client, admin, tmp_path):
    response = client.post("/v1/admin/reload", json={"artifact": "/etc"}, headers=admin)
    assert response.status_code == 422
    assert "artifact root" in response.get_json()["error"]["message"]


def test_reload_body_validation(client, admin):
    assert client.post("/v1/admin/reload", json={"path": "x"}, headers=admin).status_code == 400
    assert client.post("/v1/admin/reload", json={"artifact": 3}, headers=admin).status_code == 400
    text = {**admin, "Content-Type": "text/plain"}
    assert client.post("/v1/admin/reload", data="x", headers=text).status_code == 415


def test_a_rotated_key_is_picked_up_with_the_artifact_trained_with_it(
    client, admin, clinician, site
):
    site.key.write_bytes(site.root.joinpath("foreign-key").read_bytes())  # rotate the key file
    response = client.post(
        "/v1/admin/reload", json={"artifact": str(site.foreign_artifact)}, headers=admin
    )
    assert response.status_code == 200
    assert client.get("/v1/patients/P0001/recommendations", headers=clinician).status_code == 200


def test_reload_rereads_the_tokens_file(client, admin, clinician, site):
    from service.tokens import add_token

    new_token = add_token(site.tokens, "ward-9", "clinician")
    new = {"Authorization": f"Bearer {new_token}"}
    assert client.get("/v1/model", headers=new).status_code == 401
    client.post("/v1/admin/reload", headers=admin)
    assert client.get("/v1/model", headers=new).status_code == 200


def test_a_broken_tokens_file_refuses_the_reload_and_keeps_the_old_tokens(
    client, admin, clinician, site
):
    """A failed revocation must not look like a reload: 422, nothing changed, and the body
    says which tokens are in force."""
    before = _version(client, clinician)
    site.tokens.write_text('{"tokens": [{"id": "ops"')  # torn by an editor
    response = client.post(
        "/v1/admin/reload", json={"artifact": str(site.other_artifact)}, headers=admin
    )
    assert response.status_code == 422
    error = response.get_json()["error"]
    assert "tokens file not reloaded, nothing changed" in error["message"]
    tokens = error["details"]["tokens"]
    assert tokens["status"] == "kept" and tokens["ids"] == ["ops", "ward-7"]
    assert tokens["count"] == 2 and tokens["loaded_at"]
    assert _version(client, clinician) == before  # the artifact was not swapped either
    assert client.get("/v1/model", headers=clinician).status_code == 200  # old tokens work
    assert str(site.root) not in response.get_data(as_text=True)
    lines = [x for x in audit_lines(site) if x["event"] == "model_reload"]
    assert [x["status"] for x in lines] == ["refused"]


def test_a_reload_says_which_tokens_are_in_force(client, admin):
    response = client.post("/v1/admin/reload", headers=admin)
    assert response.status_code == 200
    tokens = response.get_json()["tokens"]
    assert tokens["status"] == "reloaded" and tokens["ids"] == ["ops", "ward-7"]


def test_reload_answers_carry_no_absolute_path(client, admin, site):
    tampered = site.copy_artifact(site.other_artifact, "tampered")
    (tampered / "model" / "item_factors.npy").write_bytes(b"garbage")
    for body in ({"artifact": "tampered"}, {"artifact": "/etc"}, {"artifact": "missing"}, None):
        response = client.post("/v1/admin/reload", json=body, headers=admin)
        text = response.get_data(as_text=True)
        assert str(site.root) not in text and "/tmp/" not in text and "/etc" not in text, text
    response = client.post("/v1/admin/reload", json={"artifact": "tampered"}, headers=admin)
    details = response.get_json()["error"]["details"]
    assert details["artifact"] == "tampered"
    assert details["error"].startswith("tampered: model/item_factors.npy does not match")


def test_requests_during_reloads_never_fail(app, admin, clinician, site):
    failures, stop = [], threading.Event()

    def load():
        client = app.test_client()
        while not stop.is_set():
            response = client.get(
                "/v1/patients/P0001/recommendations?condition=C", headers=clinician
            )
            if response.status_code != 200:
                failures.append(response.status_code)

    threads = [threading.Thread(target=load) for _ in range(3)]
    for thread in threads:
        thread.start()
    client = app.test_client()
    for artifact in (site.other_artifact, site.artifact) * 3:
        assert (
            client.post(
                "/v1/admin/reload", json={"artifact": str(artifact)}, headers=admin
            ).status_code
            == 200
        )
    stop.set()
    for thread in threads:
        thread.join()
    assert failures == []


# --- the master side (gunicorn) -------------------------------------------------------------------


def _control(tmp_path):
    control = tmp_path / "control"
    (control / "requests").mkdir(parents=True)
    (control / "results").mkdir()
    return control


def test_master_reload_answers_each_request_and_restarts_workers_once(app, site, tmp_path):
    runtime, control, restarts = app.extensions["recommender"], _control(tmp_path), []
    (control / "requests" / "001-a.json").write_text(
        json.dumps({"artifact": str(site.other_artifact)})
    )
    (control / "requests" / "002-b.json").write_text(
        json.dumps({"artifact": str(site.root / "missing")})
    )
    reload_module.master_reload(runtime, control, lambda: restarts.append(1))
    assert restarts == [1]
    assert '"status": "reloaded"' in (control / "results" / "001-a.json").read_text()
    assert '"status": "refused"' in (control / "results" / "002-b.json").read_text()
    assert not list((control / "requests").iterdir())
    assert runtime.store.current.path == site.other_artifact


def test_a_refused_sighup_does_not_restart_workers(app, site, tmp_path):
    runtime, control, restarts = app.extensions["recommender"], _control(tmp_path), []
    (site.artifact / "manifest.json").write_text("{}")  # the served folder is now broken
    reload_module.master_reload(runtime, control, lambda: restarts.append(1))
    assert restarts == []
    assert runtime.store.current.path == site.artifact  # still the snapshot loaded at start


def test_an_unexpected_error_while_loading_keeps_the_master_alive(app, tmp_path, monkeypatch):
    runtime, control = app.extensions["recommender"], _control(tmp_path)

    def explode(artifact=None):
        raise MemoryError("simulated")

    monkeypatch.setattr(runtime.store, "reload", explode)
    (control / "requests" / "001-a.json").write_text("{}")
    reload_module.master_reload(runtime, control, lambda: None)
    assert "unexpected error" in (control / "results" / "001-a.json").read_text()


def test_the_worker_side_waits_for_the_masters_answer(tmp_path, monkeypatch):
    control = _control(tmp_path)
    sent = []

    def fake_kill(pid, sig):
        sent.append((pid, sig))
        [request] = (control / "requests").glob("*.json")
        (control / "results" / request.name).write_text('{"status": "reloaded"}')

    monkeypatch.setattr(reload_module.os, "kill", fake_kill)
    assert reload_module.request_fleet_reload(control, 4321, None, 2.0) == {"status": "reloaded"}
    assert sent[0][0] == 4321
    monkeypatch.setattr(reload_module.os, "kill", lambda pid, sig: None)
    assert reload_module.request_fleet_reload(control, 4321, None, 0.1) is None  # timed out


def test_a_loaded_model_is_warmed_before_it_serves(site):
    """What ALS derives for explanations exists before the first request (so gunicorn's
    workers share the master's copy) and equals what a cold model derives on first use."""
    import numpy as np

    from recommender.data.patient import Query
    from recommender.data.pseudonym import Pseudonymizer
    from recommender.models.persistence import load_artifact
    from service.model_store import load_served

    served = load_served(site.artifact, site.key)
    assert {"_solver_cache", "_gram_base", "_shrunk_factors"} <= set(vars(served.model))
    assert vars(served.model.dataset_)["_evidence_cache"]  # explanations' evidence, shared too
    key = Pseudonymizer.from_file(site.key)
    cold = load_artifact(site.artifact, pseudonymizer=key, smoke=False).model  # nothing ran
    assert "_shrunk_factors" not in vars(cold)
    query = Query.known(cold.dataset_, np.array([0]), np.array([-1]))
    treatments = np.arange(cold.dataset_.n_treatments)
    assert served.model.contributions(query, treatments) == cold.contributions(query, treatments)


def test_artifacts_with_intact_files_but_bad_content_are_refused(client, admin, clinician, site):
    """Item factors of the wrong shape, and all-NaN factors, with every checksum re-signed:
    only the content verification can refuse them; the old model keeps answering the same."""
    from tests.artifact_edits import misshapen_factors, nan_factors

    url = "/v1/patients/P0201/recommendations?condition=C&k=2"
    before = client.get(url, headers=clinician).get_json()
    for edit, message in (
        (misshapen_factors, "model/item_factors.npy: shape check failed"),
        (nan_factors, "model/item_factors.npy: finite values check failed"),
    ):
        bad = site.copy_artifact(site.other_artifact, edit.__name__)
        edit(bad)
        response = client.post("/v1/admin/reload", json={"artifact": bad.name}, headers=admin)
        assert response.status_code == 422, response.get_json()
        assert message in response.get_json()["error"]["message"]
        assert client.get(url, headers=clinician).get_json() == before
        assert client.get("/ready").status_code == 200


def test_ready_is_503_when_the_served_model_cannot_answer_until_a_reload(
    client, admin, clinician, site
):
    import numpy as np

    runtime = client.application.extensions["recommender"]
    served = runtime.store.current
    served.model.user_factors_ = np.full_like(served.model.user_factors_, np.nan)  # broke later
    response = client.get("/ready")
    assert response.status_code == 503
    error = response.get_json()["error"]
    assert error["code"] == "not_ready" and "cannot answer" in error["message"]
    assert "NaN" in error["message"] and str(site.root) not in error["message"]
    assert client.get("/ready").status_code == 503  # cached for this snapshot
    assert client.post("/v1/admin/reload", headers=admin).status_code == 200
    assert client.get("/ready").status_code == 200  # re-run for the new one


def _link_out(site, name: str) -> tuple:
    """A copy of the other artifact whose factors file is a link to an identical file outside
    the artifact root (its checksum still matches)."""
    linked = site.copy_artifact(site.other_artifact, name)
    outside = site.root.parent / f"outside-{name}.npy"
    factors = linked / "model" / "item_factors.npy"
    shutil.copy(factors, outside)
    factors.unlink()
    factors.symlink_to(outside)
    return linked, outside


def test_an_artifact_file_linked_outside_is_refused_at_reload(client, admin, clinician, site):
    before = _version(client, clinician)
    linked, outside = _link_out(site, "linked")
    response = client.post("/v1/admin/reload", json={"artifact": str(linked)}, headers=admin)
    assert response.status_code == 422
    message = response.get_json()["error"]["message"]
    assert "model/item_factors.npy resolves to" in message and "outside the artifact" in message
    assert _version(client, clinician) == before


def test_an_artifact_file_linked_outside_is_refused_at_start(make_app, site):
    linked, _ = _link_out(site, "linked-start")
    with pytest.raises(ConfigError, match="outside the artifact folder"):
        make_app(ARTIFACT=str(linked))
