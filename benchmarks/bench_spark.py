"""Spark ``local[2]`` against the local engine on the same cohort: training time, NDCG@10 and
the time to rank every patient.

Both engines fit ALS with the same parameters (the local defaults: 32 factors, regularisation
0.1, 15 iterations), the Spark one through the documented correspondence
(``recommender.spark.params``), on a leave-last split of a synthetic cohort; NDCG@10 comes from
``recommender.evaluation.evaluate`` (exclusions applied, candidates restricted to the query's condition).
Each number is the median of ``--repeats`` runs with seeds 0, 1, ...; the Spark times exclude
the one-off session start (reported on its own) but include moving the ratings into Spark and
the factors out. Batch ranking times ``recommend --all`` (k=10) on an artifact trained on the
whole cohort: ``ranking.recommend_all`` locally, ``recommender.spark.rank`` on Spark (artifact
shipped to the executors, Parquet written).

    python benchmarks/bench_spark.py --quick     # 5k patients (about three minutes)
    python benchmarks/bench_spark.py             # 5k and 20k patients
    python benchmarks/bench_spark.py --full      # adds 100k patients
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import markdown_table, write_results  # noqa: E402
from recommender.data.splits import leave_last  # noqa: E402
from recommender.data.synthetic.planted import generate_cohort  # noqa: E402
from recommender.data.tables import validate_tables, write_tables  # noqa: E402
from recommender.evaluation.evaluate import evaluate  # noqa: E402
from recommender.models.als import ALSRecommender  # noqa: E402
from recommender.models.persistence import load_artifact  # noqa: E402
from recommender.ranking import recommend_all  # noqa: E402
from recommender.training import train_artifact  # noqa: E402

COHORT_SEED = 21
COLUMNS = [
    "patients",
    "outcomes",
    "engine",
    "fit_s",
    "ndcg@10",
    "ndcg_min",
    "ndcg_max",
    "rank_all_s",
]


def compare(n_patients: int, repeats: int, workdir: Path) -> list[dict]:
    """Rows (one per engine) for a cohort of ``n_patients``."""
    from recommender.spark.rank import rank_all_spark
    from recommender.spark.train import SparkALSRecommender

    tables = validate_tables(generate_cohort(n_patients, seed=COHORT_SEED).tables)
    split = leave_last(tables)
    runs = {"local": [], "spark local[2]": []}
    for seed in range(repeats):
        result = evaluate(
            {
                "local": ALSRecommender(random_state=seed),
                "spark local[2]": SparkALSRecommender(random_state=seed),
            },
            split.train,
            split.test,
            k=10,
            show_progress=False,
        )
        for name, model in result.models.items():
            runs[name].append((model.fit_seconds, model.summary["ndcg@10"]))
        print(
            f"  {n_patients} patients, seed {seed}: "
            + ", ".join(
                f"{name} fit {r[-1][0]:.1f}s ndcg@10 {r[-1][1]:.4f}" for name, r in runs.items()
            ),
            flush=True,
        )
    data = write_tables(tables, workdir / f"cohort-{n_patients}")
    artifact = train_artifact(data, workdir / f"artifact-{n_patients}", kind="als")
    model = load_artifact(artifact).model
    rank_times = {
        "local": _median_time(lambda: recommend_all(model, k=10), repeats),
        "spark local[2]": _median_time(
            lambda: rank_all_spark(artifact, str(workdir / f"ranked-{n_patients}.parquet"), k=10),
            repeats,
        ),
    }
    rows = []
    for name, values in runs.items():
        ndcgs = [v[1] for v in values]
        rows.append(
            {
                "patients": n_patients,
                "outcomes": len(tables.outcomes),
                "engine": name,
                "fit_s": statistics.median(v[0] for v in values),
                "ndcg@10": statistics.median(ndcgs),
                "ndcg_min": min(ndcgs),
                "ndcg_max": max(ndcgs),
                "rank_all_s": rank_times[name],
            }
        )
    return rows


def _median_time(function, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        function()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="5k patients only")
    size.add_argument("--full", action="store_true", help="add 100k patients")
    parser.add_argument("--repeats", type=int, default=3, help="runs per engine (default 3)")
    args = parser.parse_args()
    sizes = [5000] if args.quick else [5000, 20000] + ([100000] if args.full else [])

    from recommender.spark.session import build_session

    started = time.perf_counter()
    spark = build_session("local[2]")
    session_seconds = time.perf_counter() - started
    print(f"Spark {spark.version} session started in {session_seconds:.1f}s", flush=True)
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-spark-") as tmp:
        for n in sizes:
            rows += compare(n, args.repeats, Path(tmp))
    spark.stop()
    table = markdown_table(rows, COLUMNS)
    print(table)
    path = write_results(
        "spark_quick" if args.quick else "spark",
        {
            "description": __doc__.splitlines()[0],
            "repeats": args.repeats,
            "spark_version": spark.version,
            "spark_session_start_s": session_seconds,
            "params": ALSRecommender().get_params(),
            "rows": rows,
            "table": table,
        },
    )
    print(f"results: {path}")


if __name__ == "__main__":
    main()
