"""The console's pages (blueprint ``console``, under ``/console``).

Views are thin: they parse the form or query, ask :mod:`service.recommendations` (the REST API's
own path) or the feedback store, and render a template with :mod:`.present`. Patient-data views
are marked :func:`~service.auth.patient_data`, so the middleware writes their audit line exactly
as for the API (fail-closed). Every POST must carry the session's CSRF token (403 otherwise).
"""

from __future__ import annotations

import logging
import uuid
from pathlib import Path
from urllib.parse import urlsplit

from flask import (
    Blueprint,
    Response,
    current_app,
    flash,
    g,
    get_flashed_messages,
    redirect,
    render_template,
    request,
    send_file,
    session,
    url_for,
)
from werkzeug.datastructures import MultiDict
from werkzeug.exceptions import HTTPException, NotFound

from .. import recommendations, schemas, sessions
from ..auth import patient_data, public, signed_in
from ..errors import HTTP_CODES, ApiError
from ..feedback import store_decision
from ..model_store import Served
from ..tokens import CLINICIAN
from . import model_page
from .forms import OVERRIDE_REASONS, FormError, feedback_body, new_patient_body
from .present import Names, present_answer

log = logging.getLogger(__name__)
console = Blueprint("console", __name__, url_prefix="/console", template_folder="templates")
STATIC = {"console.css": "text/css", "console.js": "text/javascript"}
#: Blank history rows the new-patient form shows (console.js adds more).
HISTORY_ROWS = 5
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)


def _served() -> Served:
    g.served = served = current_app.extensions["recommender"].store.current
    return served


def _names(served: Served) -> Names:
    treatments, conditions = served.model.display_names()
    return Names(treatments, conditions)


# --- around every console request ----------------------------------------------------------------


@console.before_request
def _check_post() -> None:
    """A POST must come from this site's page: the session's CSRF token, and no foreign Origin."""
    if request.method != "POST":
        return
    origin = request.headers.get("Origin")
    if origin and origin != "null" and urlsplit(origin).netloc != request.host:
        raise ApiError(403, "csrf_failed", "the form was sent from another site")
    if not sessions.csrf_valid(session, request.form.get(sessions.CSRF_FIELD)):
        raise ApiError(
            403,
            "csrf_failed",
            "the form has no valid CSRF token (it is older than your session, or was not "
            "sent from this console); open the page again and resend it",
        )


@console.after_request
def _headers(response: Response) -> Response:
    headers = response.headers
    headers["Content-Security-Policy"] = CSP
    headers["X-Frame-Options"] = "DENY"
    headers["Referrer-Policy"] = "no-referrer"  # console URLs hold patient ids
    headers["Cross-Origin-Opener-Policy"] = "same-origin"
    return response


@console.context_processor
def _template_globals() -> dict:
    return {"csrf_token": lambda: sessions.csrf_token(session), "principal": g.get("principal")}


@console.errorhandler(ApiError)
def _api_error(error: ApiError):
    if error.status == 401:
        target = request.full_path if request.method == "GET" else url_for("console.home")
        return redirect(url_for("console.login_form", next=target.rstrip("?")), 303)
    return _error_page(error.status, error.code, error.message, (error.details or {}))


@console.errorhandler(HTTPException)
def _http_error(error: HTTPException):
    status = error.code or 500
    return _error_page(status, HTTP_CODES.get(status, "http_error"), error.description or "")


def _error_page(status: int, code: str, message: str, details: dict | None = None):
    g.error_code = code  # the audit line's error_code (the page is HTML, not the JSON error)
    problems = (details or {}).get("problems") or []
    return render_template(
        "error.html", status=status, code=code, message=message, problems=problems
    ), status


# --- static files and sign-in ---------------------------------------------------------------------


@console.get("/static/<name>")
@public
def static(name: str):
    if name not in STATIC:
        raise NotFound("no such file")
    path = Path(__file__).parent / "static" / name
    return send_file(path, mimetype=STATIC[name], max_age=0)


@console.get("/login")
@public
def login_form():
    return render_template("login.html", next=_safe_next(request.args.get("next")))


@console.post("/login")
@public
def login():
    runtime = current_app.extensions["recommender"]
    token = request.form.get("token", "").strip()
    target = _safe_next(request.form.get("next"))
    principal = sessions.sign_in(session, token, runtime.tokens, current_app.secret_key)
    if principal is None:
        runtime.metrics.auth_failure("invalid" if token else "missing")
        message = "That token is not valid (unknown or revoked)." if token else "Enter a token."
        return render_template("login.html", next=target, error=message), 401
    log.info("console: %s (%s) signed in", principal.id, principal.role)
    return redirect(target or url_for("console.home"), 303)


def _safe_next(target: str | None) -> str | None:
    """Only a path of this console (no scheme, host or ``//``) may be returned to."""
    if not target or not target.startswith("/console/") or target.startswith("//"):
        return None
    if "\\" in target or any(ord(c) < 32 for c in target):
        return None
    return target


@console.post("/logout")
@signed_in()
def logout():
    session.clear()
    return redirect(url_for("console.login_form"), 303)


# --- pages ----------------------------------------------------------------------------------------


@console.get("/")
@signed_in()
def home():
    return render_template("home.html", messages=get_flashed_messages())


@console.get("/patients")
@signed_in(CLINICIAN)
def find_patient():
    """The search box: on to the patient's page (the id is checked there)."""
    schemas.parse_query(request.args, {"patient_id": {"type": "string"}})
    patient_id = request.args.get("patient_id", "").strip()
    if not patient_id:
        return _error_page(400, "invalid_parameter", "Enter a patient id.")
    schemas.check_identifier(patient_id, "patient_id")
    return redirect(url_for("console.patient", patient_id=patient_id), 303)


@console.get("/patients/<patient_id>")
@signed_in(CLINICIAN)
@patient_data
def patient(patient_id: str):
    """The patient page: what ``GET /v1/patients/{id}/recommendations`` answers, drawn."""
    config = current_app.config
    schemas.check_identifier(patient_id, "patient_id")
    served = _served()
    g.audit = audit = {"patient_pseudonym": served.pseudonym(patient_id)}
    args = MultiDict([(key, value) for key, value in request.args.items(multi=True) if value != ""])
    params = schemas.parse_query(args, schemas.query_parameters(config))
    condition = params.get("condition")
    audit["condition_id"] = condition
    k = params.get("k", config["DEFAULT_K"])
    include_tried = params.get("include_tried", False)
    body = recommendations.for_patient(
        served, patient_id, k=k, condition=condition, include_tried=include_tried
    )
    audit["treatment_ids"] = recommendations.recommended_ids(body)
    names = _names(served)
    return render_template(
        "patient.html",
        patient_id=patient_id,
        answer=present_answer(body, names),
        conditions=_condition_choices(served, patient_id, condition, names),
        k=k,
        max_k=config["MAX_K"],
        include_tried=include_tried,
        request_id=g.request_id,
        feedback_ids={item["treatment_id"]: uuid.uuid4().hex for item in body["recommendations"]},
        reasons=OVERRIDE_REASONS,
        messages=get_flashed_messages(),
    )


def _condition_choices(served: Served, patient_id: str, chosen: str | None, names: Names):
    """The patient's recorded conditions that have candidate therapies (and the chosen one)."""
    record = served.model.patient_record(patient_id)
    codes = [c for c in (record.conditions if record else []) if served.model.has_candidates(c)]
    if chosen is not None and chosen not in codes:
        codes.append(chosen)
    return [{"id": code, "name": names.condition(code), "chosen": code == chosen} for code in codes]


@console.post("/feedback")
@signed_in(CLINICIAN)
@patient_data
def feedback():
    """Accept or override one suggested therapy: stored once in the feedback store."""
    served = _served()
    g.audit = {}
    try:
        body = feedback_body(request.form)
    except FormError as exc:
        return _error_page(
            400, "invalid_body", "The decision was not stored.", {"problems": exc.problems}
        )
    g.audit.update(
        patient_pseudonym=served.pseudonym(body["patient_id"]),
        treatment_ids=[body["treatment_id"]],
        decision=body["decision"],
        feedback_id=body["feedback_id"],
        recommendation_request_id=body.get("request_id"),
    )
    runtime = current_app.extensions["recommender"]
    stored = store_decision(runtime.feedback, served, g.principal.id, "console", body)
    name = _names(served).treatment(body["treatment_id"])
    flash(
        f"Recorded: {name} {body['decision']}."
        if stored
        else f"This decision on {name} was already recorded."
    )
    return redirect(_patient_url(body["patient_id"], request.form), 303)


def _patient_url(patient_id: str, form) -> str:
    query = {name: form[name] for name in ("condition", "k", "include_tried") if form.get(name)}
    return url_for("console.patient", patient_id=patient_id, **query)


@console.get("/new-patient")
@signed_in(CLINICIAN)
def new_patient_form():
    return _new_patient_page(MultiDict(), None, [], 200)


@console.post("/new-patient")
@signed_in(CLINICIAN)
@patient_data
def new_patient():
    """A patient outside the model, from the history typed in (the engine's ``recommend_new``)."""
    config = current_app.config
    served = _served()
    g.audit = {"history_items": None}
    try:
        body = new_patient_body(request.form, config)
    except FormError as exc:
        return _new_patient_page(request.form, None, exc.problems, 400)
    g.audit.update(history_items=len(body.get("history", [])), condition_id=body.get("condition"))
    try:
        result = recommendations.for_new_patient(served, body, config["DEFAULT_K"])
    except ApiError as exc:
        g.error_code = exc.code
        return _new_patient_page(request.form, None, [exc.message], exc.status)
    g.audit["treatment_ids"] = recommendations.recommended_ids(result)
    return _new_patient_page(request.form, present_answer(result, _names(served)), [], 200)


def _new_patient_page(form, answer, problems: list[str], status: int):
    served = current_app.extensions["recommender"].store.current
    names = _names(served)
    rows = [
        {
            "treatment": form.get(f"history-{i}-treatment", ""),
            "outcome": form.get(f"history-{i}-outcome", ""),
            "date": form.get(f"history-{i}-date", ""),
            "adverse": bool(form.get(f"history-{i}-adverse")),
        }
        for i in range(max(HISTORY_ROWS, _posted_rows(form)))
    ]
    return render_template(
        "new_patient.html",
        form=form,
        rows=rows,
        answer=answer,
        problems=problems,
        conditions=sorted(served.conditions),
        treatments=sorted(served.treatments),
        names=names,
        max_k=current_app.config["MAX_K"],
        default_k=current_app.config["DEFAULT_K"],
    ), status


def _posted_rows(form) -> int:
    numbers = [
        int(name.split("-")[1])
        for name in form
        if name.startswith("history-") and name.split("-")[1].isdigit()
    ]
    return min(max(numbers, default=-1) + 1, current_app.config["MAX_HISTORY"])


@console.get("/model")
@signed_in()
def model():
    served = _served()  # built per view: reports added beside the artifact show at once
    page = model_page.build(served)
    return render_template("model.html", page=page, info=served.info, served=served)


@console.get("/model/figures/<folder>/<name>")
@signed_in()
def figure(folder: str, name: str):
    path = model_page.figure_path(_served().path, f"{folder}/{name}")
    if path is None:
        raise NotFound("no such figure")
    return send_file(path, mimetype="image/png", max_age=0)
