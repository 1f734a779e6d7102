"""Gradient-boosted trees (LightGBM) trained in named segments and served as one forest.

The outcome model needs several boosters over the same feature rows: bootstrap replicates of
the success model (their spread is the uncertainty of a prediction), a harm model and the
clinicians' choice model (propensity). They are concatenated into one LightGBM model, so a
single call scores a patient's candidates under every segment:

- :meth:`Forest.raw` sums one segment's trees through LightGBM itself (the batch path);
- :meth:`Forest.raw_segments` takes every tree's leaf in one call and sums the leaf values of
  each segment in numpy (the one-patient path), exactly what ``raw`` gives per segment.

Segments are consecutive trees (one tree per boosting round: every objective here is binary),
and each segment's first tree carries LightGBM's initial score, so a segment's sum is its
booster's raw score (log-odds). The forest is saved as its model text in a uint8 array: no
pickle.

A LightGBM Booster is not safe to predict from two threads at once: each call sets the
booster's iteration range and output layout, and concurrent calls (the service's threaded
workers) were measured to return other calls' leaves and scores, wrong without an error. Every
prediction here therefore holds the forest's lock (LightGBM releases the GIL inside, so other
threads still run Python meanwhile).

Once :meth:`Forest.compile` has compiled some consecutive segments (lleaves, see
:mod:`.compiled`), :meth:`Forest.raw_sum` of those segments scores a few rows through the
compiled code instead: the same sums, several times faster, and without the lock.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Mapping, Sequence

import lightgbm as lgb
import numpy as np

from .compiled import CompiledSum, compile_sum

#: Up to this many rows, a compiled sum scores them on the calling thread; more go to
#: LightGBM, which spreads a batch over every core.
COMPILED_ROWS = 2000


class Forest:
    """Named segments of one LightGBM model.

    Parameters
    ----------
    booster : lightgbm.Booster
        Every segment's trees, in segment order.
    names, sizes : sequence of str, sequence of int
        Segment names and their tree counts, in order.
    """

    def __init__(self, booster: lgb.Booster, names: Sequence[str], sizes: Sequence[int]):
        self.booster, self.names, self.sizes = booster, list(names), [int(s) for s in sizes]
        self.starts = np.concatenate([[0], np.cumsum(self.sizes)[:-1]]).astype(np.int64)
        self._leaf_values, self._path_bits = _leaf_table(booster)
        self._lock = threading.Lock()
        self._compiled: dict[tuple[str, ...], CompiledSum | None] = {}

    def __getstate__(self) -> dict:
        # machine code does not pickle: a copy compiles again when warmed
        return {k: v for k, v in vars(self).items() if k not in ("_lock", "_compiled")}

    def __setstate__(self, state: dict) -> None:
        vars(self).update(state)
        self._lock = threading.Lock()
        self._compiled = {}

    def compile(self, names: Sequence[str]) -> bool:
        """Compile the trees of consecutive segments ``names`` for :meth:`raw_sum` (once);
        False where they could not be compiled (LightGBM keeps scoring them)."""
        key = tuple(names)
        if key not in self._compiled:
            start, count = self._span(names)
            with self._lock:  # the booster is not read from two threads at once
                text = self.booster.model_to_string(start_iteration=start, num_iteration=count)
            self._compiled[key] = compile_sum(text, self.booster.num_feature())
        return self._compiled[key] is not None

    def predict(self, X: np.ndarray, **kwargs) -> np.ndarray:
        """``booster.predict(X, **kwargs)`` under the forest's lock (see the module docstring)."""
        with self._lock:
            return np.asarray(self.booster.predict(X, **kwargs))

    @classmethod
    def merge(cls, boosters: Mapping[str, lgb.Booster]) -> Forest:
        """One forest of the boosters' trees, in mapping order (same features for each)."""
        texts = {name: booster.model_to_string() for name, booster in boosters.items()}
        head, _, tail = _parts(next(iter(texts.values())))
        trees, sizes = [], []
        for text in texts.values():
            _, segment, _ = _parts(text)
            trees += segment
            sizes.append(len(segment))
        body = [f"Tree={i}\n{tree}\n\n\n" for i, tree in enumerate(trees)]
        head = re.sub(
            r"tree_sizes=[^\n]*", "tree_sizes=" + " ".join(str(len(b.encode())) for b in body), head
        )
        merged = head + "\n" + "".join(body) + "end of trees\n" + tail
        return cls(lgb.Booster(model_str=merged), list(texts), sizes)

    def raw(self, X: np.ndarray, name: str) -> np.ndarray:
        """Raw scores (log-odds), float64 (n,), of segment ``name`` for rows ``X``."""
        return self.raw_sum(X, [name])

    def raw_sum(self, X: np.ndarray, names: Sequence[str]) -> np.ndarray:
        """The sum of the raw scores of consecutive segments ``names``, in one call: of the
        compiled trees for a few rows once :meth:`compile` has compiled them, else LightGBM."""
        start, count = self._span(names)
        if not len(X):
            return np.zeros(0)
        compiled = self._compiled.get(tuple(names))
        if compiled is not None and len(X) <= COMPILED_ROWS:
            return compiled(X)
        return self.predict(
            X,
            raw_score=True,
            start_iteration=start,
            num_iteration=count,
            num_threads=1 if len(X) < 5000 else 0,
        )

    def _span(self, names: Sequence[str]) -> tuple[int, int]:
        """(first tree, tree count) of consecutive segments ``names``."""
        first = [self.names.index(name) for name in names]
        if first != list(range(first[0], first[0] + len(first))):
            raise ValueError(f"segments {list(names)} are not consecutive in {self.names}")
        return int(self.starts[first[0]]), sum(self.sizes[i] for i in first)

    def raw_segments(self, X: np.ndarray) -> np.ndarray:
        """Raw scores float64 (n, n_segments) of every segment, from one traversal."""
        return self.raw_segments_and_leaves(X)[0]

    def raw_segments_and_leaves(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`raw_segments` and the leaf each row reaches in each tree, int64
        (n, n_trees)."""
        if not len(X):
            return np.zeros((0, len(self.names))), np.zeros((0, sum(self.sizes)), np.int64)
        leaves = self.predict(X, pred_leaf=True, num_threads=1).astype(np.int64)
        values = self._leaf_values[np.arange(leaves.shape[1]), leaves]
        return np.add.reduceat(values, self.starts, axis=1), leaves

    def path_features(self, leaves: np.ndarray, names: Sequence[str]) -> np.ndarray:
        """Uint64 (n, words): bit ``j`` (of word ``j // 64``) set when a split on the way to a
        row's leaves in the trees of segments ``names`` reads feature ``j`` (see
        :func:`feature_bits`).

        A feature no split on a row's paths reads cannot change that row's prediction: the
        row reaches the same leaves whatever value it holds (used to skip occlusions that
        would change nothing).
        """
        trees = np.concatenate(
            [
                np.arange(self.starts[i], self.starts[i] + self.sizes[i])
                for i in (self.names.index(name) for name in names)
            ]
        )
        return np.bitwise_or.reduce(self._path_bits[trees, leaves[:, trees]], axis=1)

    def to_array(self) -> np.ndarray:
        """The model text as uint8 (what an artifact stores)."""
        return np.frombuffer(self.booster.model_to_string().encode(), np.uint8).copy()

    @classmethod
    def from_array(cls, text: np.ndarray, names: Sequence[str], sizes: Sequence[int]) -> Forest:
        return cls(lgb.Booster(model_str=bytes(np.asarray(text, np.uint8)).decode()), names, sizes)


def _parts(text: str) -> tuple[str, list[str], str]:
    """(header, trees without their ``Tree=i`` line, tail) of a LightGBM model text."""
    head, rest = text.split("\nTree=0\n", 1)
    trees, tail = rest.split("\nend of trees\n", 1)
    blocks = re.split(r"\nTree=\d+\n", "\n" + trees)
    return head, [b.strip("\n") for b in blocks if b.strip()], tail


def feature_bits(features: Sequence[int], n_features: int) -> np.ndarray:
    """Uint64 (words,): the bit set of ``features`` as :meth:`Forest.path_features` lays it out."""
    bits = np.zeros(max(1, -(-n_features // 64)), np.uint64)
    for j in features:
        bits[j // 64] |= np.uint64(1) << np.uint64(j % 64)
    return bits


def _leaf_table(booster: lgb.Booster) -> tuple[np.ndarray, np.ndarray]:
    """Leaf values float64 (n_trees, max leaves) of every tree (padding 0), and uint64
    (n_trees, max leaves, words): the features split on along the path to each leaf, as bits
    (:func:`feature_bits`)."""
    trees = booster.dump_model()["tree_info"]
    width, n_features = max((t["num_leaves"] for t in trees), default=1), booster.num_feature()
    table = np.zeros((len(trees), width))
    paths = np.zeros((len(trees), width, max(1, -(-n_features // 64))), np.uint64)
    for i, tree in enumerate(trees):
        stack: list[tuple[dict, tuple[int, ...]]] = [(tree["tree_structure"], ())]
        while stack:
            node, path = stack.pop()
            if "leaf_index" in node:
                table[i, node["leaf_index"]] = node["leaf_value"]
                paths[i, node["leaf_index"]] = feature_bits(path, n_features)
            elif "left_child" in node:
                below = (*path, int(node["split_feature"]))
                stack += [(node["left_child"], below), (node["right_child"], below)]
            else:  # a tree of a single leaf
                table[i, 0] = node.get("leaf_value", 0.0)
    return table, paths


def train_booster(
    X: np.ndarray,
    y: np.ndarray,
    weight: np.ndarray | None,
    categorical: Sequence[int],
    params: Mapping,
    rounds: int,
) -> lgb.Booster:
    """A binary LightGBM booster of exactly ``rounds`` trees (no early stop: segments of one
    forest keep fixed sizes)."""
    data = lgb.Dataset(
        X,
        label=y.astype(np.float64),
        weight=weight,
        categorical_feature=list(categorical),
        free_raw_data=True,
        params={"verbose": -1},
    )
    settings = {"objective": "binary", "verbose": -1, **params}
    return lgb.train(settings, data, num_boost_round=rounds)
