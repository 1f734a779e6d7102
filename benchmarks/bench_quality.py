"""Quality on real EHR extracts: every model against per-condition popularity.

Imports the Synthea California and Nebraska populations, the MIMIC-III and MIMIC-IV demos and
the two OMOP CDM copies (Eunomia GiBleed, the MIMIC-IV demo in OMOP) from ../shared/datasets
with the project's importers, holds out each patient's latest outcome
(leave-last) and ranks the condition's treatments for it, with every safety rule applied.
Metrics at k=1 and k=3 (these cohorts have few candidate treatments per condition, so a larger
k says little) and MRR on the leave-last split; and, on a second split that holds out each
patient's latest condition episode whole (several outcomes per query), the outcome AUC: how
often a held-out treatment that worked is ranked above one that failed or harmed.

    python benchmarks/bench_quality.py [--datasets california,nebraska,mimic3,mimic4,eunomia,
                                        mimic4-omop] [--seed 0]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import markdown_table, write_results  # noqa: E402
from recommender.data.splits import leave_last, leave_last_episode  # noqa: E402
from recommender.data.tables import read_tables  # noqa: E402
from recommender.evaluation.evaluate import evaluate_split  # noqa: E402
from recommender.importers import import_mimic, import_omop, import_synthea  # noqa: E402
from recommender.models import make_model  # noqa: E402

SHARED = Path(__file__).resolve().parents[2] / "shared" / "datasets"
DATASETS = {
    "california": (import_synthea, "synthea_ibm_california_1000"),
    "nebraska": (import_synthea, "synthea_nebraska_111"),
    "mimic3": (import_mimic, "mimic3_demo_1.4"),
    "mimic4": (import_mimic, "mimic4_demo_2.2"),
    "eunomia": (import_omop, "omop_eunomia_gibleed_5.3"),
    "mimic4-omop": (import_omop, "omop_mimic4_demo_5.3"),
}
MODELS = {
    "condition-popular": {},
    "popular": {},
    "als": {"factors": 16, "regularization": 1.0},
    "bpr": {"factors": 16},
    "lmf": {"factors": 16},
    "cosine": {"K": 50},
    "bm25": {"K": 50},
    "latent-class": {"n_classes": 3},
    "outcome": {},
}
COLUMNS = [
    "dataset",
    "model",
    "hit@1",
    "ndcg@3",
    "mrr",
    "queries",
    "outcome_auc",
    "auc_queries",
    "fit_s",
]


def seeded_models(seed: int) -> dict:
    models = {kind: make_model(kind, **params) for kind, params in MODELS.items()}
    for model in models.values():
        if "random_state" in model.get_params():
            model.set_params(random_state=seed)
    return models


def evaluate_dataset(name: str, folder: Path, seed: int) -> list[dict]:
    tables = read_tables(folder)
    last = evaluate_split(seeded_models(seed), leave_last(tables), k=3, ks=(1, 3))
    episode = evaluate_split(seeded_models(seed), leave_last_episode(tables), k=3, ks=(1, 3))
    rows = []
    for kind, result in last.models.items():
        summary, auc = result.summary, episode.models[kind]
        auc_queries = (
            int(auc.queries["outcome_auc"].notna().sum()) if "outcome_auc" in auc.queries else 0
        )
        rows.append(
            {
                "dataset": name,
                "model": kind,
                "hit@1": summary["hit@1"],
                "ndcg@3": summary["ndcg@3"],
                "mrr": summary["mrr"],
                "queries": summary["n_queries"],
                "outcome_auc": auc.summary["outcome_auc"],
                "auc_queries": auc_queries,
                "fit_s": result.fit_seconds,
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", default=",".join(DATASETS))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if not SHARED.is_dir():
        print(f"skipped: {SHARED} is absent (the shared EHR extracts are needed)")
        return
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.datasets.split(","):
            importer, source = DATASETS[name]
            report = importer(SHARED / source, Path(tmp) / name)
            print(f"{name}: {report.summary()}", flush=True)
            rows += evaluate_dataset(name, Path(tmp) / name, args.seed)
    print(markdown_table(rows, COLUMNS))
    print("results:", write_results("quality", {"seed": args.seed, "rows": rows}))


if __name__ == "__main__":
    main()
