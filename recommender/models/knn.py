"""Item-item nearest neighbours (implicit's cosine and BM25 recommenders)."""

from __future__ import annotations

import warnings
from collections.abc import Mapping

import numpy as np
import scipy.sparse as sp
from implicit.nearest_neighbours import BM25Recommender as _ImplicitBM25
from implicit.nearest_neighbours import CosineRecommender as _ImplicitCosine

from ..data.patient import Query
from .base import Recommender, positive_part
from .params import integer, real


class ItemKNNRecommender(Recommender):
    """Scores a treatment by how similar it is to what worked for the patient.

    Learned state: ``similarity_``, CSR (n_t + n_f, n_t + n_f) float32, each column's ``K``
    nearest neighbours among all columns (so a diagnosis column votes for the treatments that
    worked for patients with it). Score = (positive part of the patient's row) @ similarity.
    Known patients and patients outside the training data are scored the same way.
    """

    _constraints = {"K": integer(1, 100_000)}

    def _implicit_model(self):
        raise NotImplementedError

    def _fit(self, dataset, show_progress: bool) -> None:
        model = self._implicit_model()
        with warnings.catch_warnings():
            # implicit's own BM25 weighting hands its kNN a COO matrix and then warns about it
            warnings.filterwarnings("ignore", message="Method expects CSR input")
            model.fit(positive_part(dataset.matrix), show_progress=show_progress)
        self.similarity_ = model.similarity.tocsr().astype(np.float32)

    def _score(self, query: Query) -> np.ndarray:
        n_t = self.dataset_.n_treatments
        rows = positive_part(query.rows)
        return np.asarray((rows @ self.similarity_[:, :n_t]).todense())

    def _treatment_vectors(self):
        n_t = self.dataset_.n_treatments
        return self.similarity_[:n_t, :n_t].tocsr()

    def neighbours(self, treatment: int) -> tuple[np.ndarray, np.ndarray]:
        """Column indices and similarities of a column's neighbours, most similar first."""
        row = self.similarity_.getrow(treatment)
        order = np.argsort(-row.data, kind="stable")
        return row.indices[order], row.data[order]

    def _state(self) -> dict[str, np.ndarray]:
        s = self.similarity_
        return {
            "similarity_data": s.data,
            "similarity_indices": s.indices,
            "similarity_indptr": s.indptr,
            "similarity_shape": np.asarray(s.shape),
        }

    def state_shapes(self, arrays) -> dict[str, tuple]:
        columns = self.dataset_.n_treatments + len(self.dataset_.features)
        return {
            "similarity_data": ("nnz",),
            "similarity_indices": ("nnz",),
            "similarity_indptr": (columns + 1,),
            "similarity_shape": (2,),
        }

    def _load_state(self, arrays: Mapping[str, np.ndarray]) -> None:
        self.similarity_ = sp.csr_matrix(
            (arrays["similarity_data"], arrays["similarity_indices"], arrays["similarity_indptr"]),
            shape=tuple(int(v) for v in arrays["similarity_shape"]),
        )


class CosineRecommender(ItemKNNRecommender):
    """Item-kNN with cosine similarity.

    Parameters
    ----------
    K : int
        Neighbours kept per column.
    """

    kind = "cosine"

    def __init__(self, K: int = 50):
        self.K = K

    def _implicit_model(self):
        return _ImplicitCosine(K=self.K)


class BM25Recommender(ItemKNNRecommender):
    """Item-kNN with BM25-weighted similarity (down-weights columns common to everyone).

    Parameters
    ----------
    K : int
        Neighbours kept per column.
    K1, B : float
        BM25 saturation and length normalisation.
    """

    kind = "bm25"
    _constraints = {"K": integer(1, 100_000), "K1": real(0), "B": real(0, 1)}

    def __init__(self, K: int = 50, K1: float = 1.2, B: float = 0.75):
        self.K = K
        self.K1 = K1
        self.B = B

    def _implicit_model(self):
        return _ImplicitBM25(K=self.K, K1=self.K1, B=self.B)
