"""Edit an artifact's arrays *and* its checksums: content a buggy writer could produce.

Checksums then pass, so only the semantic verification (``recommender.models.verification``)
can refuse what these edits make.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from recommender.models.persistence import MANIFEST, sha256_file


def rewrite_array(artifact: Path, relative: str, array: np.ndarray) -> None:
    """Replace ``artifact/relative`` (e.g. ``model/item_factors.npy``) by ``array``, and
    re-sign the manifest so every checksum matches."""
    np.save(artifact / relative, np.ascontiguousarray(array), allow_pickle=False)
    manifest = json.loads((artifact / MANIFEST).read_text())
    manifest["files"][relative] = sha256_file(artifact / relative)
    text = json.dumps(manifest, indent=2, sort_keys=True)
    (artifact / MANIFEST).write_text(text)
    (artifact / f"{MANIFEST}.sha256").write_text(hashlib.sha256(text.encode()).hexdigest() + "\n")


def nan_factors(artifact: Path) -> None:
    """Every item factor NaN (what a diverged fit writes)."""
    factors = np.load(artifact / "model" / "item_factors.npy")
    rewrite_array(artifact, "model/item_factors.npy", np.full_like(factors, np.nan))


def misshapen_factors(artifact: Path) -> None:
    """Item factors with two rows too few (a writer that dropped columns)."""
    factors = np.load(artifact / "model" / "item_factors.npy")
    rewrite_array(artifact, "model/item_factors.npy", factors[:-2])
