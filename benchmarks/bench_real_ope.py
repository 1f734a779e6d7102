"""Off-policy evaluation on the real (and Synthea) extracts in ../shared/datasets.

Each extract is imported into canonical tables (``recommender import ...``), split in time
(the last ``--fraction`` of the outcome rows held out) and every model's first choices are
valued on the held-out first-line decisions by IPS, SNIPS and DR with patient-bootstrap
intervals (:mod:`recommender.evaluation.off_policy`). There is no truth here: the intervals are
the answer, and on 100-patient demos they are wide.

    python benchmarks/bench_real_ope.py            # every extract present
    python benchmarks/bench_real_ope.py --only synthea_ibm_california_1000
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import write_results  # noqa: E402
from recommender.data.tables import read_tables  # noqa: E402
from recommender.evaluation.off_policy import off_policy_evaluation  # noqa: E402
from recommender.exceptions import RecommenderError  # noqa: E402
from recommender.importers import import_mimic, import_omop, import_synthea  # noqa: E402

SHARED = Path(__file__).resolve().parents[2] / "shared" / "datasets"
#: extract -> importer
EXTRACTS = {
    "synthea_ibm_california_1000": import_synthea,
    "synthea_nebraska_111": import_synthea,
    "mimic4_demo_2.2": import_mimic,
    "mimic3_demo_1.4": import_mimic,
    "omop_eunomia_gibleed_5.3": import_omop,
    "omop_mimic4_demo_5.3": import_omop,
}
MODELS = ["condition-popular", "als", "outcome"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*")
    parser.add_argument("--fraction", type=float, default=0.3)
    parser.add_argument("--bootstrap", type=int, default=1000)
    args = parser.parse_args()
    results = {}
    for name, importer in EXTRACTS.items():
        if args.only and name not in args.only:
            continue
        source = SHARED / name
        if not source.is_dir():
            print(f"-- {name}: not in {SHARED}, skipped")
            continue
        with tempfile.TemporaryDirectory() as tmp:
            importer(source, Path(tmp) / "tables")
            tables = read_tables(Path(tmp) / "tables")
            try:
                ope = off_policy_evaluation(
                    MODELS, tables, fraction=args.fraction, n_bootstrap=args.bootstrap
                )
            except RecommenderError as exc:
                print(f"-- {name}: {exc}")
                results[name] = {"error": str(exc)}
                continue
        results[name] = ope.to_dict()
        print(f"== {name}: {ope.episodes} first-line decisions, clinicians {ope.behaviour:.3f}")
        for model, estimates in ope.estimates.items():
            print(
                f"   {model}: "
                + ", ".join(f"{k.upper()} {e.text()}" for k, e in estimates.items())
                + f"; mean weight {estimates['dr'].mean_weight:.2f}, unsupported "
                f"{estimates['dr'].unsupported:.0%}",
                flush=True,
            )
    path = write_results("real_ope", {"fraction": args.fraction, "extracts": results})
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
