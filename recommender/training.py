"""From a data folder to a verified artifact: read, encode, fit, save, reload and check."""

from __future__ import annotations

import ctypes
import logging
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pyarrow as pa
import scipy.sparse as sp

from .data.arrow_read import read_codes
from .data.codes import CohortCodes
from .data.dataset import Dataset
from .data.policies import ConfidencePolicy
from .data.pseudonym import Pseudonymizer
from .data.side_info import SideInfo
from .data.tables import CohortTables
from .models import Recommender, make_model
from .models.persistence import load_artifact, save_artifact
from .models.registry import DEFAULT_MODEL

log = logging.getLogger(__name__)


def fit_model(
    tables: CohortTables,
    kind: str = DEFAULT_MODEL,
    params: Mapping | None = None,
    policy: ConfidencePolicy | None = None,
    side_info: SideInfo | None = None,
    pseudonymizer: Pseudonymizer | None = None,
    show_progress: bool = False,
    **dataset_options,
) -> Recommender:
    """Build the Dataset from ``tables`` and fit a new model of ``kind`` with ``params``.

    ``dataset_options`` go to :meth:`Dataset.from_tables` (safety, feedback, feedback_weight).
    """
    model, dataset = _encode(
        tables, kind, params, policy, side_info, pseudonymizer, **dataset_options
    )
    return model.fit(dataset, show_progress=show_progress)


def _encode(
    tables: CohortTables | CohortCodes,
    kind: str,
    params: Mapping | None,
    policy,
    side_info,
    pseudonymizer,
    **dataset_options,
) -> tuple[Recommender, Dataset]:
    """A new unfitted model (parameters checked first: encoding is the slower step) and the
    Dataset of ``tables``."""
    model = make_model(kind, **dict(params or {}))
    model._validate_params()
    build = Dataset.from_codes if isinstance(tables, CohortCodes) else Dataset.from_tables
    dataset = build(
        tables, policy=policy, side_info=side_info, pseudonymizer=pseudonymizer, **dataset_options
    )
    return model, dataset


#: glibc's mallopt parameter number of M_MMAP_THRESHOLD, and the threshold set in training.
_M_MMAP_THRESHOLD, _LARGE_BLOCK = -3, 4 << 20


def _glibc():
    """The C library when it is glibc (which has ``malloc_trim``), else None."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL("libc.so.6")
        return libc if hasattr(libc, "malloc_trim") else None
    except OSError:
        return None


def map_large_blocks() -> None:
    """Have glibc map each block of 4 MiB or more on its own (for the rest of the process).

    By default glibc raises this threshold, up to 32 MiB, whenever a large block is freed; the
    columns of a million-patient cohort (tens of megabytes each) then come from the heap and
    stay there after they are freed, so each training stage would sit on the garbage of the
    one before. Mapped blocks go back to the operating system as soon as they are freed.
    """
    libc = _glibc()
    if libc is not None:
        libc.mallopt(_M_MMAP_THRESHOLD, _LARGE_BLOCK)


def release_memory() -> None:
    """Give memory freed by the last stage back to the operating system before the next one
    (Arrow's pools, and glibc's free pages with ``malloc_trim``)."""
    pa.default_memory_pool().release_unused()
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)


def train_artifact(
    data: str | Path,
    out: str | Path,
    kind: str = DEFAULT_MODEL,
    params: Mapping | None = None,
    policy: ConfidencePolicy | None = None,
    side_info: SideInfo | None = None,
    metrics: Mapping | None = None,
    pseudonymizer: Pseudonymizer | None = None,
    show_progress: bool = False,
    **dataset_options,
) -> Path:
    """Train on the canonical tables in ``data`` and write a verified artifact to ``out``.

    Returns the artifact path. The artifact is reloaded before this returns, so a caller never
    hands out an artifact that does not load: the manifest's own checksum is checked and every
    array is mapped and rebuilt into the model. The array checksums are the SHA-256 of the
    files as written, computed by :func:`save_artifact` from the files it has just written;
    hashing those same bytes a second time here would double the cost and prove nothing more
    (every later load, e.g. the service's, verifies them in full).

    The manifest's ``training`` section records ``read_seconds`` (read and validate the
    tables, :func:`recommender.data.arrow_read.read_codes`), ``encode_seconds`` (build the Dataset)
    and ``fit_seconds`` (fit the model).

    Memory: the tables never exist as pandas frames of strings; the integer codes are dropped
    once the Dataset is built; glibc maps large blocks on their own (:func:`map_large_blocks`)
    and freed memory is handed back between stages (:func:`release_memory`); and while the
    model fits, the matrices it does not read (:data:`SPILLED`) are memory-mapped from a
    temporary folder beside ``out`` (writing them counts in ``encode_seconds``).
    """
    map_large_blocks()
    started = time.perf_counter()
    codes = read_codes(data)  # straight to integer codes: no pandas tables of strings
    release_memory()
    read_seconds = time.perf_counter() - started
    n_rows = codes.n_rows
    model, dataset = _encode(
        codes, kind, params, policy, side_info, pseudonymizer, **dataset_options
    )
    del codes  # the fit needs only the Dataset
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{out.name}.spill-", dir=out.parent) as spill:
        _spill(dataset, Path(spill))
        release_memory()
        encode_seconds = time.perf_counter() - started - read_seconds
        model.fit(dataset, show_progress=show_progress)
        fit_seconds = time.perf_counter() - started - read_seconds - encode_seconds
        release_memory()
        training = {
            "data_folder": Path(data).name,
            "read_seconds": round(read_seconds, 3),
            "encode_seconds": round(encode_seconds, 3),
            "fit_seconds": round(fit_seconds, 3),
            "n_outcome_rows": n_rows,
        }
        path = save_artifact(model, out, metrics=metrics, extra={"training": training})
        del model, dataset  # the reload below is the artifact's own
    load_artifact(path, mmap=True, verify=False, pseudonymizer=pseudonymizer)  # loads, key matches
    log.info(
        "trained %s in %.1fs (read %.1fs, encode %.1fs) -> %s",
        kind,
        fit_seconds,
        read_seconds,
        encode_seconds,
        path,
    )
    return path


#: Dataset matrices that a fit reads little or not at all (ALS reads only ``matrix``).
SPILLED = (
    "history",
    "history_days",
    "harmful",
    "patient_conditions",
    "condition_outcomes",
    "condition_successes",
    "label_counts",
)


def _spill(dataset: Dataset, folder: Path) -> None:
    """Move the :data:`SPILLED` matrices of ``dataset`` to memory-mapped files in ``folder``.

    They stay complete and usable (a model that reads them pages them back in), but while ALS
    fits they are not resident: the fit's peak memory is the matrix, its transpose and the
    factors, not every array the safety rules and explanations need later.
    """
    for name in SPILLED:
        matrix = getattr(dataset, name)
        parts = {}
        for part in ("data", "indices", "indptr"):
            file = folder / f"{name}.{part}.npy"
            np.save(file, getattr(matrix, part), allow_pickle=False)
            parts[part] = np.load(file, mmap_mode="r")
        setattr(
            dataset,
            name,
            sp.csr_matrix((parts["data"], parts["indices"], parts["indptr"]), shape=matrix.shape),
        )
