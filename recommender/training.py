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
    model, dataset = _encode(tables, kind, params, policy, side_info, pseudonymizer,
                             **dataset_options)
    return model.fit(dataset, show_progress=show_progress)


def _encode(tables: CohortTables, kind: str, params: Mapping | None, policy, side_info,
            pseudonymizer, **dataset_options) -> tuple[Recommender, Dataset]:
    """A new unfitted model (parameters checked first: encoding is the slower step) and the
    Dataset of ``tables``."""
    model = make_model(kind, **dict(params or {}))
    model._validate_params()
    dataset = Dataset.from_tables(tables, policy=policy, side_info=side_info,
                                  pseudonymizer=pseudonymizer, **dataset_options)
    return model, dataset


def train_artifact(data: str | Path, out: str | Path, kind: str = "als",
                   params: Mapping | None = None, policy: ConfidencePolicy | None = None,
                   side_info: SideInfo | None = None, metrics: Mapping | None = None,
                   pseudonymizer: Pseudonymizer | None = None, show_progress: bool = False,
                   **dataset_options) -> Path:
    """Train on the canonical tables in ``data`` and write a verified artifact to ``out``.

    Returns the artifact path. The artifact is reloaded before this returns, so a caller never
    hands out an artifact that does not load: the manifest's own checksum is checked and every
    array is mapped and rebuilt into the model. The array checksums are the SHA-256 of the
    files as written, computed by :func:`save_artifact` from the files it has just written;
    hashing those same bytes a second time here would double the cost and prove nothing more
    (every later load, e.g. the service's, verifies them in full).

    The manifest's ``training`` section records ``read_seconds`` (read and validate the
    tables), ``encode_seconds`` (build the Dataset) and ``fit_seconds`` (fit the model).
    """
    started = time.perf_counter()
    tables = read_tables(data)
    read_seconds = time.perf_counter() - started
    n_rows = len(tables.outcomes)
    model, dataset = _encode(tables, kind, params, policy, side_info, pseudonymizer,
                             **dataset_options)
    del tables  # the fit needs only the Dataset: free the raw tables (often the largest objects)
    encode_seconds = time.perf_counter() - started - read_seconds
    model.fit(dataset, show_progress=show_progress)
    fit_seconds = time.perf_counter() - started - read_seconds - encode_seconds
    training = {"data_folder": Path(data).name, "read_seconds": round(read_seconds, 3),
                "encode_seconds": round(encode_seconds, 3), "fit_seconds": round(fit_seconds, 3),
                "n_outcome_rows": n_rows}
    path = save_artifact(model, out, metrics=metrics, extra={"training": training})
    load_artifact(path, mmap=True, verify=False, pseudonymizer=pseudonymizer)  # loads, key matches
    log.info("trained %s in %.1fs (read %.1fs, encode %.1fs) -> %s", kind, fit_seconds,
             read_seconds, encode_seconds, path)
    return path
