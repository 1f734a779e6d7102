"""What works for whom: policy value against the truth, off-policy evaluation, and the cost.

On observational cohorts with known truth (``recommender.data.synthetic.observational``:
covariate-dependent response, a hidden trait, confounding by indication, step therapy,
cold-start patients):

1. **Policy value.** Each model is trained on a cohort's tables and asked, for every held-out
   episode (as of its start), for its rank-1 therapy; its value is the mean *true* success
   probability of those choices, and its *gap closed* the share of the distance from the
   guideline's first choice to the Bayes bound (observables plus outcome history). Warm
   patients (with a history) and cold-start ones are reported apart. The test seeds are never
   those the outcome model's settings were chosen on (seed 3).
2. **Off-policy evaluation.** A time split of each cohort; each model's policy is valued on the
   test first-line decisions by IPS, SNIPS and DR (an outcome model fitted on the training part
   as the nuisance), against the policy's true value on the same decisions.
3. **Cost** (``--cost``): training on 1M patients against ALS on the same data, measured in one
   run; the one-patient serving path (engine plus explanation) against ALS's.

    python benchmarks/bench_outcomes.py --quick   # 20k patients, 2 seeds, 4 OPE seeds
    python benchmarks/bench_outcomes.py           # 100k patients, 3 seeds, 10 OPE seeds
    python benchmarks/bench_outcomes.py --cost    # adds the 1M cost measurements
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import RESULTS, markdown_table, write_results  # noqa: E402
from recommender.columns import Columns as C  # noqa: E402
from recommender.data.dataset import Dataset  # noqa: E402
from recommender.data.splits import temporal  # noqa: E402
from recommender.data.synthetic.observational import generate_observational  # noqa: E402
from recommender.data.tables import validate_tables  # noqa: E402
from recommender.evaluation.policy_value import (  # noqa: E402
    first_line_decisions,
    off_policy_value,
    policy_choices,
)
from recommender.evaluation.truth import episode_values, gap_closed  # noqa: E402
from recommender.models import make_model  # noqa: E402

#: The models compared (name -> kind, params). "s-learner" is the plain gradient-boosting
#: baseline: covariates and therapy, no collaborative filtering, no confounding adjustment.
MODELS = {
    "outcome": ("outcome", {}),
    "s-learner": ("outcome", {"factors": 0, "weighting": "none", "n_bags": 1}),
    "als": ("als", {}),
    "latent-class": ("latent-class", {}),
    "condition-popular": ("condition-popular", {}),
}
GROUPS = ("all", "warm", "cold")


def cohort_dataset(n: int, seed: int):
    cohort = generate_observational(n, seed=seed)
    return cohort, Dataset.from_tables(validate_tables(cohort.tables))


def policy_values(n: int, seeds: list[int]) -> dict:
    runs = []
    for seed in seeds:
        cohort, dataset = cohort_dataset(n, seed)
        ref = cohort.reference_policies.pivot(index="policy", columns="group", values="value")
        row = {"seed": seed, "reference": ref.to_dict(orient="index"), "models": {}}
        for name, (kind, params) in MODELS.items():
            started = time.perf_counter()
            model = make_model(kind, **params).fit(dataset)
            fit = time.perf_counter() - started
            per = episode_values(dataset, cohort.truth_held_out, model)
            parts = {"all": per, "warm": per[per.cold_start == 0], "cold": per[per.cold_start == 1]}
            values = {g: float(p.p_success.mean()) for g, p in parts.items()}
            row["models"][name] = {
                "value": values,
                "gap": {g: gap_closed(values[g], ref, g) for g in GROUPS},
                "fit_s": fit,
            }
            print(
                f"seed {seed} {name}: gap "
                + " / ".join(f"{row['models'][name]['gap'][g]:.3f}" for g in GROUPS)
                + f" (fit {fit:.1f} s)",
                flush=True,
            )
            del model
            gc.collect()
        runs.append(row)
        del cohort, dataset
        gc.collect()
    summary = {
        name: {g: statistics.mean(r["models"][name]["gap"][g] for r in runs) for g in GROUPS}
        for name in MODELS
    }
    return {"patients": n, "seeds": seeds, "runs": runs, "mean_gap": summary}


def off_policy(n: int, seeds: list[int], fraction: float = 0.3) -> dict:
    runs = []
    names = ("outcome", "als", "condition-popular")
    for seed in seeds:
        cohort = generate_observational(n, seed=seed)
        split = temporal(validate_tables(cohort.tables), fraction=fraction)
        dataset = Dataset.from_tables(split.train)
        decisions = first_line_decisions(dataset, split.test)
        nuisance = make_model("outcome", random_state=seed).fit(dataset)
        truth = cohort.truth_logged.set_index([C.patient, C.condition, C.treatment])["p_success"]
        row = {
            "seed": seed,
            "episodes": len(decisions),
            "behaviour": float(decisions.success.mean()),
            "models": {},
        }
        for name in names:
            kind, params = MODELS[name]
            model = nuisance if name == "outcome" else make_model(kind, **params).fit(dataset)
            chosen = policy_choices(model, decisions.patient, decisions.condition, decisions.time)
            ids = np.where(chosen >= 0, dataset.treatments.external_ids[np.maximum(chosen, 0)], "")
            key = pd.MultiIndex.from_arrays(
                [decisions.frame[C.patient], decisions.frame[C.condition], ids]
            )
            true = float(np.nan_to_num(truth.reindex(key).to_numpy(), nan=0.0).mean())
            est = off_policy_value(chosen, decisions, nuisance, n_bootstrap=500, seed=seed)
            row["models"][name] = {"true": true, **{k: e.to_dict() for k, e in est.items()}}
            dr = est["dr"]
            print(
                f"OPE seed {seed} {name}: true {true:.3f} DR {dr.value:.3f} "
                f"[{dr.ci95[0]:.3f}, {dr.ci95[1]:.3f}] IPS {est['ips'].value:.3f} "
                f"SNIPS {est['snips'].value:.3f}",
                flush=True,
            )
        runs.append(row)
    summary = {}
    for name in names:
        for estimator in ("ips", "snips", "dr"):
            errors = [
                r["models"][name][estimator]["value"] - r["models"][name]["true"] for r in runs
            ]
            covered = [
                r["models"][name][estimator]["ci95"][0]
                <= r["models"][name]["true"]
                <= r["models"][name][estimator]["ci95"][1]
                for r in runs
            ]
            estimates = [r["models"][name][estimator] for r in runs]
            sampling_covered = [
                e["sampling_ci95"][0] <= r["models"][name]["true"] <= e["sampling_ci95"][1]
                for e, r in zip(estimates, runs)
            ]
            summary[f"{name}/{estimator}"] = {
                "mean_abs_error": float(np.mean(np.abs(errors))),
                "mean_error": float(np.mean(errors)),
                "coverage": float(np.mean(covered)),
                "mean_width": float(np.mean([e["ci95"][1] - e["ci95"][0] for e in estimates])),
                "sampling_coverage": float(np.mean(sampling_covered)),
                "sampling_mean_width": float(
                    np.mean([e["sampling_ci95"][1] - e["sampling_ci95"][0] for e in estimates])
                ),
                "unsupported_share": float(np.mean([e["unsupported_share"] for e in estimates])),
            }
    return {"patients": n, "seeds": seeds, "fraction": fraction, "runs": runs, "summary": summary}


def cost(n: int, seed: int, requests: int) -> dict:
    """Training time and one-patient serving cost of the outcome model against ALS."""
    from threadpoolctl import threadpool_limits

    cohort, dataset = cohort_dataset(n, seed)
    held = cohort.held_out
    del cohort
    gc.collect()
    out = {"patients": n}
    models = {}
    for name in ("als", "outcome"):
        kind, params = MODELS[name]
        started = time.perf_counter()
        models[name] = make_model(kind, **params).fit(dataset)
        out[f"{name}_fit_s"] = time.perf_counter() - started
        print(f"cost: {name} fit {out[f'{name}_fit_s']:.1f} s", flush=True)
    out["fit_ratio"] = out["outcome_fit_s"] / out["als_fit_s"]
    asks = held.sample(min(requests, len(held)), random_state=seed)
    pairs = list(zip(asks[C.patient], asks[C.condition]))
    with threadpool_limits(1, "blas"):
        for name, model in models.items():
            model.warm_up()
            for p, c in pairs[:50]:
                model.recommend(p, k=5, condition_id=c).to_dict()
            rounds = []
            for _ in range(5):
                started = time.process_time()
                for p, c in pairs:
                    model.recommend(p, k=5, condition_id=c).to_dict()
                rounds.append((time.process_time() - started) / len(pairs) * 1e6)
            out[f"{name}_request_us"] = statistics.median(rounds)
            print(
                f"cost: {name} one patient {out[f'{name}_request_us']:.0f} us (median of 5)",
                flush=True,
            )
    out["request_ratio"] = out["outcome_request_us"] / out["als_request_us"]
    out.update(batch_cost(models, dataset, held))
    return out


def batch_cost(models: dict, dataset: Dataset, held: pd.DataFrame) -> dict:
    """Ranking every held-out episode's patient (top 1, every rule) with the outcome model,
    against raw implicit ``recommend`` (top 10, no rule) of the same patients on ALS factors."""
    from implicit.cpu.als import AlternatingLeastSquares
    from threadpoolctl import threadpool_limits

    patients = dataset.patient_indices(held[C.patient], strict=False)
    conditions = dataset.conditions.to_internal(held[C.condition], strict=False)
    keep = (patients >= 0) & (conditions >= 0)
    patients, conditions = patients[keep], conditions[keep]
    started = time.perf_counter()
    policy_choices(models["outcome"], patients, conditions, None)
    outcome_s = time.perf_counter() - started
    als = models["als"]
    raw = AlternatingLeastSquares(factors=als.factors, iterations=1, random_state=0)
    raw.user_factors, raw.item_factors = (
        np.asarray(als.user_factors_),
        np.asarray(als.item_factors_),
    )
    items = dataset.matrix.tocsr()
    with threadpool_limits(1, "blas"):
        started = time.perf_counter()
        for lo in range(0, len(patients), 100_000):
            chunk = patients[lo : lo + 100_000]
            raw.recommend(chunk, items[chunk], N=10)
        implicit_s = time.perf_counter() - started
    print(
        f"cost: batch of {len(patients)} patients: outcome {outcome_s:.1f} s, raw implicit "
        f"recommend {implicit_s:.1f} s",
        flush=True,
    )
    return {
        "batch_patients": int(len(patients)),
        "batch_outcome_s": outcome_s,
        "batch_implicit_recommend_s": implicit_s,
        "batch_ratio": outcome_s / implicit_s,
    }


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(MODELS)
    gaps = result["policy_value"]["mean_gap"]
    x = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(8, 4))
    for i, group in enumerate(("warm", "cold")):
        ax.bar(
            x + (i - 0.5) * 0.38, [gaps[n][group] for n in names], 0.38, label=f"{group} patients"
        )
    ax.axhline(1.0, color="black", lw=0.8, ls="--")
    ax.text(len(names) - 0.6, 1.01, "Bayes bound", fontsize=8, ha="right", va="bottom")
    ax.axhline(0.0, color="grey", lw=0.8)
    ax.set_xticks(x, names)
    ax.set_ylabel("share of the guideline-to-bound gap closed")
    ax.set_title(
        f"Policy value on held-out episodes ({result['policy_value']['patients']:,} patients, "
        f"{len(result['policy_value']['seeds'])} test seeds)"
    )
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--patients", type=int)
    parser.add_argument("--seeds", type=int)
    parser.add_argument("--ope-seeds", type=int)
    parser.add_argument("--cost", action="store_true", help="add the 1M-patient cost run")
    parser.add_argument("--cost-patients", type=int, default=1_000_000)
    parser.add_argument(
        "--parts",
        default="policy,ope",
        help="comma-separated parts to run (policy, ope); the others are kept from the "
        "existing results file",
    )
    args = parser.parse_args()
    n = args.patients or (20_000 if args.quick else 100_000)
    seeds = list(range(11, 11 + (args.seeds or (2 if args.quick else 3))))
    ope_seeds = list(range(21, 21 + (args.ope_seeds or (4 if args.quick else 10))))
    name = "outcomes_quick" if args.quick else "outcomes"
    parts = set(args.parts.split(","))
    previous = RESULTS / f"{name}.json"
    result = json.loads(previous.read_text()) if previous.exists() else {}
    result.pop("machine", None)
    if "policy" in parts:
        result["policy_value"] = policy_values(n, seeds)
    if "ope" in parts:
        result["off_policy"] = off_policy(20_000, ope_seeds)
    if args.cost:
        result["cost"] = cost(args.cost_patients, 31, 2000)
    path = write_results(name, result)
    plot(result, RESULTS / f"{name}.png")
    rows = [
        {"model": m, **{g: f"{v:.3f}" for g, v in gaps.items()}}
        for m, gaps in result["policy_value"]["mean_gap"].items()
    ]
    print(markdown_table(rows, ["model", *GROUPS]))
    for key, value in result["off_policy"]["summary"].items():
        print(
            f"{key}: coverage {value['coverage']:.2f} (width {value['mean_width']:.3f}; "
            f"sampling only {value['sampling_coverage']:.2f}, width "
            f"{value['sampling_mean_width']:.3f}), mean |error| {value['mean_abs_error']:.3f}"
        )
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
