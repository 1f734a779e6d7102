"""Pseudonymous patient ids: keyed hashes (HMAC-SHA256) so artifacts and logs never hold raw ids.

A site keeps one secret key (at least 32 bytes of randomness) outside the artifact, in a file
named by ``RECOMMENDER_PSEUDONYM_KEY_FILE`` (or the key itself, hex or text, in
``RECOMMENDER_PSEUDONYM_KEY``). Training maps every patient id to
``HMAC-SHA256(key, id)`` (hex, first 32 characters); serving maps an incoming id with the same
key. The artifact records only the key's *fingerprint* (an HMAC of a fixed label), so a service
started with another key is refused with a clear message instead of answering "unknown patient"
for everyone.

Rotating the key: train a new artifact with the new key, then deploy it together with the new
key (the service reloads both); old artifacts stay tied to the old key.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np

from ..exceptions import ArtifactError, RecommenderError

KEY_FILE_VARIABLE = "RECOMMENDER_PSEUDONYM_KEY_FILE"
KEY_VARIABLE = "RECOMMENDER_PSEUDONYM_KEY"
SCHEME = "hmac-sha256-128"
_FINGERPRINT_LABEL = b"treatment-recommender key fingerprint v1"
MIN_KEY_BYTES = 16


class Pseudonymizer:
    """Maps raw patient ids to pseudonyms with a secret key.

    Parameters
    ----------
    key : bytes
        The secret; at least 16 bytes.
    """

    def __init__(self, key: bytes):
        if len(key) < MIN_KEY_BYTES:
            raise RecommenderError(
                f"the pseudonymisation key must be at least {MIN_KEY_BYTES} bytes; got {len(key)}"
            )
        self._key = key

    def __call__(self, patient_id: str) -> str:
        digest = hmac.new(self._key, str(patient_id).encode("utf-8"), hashlib.sha256)
        return digest.hexdigest()[:32]

    def many(self, patient_ids: Iterable[str]) -> np.ndarray:
        """Pseudonyms of many ids (object array, same order)."""
        return np.array([self(p) for p in patient_ids], dtype=object)

    @property
    def fingerprint(self) -> str:
        """Identifies the key without revealing it (stored in artifacts)."""
        return hmac.new(self._key, _FINGERPRINT_LABEL, hashlib.sha256).hexdigest()[:16]

    def __repr__(self) -> str:  # never show the key
        return f"Pseudonymizer(fingerprint={self.fingerprint})"

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> Pseudonymizer:
        path = Path(path)
        try:
            key = path.read_bytes().strip()
        except OSError as exc:
            raise RecommenderError(
                f"cannot read the pseudonymisation key file {path}: {exc.strerror}"
            ) from None
        return cls(key)

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None) -> Pseudonymizer | None:
        """The key named by the environment, or None when neither variable is set."""
        environ = os.environ if environ is None else environ
        if environ.get(KEY_FILE_VARIABLE):
            return cls.from_file(environ[KEY_FILE_VARIABLE])
        if environ.get(KEY_VARIABLE):
            return cls(environ[KEY_VARIABLE].encode("utf-8"))
        return None


def create_key_file(path: str | os.PathLike) -> Path:
    """Write a new random key (64 hex characters) readable only by its owner."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(secrets.token_hex(32) + "\n")
    return path


def check_key(
    manifest_pseudonyms: Mapping, pseudonymizer: Pseudonymizer | None, where: str
) -> None:
    """Refuse a key that does not match the one the artifact was trained with."""
    expected = manifest_pseudonyms.get("key_fingerprint")
    if expected is None:
        return
    if pseudonymizer is None:
        raise ArtifactError(
            f"{where}: its patient ids are pseudonymised; set "
            f"{KEY_FILE_VARIABLE} to the key it was trained with"
        )
    if pseudonymizer.fingerprint != expected:
        raise ArtifactError(
            f"{where}: the pseudonymisation key does not match the one used in "
            f"training (key fingerprint {pseudonymizer.fingerprint}, artifact "
            f"expects {expected}); use the training key or retrain"
        )
