"""Screenshots of the clinician console for the docs (``docs/images/console-*.png``).

Builds a small site under a temporary folder - the observational synthetic cohort, the outcome
model trained with a fresh key, its subgroup audit and off-policy evaluation kept with the
artifact (``ARTIFACT/reports/``) - serves it with ``recommender serve`` on a free loopback port
and photographs the login, patient and model pages in headless Chromium (Debian's, via
Playwright; see ``tests/service/browser.py``). About two minutes on two cores::

    python docs/console_screenshots.py --out docs/images
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from recommender.data.pseudonym import Pseudonymizer, create_key_file  # noqa: E402
from recommender.data.synthetic.observational import (  # noqa: E402
    generate_observational,
    write_observational,
)
from recommender.training import train_artifact  # noqa: E402
from service.tokens import add_token  # noqa: E402
from tests.service import browser  # noqa: E402
from tests.service.test_gunicorn import free_port  # noqa: E402


def recommender(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "recommender", *args], check=True, cwd=ROOT)


def build_site(root: Path) -> tuple[Path, Path, str, str]:
    cohort = generate_observational(1500, seed=2)
    write_observational(cohort, root / "data")
    key = create_key_file(root / "key")
    artifact = train_artifact(
        root / "data",
        root / "model",
        kind="outcome",
        params={"n_bags": 4, "n_trees": 40},
        pseudonymizer=Pseudonymizer.from_file(key),
    )
    reports = artifact / "reports"
    recommender(
        "audit", "--artifact", str(artifact), "--data", str(root / "data"), "--by", "sex,age_band",
        "--pseudonym-key-file", str(key), "--out", str(reports / "audit"),
    )  # fmt: skip
    recommender(
        "evaluate", "--data", str(root / "data"), "--models", "condition-popular,outcome",
        "--ope", "--bootstrap", "200", "--no-planted", "--out", str(reports / "evaluation"),
    )  # fmt: skip
    token = add_token(root / "tokens.json", "dr-lee", "clinician")
    held = cohort.held_out.iloc[0]
    return (
        artifact,
        key,
        token,
        f"/console/patients/{held.patient_id}?condition={held.condition_id}&k=3",
    )


def serve(root: Path, artifact: Path, key: Path) -> tuple[subprocess.Popen, int]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("RECOMMENDER_")}
    env.update(
        RECOMMENDER_API_TOKENS_FILE=str(root / "tokens.json"),
        RECOMMENDER_PSEUDONYM_KEY_FILE=str(key),
        RECOMMENDER_AUDIT_LOG=str(root / "audit.log"),
        PYTHONPATH=str(ROOT),
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "recommender", "serve", "--artifact", str(artifact),
         "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        env=env, cwd=ROOT,
    )  # fmt: skip
    for _ in range(300):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1)
            return process, port
        except OSError:
            time.sleep(0.2)
    process.terminate()
    raise SystemExit("the server did not start")


def photograph(port: int, token: str, patient_path: str, out: Path) -> None:
    from playwright.sync_api import sync_playwright

    base = f"http://127.0.0.1:{port}"
    with sync_playwright() as playwright:
        chromium = browser.launch(playwright)
        page = chromium.new_page(viewport={"width": 1280, "height": 860})
        page.goto(base + "/console/login")
        page.screenshot(path=str(out / "console-login.png"))
        page.get_by_label("API token").fill(token)
        page.get_by_role("button", name="Sign in").click()
        page.wait_for_url("**/console/")
        page.goto(base + patient_path)
        page.locator("li.therapy summary").first.click()
        page.screenshot(path=str(out / "console-patient.png"), full_page=True)
        page.goto(base + "/console/model")
        page.screenshot(path=str(out / "console-model.png"), full_page=True)
        page.set_viewport_size({"width": 820, "height": 1180})
        page.goto(base + patient_path)
        page.screenshot(path=str(out / "console-patient-tablet.png"))
        chromium.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "images")
    args = parser.parse_args(argv)
    reason = browser.missing()
    if reason:
        parser.error(reason)
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        artifact, key, token, patient_path = build_site(root)
        process, port = serve(root, artifact, key)
        try:
            photograph(port, token, patient_path, args.out)
        finally:
            process.terminate()
            process.wait(60)
    print(f"screenshots in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
