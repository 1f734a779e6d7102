"""From a data folder to a verified artifact: read, encode, fit, save, reload and check."""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Mapping

from .artifact import load_artifact, save_artifact
from .confidence import ConfidencePolicy
from .dataset import Dataset, SideInfo
from .io import CohortTables, read_tables
from .models import Recommender, make_model
from .pseudonym import Pseudonymizer

log = logging.getLogger(__name__)


def fit_model(tables: CohortTables, kind: str = "als", params: Mapping | None = None,
              policy: ConfidencePolicy | None = None, side_info: SideInfo | None = None,
              pseudonymizer: Pseudonymizer | None = None, show_progress: bool = False,
              **dataset_options) -> Recommender:
    """Build the Dataset from ``tables`` and fit a new model of ``kind`` with ``params``.

    ``dataset_options`` go to :meth:`Dataset.from_tables` (safety, feedback, feedback_weight).
    """
    model = make_model(kind, **dict(params or {}))
    model._validate_params()  # fail on a bad parameter before the (slower) encoding
    dataset = Dataset.from_tables(tables, policy=policy, side_info=side_info,
                                  pseudonymizer=pseudonymizer, **dataset_options)
    return model.fit(dataset, show_progress=show_progress)


def train_artifact(data: str | Path, out: str | Path, kind: str = "als",
                   params: Mapping | None = None, policy: ConfidencePolicy | None = None,
                   side_info: SideInfo | None = None, metrics: Mapping | None = None,
                   pseudonymizer: Pseudonymizer | None = None, show_progress: bool = False,
                   **dataset_options) -> Path:
    """Train on the canonical tables in ``data`` and write a verified artifact to ``out``.

    Returns the artifact path. The artifact is reloaded and its checksums verified before
    this returns, so a caller never hands out an artifact that does not load.
    """
    started = time.perf_counter()
    tables = read_tables(data)
    read_seconds = time.perf_counter() - started
    model = fit_model(tables, kind, params, policy, side_info, pseudonymizer,
                      show_progress=show_progress, **dataset_options)
    fit_seconds = time.perf_counter() - started - read_seconds
    training = {"data_folder": Path(data).name, "read_seconds": round(read_seconds, 3),
                "fit_seconds": round(fit_seconds, 3), "n_outcome_rows": len(tables.outcomes)}
    path = save_artifact(model, out, metrics=metrics, extra={"training": training})
    load_artifact(path, mmap=True, pseudonymizer=pseudonymizer)  # verify checksums, key, load
    log.info("trained %s in %.1fs (read %.1fs) -> %s", kind, fit_seconds, read_seconds, path)
    return path
