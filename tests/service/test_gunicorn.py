"""Integration: ``recommender serve`` runs the real gunicorn on a free loopback port.

One server for the module (2 workers, preloaded): answers over HTTP, metrics summed over the
workers, audit lines from the workers, hot reload by SIGHUP and by the admin endpoint while
requests keep coming (none may fail), and a refused artifact that leaves the old model serving.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

from .conftest import Site

pytestmark = pytest.mark.timeout(120)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def call(
    port: int,
    method: str,
    path: str,
    token: str | None = None,
    body: dict | None = None,
    timeout: float = 10,
) -> tuple[int, dict | str]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    data = None
    if body is not None:
        data, headers["Content-Type"] = json.dumps(body), "application/json"
    try:
        connection.request(method, path, body=data, headers=headers)
        response = connection.getresponse()
        text = response.read().decode()
    finally:
        connection.close()
    is_json = response.getheader("Content-Type", "").startswith("application/json")
    return response.status, json.loads(text) if is_json else text


def environment(site: Site, **extra) -> dict:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("RECOMMENDER_") and k != "PROMETHEUS_MULTIPROC_DIR"
    }
    config = site.config()
    env.update(
        RECOMMENDER_ARTIFACT=config["ARTIFACT"],
        RECOMMENDER_API_TOKENS_FILE=config["API_TOKENS_FILE"],
        RECOMMENDER_PSEUDONYM_KEY_FILE=config["PSEUDONYM_KEY_FILE"],
        RECOMMENDER_AUDIT_LOG=config["AUDIT_LOG"],
        RECOMMENDER_ARTIFACT_ROOT=str(site.root),
    )
    env.update(extra)
    return env


class Server:
    """A ``recommender serve`` process this test started (stopped by its own pid)."""

    def __init__(self, site: Site, workers: int = 2, **env):
        self.port = free_port()
        self.log = open(site.root / f"server-{self.port}.log", "w+")
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "recommender",
                "serve",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--workers",
                str(workers),
            ],
            env=environment(site, **env),
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited: {self.output()}")
            try:
                if call(self.port, "GET", "/health", timeout=1)[0] == 200:
                    return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"server did not start: {self.output()}")

    def output(self) -> str:
        self.log.flush()
        self.log.seek(0)
        return self.log.read()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:  # longer than gunicorn's graceful_timeout, so the master reaps every worker
                self.process.wait(45)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()


def copy_site(site_template: Site, root) -> Site:
    """A private copy of the site under ``root`` (a server writes its audit log there)."""
    shutil.copytree(site_template.root, root)
    return Site(
        root=root,
        artifact=root / "artifact",
        other_artifact=root / "artifact-other",
        foreign_artifact=root / "artifact-foreign",
        raw_artifact=root / "artifact-raw",
        key=root / "key",
        tokens=root / "tokens.json",
        clinician=site_template.clinician,
        admin=site_template.admin,
        truth=site_template.truth,
    )


@pytest.fixture(scope="module")
def served(site_template, tmp_path_factory):
    site = copy_site(site_template, tmp_path_factory.mktemp("served") / "site")
    server = Server(site)
    yield site, server
    server.stop()


def _versions(port: int, token: str, n: int = 12) -> set[str]:
    return {call(port, "GET", "/v1/model", token)[1]["version"] for _ in range(n)}


def test_answers_over_http(served):
    site, server = served
    status, body = call(
        server.port, "GET", "/v1/patients/P0201/recommendations?condition=C&k=2", site.clinician
    )
    assert status == 200 and body["recommendations"][0]["treatment_id"] == site.truth["P0201"]
    assert call(server.port, "GET", "/v1/patients/P0201/recommendations")[0] == 401
    status, body = call(
        server.port,
        "POST",
        "/v1/recommendations",
        site.clinician,
        {"history": [{"treatment_id": "S1", "outcome": "responded"}], "condition": "C"},
    )
    assert status == 200 and body["recommendations"][0]["treatment_id"] == "T1"
    status, body = call(server.port, "GET", "/nowhere", site.clinician)
    assert status == 404 and body["error"]["code"] == "not_found"


def test_metrics_add_up_over_the_workers_and_audit_lines_come_from_them(served):
    site, server = served
    before = (site.root / "audit.log").read_text().count("\n")
    for _ in range(20):
        call(server.port, "GET", "/v1/patients/P0001/recommendations?k=1", site.clinician)
    status, text = call(server.port, "GET", "/metrics", site.admin)
    prefix = (
        'recommender_http_requests_total{endpoint="api.patient_recommendations",'
        'method="GET",status="200"}'
    )
    line = next(x for x in text.splitlines() if x.startswith(prefix))
    assert float(line.split()[-1]) >= 20  # every worker's requests, whichever worker answers
    lines = (site.root / "audit.log").read_text().splitlines()[before:]
    assert len(lines) == 20 and all(json.loads(x)["status"] == 200 for x in lines)
    assert "P0001" not in server.output()  # no raw id in the server's own logs either


class Load:
    """Threads calling the recommendation endpoint until stopped; records every failure."""

    def __init__(self, port: int, token: str, threads: int = 4):
        self.port, self.token, self.stop_flag = port, token, threading.Event()
        self.ok, self.failures = 0, []
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self._run) for _ in range(threads)]
        for thread in self.threads:
            thread.start()

    def _run(self):
        while not self.stop_flag.is_set():
            try:
                status, _ = call(
                    self.port, "GET", "/v1/patients/P0001/recommendations?k=2", self.token
                )
            except OSError as exc:
                status = repr(exc)
            with self.lock:
                if status == 200:
                    self.ok += 1
                else:
                    self.failures.append(status)

    def stop(self) -> tuple[int, list]:
        self.stop_flag.set()
        for thread in self.threads:
            thread.join()
        return self.ok, self.failures


def _wait_for(predicate, seconds: float = 20) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return False


def test_admin_reload_switches_every_worker_under_load_without_a_failed_request(served):
    site, server = served
    old = _versions(server.port, site.clinician)
    load = Load(server.port, site.clinician)
    time.sleep(0.5)
    status, body = call(
        server.port,
        "POST",
        "/v1/admin/reload",
        site.admin,
        {"artifact": "artifact-other"},
        timeout=60,
    )
    assert status == 200 and body["status"] == "reloaded", body
    assert _wait_for(lambda: _versions(server.port, site.clinician) == {body["model_version"]})
    status, body = call(
        server.port, "POST", "/v1/admin/reload", site.admin, {"artifact": "artifact"}, timeout=60
    )  # and back
    assert status == 200
    time.sleep(0.5)
    ok, failures = load.stop()
    assert failures == [] and ok > 20
    assert _wait_for(lambda: _versions(server.port, site.clinician) == old)


def test_sighup_reloads_the_artifact_folder_replaced_in_place(served):
    site, server = served
    old = _versions(server.port, site.clinician)
    load = Load(server.port, site.clinician)
    staged = site.root / ".staged"
    shutil.copytree(site.other_artifact, staged)
    retired = site.root / ".retired"
    os.rename(site.artifact, retired)  # what `recommender train --out` does: swap whole folders
    os.rename(staged, site.artifact)
    server.process.send_signal(signal.SIGHUP)
    assert _wait_for(lambda: _versions(server.port, site.clinician) != old)
    ok, failures = load.stop()
    assert failures == [] and ok > 10
    new = _versions(server.port, site.clinician)
    assert len(new) == 1 and new != old
    os.rename(site.artifact, staged)  # restore for the next test
    os.rename(retired, site.artifact)
    server.process.send_signal(signal.SIGHUP)
    assert _wait_for(lambda: _versions(server.port, site.clinician) == old)
    shutil.rmtree(staged)


def test_a_bad_artifact_is_refused_and_the_old_model_keeps_serving(served):
    site, server = served
    old = _versions(server.port, site.clinician)
    status, body = call(
        server.port,
        "POST",
        "/v1/admin/reload",
        site.admin,
        {"artifact": "artifact-foreign"},
        timeout=60,
    )
    assert status == 422 and "key does not match" in body["error"]["message"]
    broken = site.copy_artifact(site.artifact, f"broken-{time.monotonic_ns()}")
    (broken / "manifest.json.sha256").write_text("0" * 64)
    status, body = call(
        server.port, "POST", "/v1/admin/reload", site.admin, {"artifact": broken.name}, timeout=60
    )
    assert status == 422 and "checksum" in body["error"]["message"]
    assert _versions(server.port, site.clinician) == old
    assert call(server.port, "GET", "/ready")[0] == 200
    assert server.process.poll() is None


def test_startup_fails_with_one_clear_line_on_a_key_mismatch(site):
    env = environment(site, RECOMMENDER_ARTIFACT=str(site.foreign_artifact))
    command = [sys.executable, "-m", "recommender", "serve", "--port", str(free_port())]
    result = subprocess.run(
        command, env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 2
    assert result.stderr.startswith("error: cannot serve the artifact")
    assert "pseudonymisation key does not match" in result.stderr
    assert "Traceback" not in result.stderr


def test_the_default_worker_count_is_one_more_than_the_usable_cores(monkeypatch, tmp_path):
    """A worker waiting for its audit fsync leaves its core to the spare one."""
    from recommender.cli.serve import conf_file

    monkeypatch.delenv("RECOMMENDER_WORKERS", raising=False)
    import logging.config

    import prometheus_client.values  # noqa: F401 - imported with the variable set, it would
    # pick its multiprocess value class for the rest of the session (the next app fails)

    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))  # no temporary folder made
    monkeypatch.setattr(logging.config, "dictConfig", lambda config: None)  # keep test logging
    settings = {"__file__": str(conf_file())}
    exec(compile(conf_file().read_text(), str(conf_file()), "exec"), settings)
    assert settings["workers"] == len(os.sched_getaffinity(0)) + 1
    monkeypatch.setenv("RECOMMENDER_WORKERS", "5")
    exec(compile(conf_file().read_text(), str(conf_file()), "exec"), settings)
    assert settings["workers"] == 5


def test_a_deferred_audit_fsync_serves_and_reloads_under_load(site_template, tmp_path):
    """RECOMMENDER_AUDIT_FSYNC_INTERVAL_MS under gunicorn: every request gets its audit line,
    through a reload that forks fresh workers from the master (they inherit the log it opened),
    and no request fails."""
    site = copy_site(site_template, tmp_path / "site")
    server = Server(site, RECOMMENDER_AUDIT_FSYNC_INTERVAL_MS="20")
    try:
        load = Load(server.port, site.clinician)
        time.sleep(0.5)
        status, body = call(server.port, "POST", "/v1/admin/reload", site.admin, timeout=60)
        assert status == 200 and body["status"] == "reloaded", body
        time.sleep(0.5)
        ok, failures = load.stop()
        assert failures == [] and ok > 20
        assert call(server.port, "GET", "/ready")[0] == 200
        lines = [json.loads(x) for x in (site.root / "audit.log").read_text().splitlines()]
        assert sum(x.get("event") == "patient_data_access" for x in lines) == ok
    finally:
        server.stop()
