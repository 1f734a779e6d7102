"""Artifacts: a fitted model and its dataset as a folder of numpy arrays plus a JSON manifest.

Layout::

    ARTIFACT/
      manifest.json          model type and parameters, data summary and fingerprint, id maps of
                             treatments/features/conditions, metrics, library versions, creation
                             time, and the SHA-256 of every array file
      manifest.json.sha256   SHA-256 of manifest.json
      model/<name>.npy       learned arrays (e.g. user_factors, item_factors)
      dataset/<name>.npy     id map of patients, sparse matrices as data/indices/indptr

Arrays load with ``np.load(mmap_mode="r", allow_pickle=False)``, so serving workers share the
pages of one file instead of holding copies. Writing goes to a temporary folder renamed into
place; loading verifies every checksum and refuses a tampered or partial artifact. No pickle.
"""

from __future__ import annotations

import hashlib
import json
import platform
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from ..data.dataset import Dataset
from ..data.dataset_arrays import dataset_from_arrays, dataset_to_arrays
from ..data.pseudonym import SCHEME, Pseudonymizer
from ..exceptions import ArtifactError
from ..utils.fileutil import atomic_dir
from ..utils.jsonable import jsonable
from . import verification
from .registry import MODELS

FORMAT = "treatment-recommender-artifact"
FORMAT_VERSION = 4  # 2: history_days, interactions, label_counts, safety, names
#: 3: birth years, observations and tries per condition (the outcome model's patient state)
#: 4: the treatments' active ingredients (read as each treatment its own before 4)
READABLE_VERSIONS = (2, 3, 4)
MANIFEST = "manifest.json"


@dataclass
class Artifact:
    """A loaded artifact: the fitted model (its ``dataset_`` attached) and the manifest."""

    path: Path
    manifest: dict
    model: Any  # a fitted Recommender (typed loosely: this module sits below models.base)

    @property
    def dataset(self) -> Dataset:
        return self.model.dataset_


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in ("implicit", "numpy", "scipy", "pandas", "treatment-recommender"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "unknown"
    return versions


def save_artifact(
    model, path, metrics: Mapping | None = None, extra: Mapping | None = None
) -> Path:
    """Write ``model`` (fitted) and its dataset to the folder ``path``, atomically.

    Parameters
    ----------
    model : Recommender
        A fitted model.
    path : path-like
        Target folder; replaced whole if it exists.
    metrics : mapping, optional
        Validation metrics to record in the manifest.
    extra : mapping, optional
        More JSON-able manifest entries (e.g. the training configuration).

    Raises
    ------
    ArtifactError
        The written folder fails :func:`load_artifact`'s verification (e.g. NaN factors from
        a diverged fit); nothing is renamed into place and ``path`` is left as it was.
    """
    dataset: Dataset = model.dataset_
    data_arrays, data_meta = dataset_to_arrays(dataset)
    created = datetime.now(timezone.utc)
    manifest = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "version": f"{model.kind}-{created:%Y%m%dT%H%M%SZ}-{dataset.fingerprint[:8]}",
        "created": created.isoformat(timespec="seconds"),
        "model": {
            "type": model.kind,
            "class": type(model).__name__,
            "params": jsonable(model.get_params()),
        },
        "data": {
            "n_patients": dataset.n_patients,
            "n_treatments": dataset.n_treatments,
            "n_features": len(dataset.features),
            "n_conditions": len(dataset.conditions),
            "n_outcomes": int(dataset.history.nnz),
            **data_meta,
        },
        "pseudonyms": {
            "scheme": SCHEME if dataset.pseudonym_fingerprint else "none",
            "key_fingerprint": dataset.pseudonym_fingerprint or None,
        },
        "metrics": jsonable(dict(metrics or {})),
        "libraries": library_versions(),
        **jsonable(dict(extra or {})),
    }
    files = {}
    with atomic_dir(path) as tmp:
        for group, arrays in (("model", model._state()), ("dataset", data_arrays)):
            (tmp / group).mkdir()
            for name, array in arrays.items():
                relative = f"{group}/{name}.npy"
                np.save(tmp / relative, np.ascontiguousarray(array), allow_pickle=False)
                files[relative] = sha256_file(tmp / relative)
        manifest["files"] = files
        text = json.dumps(manifest, indent=2, sort_keys=True)
        (tmp / MANIFEST).write_text(text)
        (tmp / f"{MANIFEST}.sha256").write_text(hashlib.sha256(text.encode()).hexdigest() + "\n")
        try:  # what a server would load, checked before it is renamed into place
            load_artifact(tmp, mmap=True, verify=True)
        except verification.ArtifactVerificationError as exc:
            where = exc.where.removeprefix(f"{tmp}: ")
            raise verification.ArtifactVerificationError(
                f"{path}: not written, the new model fails its own checks: {where}",
                exc.check,
                exc.detail,
            ) from None
    return Path(path)


def read_manifest(path) -> dict:
    """The verified manifest of the artifact at ``path`` (checksum of the manifest itself)."""
    path = Path(path)
    manifest_path = path / MANIFEST
    if not path.is_dir():
        raise ArtifactError(
            f"{path}: no artifact folder there (train one with `recommender train`)"
        )
    if not manifest_path.is_file() or not (path / f"{MANIFEST}.sha256").is_file():
        raise ArtifactError(
            f"{path}: not a complete artifact ({MANIFEST} or its .sha256 is missing)"
        )
    contained_file(path, MANIFEST)
    contained_file(path, f"{MANIFEST}.sha256")
    text = manifest_path.read_bytes()
    expected = (path / f"{MANIFEST}.sha256").read_text().strip()
    if hashlib.sha256(text).hexdigest() != expected:
        raise ArtifactError(
            f"{manifest_path}: checksum mismatch; the manifest was modified "
            "after the artifact was written"
        )
    try:
        manifest = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ArtifactError(f"{manifest_path}: not valid JSON ({exc})") from None
    if manifest.get("format") != FORMAT or manifest.get("format_version") not in READABLE_VERSIONS:
        raise ArtifactError(
            f"{manifest_path}: format {manifest.get('format')!r} version "
            f"{manifest.get('format_version')!r}; this release reads {FORMAT!r} "
            f"versions {list(READABLE_VERSIONS)}"
        )
    return manifest


def contained_file(folder: Path, relative: str) -> Path:
    """``folder / relative`` if it is a regular file inside ``folder`` (ArtifactError otherwise).

    A checksum only says the bytes are right; the file must also be the artifact's own. A
    symbolic link may point within the folder, never out of it (to a file an attacker controls
    elsewhere, or one that changes under the service), and a FIFO or device is refused (reading
    one would block or never end). The folder itself may be a link (``artifacts/current``).
    """
    root = folder.resolve()
    file = folder / relative
    if not file.exists() and not file.is_symlink():
        raise ArtifactError(f"{folder}: partial artifact, {relative} is missing")
    target = file.resolve()
    if not target.is_relative_to(root):
        raise ArtifactError(
            f"{folder}: {relative} resolves to {target}, outside the artifact folder; an "
            "artifact's files must lie inside it (copy the file in instead of linking it)"
        )
    if not target.is_file():
        raise ArtifactError(f"{folder}: {relative} is not a regular file")
    return file


def verify_files(path, manifest: Mapping) -> None:
    """Check that every array file is present, inside the folder (:func:`contained_file`) and
    has its recorded SHA-256."""
    path = Path(path)
    for relative, expected in manifest["files"].items():
        file = contained_file(path, relative)
        if sha256_file(file) != expected:
            raise ArtifactError(
                f"{path}: {relative} does not match its checksum; the artifact "
                "was modified or corrupted after it was written"
            )


def load_artifact(
    path,
    mmap: bool = True,
    verify: bool = True,
    pseudonymizer: Pseudonymizer | None = None,
    smoke: bool | None = None,
) -> Artifact:
    """Load and verify an artifact; arrays are memory-mapped read-only when ``mmap``.

    ``pseudonymizer`` is the key a keyed artifact was trained with; without it the model works
    on internal indices (evaluation, batch ranking of every patient) but cannot look up a raw
    patient id. A key that does not match raises ArtifactError.

    ``verify`` checks every file's checksum and then the content
    (:mod:`recommender.models.verification`: id maps, shapes, finite values), and ``smoke``
    (default: ``verify``) ranks a known and a new patient. A server that forks after loading
    passes ``smoke=False`` and runs :func:`~recommender.models.verification.smoke_queries`
    in a child process.

    Raises
    ------
    ArtifactError
        Missing folder, missing or modified file, unknown format or model type;
        ``ArtifactVerificationError`` (a subclass) for intact files whose content cannot be
        served, naming the file and the check.
    """
    path = Path(path)
    manifest = read_manifest(path)
    if verify:
        verify_files(path, manifest)
    arrays: dict[str, dict[str, np.ndarray]] = {group: {} for group in ("model", "dataset")}
    for relative in manifest["files"]:
        group, name = relative.split("/", 1)
        array = np.load(
            contained_file(path, relative), mmap_mode="r" if mmap else None, allow_pickle=False
        )
        # a plain ndarray view of the map: np.memmap's Python-level __getitem__ costs
        # microseconds per slice on the serving path; the view keeps the map alive (its base)
        arrays[group][name.removesuffix(".npy")] = array.view(np.ndarray) if mmap else array
    kind = manifest["model"]["type"]
    if kind not in MODELS:
        raise ArtifactError(f"{path}: unknown model type {kind!r}")
    model = MODELS[kind](**manifest["model"]["params"])
    try:
        if verify:
            rows = _dataset_rows(manifest, arrays["dataset"])
            verification.check_shapes("dataset", arrays["dataset"], rows)
        model.dataset_ = dataset_from_arrays(arrays["dataset"], manifest["data"])
        if verify:
            verification.check_id_maps(model.dataset_, manifest)
            verification.check_finite("dataset", _float_data(arrays["dataset"]))
            verification.check_shapes("model", arrays["model"], model.state_shapes(arrays["model"]))
            verification.check_finite("model", arrays["model"])
        if pseudonymizer is not None:
            model.dataset_.attach_key(pseudonymizer)
        model._load_state(arrays["model"])
        model.manifest_ = manifest
        if verify if smoke is None else smoke:
            verification.smoke_queries(model)
    except verification.ArtifactVerificationError as exc:
        where = f"{path}: {exc.where}"
        raise verification.ArtifactVerificationError(where, exc.check, exc.detail) from None
    except ArtifactError as exc:
        raise ArtifactError(f"{path}: {exc}") from None
    return Artifact(path=path, manifest=manifest, model=model)


def _dataset_rows(manifest: Mapping, arrays: Mapping) -> dict[str, tuple]:
    """Shapes of the dataset files present with one entry per patient or treatment (from the
    manifest), checked before the dataset is built from them."""
    data = manifest.get("data", {})
    n_p, n_t = data.get("n_patients"), len(data.get("treatment_ids", []))
    shapes: dict[str, tuple] = {"patient_ids": (n_p,), "treatment_support": (n_t,)}
    for name in ("demo_sex", "demo_age_band", "birth_year"):
        shapes[name] = (n_p,)
    for name in ("matrix", "history", "harmful", "patient_conditions", "history_days"):
        shapes[f"{name}.indptr"] = (n_p + 1,)
        shapes[f"{name}.indices"] = (f"{name}.nnz",)
        shapes[f"{name}.data"] = (f"{name}.nnz",)
    return {name: shape for name, shape in shapes.items() if name in arrays}


def _float_data(arrays: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The dataset arrays that must be finite: the matrices' values and the support counts
    (``birth_year`` holds NaN for an unknown year, the observations NaN for none)."""
    names = ("matrix.data", "history.data", "history_days.data", "treatment_support")
    return {name: arrays[name] for name in names if name in arrays}
