"""Batch ranking of every patient with every exclusion rule, against implicit on the same factors.

One ALS model (``--factors``, fitted for two sweeps: ranking speed does not depend on how good the
factors are) over a synthetic cohort of ``--patients`` patients and 1000 conditions x 10
therapies (10k therapies). Every method ranks the same patients, top ``-k``, in the same run,
rounds interleaved, medians reported:

- ``recommender rank_patients``: this package's batch path with every rule (already tried,
  previous harm, contraindication, severe interaction with active treatments, too little
  evidence), returning index arrays, as ``implicit`` does;
- ``recommender recommend_all``: the same, ending in the DataFrame of ids that
  ``recommender recommend --all`` writes;
- ``implicit recommend``: ``model.recommend`` with its own liked-item filtering only;
- ``implicit topk``: raw ``implicit.cpu.topk.topk`` over the same factors, no filtering at all;
- ``generic path``: the dense scores -> mask -> top_k path every non-factor model takes (what the
  batch path did before the factor fast path), on the first ``--subset`` patients;
- ``topk + filters``: the alternative design, ``implicit.cpu.topk`` with the exclusions as
  ``filter_query_items``/``filter_items`` and the -3.4e38 sentinels dropped, on the subset.

BLAS is limited to one thread for every method (implicit's own advice); implicit parallelises
over both cores itself, and so does the fast path.

    python benchmarks/bench_batch.py --quick   # 100k patients (a minute or two)
    python benchmarks/bench_batch.py           # 1M patients x 10k therapies x 64 factors (issue 7)
"""

from __future__ import annotations

import argparse
import functools
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp
from threadpoolctl import threadpool_limits

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import RESULTS, markdown_table, write_results  # noqa: E402
from recommender.data.dataset import Dataset  # noqa: E402
from recommender.data.patient import Query  # noqa: E402
from recommender.data.synthetic.planted import generate_cohort  # noqa: E402
from recommender.data.tables import validate_tables  # noqa: E402
from recommender.exceptions import ArtifactError  # noqa: E402
from recommender.models import make_model  # noqa: E402
from recommender.models.persistence import load_artifact  # noqa: E402
from recommender.ranking import batch as ranking  # noqa: E402
from recommender.ranking import factor_path, safety

CACHE = RESULTS / "tmp" / "batch"
CONDITIONS, THERAPIES = 1000, 10


# --- set-up (not timed) -------------------------------------------------------------------------


def cohort_model(
    n_patients: int,
    factors: int,
    n_conditions: int = CONDITIONS,
    therapies: int = THERAPIES,
    iterations: int = 2,
    seed: int = 7,
    cache: Path | None = CACHE,
):
    """A fitted ALS model (arrays in memory) over a synthetic cohort; cached as an artifact."""
    name = f"als-{n_patients}p-{n_conditions}x{therapies}-{factors}f-{iterations}it-s{seed}"
    folder = cache / name if cache else None
    if folder is not None and (folder / "manifest.json").is_file():
        try:
            return load_artifact(folder, mmap=False).model
        except ArtifactError as exc:  # written by an older release: build it again
            print(f"  cache not usable ({exc}); rebuilding", flush=True)
    cohort = generate_cohort(
        n_patients, seed=seed, n_conditions=n_conditions, treatments_per_condition=therapies
    )
    dataset = Dataset.from_tables(validate_tables(cohort.tables))
    model = make_model("als", factors=factors, iterations=iterations).fit(dataset)
    if folder is not None:
        model.save(folder)
    return model


def implicit_model(model):
    """An implicit CPU ALS model holding the same factors (treatment rows only)."""
    from implicit.cpu.als import AlternatingLeastSquares

    n_t = model.dataset_.n_treatments
    other = AlternatingLeastSquares(factors=model.factors)
    other.user_factors = np.ascontiguousarray(model.user_factors_, dtype=np.float32)
    other.item_factors = np.ascontiguousarray(model.item_factors_[:n_t], dtype=np.float32)
    return other


def exclusions(dataset, patients: np.ndarray) -> sp.csr_matrix:
    """Every excluded (patient, treatment) pair, low evidence included, as a boolean CSR."""
    query = Query.known(dataset, patients, np.full(len(patients), -1))
    codes = safety.exclusion_codes(dataset, query, False, safety.active_treatments(dataset, query))
    low = np.flatnonzero(safety.low_evidence(dataset))
    everyone = sp.csr_matrix(
        (
            np.ones(len(low) * len(patients), bool),
            np.tile(low, len(patients)),
            np.arange(len(patients) + 1) * len(low),
        ),
        shape=codes.shape,
    )
    return (codes.astype(bool) + everyone).tocsr()


def count_excluded(dataset, patients: np.ndarray, idx: np.ndarray) -> int:
    """How many returned (patient, treatment) pairs break an exclusion rule."""
    found = 0
    for start in range(0, len(patients), ranking.BATCH_SIZE):
        rows = slice(start, start + ranking.BATCH_SIZE)
        banned = exclusions(dataset, patients[rows])
        chosen = np.asarray(idx[rows], np.int64)
        r, c = np.nonzero(chosen >= 0)
        found += int(np.asarray(banned[r, chosen[r, c]]).ravel().sum())
    return found


# --- the methods ---------------------------------------------------------------------------------


def ours(model, patients: np.ndarray, k: int):
    parts = [
        ranking.rank_patients(model, patients[s : s + ranking.BATCH_SIZE], -1, None, k, False)
        for s in range(0, len(patients), ranking.BATCH_SIZE)
    ]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def generic(model, patients: np.ndarray, k: int):
    dataset, parts = model.dataset_, []
    for start in range(0, len(patients), ranking.BATCH_SIZE):
        chunk = patients[start : start + ranking.BATCH_SIZE]
        query = Query.known(dataset, chunk, np.full(len(chunk), -1))
        codes = safety.exclusion_codes(
            dataset, query, False, safety.active_treatments(dataset, query)
        )
        parts.append(
            ranking.top_k(ranking.mask_scores(dataset, model.score(query), codes, None), k)
        )
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def implicit_recommend(other, history: sp.csr_matrix, patients: np.ndarray, k: int):
    with threadpool_limits(1, "blas"):
        return other.recommend(patients, history[patients], N=k, filter_already_liked_items=True)


def implicit_topk(other, patients: np.ndarray, k: int):
    from implicit.cpu.topk import topk

    with threadpool_limits(1, "blas"):
        return topk(other.item_factors, other.user_factors[patients], k)


def topk_with_filters(model, other, patients: np.ndarray, k: int):
    """The alternative: implicit's topk with the exclusions as filters, sentinels dropped."""
    from implicit.cpu.topk import topk

    dataset, parts = model.dataset_, []
    low = np.flatnonzero(safety.low_evidence(dataset))
    with threadpool_limits(1, "blas"):
        for start in range(0, len(patients), ranking.BATCH_SIZE):
            chunk = patients[start : start + ranking.BATCH_SIZE]
            query = Query.known(dataset, chunk, np.full(len(chunk), -1))
            codes = safety.exclusion_codes(
                dataset, query, False, safety.active_treatments(dataset, query)
            )
            idx, scores = topk(
                other.item_factors,
                other.user_factors[chunk],
                k,
                filter_query_items=codes,
                filter_items=low if len(low) else None,
            )
            dropped = scores <= -np.finfo(np.float32).max
            parts.append((np.where(dropped, -1, idx), np.where(dropped, -np.inf, scores)))
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


# --- timing --------------------------------------------------------------------------------------


def timed(function):
    wall, cpu = time.perf_counter(), time.process_time()
    result = function()
    return time.perf_counter() - wall, time.process_time() - cpu, result


def run(
    n_patients: int,
    factors: int,
    k: int,
    repeats: int,
    subset: int,
    slices: int,
    cache: Path | None,
) -> dict:
    """Time every method on the same patients.

    The machine is shared, so its load drifts: each round walks the patients in ``slices``
    slices and times every method on each slice in turn (order rotated per slice), summing per
    method; the reported figure is the median over rounds of those sums. The two slow reference
    methods take the first ``subset / slices`` patients of each slice.
    """
    started = time.perf_counter()
    model = cohort_model(n_patients, factors, cache=cache)
    dataset = model.dataset_
    other = implicit_model(model)
    labels = dataset.patients.external_ids
    setup = time.perf_counter() - started
    patients = np.arange(dataset.n_patients)
    parts = np.array_split(patients, slices)
    per_slice = max(1, min(subset, len(patients)) // slices)
    methods = {  # name -> (function of a slice of patients, takes the subset only)
        "recommender rank_patients (every rule)": (lambda p: ours(model, p, k), False),
        "recommender recommend_all (DataFrame of ids)": (  # recommend_all's body, on a slice
            lambda p: ranking._rank_indices(
                model, p, labels[p], [None] * len(p), k, False, False, ranking.BATCH_SIZE
            ),
            False,
        ),
        "implicit recommend (liked-item filter)": (
            lambda p: implicit_recommend(other, dataset.history, p, k),
            False,
        ),
        "implicit topk (no filtering)": (lambda p: implicit_topk(other, p, k), False),
        "generic path (every rule)": (lambda p: generic(model, p, k), True),
        "implicit topk + exclusions as filters": (
            lambda p: topk_with_filters(model, other, p, k),
            True,
        ),
    }
    names = list(methods)
    times = {name: [] for name in names}
    cpu = {name: [] for name in names}
    outputs = {name: [] for name in names}
    load_before = os.getloadavg()
    for round_ in range(repeats):
        wall_sum, cpu_sum = dict.fromkeys(names, 0.0), dict.fromkeys(names, 0.0)
        for i, part in enumerate(parts):
            for name in names[i % len(names) :] + names[: i % len(names)]:
                function, small = methods[name]
                chosen = part[:per_slice] if small else part
                wall, used, output = timed(functools.partial(function, chosen))
                wall_sum[name] += wall
                cpu_sum[name] += used
                if round_ == repeats - 1 and name != "recommender recommend_all (DataFrame of ids)":
                    outputs[name].append(output)
        for name in names:
            times[name].append(wall_sum[name])
            cpu[name].append(cpu_sum[name])
            print(
                f"  round {round_ + 1}: {name:<46} {wall_sum[name]:8.2f} s "
                f"(cpu {cpu_sum[name]:.2f} s)",
                flush=True,
            )
    load_after = os.getloadavg()

    def stacked(name, part):
        return np.concatenate([np.asarray(o[part]) for o in outputs[name]])

    few = np.concatenate([part[:per_slice] for part in parts])
    fast_idx, fast_values = (stacked("recommender rank_patients (every rule)", i) for i in (0, 1))
    generic_idx, generic_values = (stacked("generic path (every rule)", i) for i in (0, 1))
    position = np.concatenate([np.arange(len(part))[:per_slice] + part[0] for part in parts])
    differ = (fast_idx[position] != generic_idx).any(axis=1)
    implicit_idx = stacked("implicit recommend (liked-item filter)", 0)
    checks = {
        "subset rows where the fast path's list differs from the generic path's": int(differ.sum()),
        "largest score difference fast vs generic on the subset": float(
            np.nanmax(
                np.abs(
                    np.where(np.isfinite(generic_values), fast_values[position] - generic_values, 0)
                )
            )
        ),
        "excluded pairs returned by recommender": count_excluded(dataset, patients, fast_idx),
        "excluded pairs returned by implicit recommend": count_excluded(
            dataset, patients, implicit_idx
        ),
        "excluded pairs among implicit topk + filters (sentinels dropped)": count_excluded(
            dataset, few, stacked("implicit topk + exclusions as filters", 0)
        ),
    }
    rows = []
    for name in names:
        n = len(few) if methods[name][1] else len(patients)
        median = statistics.median(times[name])
        rows.append(
            {
                "method": name,
                "patients": n,
                "median_s": median,
                "us_per_patient": median / n * 1e6,
                "cpu_s": statistics.median(cpu[name]),
                "cpu_us_per_patient": statistics.median(cpu[name]) / n * 1e6,
                "runs": len(times[name]),
            }
        )
    per = {row["method"]: row["us_per_patient"] for row in rows}
    per_cpu = {row["method"]: row["cpu_us_per_patient"] for row in rows}
    ours_us = per["recommender rank_patients (every rule)"]
    ratios = {
        "implicit recommend / recommender rank_patients (target >= 2)": per[
            "implicit recommend (liked-item filter)"
        ]
        / ours_us,
        "recommender rank_patients / implicit topk (target <= 1.3)": ours_us
        / per["implicit topk (no filtering)"],
        "implicit recommend / recommender recommend_all": per[
            "implicit recommend (liked-item filter)"
        ]
        / per["recommender recommend_all (DataFrame of ids)"],
        "recommender recommend_all / implicit topk": per[
            "recommender recommend_all (DataFrame of ids)"
        ]
        / per["implicit topk (no filtering)"],
        "generic path / fast path": per["generic path (every rule)"] / ours_us,
        "topk + filters / fast path": per["implicit topk + exclusions as filters"] / ours_us,
        "cpu time: implicit recommend / recommender rank_patients": per_cpu[
            "implicit recommend (liked-item filter)"
        ]
        / per_cpu["recommender rank_patients (every rule)"],
        "cpu time: recommender rank_patients / implicit topk": per_cpu[
            "recommender rank_patients (every rule)"
        ]
        / per_cpu["implicit topk (no filtering)"],
    }
    return {
        "patients": len(patients),
        "treatments": dataset.n_treatments,
        "factors": factors,
        "k": k,
        "repeats": repeats,
        "slices": slices,
        "subset": len(few),
        "threads": factor_path.THREADS,
        "setup_s": setup,
        "load_average_before": load_before,
        "load_average_after": load_after,
        "rows": rows,
        "ratios": ratios,
        "checks": checks,
        "raw_times": times,
        "raw_cpu": cpu,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="100k patients (for make bench)")
    parser.add_argument("--patients", type=int, help="default 1M, or 100k with --quick")
    parser.add_argument("--factors", type=int, default=64)
    parser.add_argument("-k", type=int, default=10)
    parser.add_argument("--repeats", type=int, help="interleaved rounds (default 3)")
    parser.add_argument(
        "--subset",
        type=int,
        help="patients for the two slow reference methods (default 100k, 20k quick)",
    )
    parser.add_argument(
        "--slices",
        type=int,
        default=10,
        help="interleave the methods over this many slices of the patients",
    )
    parser.add_argument(
        "--no-cache", action="store_true", help=f"do not keep the fitted cohort model under {CACHE}"
    )
    args = parser.parse_args()
    n = args.patients or (100_000 if args.quick else 1_000_000)
    repeats = args.repeats or 3
    subset = args.subset or (20_000 if args.quick else 100_000)
    result = run(
        n, args.factors, args.k, repeats, subset, args.slices, None if args.no_cache else CACHE
    )
    print(
        markdown_table(
            result["rows"],
            ["method", "patients", "median_s", "us_per_patient", "cpu_us_per_patient", "runs"],
        )
    )
    for name, value in {**result["ratios"], **result["checks"]}.items():
        print(f"{name}: {value:.2f}" if isinstance(value, float) else f"{name}: {value}")
    label = "batch_quick" if args.quick else ("batch" if n == 1_000_000 else f"batch_{n}")
    print("results:", write_results(label, result))


if __name__ == "__main__":
    main()
