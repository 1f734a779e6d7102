"""The model the service answers from, and how a new one replaces it.

A :class:`Served` snapshot bundles everything a request needs (model, key, id sets, manifest
summary); it is built completely - checksums verified, key checked against the artifact's
fingerprint, lookups warmed - before :meth:`ModelStore.swap` makes it current with one reference
assignment. A request reads ``store.current`` once and uses that snapshot to the end, so a
reload never mixes two models in one answer, and a snapshot that fails to build never replaces
the one serving.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from recommender.data.pseudonym import KEY_FILE_VARIABLE, Pseudonymizer
from recommender.exceptions import ArtifactError, RecommenderError
from recommender.models.persistence import Artifact, load_artifact, read_manifest
from recommender.models.verification import smoke_queries

from .isolated import run_isolated

log = logging.getLogger(__name__)
#: Seconds the smoke queries of a new artifact may take in their child process.
SMOKE_TIMEOUT = 60.0


class ReloadError(RecommenderError):
    """A new artifact (or key) was refused; the current model keeps serving."""


@dataclass(frozen=True)
class Served:
    """One loaded, verified model and what requests look up in it.

    Attributes
    ----------
    path : Path
        Artifact folder it was loaded from.
    artifact : Artifact
        Manifest and model (arrays memory-mapped read-only, shared between workers).
    pseudonymizer : Pseudonymizer
        The key the artifact was trained with (fingerprint checked).
    conditions, treatments, ingredients : frozenset of str
        Ids the model knows, for O(1) request validation (``ingredients``: its active-ingredient
        ids, what the CDS Hooks duplicate check falls back to for a medication it does not know).
    info : dict
        What ``GET /v1/model`` returns.
    loaded_at : float
        Unix time the snapshot was built.
    checks : dict
        Results cached for this snapshot in the process that uses it (see
        :mod:`service.readiness`); a reload builds a new snapshot, so they are re-run.
    """

    path: Path
    artifact: Artifact
    pseudonymizer: Pseudonymizer
    conditions: frozenset
    treatments: frozenset
    info: dict
    loaded_at: float
    ingredients: frozenset = frozenset()
    checks: dict = field(default_factory=dict, compare=False, repr=False)

    @property
    def model(self):
        return self.artifact.model

    @property
    def version(self) -> str:
        return self.artifact.manifest["version"]

    def pseudonym(self, patient_id: str) -> str:
        """The keyed hash of a raw patient id (what logs and the audit trail record)."""
        return self.pseudonymizer(patient_id)


def load_served(path: str | Path, key_file: str | Path) -> Served:
    """Load, verify and warm the artifact at ``path`` with the key in ``key_file``.

    Raises
    ------
    ReloadError
        Unreadable key, missing/partial/tampered artifact, an artifact with raw (not
        pseudonymised) patient ids, a key that does not match the one used in training, or
        content that fails verification (:mod:`recommender.models.verification`: id maps,
        shapes, finite values, and the smoke queries, run in a child process).
    """
    path = Path(path)
    try:
        pseudonymizer = Pseudonymizer.from_file(key_file)
        manifest = read_manifest(path)
        if not (manifest.get("pseudonyms") or {}).get("key_fingerprint"):
            raise ArtifactError(
                f"{path}: its patient ids are not pseudonymised; the service only "
                "serves keyed artifacts (recommender train --pseudonym-key-file "
                f"with the key in {KEY_FILE_VARIABLE})"
            )
        artifact = load_artifact(
            path, mmap=True, verify=True, pseudonymizer=pseudonymizer, smoke=False
        )
        _prepare(artifact.model)
        problem = run_isolated(lambda: _smoke_single_threaded(artifact.model), SMOKE_TIMEOUT)
        if problem is not None:
            raise ArtifactError(problem if problem.startswith(f"{path}:") else f"{path}: {problem}")
    except RecommenderError as exc:
        raise ReloadError(str(exc)) from None
    except (OSError, ValueError, KeyError, TypeError) as exc:  # a malformed artifact
        raise ReloadError(
            f"{path}: cannot load the artifact ({type(exc).__name__}: {exc})"
        ) from None
    model = artifact.model
    return Served(
        path=path,
        artifact=artifact,
        pseudonymizer=pseudonymizer,
        conditions=frozenset(model.condition_ids()),
        treatments=frozenset(model.treatment_ids()),
        ingredients=frozenset(model.ingredient_ids()),
        info=model_info(artifact.manifest),
        loaded_at=time.time(),
    )


def _smoke_single_threaded(model) -> None:
    """The smoke queries with one BLAS/OpenMP thread: a child forked from a process whose
    OpenMP pool already runs (a test process that trained a model) hangs in a parallel region
    of more than one thread, and completes in a region of one."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1):
        smoke_queries(model)


def _prepare(model) -> None:
    """Make the model ready to answer before it serves (and before gunicorn forks workers).

    - The item factors are copied into memory when they are a read-only memory map: implicit's
      ALS fold-in (new patients) needs a writable buffer. They are small (treatments x factors);
      the large per-patient arrays stay mapped and shared.
    - What the model derives lazily (:meth:`~recommender.models.base.Recommender.warm_up`:
      e.g. ALS's explanation solver, the id indices, the evidence shown in explanations) and
      the treatment vectors of ``similar`` are built once, so the preloaded master's copies are
      shared copy-on-write by the workers.

    The new-patient path is deliberately *not* exercised here: implicit's ALS fold-in runs an
    OpenMP parallel region, and GNU OpenMP used in a process that then forks leaves the children
    waiting forever on its thread pool. Each worker starts its own pool on its first use.
    """
    factors = getattr(model, "item_factors_", None)
    if isinstance(factors, np.ndarray) and not factors.flags.writeable:
        model.item_factors_ = np.array(factors)
    model.warm_up()  # derived from the factors just copied
    treatments = model.treatment_ids()
    if treatments:
        model.similar(treatments[0], k=1)


def model_info(manifest: dict) -> dict:
    """The public description of a model (``GET /v1/model``): no key, no patient id."""
    data = manifest.get("data", {})
    pseudonyms = manifest.get("pseudonyms") or {}
    return {
        "version": manifest.get("version"),
        "created": manifest.get("created"),
        "type": manifest.get("model", {}).get("type"),
        "params": manifest.get("model", {}).get("params", {}),
        "data": {
            "fingerprint": data.get("fingerprint"),
            "n_patients": data.get("n_patients"),
            "n_treatments": data.get("n_treatments"),
            "n_conditions": data.get("n_conditions"),
            "n_outcomes": data.get("n_outcomes"),
        },
        "metrics": manifest.get("metrics", {}),
        "pseudonyms": {
            "scheme": pseudonyms.get("scheme"),
            "key_fingerprint": pseudonyms.get("key_fingerprint"),
        },
        "libraries": manifest.get("libraries", {}),
    }


class ModelStore:
    """Holds the current :class:`Served` snapshot; reloads build a new one, then swap.

    Parameters
    ----------
    served : Served
        The first snapshot (see :func:`load_served`).
    key_file : path-like
        Where the pseudonymisation key is read from on every reload (so a rotated key is
        picked up together with the artifact trained with it).
    """

    def __init__(self, served: Served, key_file: str | Path):
        self.current = served
        self.key_file = Path(key_file)
        self._lock = threading.Lock()

    @classmethod
    def open(cls, path: str | Path, key_file: str | Path) -> ModelStore:
        return cls(load_served(path, key_file), key_file)

    def reload(self, path: str | Path | None = None) -> Served:
        """Load ``path`` and swap it in; on :class:`ReloadError` the current model stays."""
        with self._lock:
            served = load_served(path or self.current.path, self.key_file)
            previous, self.current = self.current, served
        log.info(
            "now serving model %s from %s (was %s)", served.version, served.path, previous.version
        )
        return served
