"""Side information on and off: what diagnosis columns do for patients with and without history.

On planted cohorts (``recommender.data.synthetic.planted``) each model is fitted with and without the
condition side-information columns and asked about every held-out episode twice: with the
patient's record (warm), and as a *cold* patient who has only the diagnosis
(``recommend_new`` with no history). hit@1 is the share of episodes where rank 1 is the
planted best therapy; ``ties@1`` is the share of cold answers whose top score is tied (the model
had nothing to go on).

    python benchmarks/bench_side_info.py [--patients 20000] [--seeds 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import markdown_table, write_results  # noqa: E402
from recommender.data.dataset import Dataset  # noqa: E402
from recommender.data.side_info import SideInfo
from recommender.data.synthetic.planted import generate_cohort  # noqa: E402
from recommender.data.tables import validate_tables  # noqa: E402
from recommender.models import make_model  # noqa: E402

MODELS = {
    "als": {"factors": 8, "regularization": 0.1},
    "cosine": {"K": 200},
    "bpr": {"factors": 32, "learning_rate": 0.05},
}
COLD_SAMPLE = 500


def warm_hit(model, held) -> float:
    ranked = model.recommend_batch(
        held.patient_id.tolist(), k=1, condition_ids=held.condition_id.tolist()
    )
    merged = held.merge(ranked, on=["patient_id", "condition_id"], how="left")
    return float((merged.treatment_id == merged.best_treatment_id).mean())


def cold_hit(model, held) -> tuple[float, float]:
    hits, ties = [], []
    for row in held.head(COLD_SAMPLE).itertuples():
        answer = model.recommend_new(
            [], conditions=[row.condition_id], k=2, condition_id=row.condition_id, explain=False
        )
        items = answer.recommendations
        hits.append(bool(items) and items[0].treatment_id == row.best_treatment_id)
        ties.append(len(items) > 1 and np.isclose(items[0].score, items[1].score))
    return float(np.mean(hits)), float(np.mean(ties))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=20_000)
    parser.add_argument("--seeds", type=int, default=3)
    args = parser.parse_args()
    results: dict[tuple, list] = {}
    for seed in range(1, args.seeds + 1):
        cohort = generate_cohort(args.patients, seed=seed)
        tables = validate_tables(cohort.tables)
        for side in (True, False):
            dataset = Dataset.from_tables(tables, side_info=SideInfo(conditions=side))
            for kind, params in MODELS.items():
                model = make_model(kind, **params).fit(dataset)
                cold, ties = cold_hit(model, cohort.held_out)
                results.setdefault((kind, side), []).append(
                    (warm_hit(model, cohort.held_out), cold, ties)
                )
    rows = [
        {
            "model": kind,
            "side_info": "conditions" if side else "none",
            "warm hit@1": statistics.mean(v[0] for v in values),
            "cold hit@1": statistics.mean(v[1] for v in values),
            "cold ties@1": statistics.mean(v[2] for v in values),
        }
        for (kind, side), values in results.items()
    ]
    print(markdown_table(rows, ["model", "side_info", "warm hit@1", "cold hit@1", "cold ties@1"]))
    name = "side_info" if args.seeds >= 3 else "side_info_quick"  # make bench: kept apart
    print(
        "results:",
        write_results(name, {"patients": args.patients, "seeds": args.seeds, "rows": rows}),
    )


if __name__ == "__main__":
    main()
