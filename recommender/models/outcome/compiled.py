"""Trees compiled to native code (lleaves), for the few rows of one patient's request.

LightGBM's ``Booster.predict`` costs about 25 us per call before it reads a row, and about
3-5 us per row through 160 trees; one patient's request scores a few candidates under every
segment of the forest, then a few dozen occluded rows under the success trees. lleaves compiles
a LightGBM model text with LLVM into one function that walks every tree: measured on the 20k
cohort's 160 success trees, 50 rows take 20 us against 155 us through LightGBM, with the same
raw scores up to float rounding (|difference| below 1e-13 in log-odds).

:class:`CompiledSegments` compiles every segment of a forest (see :mod:`.forest`) as one
function with one output per segment: the forest's text is rewritten as a LightGBM multiclass
model whose class ``s`` is segment ``s`` (shorter segments padded with one-leaf trees of value
0), so one call gives every segment's raw score, as LightGBM's leaves summed per segment do.

A compiled function is pure (no state is shared between calls) and its call releases the GIL,
so threads may call it at once, unlike a LightGBM Booster. Compiling costs seconds (about 1.5 s
for 220 trees of 31 leaves), so it happens once, when a server warms its model before it forks
its workers (the compiled code is then shared), never on a request. Before it is used, the
compiled function must agree with LightGBM on probe rows spread over every feature's range
(missing values and unseen categories included); otherwise LightGBM keeps scoring.

Categorical splits: lleaves 1.3 keeps each split's category bit set (one 32-bit word per 32
categories) as a vector constant indexed at run time, which LLVM materialises on the stack at
every visit: with thousands of categories (the therapy code of a model with thousands of
therapies) the compiled trees were no faster than LightGBM (535 vs 533 us for 100 rows of the
100k x 2k-therapy benchmark model) and took 22 s to compile. :func:`_bit_sets_in_constant_memory`
replaces that code generator by one that reads the word from a constant global array. Measured
(160 trees of 15 leaves, 50 rows, one categorical feature, widest set of 2 / 16 / 64 words):
25 / 45 / 47 us against 29 / 70 / 141 us unpatched and 139-195 us through LightGBM.

The machine code is held in memory only: loading native code from a writable cache file would
let whoever can write that file run code in the service.
"""

from __future__ import annotations

import logging
import os
import tempfile

import numpy as np

log = logging.getLogger(__name__)

#: Trees with a categorical bit set wider than this many 32-bit words (32,768 categories) are
#: not compiled: compiling them would take long for no gain in speed.
MAX_CATEGORY_WORDS = 1024


class CompiledSegments:
    """Raw scores (sums of leaf values, log-odds) of the classes of a LightGBM model text.

    Parameters
    ----------
    model_text : str
        A LightGBM model text (``Booster.model_to_string``, or its multiclass rewriting by
        :meth:`.forest.Forest.compile`) holding exactly the trees to sum, tree ``i`` adding
        to output ``i % n_outputs``.
    n_outputs : int
        Its classes (``num_class``).
    n_features : int
        Columns of the rows it scores.
    """

    def __init__(self, model_text: str, n_outputs: int, n_features: int):
        import lleaves

        _bit_sets_in_constant_memory()
        self.n_outputs, self.n_features = int(n_outputs), int(n_features)
        handle, path = tempfile.mkstemp(suffix=".txt", prefix="forest-")
        try:
            with os.fdopen(handle, "w") as file:
                file.write(model_text)
            self._model = lleaves.Model(model_file=path)
            # Few rows per call: lleaves advises no cache blocking over trees (one block). No
            # inlining of the trees into the loop: measured on the 20k cohort's 220 trees, it
            # compiles in 1.5 s instead of 10.5 s and scores 5 / 50 rows in 12 / 76 us against
            # 11 / 94 us inlined (the 2k-therapy model: 2.6 s against 21 s, 26 us either way).
            self._model.compile(raw_score=True, fblocksize=self._model.num_trees(), finline=False)
        finally:
            os.unlink(path)

    def __call__(self, X: np.ndarray) -> np.ndarray:
        """Raw scores float64 (n, n_outputs) of rows ``X`` (n, n_features); NaN is
        "missing", as in LightGBM."""
        X = np.ascontiguousarray(X, np.float64)
        if X.ndim != 2 or X.shape[1] != self.n_features:
            raise ValueError(f"rows must be (n, {self.n_features}), got {X.shape}")
        return self._model.predict(X, n_jobs=1).reshape(len(X), self.n_outputs)


def widest_category_set(model_text: str) -> int:
    """The 32-bit words of the widest categorical bit set in a LightGBM model text (0 without
    categorical splits)."""
    widest = 0
    for line in model_text.splitlines():
        if line.startswith("cat_boundaries="):
            bounds = np.array(line.partition("=")[2].split(), np.int64)
            widest = max(widest, int(np.diff(bounds).max(initial=0)))
    return widest


def compile_segments(model_text: str, n_outputs: int, n_features: int) -> CompiledSegments | None:
    """A :class:`CompiledSegments`, or None (logged) where compiling would not pay (a
    categorical bit set wider than :data:`MAX_CATEGORY_WORDS`) or lleaves is missing or cannot
    compile on this machine: LightGBM then scores every row, with the same result."""
    widest = widest_category_set(model_text)
    if widest > MAX_CATEGORY_WORDS:
        log.info(
            "trees not compiled: a categorical split has %d x 32 categories (compiling takes "
            "long beyond %d x 32); LightGBM scores them",
            widest,
            MAX_CATEGORY_WORDS,
        )
        return None
    try:
        return CompiledSegments(model_text, n_outputs, n_features)
    except Exception as exc:  # noqa: BLE001 - any failure leaves the exact LightGBM path
        log.warning("trees not compiled (%s: %s); LightGBM scores them", type(exc).__name__, exc)
        return None


def _bit_sets_in_constant_memory() -> None:
    """Make lleaves read a categorical split's bit-set word from a constant global array
    instead of a vector constant (see the module docstring). Same decisions: the word at
    ``value // 32`` of the same bits, tested at bit ``value % 32``, after lleaves' own check
    that ``value`` is below the set's size. Applied once; the probe check of every compiled
    forest (:meth:`.forest.Forest.compile`) guards it like the rest of lleaves."""
    from lleaves.compiler.codegen import codegen
    from llvmlite import ir

    if getattr(codegen, "_recommender_constant_bit_sets", False):
        return

    def categorical_block(func, builder, bitset_builder, node, bitset_block, right_block):
        value = func.args[node.split_feature]
        words = len(node.cat_threshold)
        inside = builder.icmp_unsigned("<", value, codegen.iconst(32 * words))
        builder.cbranch(inside, bitset_block, right_block)
        module = func.module
        kind = ir.ArrayType(codegen.INT, words)
        table = ir.GlobalVariable(module, kind, name=module.get_unique_name("cat_bits"))
        table.global_constant, table.linkage = True, "private"
        table.initializer = ir.Constant(kind, [int(word) for word in node.cat_threshold])
        at = bitset_builder.gep(
            table, [codegen.iconst(0), bitset_builder.udiv(value, codegen.iconst(32))], True
        )
        word = bitset_builder.load(at)
        bit = bitset_builder.lshr(word, bitset_builder.urem(value, codegen.iconst(32)))
        return bitset_builder.trunc(bit, codegen.BOOL)

    codegen._populate_categorical_node_block = categorical_block
    codegen._recommender_constant_bit_sets = True
