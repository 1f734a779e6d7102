"""Scaling: ALS training time and batch-ranking time against patients and against factors.

Each point is a synthetic cohort (1000 conditions x 10 therapies = 10k therapies, about four
outcome rows per patient). Training is ``ALSRecommender.fit`` (15 sweeps, one Dataset already
built); ranking is every patient's top 10 with every exclusion rule through
``ranking.rank_patients``, next to raw ``implicit.cpu.topk`` (no filtering) over the same
factors. Medians of ``--repeats`` runs (wall and CPU seconds: the machine is shared); PNG plots
(log-log) and a JSON file are written.

    python benchmarks/bench_scaling.py --quick   # 10k..100k patients; factors 16..256 at 30k
    python benchmarks/bench_scaling.py           # 10k..1M patients; factors 16..256 at 100k
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.bench_batch import implicit_model, implicit_topk, ours  # noqa: E402
from benchmarks.common import RESULTS, markdown_table, write_results  # noqa: E402
from recommender.data.dataset import Dataset  # noqa: E402
from recommender.data.synthetic.planted import generate_cohort  # noqa: E402
from recommender.data.tables import validate_tables  # noqa: E402
from recommender.models import make_model  # noqa: E402

HERE = Path(__file__).resolve().parent
CONDITIONS, THERAPIES = 1000, 10


def dataset_for(n_patients: int, seed: int = 5) -> Dataset:
    cohort = generate_cohort(
        n_patients, seed=seed, n_conditions=CONDITIONS, treatments_per_condition=THERAPIES
    )
    return Dataset.from_tables(validate_tables(cohort.tables))


def point(
    dataset: Dataset,
    factors: int,
    iterations: int,
    fit_repeats: int,
    rank_repeats: int,
    k: int = 10,
) -> dict:
    fits, model = [], None
    for _ in range(fit_repeats):
        model = make_model("als", factors=factors, iterations=iterations)
        started = time.perf_counter()
        model.fit(dataset)
        fits.append(time.perf_counter() - started)
    other = implicit_model(model)
    patients = np.arange(dataset.n_patients)
    ranking, raw, ranking_cpu, raw_cpu = [], [], [], []
    for _ in range(rank_repeats):  # interleaved
        for function, wall, cpu in (
            (lambda: ours(model, patients, k), ranking, ranking_cpu),
            (lambda: implicit_topk(other, patients, k), raw, raw_cpu),
        ):
            started, used = time.perf_counter(), time.process_time()
            function()
            wall.append(time.perf_counter() - started)
            cpu.append(time.process_time() - used)
    return {
        "patients": dataset.n_patients,
        "treatments": dataset.n_treatments,
        "outcomes": int(dataset.history.nnz),
        "factors": factors,
        "train_s": statistics.median(fits),
        "rank_s": statistics.median(ranking),
        "implicit_topk_s": statistics.median(raw),
        "rank_cpu_s": statistics.median(ranking_cpu),
        "implicit_topk_cpu_s": statistics.median(raw_cpu),
        "rank_us_per_patient": statistics.median(ranking) / dataset.n_patients * 1e6,
        "train_runs": fit_repeats,
        "rank_runs": rank_repeats,
    }


def plot(rows: list[dict], axis: str, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = [r[axis] for r in rows]
    figure, ax = plt.subplots(figsize=(6.4, 4.2))
    ax.plot(x, [r["train_s"] for r in rows], "o-", label="ALS fit, 15 sweeps")
    ax.plot(x, [r["rank_s"] for r in rows], "s-", label="rank every patient, every rule (top 10)")
    ax.plot(x, [r["implicit_topk_s"] for r in rows], "^--", label="implicit topk, no filtering")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("patients" if axis == "patients" else "factors")
    ax.set_ylabel("seconds (median)")
    ax.set_title(title, fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (for make bench)")
    parser.add_argument("--patients", type=int, nargs="+", help="patient axis (factors 64)")
    parser.add_argument("--factors", type=int, nargs="+", help="factor axis")
    parser.add_argument("--factor-patients", type=int, help="patients of the factor axis")
    parser.add_argument("--iterations", type=int, default=15)
    parser.add_argument("--repeats", type=int, default=3, help="ranking runs per point")
    parser.add_argument("--fit-repeats", type=int, help="fits per point (default 2 quick, 1 full)")
    args = parser.parse_args()
    patients = args.patients or (
        [10_000, 30_000, 100_000] if args.quick else [10_000, 30_000, 100_000, 300_000, 1_000_000]
    )
    factors = args.factors or [16, 32, 64, 128, 256]
    factor_patients = args.factor_patients or (30_000 if args.quick else 100_000)
    fit_repeats = args.fit_repeats or (2 if args.quick else 1)
    load_before = os.getloadavg()
    by_patients, by_factors = [], []
    datasets = {}
    for n in sorted(set(patients) | {factor_patients}):
        started = time.perf_counter()
        dataset = dataset_for(n)
        print(f"{n} patients: cohort {time.perf_counter() - started:.0f} s", flush=True)
        if n in patients:
            by_patients.append(point(dataset, 64, args.iterations, fit_repeats, args.repeats))
            print(markdown_table(by_patients[-1:], list(by_patients[-1])), flush=True)
        if n == factor_patients:
            datasets[n] = dataset
        del dataset
    for f in factors:
        by_factors.append(
            point(datasets[factor_patients], f, args.iterations, fit_repeats, args.repeats)
        )
        print(markdown_table(by_factors[-1:], list(by_factors[-1])), flush=True)
    suffix = "_quick" if args.quick else ""
    folder = RESULTS if args.quick else HERE
    plot(
        by_patients,
        "patients",
        folder / f"scaling_patients{suffix}.png",
        "Time against patients (10k therapies, 64 factors)",
    )
    plot(
        by_factors,
        "factors",
        folder / f"scaling_factors{suffix}.png",
        f"Time against factors ({factor_patients:,} patients, 10k therapies)",
    )
    columns = [
        "patients",
        "treatments",
        "factors",
        "outcomes",
        "train_s",
        "rank_s",
        "implicit_topk_s",
        "rank_cpu_s",
        "implicit_topk_cpu_s",
        "rank_us_per_patient",
    ]
    print(markdown_table(by_patients, columns))
    print(markdown_table(by_factors, columns))
    print(
        "results:",
        write_results(
            f"scaling{suffix}",
            {
                "iterations": args.iterations,
                "by_patients": by_patients,
                "by_factors": by_factors,
                "load_average_before": load_before,
                "load_average_after": os.getloadavg(),
            },
        ),
    )


if __name__ == "__main__":
    main()
