"""Trees compiled to native code (lleaves), for the few rows of one patient's request.

LightGBM's ``Booster.predict`` costs about 25 us per call before it reads a row, and about
3-5 us per row through 160 trees; the one-patient explanation predicts a few dozen occluded
rows per request. lleaves compiles a LightGBM model text with LLVM into one function that
walks every tree: measured on the 20k cohort's 160 success trees, 50 rows take 20 us against
155 us through LightGBM, with the same raw scores up to float rounding (|difference| below
1e-13 in log-odds).

A compiled sum is a pure function of its input (no state is shared between calls) and its
call releases the GIL, so threads may call it at once, unlike a LightGBM Booster.

Compiling costs seconds (about 2.5 s for 160 trees of 31 leaves), so it happens once, when a
server warms its model before it forks its workers (the compiled code is then shared), never
on a request.

A categorical split is compiled as a look-up in a constant bit set, of one 32-bit word per 32
categories, indexed at run time; LLVM materialises a wide one on every visit. With many
categories (the therapy code of a model with thousands of therapies) the compiled trees are no
faster than LightGBM and take far longer to compile. Measured (160 trees of 15 leaves, 50
rows, one categorical feature): a widest bit set of 2, 8, 16 and 64 words scored in 31, 48, 53
and 155 us against LightGBM's 140-201 us; the 100k x 2k-therapy benchmark model (widest 63
words, about ten such splits per tree) scored 100 rows in 535 us against 533 us and took 22 s
to compile. :func:`compile_sum` therefore leaves trees with a bit set wider than
:data:`MAX_CATEGORY_WORDS` to LightGBM.

The machine code is held in memory only: loading native code from a writable cache file would
let whoever can write that file run code in the service.
"""

from __future__ import annotations

import logging
import os
import tempfile

import numpy as np

log = logging.getLogger(__name__)

#: Trees with a categorical bit set wider than this many 32-bit words (512 categories) are
#: not compiled (see the module docstring).
MAX_CATEGORY_WORDS = 16


class CompiledSum:
    """The raw score (sum of leaf values, log-odds) of a LightGBM model text's trees.

    Parameters
    ----------
    model_text : str
        A LightGBM model text (``Booster.model_to_string``) holding exactly the trees to sum.
    n_features : int
        Columns of the rows it scores.
    """

    def __init__(self, model_text: str, n_features: int):
        import lleaves

        self.n_features = int(n_features)
        handle, path = tempfile.mkstemp(suffix=".txt", prefix="forest-")
        try:
            with os.fdopen(handle, "w") as file:
                file.write(model_text)
            self._model = lleaves.Model(model_file=path)
            # few rows per call: lleaves advises no cache blocking over trees (one block)
            self._model.compile(raw_score=True, fblocksize=self._model.num_trees())
        finally:
            os.unlink(path)

    def __call__(self, X: np.ndarray) -> np.ndarray:
        """Raw scores float64 (n,) of rows ``X`` (n, n_features); NaN is "missing", as in
        LightGBM."""
        X = np.ascontiguousarray(X, np.float64)
        if X.ndim != 2 or X.shape[1] != self.n_features:
            raise ValueError(f"rows must be (n, {self.n_features}), got {X.shape}")
        return self._model.predict(X, n_jobs=1)


def widest_category_set(model_text: str) -> int:
    """The 32-bit words of the widest categorical bit set in a LightGBM model text (0 without
    categorical splits)."""
    widest = 0
    for line in model_text.splitlines():
        if line.startswith("cat_boundaries="):
            bounds = np.array(line.partition("=")[2].split(), np.int64)
            widest = max(widest, int(np.diff(bounds).max(initial=0)))
    return widest


def compile_sum(model_text: str, n_features: int) -> CompiledSum | None:
    """A :class:`CompiledSum`, or None (logged) where compiling would not pay (a categorical
    bit set wider than :data:`MAX_CATEGORY_WORDS`) or lleaves is missing or cannot compile on
    this machine: LightGBM then scores every row, with the same result."""
    widest = widest_category_set(model_text)
    if widest > MAX_CATEGORY_WORDS:
        log.info(
            "trees not compiled: a categorical split has %d x 32 categories (compiled code "
            "is not faster beyond %d x 32); LightGBM scores them",
            widest,
            MAX_CATEGORY_WORDS,
        )
        return None
    try:
        return CompiledSum(model_text, n_features)
    except Exception as exc:  # noqa: BLE001 - any failure leaves the exact LightGBM path
        log.warning("trees not compiled (%s: %s); LightGBM scores them", type(exc).__name__, exc)
        return None
