"""``recommender demo``: generate -> evaluate -> train -> recommend, end to end, in minutes."""

from __future__ import annotations

import sys
from pathlib import Path

from .options import positive_int

MODELS = ("condition-popular", "als", "outcome")


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="run the whole pipeline on a synthetic cohort",
        description="Generate an observational cohort with known truth, compare models on a "
        "leave-last split and by the true success rate of their first choices, train the "
        "outcome model into an artifact and recommend for a patient in it and for a new one.",
    )
    parser.add_argument(
        "--out", default="demo-output", help="folder for everything (default %(default)s)"
    )
    parser.add_argument("--patients", type=positive_int, default=5000)
    parser.add_argument("--seed", type=int, default=1)
    parser.set_defaults(func=run)


def run(args) -> int:
    from ..data.dataset import Dataset
    from ..data.splits import leave_last
    from ..data.synthetic.observational import generate_observational, write_observational
    from ..data.tables import read_tables
    from ..evaluation.evaluate import evaluate_split
    from ..evaluation.report import write_report
    from ..evaluation.truth import evaluate_against_truth
    from ..models.persistence import load_artifact
    from ..training import train_artifact
    from .output import table

    out = Path(args.out)
    step = _Steps()
    step(f"1. generating {args.patients} synthetic patients (seed {args.seed}) -> {out / 'data'}")
    cohort = generate_observational(
        args.patients, seed=args.seed, show_progress=sys.stderr.isatty()
    )
    write_observational(cohort, out / "data")
    tables = read_tables(out / "data")
    print(f"   {len(tables.outcomes)} outcomes, {len(cohort.held_out)} held-out episodes")

    step(f"2. comparing {', '.join(MODELS)} -> {out / 'evaluation'}")
    result = evaluate_split(list(MODELS), leave_last(tables), k=5)
    result.truth = evaluate_against_truth(list(MODELS), Dataset.from_tables(tables), out / "data")
    write_report(result, out / "evaluation", title="Demo evaluation")
    print(
        result.summary_frame()[["ndcg@5", "mrr", "fit_seconds"]].to_string(
            float_format=lambda v: f"{v:.3f}"
        )
    )
    print("   true success rate of each model's first choices on the held-out episodes:")
    for name, values in result.truth.values.items():
        print(
            f"     {name:<18} {values['all']:.3f} (gap to the Bayes bound closed: "
            f"{result.truth.gaps[name]['all']:.2f})"
        )
    ref = result.truth.reference
    print(
        f"     (guideline {ref['guideline']['all']:.3f}, Bayes bound {ref['bound']['all']:.3f}, "
        f"oracle {ref['oracle']['all']:.3f})"
    )

    step(f"3. training the outcome model -> {out / 'model'}")
    train_artifact(out / "data", out / "model", kind="outcome")
    model = load_artifact(out / "model").model

    held = cohort.held_out.iloc[0]
    step(f"4. recommending for {held.patient_id}, now presenting with {held.condition_id}")
    print(table(model.recommend(held.patient_id, k=3, condition_id=held.condition_id)))
    print(f"   the truth's best choice from what is recorded: {held.bound_choice}")

    first = tables.outcomes.iloc[0]
    step(
        f"5. a patient outside the data: {first.treatment_id} worked for {first.condition_id}, "
        f"now presenting with {held.condition_id}"
    )
    print(
        table(
            model.recommend_new(
                [{"treatment_id": first.treatment_id, "outcome": "responded"}],
                conditions=[first.condition_id, held.condition_id],
                k=3,
                condition_id=held.condition_id,
                birth_year=1960,
                observations={"loinc|33914-3": 45.0},
            )
        )
    )
    print(f"\nEverything is in {out}/ (report: {out / 'evaluation' / 'report.md'}).")
    print("Suggestions support a clinician's decision; they never replace it.")
    return 0


class _Steps:
    def __call__(self, text: str) -> None:
        print(f"\n{text}", flush=True)
