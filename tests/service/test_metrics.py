"""/metrics: Prometheus text with per-endpoint counts and latency, and the model version."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families


def _samples(client, headers) -> dict:
    response = client.get("/metrics", headers=headers)
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(response.get_data(as_text=True)):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def test_requests_and_latency_per_endpoint(client, clinician):
    for _ in range(3):
        client.get("/v1/patients/P0001/recommendations", headers=clinician)
    client.get("/v1/patients/NOBODY/recommendations", headers=clinician)
    client.get("/no/such/path")
    samples = _samples(client, clinician)
    endpoint = "api.patient_recommendations"
    assert (
        samples[
            (
                "recommender_http_requests_total",
                (("endpoint", endpoint), ("method", "GET"), ("status", "200")),
            )
        ]
        == 3
    )
    assert (
        samples[
            (
                "recommender_http_requests_total",
                (("endpoint", endpoint), ("method", "GET"), ("status", "404")),
            )
        ]
        == 1
    )
    count = ("recommender_http_request_duration_seconds_count", (("endpoint", endpoint),))
    assert samples[count] == 4
    assert (
        samples[
            (
                "recommender_http_request_duration_seconds_bucket",
                (("endpoint", endpoint), ("le", "+Inf")),
            )
        ]
        == 4
    )
    assert any(
        labels == (("endpoint", "unmatched"), ("method", "GET"), ("status", "404"))
        for name, labels in samples
        if name == "recommender_http_requests_total"
    )


def test_the_model_version_and_reloads(client, clinician, admin, site):
    client.post("/v1/admin/reload", json={"artifact": str(site.other_artifact)}, headers=admin)
    client.post("/v1/admin/reload", json={"artifact": str(site.raw_artifact)}, headers=admin)
    version = client.get("/v1/model", headers=clinician).get_json()["version"]
    samples = _samples(client, clinician)
    [info] = [labels for name, labels in samples if name == "recommender_model_info"]
    assert dict(info)["version"] == version and dict(info)["type"] == "als"
    assert samples[("recommender_model_reloads_total", (("result", "ok"),))] == 1
    assert samples[("recommender_model_reloads_total", (("result", "refused"),))] == 1
    assert samples[("recommender_model_loaded_timestamp_seconds", ())] > 0


def test_labels_hold_no_identifier(client, clinician):
    client.get("/v1/patients/P0042/recommendations", headers=clinician)
    client.get("/v1/treatments/T0/similar", headers=clinician)
    text = client.get("/metrics", headers=clinician).get_data(as_text=True)
    assert "P0042" not in text and 'T0"' not in text


def test_made_up_methods_share_one_series(client, clinician):
    """The issue's probe: 5,300 requests with invented methods each added a series."""
    for number in range(40):
        client.open("/v1/model", method=f"X{number}")
        client.open("/no/such/path", method=f"Y{number}", headers=clinician)
    client.open("/v1/model", method="PATCH", headers=clinician)
    samples = _samples(client, clinician)
    methods = {
        dict(labels)["method"]
        for name, labels in samples
        if name == "recommender_http_requests_total"
    }
    assert methods <= {"GET", "PATCH", "other"} and "other" in methods
    other = sum(
        value
        for (name, labels), value in samples.items()
        if name == "recommender_http_requests_total" and dict(labels)["method"] == "other"
    )
    assert other == 80


def test_labels_outside_their_sets_are_counted_as_other(app):
    metrics = app.extensions["recommender"].metrics
    metrics.observe("ops.health", "BREW", 999, 0.001)
    metrics.auth_failure("a reason nobody listed")
    text = metrics.render().decode()
    assert 'method="other",status="other"' in text and 'reason="other"' in text
    # label values are quoted: a bare 999 may occur in a timestamp sample
    assert "BREW" not in text and '"999"' not in text and "nobody" not in text
