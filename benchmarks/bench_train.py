"""Training: the overhead of ``recommender train``, time to quality, and memory.

Three questions, each answered against the obvious alternative in the same run:

1. Overhead: ``recommender train`` (read and validate the canonical tables, build the Dataset,
   fit ALS, write the checksummed artifact, reload it) against a bare ``implicit`` ALS fit on the
   same matrix plus reading the same files with pandas/pyarrow. Each run is a fresh process
   (rounds interleaved, which one goes first alternating) that also reports its peak RSS
   (``VmHWM``), compared with the bytes of the CSR matrix plus the factors; a third process
   only fits (the floor).
2. Time to quality: the validation NDCG@10 of ALS after implicit's default 15 sweeps, against
   early stopping on that validation metric (patience 1), alone and after a warm start from a
   10% patient subsample. The validation rows are each patient's second-to-last episode; the
   last episode is the test set, reported too so the stopping rule is not judged only on the
   rows it watched.
3. Mapping: two worker processes load the artifact as the service does (``mmap=True``) and touch
   every factor page; ``/proc/PID/smaps_rollup`` shows the factor pages shared (PSS about half
   their RSS), against ``mmap=False`` where each worker holds a private copy.

    python benchmarks/bench_train.py --quick   # 100k patients, 0.4M outcome rows (a few minutes)
    python benchmarks/bench_train.py           # 1M patients x 10k therapies x 8M outcome rows
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import RESULTS, markdown_table, write_results  # noqa: E402

WORK = RESULTS / "tmp" / "train"
CONDITIONS, THERAPIES = 1000, 10
ROLLUP = ("Rss", "Pss", "Shared_Clean", "Private_Dirty", "Anonymous")


# --- the cohort ----------------------------------------------------------------------------------


def make_cohort(folder: Path, n_patients: int, histories: int, seed: int = 11) -> Path:
    """Canonical tables (Parquet) of ``n_patients`` with ``histories`` independent synthetic
    histories each (two at full size: about 8M outcome rows for 1M patients)."""
    from recommender.data.synthetic.planted import generate_cohort

    if (folder / "outcomes.parquet").is_file():
        return folder
    from recommender.data.tables import write_tables

    parts = [
        generate_cohort(
            n_patients, seed=seed + i, n_conditions=CONDITIONS, treatments_per_condition=THERAPIES
        ).tables
        for i in range(histories)
    ]
    tables = {}
    for name in parts[0]:
        frames = [p[name] for p in parts if p.get(name) is not None]
        if not frames:
            continue
        frame = frames[0] if name == "patients" else pd.concat(frames, ignore_index=True)
        keys = {
            "patient_conditions": None,
            "contraindications": None,
            "interactions": None,
            "treatments": ["treatment_id"],
            "conditions": ["condition_id"],
        }
        if name in keys:
            frame = frame.drop_duplicates(keys[name]).reset_index(drop=True)
        tables[name] = frame
    del parts
    write_tables(tables, folder, "parquet")
    return folder


# --- child processes -----------------------------------------------------------------------------


def cpu_seconds() -> float:
    """User + system CPU seconds of this process so far (every thread)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def peak_rss() -> int:
    """Peak resident set size of this process, bytes (VmHWM)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return -1


def rss() -> int:
    """Current resident set size of this process, bytes (VmRSS)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return -1


class RssSampler(threading.Thread):
    """Samples VmRSS every ``interval`` seconds: (seconds since start, bytes) pairs."""

    def __init__(self, interval: float = 0.05):
        super().__init__(daemon=True)
        self.interval, self.samples, self.started = interval, [], time.perf_counter()
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(self.interval):
            self.samples.append((time.perf_counter() - self.started, rss()))

    def peak_between(self, start: float, stop: float) -> int:
        return max((b for t, b in self.samples if start <= t <= stop), default=-1)


def child_ours(data: Path, out: Path, params: dict) -> dict:
    from recommender.models.persistence import read_manifest
    from recommender.training import train_artifact

    sampler = RssSampler()
    sampler.start()
    started, cpu = time.perf_counter(), cpu_seconds()
    train_artifact(data, out, kind="als", params=params)
    total, cpu = time.perf_counter() - started, cpu_seconds() - cpu
    sampler.stopped.set()
    training = read_manifest(out)["training"]
    stages = {
        "read": training["read_seconds"],
        "encode": training["encode_seconds"],
        "fit": training["fit_seconds"],
    }
    stages["write_and_reload"] = total - sum(stages.values())
    result, at = {"total_s": total}, 0.0
    for stage, seconds in stages.items():
        result[f"{stage}_s"] = seconds
        result[f"{stage}_peak_rss"] = sampler.peak_between(at, at + seconds)
        at += seconds
    result["cpu_s"] = cpu
    result["peak_rss"] = peak_rss()
    return result


def bare_fit(matrix: sp.csr_matrix, params: dict):
    from implicit.cpu.als import AlternatingLeastSquares
    from threadpoolctl import threadpool_limits

    model = AlternatingLeastSquares(
        factors=params["factors"],
        regularization=0.1,
        alpha=1.0,
        iterations=params["iterations"],
        random_state=0,
    )
    with threadpool_limits(1, "blas"):
        model.fit(matrix, show_progress=False)
    return model


def child_bare(data: Path, matrix_file: Path, params: dict, read: bool) -> dict:
    started, cpu = time.perf_counter(), cpu_seconds()
    frames = (
        {path.stem: pd.read_parquet(path) for path in sorted(data.glob("*.parquet"))}
        if read
        else {}
    )
    read_s, read_cpu = time.perf_counter() - started, cpu_seconds() - cpu
    matrix = sp.load_npz(matrix_file).tocsr()  # not timed: the same matrix recommender builds
    started, cpu = time.perf_counter(), cpu_seconds()
    bare_fit(matrix, params)
    fit_s, fit_cpu = time.perf_counter() - started, cpu_seconds() - cpu
    del frames
    return {
        "total_s": read_s + fit_s,
        "read_s": read_s,
        "fit_s": fit_s,
        "cpu_s": read_cpu + fit_cpu,
        "peak_rss": peak_rss(),
    }


def child_worker(artifact: Path, mmap: bool) -> None:
    """Load like a service worker, touch every factor page, wait, then report smaps_rollup."""
    from recommender.models.persistence import load_artifact
    from recommender.ranking import rank_patients

    model = load_artifact(artifact, mmap=mmap).model
    float(np.asarray(model.user_factors_).sum() + np.asarray(model.item_factors_).sum())
    patients = np.arange(min(4096, model.dataset_.n_patients))
    rank_patients(model, patients, -1, None, 10, False)
    print("ready", flush=True)
    sys.stdin.readline()
    report = {}
    for line in Path("/proc/self/smaps_rollup").read_text().splitlines()[1:]:
        name, value = line.split(":", 1)
        if name in ROLLUP:
            report[name] = int(value.split()[0]) * 1024
    report.update(factor_mappings(artifact))
    print(json.dumps(report), flush=True)
    sys.stdin.readline()  # stay alive (and sharing) until every worker has reported


def factor_mappings(artifact: Path) -> dict:
    """Rss and Pss (bytes) of this process's mappings of the artifact's model/*.npy files."""
    totals, current = {"factor_files_Rss": 0, "factor_files_Pss": 0}, False
    folder = str((artifact / "model").resolve())
    for line in Path("/proc/self/smaps").read_text().splitlines():
        head = line.split()
        if head and "-" in head[0] and len(head) >= 5 and ":" not in head[0]:
            current = len(head) >= 6 and head[5].startswith(folder)
        elif current and head and head[0] in ("Rss:", "Pss:"):
            totals[f"factor_files_{head[0][:-1]}"] += int(head[1]) * 1024
    return totals


def run_child(*arguments: str) -> dict:
    output = subprocess.run(
        [sys.executable, __file__, "--child", *arguments],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return json.loads(output.strip().splitlines()[-1])


# --- the three parts -----------------------------------------------------------------------------


def overhead(data: Path, params: dict, repeats: int) -> dict:
    from recommender.models.persistence import load_artifact

    artifact, matrix_file = WORK / f"artifact-{data.name}", WORK / f"matrix-{data.name}.npz"
    runs = {
        "recommender train": [],
        "bare implicit fit + pandas read": [],
        "bare implicit fit only": [],
    }
    sizes = {}

    def bare_with_read() -> None:
        runs["bare implicit fit + pandas read"].append(
            run_child("bare", str(data), str(matrix_file), json.dumps(params), "read")
        )

    for round_ in range(repeats):
        bare_first = round_ % 2 == 1  # alternate the order: the load on the shared machine drifts
        if bare_first:
            bare_with_read()
        runs["recommender train"].append(
            run_child("ours", str(data), str(artifact), json.dumps(params))
        )
        if not sizes:
            model = load_artifact(artifact, mmap=True).model
            matrix = model.dataset_.matrix
            sp.save_npz(matrix_file, matrix, compressed=False)
            sizes = {
                "csr_bytes": int(matrix.data.nbytes + matrix.indices.nbytes + matrix.indptr.nbytes),
                "factor_bytes": int(model.user_factors_.nbytes + model.item_factors_.nbytes),
                "matrix_shape": list(matrix.shape),
                "matrix_nnz": int(matrix.nnz),
                "outcome_rows": model.manifest_["training"]["n_outcome_rows"],
            }
            del model, matrix
        if not bare_first:
            bare_with_read()
        if round_ == 0:
            runs["bare implicit fit only"].append(
                run_child("bare", str(data), str(matrix_file), json.dumps(params), "noread")
            )
        for name, values in runs.items():
            if values and len(values) == round_ + 1:
                print(
                    f"  round {round_ + 1}: {name:<34} {values[-1]['total_s']:8.1f} s, "
                    f"peak RSS {values[-1]['peak_rss'] / 2**30:.2f} GiB",
                    flush=True,
                )
    floor = sizes["csr_bytes"] + sizes["factor_bytes"]
    rows = []
    for name, values in runs.items():
        row = {"process": name, "runs": len(values)}
        for key in (
            "total_s",
            "read_s",
            "encode_s",
            "fit_s",
            "write_and_reload_s",
            "cpu_s",
            "peak_rss",
        ):
            row[key] = statistics.median(v[key] for v in values) if key in values[0] else "-"
        row["peak_rss_GiB"] = row.pop("peak_rss") / 2**30
        row["peak_rss_vs_csr+factors"] = row["peak_rss_GiB"] * 2**30 / floor
        rows.append(row)
    ours, bare = rows[0], rows[1]
    stages = {
        f"{stage}_peak_rss_GiB": statistics.median(
            v[f"{stage}_peak_rss"] for v in runs["recommender train"]
        )
        / 2**30
        for stage in ("read", "encode", "fit", "write_and_reload")
    }
    paired = [
        a["total_s"] / b["total_s"]
        for a, b in zip(runs["recommender train"], runs["bare implicit fit + pandas read"])
    ]
    return {
        "rows": rows,
        "sizes": sizes,
        "raw": runs,
        "recommender_train_peak_rss_by_stage": stages,
        "ratio_total (target <= 1.15)": ours["total_s"] / bare["total_s"],
        "ratio_total_per_round": paired,
        "ratio_fit_only": ours["fit_s"] / bare["fit_s"],
        "ratio_cpu_seconds": ours["cpu_s"] / bare["cpu_s"],
        "ratio_peak_rss_vs_csr+factors (target < 3)": ours["peak_rss_vs_csr+factors"],
    }


def split_cohort(data: Path):
    """(training tables, validation rows, test rows): the last episode of each patient is the
    test set, the one before it the validation set."""
    from recommender.data.splits import leave_last_episode
    from recommender.data.tables import read_tables

    outer = leave_last_episode(read_tables(data))
    inner = leave_last_episode(outer.train)
    return inner.train, inner.test, outer.test


def known_rows(dataset, rows: pd.DataFrame) -> pd.DataFrame:
    """Rows whose patient, treatment and condition the dataset knows."""
    known = (
        rows.patient_id.isin(set(dataset.patients.external_ids))
        & rows.treatment_id.isin(set(dataset.treatments.external_ids))
        & (rows.condition_id.isna() | rows.condition_id.isin(set(dataset.conditions.external_ids)))
    )
    return rows[known.to_numpy()].reset_index(drop=True)


def time_to_quality(data: Path, factors: int, repeats: int) -> dict:
    from recommender.data.dataset import Dataset
    from recommender.evaluation.validation import Validation
    from recommender.models import make_model

    train, validation_rows, test_rows = split_cohort(data)
    dataset = Dataset.from_tables(train)
    del train
    validation = Validation(validation_rows, k=10)
    test = Validation(known_rows(dataset, test_rows), k=10)
    variants = {
        "15 sweeps (implicit's default)": ({"iterations": 15}, False),
        "early stopping": ({"iterations": 15, "early_stopping": 1, "tol": 1e-4}, True),
        "warm start + early stopping": (
            {
                "iterations": 15,
                "early_stopping": 1,
                "tol": 1e-4,
                "init_fraction": 0.1,
                "init_iterations": 5,
            },
            True,
        ),
    }
    runs = {name: [] for name in variants}
    curves = {}
    for round_ in range(repeats):
        for name, (params, watched) in variants.items():
            model = make_model("als", factors=factors, random_state=0, **params)
            started = time.perf_counter()
            model.fit(dataset, callback=validation.callback(model) if watched else None)
            seconds = time.perf_counter() - started
            runs[name].append(
                {
                    "fit_s": seconds,
                    "sweeps": model.n_iterations_,
                    "kept_sweep": getattr(model, "best_iteration_", model.n_iterations_),
                    "validation_ndcg@10": validation.score(model),
                    "test_ndcg@10": test.score(model),
                }
            )
            curves[name] = [round(s, 5) for s in getattr(model, "validation_scores_", [])]
            print(
                f"  round {round_ + 1}: {name:<32} {seconds:7.1f} s, {model.n_iterations_} sweeps, "
                f"validation ndcg@10 {runs[name][-1]['validation_ndcg@10']:.5f}",
                flush=True,
            )
    rows = []
    reference = statistics.median(r["fit_s"] for r in runs["15 sweeps (implicit's default)"])
    target = runs["15 sweeps (implicit's default)"][0]["validation_ndcg@10"]
    for name, values in runs.items():
        row = {"method": name, "runs": len(values)}
        for key in values[0]:
            row[key] = statistics.median(v[key] for v in values)
        row["time_vs_15_sweeps"] = row["fit_s"] / reference
        row["reaches_15_sweep_ndcg"] = bool(row["validation_ndcg@10"] >= target)
        rows.append(row)
    return {
        "rows": rows,
        "curves": curves,
        "raw": runs,
        "patients": dataset.n_patients,
        "treatments": dataset.n_treatments,
        "validation_rows": len(validation_rows),
        "test_rows": len(test.test),
        "factors": factors,
    }


def mapping(artifact: Path) -> dict:
    """Two concurrent workers per loading mode; smaps_rollup of each."""
    result = {}
    for mode in ("mmap", "copy"):
        workers = [
            subprocess.Popen(
                [sys.executable, __file__, "--child", "worker", str(artifact), mode],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            for _ in range(2)
        ]
        for worker in workers:
            assert worker.stdout.readline().strip() == "ready"
        reports = []
        for worker in workers:
            worker.stdin.write("report\n")
            worker.stdin.flush()
            reports.append(json.loads(worker.stdout.readline()))
        for worker in workers:
            worker.stdin.close()
            worker.wait()
        result[mode] = reports
    return result


# --- main ----------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="100k patients (for make bench)")
    parser.add_argument("--patients", type=int, help="default 1M, or 100k with --quick")
    parser.add_argument(
        "--histories",
        type=int,
        help="synthetic histories per patient (default 2 at full size: ~8M rows; 1 quick)",
    )
    parser.add_argument("--factors", type=int, default=64)
    parser.add_argument("--iterations", type=int, default=15)
    parser.add_argument("--repeats", type=int, help="rounds (default 2)")
    parser.add_argument("--skip", nargs="*", default=[], choices=("overhead", "quality", "mapping"))
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind, *rest = args.child
        if kind == "ours":
            print(json.dumps(child_ours(Path(rest[0]), Path(rest[1]), json.loads(rest[2]))))
        elif kind == "bare":
            print(
                json.dumps(
                    child_bare(Path(rest[0]), Path(rest[1]), json.loads(rest[2]), rest[3] == "read")
                )
            )
        else:
            child_worker(Path(rest[0]), rest[1] == "mmap")
        return
    n = args.patients or (100_000 if args.quick else 1_000_000)
    histories = args.histories or (1 if args.quick else 2)
    repeats = args.repeats or 2
    WORK.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    data = make_cohort(WORK / f"cohort-{n}p-{histories}h", n, histories)
    print(f"cohort {data.name}: {time.perf_counter() - started:.0f} s", flush=True)
    params = {"factors": args.factors, "iterations": args.iterations}
    result = {
        "patients": n,
        "histories": histories,
        "params": params,
        "repeats": repeats,
        "load_average_before": os.getloadavg(),
    }
    if "overhead" not in args.skip:
        result["overhead"] = overhead(data, params, repeats)
        print(markdown_table(result["overhead"]["rows"], list(result["overhead"]["rows"][0])))
        for key in (
            "ratio_total (target <= 1.15)",
            "ratio_fit_only",
            "ratio_cpu_seconds",
            "ratio_peak_rss_vs_csr+factors (target < 3)",
        ):
            print(f"{key}: {result['overhead'][key]:.2f}")
        print(
            "ratio_total per round:",
            [round(r, 3) for r in result["overhead"]["ratio_total_per_round"]],
        )
        print(
            "peak RSS of recommender train by stage (GiB):",
            {
                k: round(v, 2)
                for k, v in result["overhead"]["recommender_train_peak_rss_by_stage"].items()
            },
        )
    if "mapping" not in args.skip and (WORK / f"artifact-{data.name}").is_dir():
        result["mapping"] = mapping(WORK / f"artifact-{data.name}")
        for mode, reports in result["mapping"].items():
            for i, report in enumerate(reports):
                print(
                    f"worker {i} ({mode}): "
                    + ", ".join(f"{k} {v / 2**20:.0f} MiB" for k, v in report.items())
                )
    if "quality" not in args.skip:
        result["quality"] = time_to_quality(data, args.factors, repeats)
        print(markdown_table(result["quality"]["rows"], list(result["quality"]["rows"][0])))
    result["load_average_after"] = os.getloadavg()
    label = "train_quick" if args.quick else ("train" if n == 1_000_000 else f"train_{n}")
    keep_skipped_parts(result, RESULTS / f"{label}.json", args.skip)
    print("results:", write_results(label, result))


def keep_skipped_parts(result: dict, previous: Path, skipped: list[str]) -> None:
    """Carry the skipped parts over from the previous results file of the same size, marked as
    such, so that re-running one part does not erase the others."""
    if not skipped or not previous.is_file():
        return
    earlier = json.loads(previous.read_text())
    if (earlier.get("patients"), earlier.get("histories")) != (
        result["patients"],
        result["histories"],
    ):
        return
    carried = [part for part in skipped if part in earlier and part not in result]
    for part in carried:
        result[part] = earlier[part]
    if carried:
        result["parts_from_an_earlier_run"] = sorted(carried)


if __name__ == "__main__":
    main()
