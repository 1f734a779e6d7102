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

Once :meth:`Forest.compile` has compiled the forest (lleaves, see :mod:`.compiled`), a few
rows are scored through the compiled code instead (:meth:`Forest.raw_sum` and
:meth:`Forest.raw_segments_and_leaves`, which then reads no leaves): the same sums, several
times faster, and without the lock.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Mapping, Sequence

import lightgbm as lgb
import numpy as np

from .compiled import CompiledSegments, compile_segments

log = logging.getLogger(__name__)

#: Up to this many rows, the compiled forest scores them on the calling thread; more go to
#: LightGBM, which spreads a batch over every core.
COMPILED_ROWS = 2000
#: Probe rows a compiled forest must score as LightGBM does before it is used, and how closely
#: (log-odds; both sum the same float64 leaf values, in the same order within a segment).
PROBE_ROWS, PROBE_TOLERANCE = 512, 1e-9


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
        self.starts = _starts(self.sizes)
        self._leaf_values, self._path_bits = _leaf_table(booster)
        self._lock = threading.Lock()
        self.compiled: CompiledSegments | None = None
        self._compiled_sums: dict[tuple[str, ...], CompiledSegments] = {}
        self._compile_tried = False

    def __getstate__(self) -> dict:
        # machine code does not pickle: a copy compiles again when warmed
        skip = ("_lock", "compiled", "_compiled_sums", "_compile_tried")
        return {k: v for k, v in vars(self).items() if k not in skip}

    def __setstate__(self, state: dict) -> None:
        vars(self).update(state)
        self._lock = threading.Lock()
        self.compiled, self._compiled_sums, self._compile_tried = None, {}, False

    def compile(self, sums: Sequence[Sequence[str]] = ()) -> bool:
        """Compile, once, every segment's trees into one function of one output per segment,
        and the trees of each run of consecutive segments in ``sums`` into a function of
        their sum (:meth:`raw_sum` of them reads no other tree), for the few rows of one
        patient's request. False where they could not be compiled or the compiled code
        disagreed with LightGBM on probe rows: LightGBM then keeps scoring every row."""
        if not self._compile_tried:
            self._compile_tried = True
            self.compiled, self._compiled_sums = self._compile_checked(sums)
        return self.compiled is not None

    def _compile_checked(
        self, sums: Sequence[Sequence[str]]
    ) -> tuple[CompiledSegments | None, dict[tuple[str, ...], CompiledSegments]]:
        """(every segment, each of ``sums``) compiled and checked on probe rows; (None, {})
        if any of them fails."""
        with self._lock:  # the booster is not read from two threads at once
            text = self.booster.model_to_string()
        probe = probe_rows(text, PROBE_ROWS)
        expected = self._leaf_sums(probe)[0]
        n_features = self.booster.num_feature()
        whole = compile_segments(segments_as_classes(text, self.sizes), len(self.sizes), n_features)
        if whole is None or not _agree(whole(probe), expected):
            return None, {}
        head, trees, tail = _parts(text)
        summed = {}
        for names in sums:
            start, count = self._span(names)
            first = self.names.index(names[0])
            part = _model_text(head, trees[start : start + count], tail)
            one = compile_segments(part, 1, n_features)
            if one is None or not _agree(
                one(probe)[:, 0], expected[:, first : first + len(names)].sum(axis=1)
            ):
                return None, {}
            summed[tuple(names)] = one
        return whole, summed

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
        merged = _model_text(head, trees, tail)
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
        if self.compiled is not None and len(X) <= COMPILED_ROWS:
            summed = self._compiled_sums.get(tuple(names))
            if summed is not None:
                return summed(X)[:, 0]
            first = self.names.index(names[0])
            return self.compiled(X)[:, first : first + len(names)].sum(axis=1)
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

    def raw_segments_and_leaves(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """:meth:`raw_segments` and the leaf each row reaches in each tree, int64
        (n, n_trees); no leaves (None) where the compiled forest scored the rows."""
        if not len(X):
            return np.zeros((0, len(self.names))), np.zeros((0, sum(self.sizes)), np.int64)
        if self.compiled is not None and len(X) <= COMPILED_ROWS:
            return self.compiled(X), None
        return self._leaf_sums(X)

    def _leaf_sums(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Every segment's raw score, from LightGBM's leaves, and the leaves."""
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


def _model_text(head: str, trees: Sequence[str], tail: str) -> str:
    """A LightGBM model text of ``trees`` (without their ``Tree=i`` line, as :func:`_parts`
    gives them) between ``head`` and ``tail``, numbered from 0, with the head's
    ``tree_sizes`` recounted."""
    body = [f"Tree={i}\n{tree}\n\n\n" for i, tree in enumerate(trees)]
    sizes = "tree_sizes=" + " ".join(str(len(block.encode())) for block in body)
    head = re.sub(r"(?m)^tree_sizes=.*$", sizes, head)
    return head + "\n" + "".join(body) + "end of trees\n" + tail


def _parts(text: str) -> tuple[str, list[str], str]:
    """(header, trees without their ``Tree=i`` line, tail) of a LightGBM model text."""
    head, rest = text.split("\nTree=0\n", 1)
    trees, tail = rest.split("\nend of trees\n", 1)
    blocks = re.split(r"\nTree=\d+\n", "\n" + trees)
    return head, [b.strip("\n") for b in blocks if b.strip()], tail


#: A tree of one leaf of value 0 (pads a short segment in :func:`segments_as_classes`).
_EMPTY_TREE = (
    "num_leaves=1\nnum_cat=0\nsplit_feature=\nsplit_gain=\nthreshold=\ndecision_type=\n"
    "left_child=\nright_child=\nleaf_value=0\nleaf_weight=\nleaf_count=\ninternal_value=\n"
    "internal_weight=\ninternal_count=\nis_linear=0\nshrinkage=1"
)


def _starts(sizes: Sequence[int]) -> np.ndarray:
    """The first tree of each segment of ``sizes`` consecutive trees, int64."""
    return np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)


def _agree(compiled: np.ndarray, expected: np.ndarray) -> bool:
    """Whether compiled raw scores are LightGBM's (logged when not)."""
    if np.allclose(compiled, expected, rtol=0, atol=PROBE_TOLERANCE):
        return True
    log.warning("compiled trees disagree with LightGBM on probe rows; LightGBM scores them")
    return False


def segments_as_classes(text: str, sizes: Sequence[int]) -> str:
    """A LightGBM multiclass model text whose class ``s`` sums the trees of segment ``s`` of
    model text ``text`` (segments of ``sizes`` consecutive trees): iteration ``r`` holds each
    segment's ``r``-th tree in segment order, a one-leaf tree of 0 where a segment has fewer.

    Written for lleaves, which sums tree ``i`` into class ``i % num_class``; LightGBM itself
    never loads it.
    """
    head, trees, tail = _parts(text)
    if len(trees) != sum(sizes):
        raise ValueError(f"{len(trees)} trees in the text, segments of {list(sizes)}")
    n = len(sizes)
    starts = _starts(sizes).tolist()
    ordered = [
        trees[starts[s] + r] if r < sizes[s] else _EMPTY_TREE
        for r in range(max(sizes, default=0))
        for s in range(n)
    ]
    head = re.sub(r"(?m)^num_class=.*$", f"num_class={n}", head)
    head = re.sub(r"(?m)^num_tree_per_iteration=.*$", f"num_tree_per_iteration={n}", head)
    head = re.sub(r"(?m)^objective=.*$", f"objective=multiclass num_class:{n}", head)
    return _model_text(head, ordered, tail)


def probe_rows(text: str, n: int, seed: int = 0) -> np.ndarray:
    """Float64 (n, features) rows over every feature's range in model text ``text``
    (``feature_infos``): numbers uniform over [min, max] widened by 10% either side, known
    categories and a few unseen ones, and about 10% missing (NaN) in each column."""
    found = re.search(r"(?m)^feature_infos=(.*)$", text)
    if found is None:
        raise ValueError("not a LightGBM model text: no feature_infos line")
    infos = found.group(1).split()
    rng = np.random.default_rng(seed)
    out = np.empty((n, len(infos)))
    for j, info in enumerate(infos):
        if info.startswith("["):
            low, high = (float(v) for v in info[1:-1].split(":"))
            pad = 0.1 * (high - low) + 1e-9
            out[:, j] = rng.uniform(low - pad, high + pad, n)
        elif info == "none":
            out[:, j] = rng.normal(size=n)
        else:
            known = np.array(info.split(":"), np.float64)
            out[:, j] = rng.choice(np.concatenate([known, [known.max() + 1, known.max() + 40]]), n)
        out[rng.random(n) < 0.1, j] = np.nan
    return out


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
