"""Holds the loaded artifact; swapping in a new one is a single reference assignment."""
from __future__ import annotations

import threading

from recommender.artifact import Artifact, load_artifact


class ModelStore:
    """The artifact the service answers from. Loading verifies checksums; arrays are mmap'd."""

    def __init__(self, path):
        self._lock = threading.Lock()
        self.artifact: Artifact = load_artifact(path, mmap=True)

    @property
    def model(self):
        return self.artifact.model

    def reload(self, path) -> Artifact:
        """Load and verify ``path``, then swap; on error the current artifact keeps serving."""
        with self._lock:
            artifact = load_artifact(path, mmap=True)
            self.artifact = artifact
            return artifact
