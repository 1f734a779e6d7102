"""The console in a real browser: ``recommender serve`` on a loopback port, driven by headless
Chromium (Playwright). Sign in, open a patient, record a decision, check what the page shows
against the REST answer, a form without its CSRF token refused, the audit lines, the keyboard,
the Content-Security-Policy (no violation, the script runs) and a tablet width.

Skipped, with the reason, where Chromium or Playwright is missing (``tests/service/browser.py``).
"""

from __future__ import annotations

import json

import pytest

from . import browser
from .test_gunicorn import Server, call, copy_site

if browser.missing():
    pytest.skip(browser.missing(), allow_module_level=True)

from playwright.sync_api import sync_playwright  # noqa: E402

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def served(site_template, tmp_path_factory):
    site = copy_site(site_template, tmp_path_factory.mktemp("console") / "site")
    server = Server(site, workers=1)
    yield site, server
    server.stop()


@pytest.fixture(scope="module")
def chromium():
    with sync_playwright() as playwright:
        instance = browser.launch(playwright)
        yield instance
        instance.close()


@pytest.fixture
def page(chromium, served):
    """A fresh browser context (no cookie) that records Content-Security-Policy violations."""
    context = chromium.new_context(viewport={"width": 1280, "height": 900})
    tab = context.new_page()
    tab.violations = []
    tab.on(
        "console",
        lambda message: (
            tab.violations.append(message.text)
            if "Content Security Policy" in message.text
            else None
        ),
    )
    yield tab
    context.close()


def base(served) -> str:
    return f"http://127.0.0.1:{served[1].port}"


def sign_in(page, served, token: str) -> None:
    page.goto(base(served) + "/console/login")
    page.get_by_label("API token").fill(token)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url("**/console/")


def audit(site) -> list[dict]:
    return [json.loads(line) for line in (site.root / "audit.log").read_text().splitlines()]


def test_sign_in_open_a_patient_and_record_a_decision(page, served):
    site, server = served
    sign_in(page, served, site.clinician)
    assert "Signed in as ward-7" in page.locator("header").inner_text()
    page.get_by_label("Patient id").fill("P0002")
    page.get_by_role("button", name="Open").click()
    page.wait_for_url("**/console/patients/P0002")
    page.get_by_label("Condition being treated").select_option("C")
    page.get_by_label("Therapies shown").fill("3")
    page.get_by_label("Include therapies already tried").check()
    page.get_by_role("button", name="Show").click()
    page.wait_for_url("**/console/patients/P0002?condition=C&k=3&include_tried=true")

    status, body = call(
        server.port,
        "GET",
        "/v1/patients/P0002/recommendations?condition=C&k=3&include_tried=true",
        site.clinician,
    )
    assert status == 200
    cards = page.locator("li.therapy")
    assert cards.count() == len(body["recommendations"])
    for number, item in enumerate(body["recommendations"]):
        card = cards.nth(number)
        assert card.locator(".rank").inner_text() == str(item["rank"])
        assert item["treatment_id"] in card.locator("h3").inner_text()
        assert f"Score {item['score']:.3f}" in card.inner_text()
        evidence = item["explanation"]["evidence"]
        assert f"{evidence['outcomes_recorded']} outcomes recorded" in card.inner_text()
        assert card.locator("svg.interval").count() == 1  # the Wilson interval, drawn
    excluded = page.locator("table.excluded tbody tr")
    assert excluded.count() == len(body["excluded"])
    assert "contraindicated by ALG" in page.locator("table.excluded").inner_text()
    assert body["model"]["disclaimer"] in page.locator(".disclaimer").inner_text()

    first = cards.nth(0)
    first.locator("summary").click()
    first.get_by_label("Override", exact=True).check()
    first.get_by_label("Reason (needed to override)").select_option("patient-preference")
    first.get_by_role("button", name="Record decision").click()
    page.wait_for_selector(".notice")
    assert "overridden" in page.locator(".notice").inner_text()
    assert page.url.endswith("/console/patients/P0002?condition=C&k=3&include_tried=true")

    records = (site.root / "feedback.jsonl").read_text().splitlines()
    stored = json.loads(records[-1])
    assert stored["source"] == "console" and stored["principal"] == "ward-7"
    assert stored["treatment_id"] == body["recommendations"][0]["treatment_id"]
    assert stored["reason"] == "Patient preference" and stored["patient"] != "P0002"
    lines = audit(site)
    views = [x for x in lines if x["endpoint"] == "console.patient" and x["status"] == 200]
    decision = [x for x in lines if x["endpoint"] == "console.feedback"][-1]
    assert views and views[-1]["principal"] == "ward-7" and views[-1]["condition_id"] == "C"
    assert views[-1]["patient_pseudonym"] == stored["patient"]
    assert decision["decision"] == "overridden" and decision["status"] == 303
    text = (site.root / "audit.log").read_text() + server.output()
    assert site.clinician not in text and "recommender_console=" not in text
    assert "P0002" not in (site.root / "audit.log").read_text()
    assert page.violations == []


def test_a_form_without_its_csrf_token_is_refused(page, served):
    site, _ = served
    sign_in(page, served, site.clinician)
    page.goto(base(served) + "/console/patients/P0205?condition=C&k=2")
    before = (site.root / "feedback.jsonl").read_text()
    form = page.locator("form.decision").first
    form.locator('input[name="csrf_token"]').evaluate("element => element.remove()")
    page.locator("li.therapy summary").first.click()
    form.get_by_label("Accept", exact=True).check()
    form.get_by_role("button", name="Record decision").click()
    page.wait_for_selector("h1")
    assert page.locator("h1").inner_text() == "Not allowed"
    assert "CSRF token" in page.locator(".error").inner_text()
    response = page.request.post(
        base(served) + "/console/logout", form={"csrf_token": "guessed"}, max_redirects=0
    )
    assert response.status == 403
    assert (site.root / "feedback.jsonl").read_text() == before
    assert audit(site)[-1]["error_code"] == "csrf_failed"


def test_keyboard_only_and_the_script_under_the_policy(page, served):
    site, _ = served
    page.goto(base(served) + "/console/login")
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent") == "Skip to content"
    page.keyboard.press("Tab")
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.id") == "token"
    page.keyboard.type(site.clinician)
    page.keyboard.press("Enter")
    page.wait_for_url("**/console/")
    page.goto(base(served) + "/console/new-patient")
    rows = page.locator("tr.history-row")
    assert rows.count() == 5
    page.get_by_role("button", name="Add a row").click()  # shown by console.js: it ran
    assert rows.count() == 6
    assert page.evaluate("document.activeElement.id") == "history-5-treatment"
    page.keyboard.type("S1")
    page.locator("#history-5-outcome").select_option("responded")
    page.get_by_label("Condition being treated").select_option("C")
    page.get_by_role("button", name="Suggest therapies").click()
    page.wait_for_selector("li.therapy")
    assert page.locator("li.therapy .rank").first.inner_text() == "1"
    assert "T1" in page.locator("li.therapy h3").first.inner_text()
    assert page.violations == []


@pytest.mark.parametrize("width", [1280, 820])
def test_readable_at_laptop_and_tablet_widths(page, served, width, tmp_path):
    site, _ = served
    sign_in(page, served, site.clinician)
    page.set_viewport_size({"width": width, "height": 1000})
    for path in (
        "/console/patients/P0201?condition=C&k=3",
        "/console/new-patient",
        "/console/model",
    ):
        page.goto(base(served) + path)
        overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 0, f"{path} scrolls sideways at {width}px"
    page.screenshot(path=str(tmp_path / f"model-{width}.png"), full_page=True)
    assert page.violations == []
