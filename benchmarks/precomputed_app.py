"""The clinician service with the engine's answers computed before the load (bench_http only).

``create_app()`` builds the real service (``service.create_app``: configuration from the
``RECOMMENDER_*`` variables, token check, pseudonym, validation, audit line, metrics, JSON) and
replaces the served model's ``recommend`` by a look-up of answers computed at start-up for every
path in the file named by ``BENCH_PATHS`` (``benchmarks/results/tmp/http/<size>/paths.txt``).
A request then costs everything the recommendation endpoint costs except the engine, which
tells how much of the gap to the bare endpoint the engine is, and what the rest of the request
allows at most::

    BENCH_PATHS=paths.txt gunicorn -c service/gunicorn.conf.py 'benchmarks.precomputed_app:create_app()'

Never used to serve clinicians: it answers only the patients and conditions in that file.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from service import create_app as create_service_app

PATH = re.compile(r"/v1/patients/([^/?]+)/recommendations\?k=(\d+)&condition=(\S+)")


def create_app():
    app = create_service_app()
    model = app.extensions["recommender"].store.current.model
    answers = {}
    for path in Path(os.environ["BENCH_PATHS"]).read_text().split():
        patient, k, condition = PATH.fullmatch(path).groups()
        answers[patient, int(k), condition] = model.recommend(
            patient, k=int(k), condition_id=condition
        )

    def recommend(patient_id, k=10, condition_id=None, include_tried=False, active_treatments=None):
        return answers[patient_id, k, condition_id]

    model.recommend = recommend
    return app
