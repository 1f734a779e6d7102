"""CDS Hooks latency: a ``patient-view`` call with prefetch, end to end in the service.

Builds (once, cached under benchmarks/results/tmp/cds/) a synthetic cohort whose therapy and
condition ids are recoded as RxNorm / SNOMED ``system|code`` ids (as the FHIR importer writes
them) and a keyed ALS model. Requests go through the Flask app in-process (test client): the
EHR's ES384 JWT checked (signature, audience, expiry, jti recorded in the shared SQLite replay
cache), the prefetch validated with ``fhir.resources`` and turned into an outcome history by the
importer's rules, the engine's ranking with explanations, the cards built and remembered for
feedback, the audit line fsynced. Tokens are signed before the clock starts (signing is the
EHR's work).

Scenarios, each over patients drawn from the cohort:

- ``patient-view, new patient, prefetch``: the patient's record sent as FHIR R4 prefetch
  (Patient, Conditions, MedicationRequests with reasons, an empty allergy Bundle) under an id
  the model does not know, so the engine folds the record in (the target: median < 50 ms);
- ``patient-view, known patient, no prefetch``: the model's own record;
- ``order-select, new patient, prefetch``: a draft order of the condition's worst therapy.

BLAS and OpenMP run single-threaded, as in every gunicorn worker (``--threads=N`` to change it;
OpenMP's count is fixed when the library loads, so it is set before anything is imported).
Each scenario runs ``--repeats`` times over ``--requests`` patients, interleaved; the result is
the median of the per-run medians (and p90 / p99 over all requests). Also timed apart, in the
same process: prefetch parsing alone and the engine alone.

    python benchmarks/bench_cds.py            # 50k patients, 100 conditions x 10 therapies
    python benchmarks/bench_cds.py --quick    # 10k patients, 30 conditions x 8

Results: benchmarks/results/cds.json (cds_quick.json with --quick).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

if __name__ == "__main__":  # as service/gunicorn.conf.py does, before OpenMP loads
    _threads = next((a.split("=", 1)[1] for a in sys.argv if a.startswith("--threads=")), "1")
    os.environ.setdefault("OMP_NUM_THREADS", _threads)

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import RESULTS, markdown_table, write_results  # noqa: E402

WORK = RESULTS / "tmp" / "cds"
SIZES = {"full": (50_000, 100, 10), "quick": (10_000, 30, 8)}  # patients, conditions, per cond.
BASE, ISSUER = "https://cds.bench.local", "https://ehr.bench.local"
RX, SCT = "http://www.nlm.nih.gov/research/umls/rxnorm", "http://snomed.info/sct"
TARGET_MS = 50.0


# --- data and model ------------------------------------------------------------------------------


def build(size: str) -> Path:
    """Coded cohort and keyed artifact for ``size`` (reused when already built)."""
    from recommender.exceptions import ArtifactError
    from recommender.models.persistence import read_manifest

    folder = WORK / size
    try:
        read_manifest(folder / "artifact")
        return folder
    except ArtifactError:
        pass
    import shutil

    from recommender.data.pseudonym import Pseudonymizer, create_key_file
    from recommender.data.synthetic.planted import generate_cohort
    from recommender.data.tables import write_tables
    from recommender.training import train_artifact

    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    patients, conditions, per_condition = SIZES[size]
    print(f"  building a {patients:,}-patient coded cohort and an ALS model ...", flush=True)
    cohort = generate_cohort(
        patients, seed=1, n_conditions=conditions, treatments_per_condition=per_condition
    )
    write_tables(_coded(cohort.tables), folder / "data")
    key = create_key_file(folder / "key")
    train_artifact(
        folder / "data",
        folder / "artifact",
        kind="als",
        params={"factors": 32, "iterations": 10, "random_state": 1},
        pseudonymizer=Pseudonymizer.from_file(key),
    )
    return folder


def _coded(tables) -> dict:
    """The canonical tables with RxNorm / SNOMED prefixed ids."""
    frames = {
        name: frame.copy() for name, frame in dict(tables.items()).items() if frame is not None
    }
    for frame in frames.values():
        for column in ("treatment_id", "treatment_a", "treatment_b"):
            if column in frame:
                frame[column] = "rxnorm|" + frame[column].astype(str)
        if "condition_id" in frame:
            frame["condition_id"] = frame["condition_id"].map(
                lambda c: c if c != c or c is None else f"snomed|{c}"
            )
    return frames


# --- requests -------------------------------------------------------------------------------------


def _concept(identifier: str, name: str | None) -> dict:
    system, code = identifier.split("|", 1)
    coding = {"system": RX if system == "rxnorm" else SCT, "code": code}
    if name:
        coding["display"] = name
    return {"coding": [coding], "text": name or code}


def prefetch_of(pid: str, outcomes, conditions: list[str], names: dict) -> dict:
    """The patient's record as CDS Hooks prefetch (FHIR R4 resources)."""
    subject = {"reference": f"Patient/{pid}"}
    condition_entries = [
        {
            "resource": {
                "resourceType": "Condition",
                "id": f"c{n}",
                "subject": subject,
                "clinicalStatus": {
                    "coding": [
                        {
                            "system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                            "code": "active",
                        }
                    ]
                },
                "code": _concept(c, names.get(c)),
                "onsetDateTime": "2010-01-01",
            }
        }
        for n, c in enumerate(conditions)
    ]
    requests = []
    latest = outcomes.sort_values("timestamp").groupby("condition_id").tail(1).index
    for n, row in enumerate(outcomes.itertuples()):
        start = str(row.timestamp)[:10] if row.timestamp == row.timestamp else "2015-01-01"
        resource = {
            "resourceType": "MedicationRequest",
            "id": f"m{n}",
            "intent": "order",
            "status": "active" if row.Index in latest else "completed",
            "subject": subject,
            "authoredOn": start,
            "medicationCodeableConcept": _concept(row.treatment_id, names.get(row.treatment_id)),
        }
        if isinstance(row.condition_id, str):
            resource["reasonCode"] = [_concept(row.condition_id, names.get(row.condition_id))]
        if resource["status"] == "completed":
            resource["dosageInstruction"] = [
                {"timing": {"repeat": {"boundsPeriod": {"start": start, "end": start}}}}
            ]
        requests.append({"resource": resource})
    return {
        "patient": {
            "resourceType": "Patient",
            "id": pid,
            "gender": "female",
            "birthDate": "1960-01-01",
        },
        "conditions": {"resourceType": "Bundle", "type": "searchset", "entry": condition_entries},
        "medications": {"resourceType": "Bundle", "type": "searchset", "entry": requests},
        "allergies": {"resourceType": "Bundle", "type": "searchset", "entry": []},
    }


def scenarios(folder: Path, n: int, seed: int = 0) -> dict[str, list[tuple[str, dict]]]:
    """Scenario -> [(path, body)] for ``n`` patients with at least one outcome."""
    import pandas as pd

    from recommender.data.tables import read_tables

    tables = read_tables(folder / "data")
    names = {}
    for frame, column in ((tables.treatments, "treatment_id"), (tables.conditions, "condition_id")):
        if frame is not None and "name" in frame:
            names.update(zip(frame[column], frame["name"]))
    outcomes = tables.outcomes
    pc = tables.patient_conditions.groupby("patient_id")["condition_id"].apply(list)
    patients = pd.Series(outcomes["patient_id"].unique()).sample(n, random_state=seed)
    by_patient = dict(
        tuple(outcomes[outcomes["patient_id"].isin(set(patients))].groupby("patient_id"))
    )
    result = {
        "patient-view, new patient, prefetch": [],
        "patient-view, known patient, no prefetch": [],
        "order-select, new patient, prefetch": [],
    }
    view, check = "/cds-services/therapy-suggestions", "/cds-services/therapy-order-check"
    for number, pid in enumerate(patients):
        record = by_patient[pid]
        new = f"bench-{number}"
        prefetch = prefetch_of(new, record, pc.get(pid, []), names)
        result["patient-view, new patient, prefetch"].append(
            (view, _hook("patient-view", {"userId": "Practitioner/1", "patientId": new}, prefetch))
        )
        result["patient-view, known patient, no prefetch"].append(
            (view, _hook("patient-view", {"userId": "Practitioner/1", "patientId": str(pid)}, None))
        )
        drug, condition = record.iloc[0]["treatment_id"], record.iloc[0]["condition_id"]
        draft = {
            "resourceType": "MedicationRequest",
            "id": "draft-1",
            "status": "draft",
            "intent": "order",
            "subject": {"reference": f"Patient/{new}"},
            "medicationCodeableConcept": _concept(drug, names.get(drug)),
        }
        if isinstance(condition, str):
            draft["reasonCode"] = [_concept(condition, names.get(condition))]
        result["order-select, new patient, prefetch"].append(
            (
                check,
                _hook(
                    "order-select",
                    {
                        "userId": "Practitioner/1",
                        "patientId": new,
                        "selections": ["MedicationRequest/draft-1"],
                        "draftOrders": {
                            "resourceType": "Bundle",
                            "type": "collection",
                            "entry": [{"resource": draft}],
                        },
                    },
                    prefetch,
                ),
            )
        )
    return result


def _hook(name: str, context: dict, prefetch: dict | None) -> dict:
    body = {"hook": name, "hookInstance": os.urandom(8).hex(), "context": context}
    if prefetch is not None:
        body["prefetch"] = prefetch
    return body


# --- the app --------------------------------------------------------------------------------------


def make_app(folder: Path, work: Path):
    import jwt
    from cryptography.hazmat.primitives.asymmetric import ec

    from service import create_app
    from service.tokens import add_token

    key = ec.generate_private_key(ec.SECP384R1())
    public = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(key.public_key()))
    (work / "jwks.json").write_text(
        json.dumps({"keys": [{**public, "kid": "k1", "alg": "ES384", "use": "sig"}]})
    )
    add_token(work / "tokens.json", "bench", "clinician")
    app = create_app(
        {
            "ARTIFACT": str(folder / "artifact"),
            "API_TOKENS_FILE": str(work / "tokens.json"),
            "PSEUDONYM_KEY_FILE": str(folder / "key"),
            "AUDIT_LOG": str(work / "audit.log"),
            "ACCESS_LOG": False,
            "CDS_ISSUERS": (ISSUER,),
            "CDS_JWKS": str(work / "jwks.json"),
            "CDS_BASE_URL": BASE,
        }
    )

    def token(path: str) -> str:
        now = int(time.time())
        return jwt.encode(
            {
                "iss": ISSUER,
                "aud": BASE + path,
                "iat": now,
                "exp": now + 600,
                "jti": os.urandom(16).hex(),
            },
            key,
            algorithm="ES384",
            headers={"kid": "k1", "typ": "JWT"},
        )

    return app, token


def run(client, requests: list[tuple[str, dict]], token) -> list[float]:
    """Milliseconds per request (tokens signed before the clock starts)."""
    signed = [(path, body, token(path)) for path, body in requests]
    times = []
    for path, body, jwt_token in signed:
        data = json.dumps(body)
        started = time.perf_counter()
        response = client.post(
            path,
            data=data,
            content_type="application/json",
            headers={"Authorization": f"Bearer {jwt_token}"},
        )
        times.append((time.perf_counter() - started) * 1000)
        if response.status_code != 200:
            raise SystemExit(f"{path}: {response.status_code} {response.get_data(as_text=True)}")
    return times


def parts(app, requests: list[tuple[str, dict]]) -> dict[str, float]:
    """Median ms of the prefetch parsing and of the engine, apart, for the same patients."""
    from service.cds_hooks.patient import gather
    from service.cds_hooks.prefetch import parse_prefetch

    served = app.extensions["recommender"].store.current

    def known(identifier: str) -> bool:
        return identifier in served.treatments or identifier in served.conditions

    parse_ms, engine_ms = [], []
    for _, body in requests:
        pid = body["context"]["patientId"]
        started = time.perf_counter()
        inputs = gather(served, pid, parse_prefetch(body["prefetch"], pid, known))
        parse_ms.append((time.perf_counter() - started) * 1000)
        conditions = inputs.treatable(served, 3)
        started = time.perf_counter()
        for answer in inputs.recommend_conditions(served, conditions, k=3, include_tried=False):
            answer.to_dict()
        engine_ms.append((time.perf_counter() - started) * 1000)
    return {
        "prefetch_to_inputs_ms": statistics.median(parse_ms),
        "engine_ms": statistics.median(engine_ms),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller cohort")
    parser.add_argument("--requests", type=int, default=200, help="patients per run")
    parser.add_argument("--repeats", type=int, default=5, help="runs per scenario")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="BLAS/OpenMP threads, given as --threads=N "
        "(RECOMMENDER_WORKER_THREADS of a gunicorn worker; default 1)",
    )
    args = parser.parse_args(argv)
    from threadpoolctl import threadpool_limits

    threadpool_limits(args.threads)  # what service/gunicorn.conf.py does in every worker
    size = "quick" if args.quick else "full"
    folder = build(size)
    requests = scenarios(folder, args.requests)
    with tempfile.TemporaryDirectory() as tmp:
        app, token = make_app(folder, Path(tmp))
        client = app.test_client()
        for items in requests.values():  # warm-up: first engine calls, SQLite, FHIR models
            run(client, items[:20], token)
        per_run: dict[str, list[float]] = {name: [] for name in requests}
        every: dict[str, list[float]] = {name: [] for name in requests}
        for _ in range(args.repeats):
            for name, items in requests.items():
                times = run(client, items, token)
                per_run[name].append(statistics.median(times))
                every[name] += times
        split = parts(app, requests["patient-view, new patient, prefetch"])
    rows = []
    for name in requests:
        ordered = sorted(every[name])
        rows.append(
            {
                "scenario": name,
                "median_ms": round(statistics.median(per_run[name]), 2),
                "p90_ms": round(ordered[int(0.9 * (len(ordered) - 1))], 2),
                "p99_ms": round(ordered[int(0.99 * (len(ordered) - 1))], 2),
                "run_medians_ms": [round(v, 2) for v in per_run[name]],
            }
        )
    target = rows[0]["median_ms"]
    print(markdown_table(rows, ["scenario", "median_ms", "p90_ms", "p99_ms"]))
    print(
        f"\nin-process parts (patient-view, new patient): prefetch -> engine inputs "
        f"{split['prefetch_to_inputs_ms']:.2f} ms, engine {split['engine_ms']:.2f} ms (median)"
    )
    print(
        f"target: median patient-view with prefetch < {TARGET_MS:.0f} ms: "
        f"{'met' if target < TARGET_MS else 'MISSED'} ({target:.2f} ms)"
    )
    patients, conditions, per_condition = SIZES[size]
    path = write_results(
        "cds" if size == "full" else "cds_quick",
        {
            "size": {
                "patients": patients,
                "conditions": conditions,
                "therapies_per_condition": per_condition,
                "model": "als, 32 factors",
            },
            "requests_per_run": args.requests,
            "repeats": args.repeats,
            "threads": args.threads,
            "load_average": os.getloadavg(),
            "target_ms": TARGET_MS,
            "target_met": target < TARGET_MS,
            "scenarios": rows,
            "parts": split,
        },
    )
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
