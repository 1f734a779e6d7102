"""Evaluation reports: a folder with JSON, Markdown, per-query CSV tables and PNG plots.

Layout of the folder (written to a temporary folder and renamed into place)::

    OUT/
      results.json               everything in EvaluationResult.to_dict(), NaN as null
      report.md                  summary table at k, the split, timings, planted hit@1
      metrics_vs_k.png           grid: one panel per ranking metric, one line per model
      queries/<model>.csv        per-query metrics

Plots use matplotlib's Agg canvas directly (no pyplot state, no display needed).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path

import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from ..utils.escaping import csv_safe, markdown_row
from ..utils.fileutil import atomic_dir
from .evaluate import RANKING_METRICS, EvaluationResult

PLOT = "metrics_vs_k.png"
PLOT_METRICS = (*RANKING_METRICS, "coverage")
TITLES = {
    "precision": "Precision@k",
    "recall": "Recall@k",
    "hit": "Hit rate@k",
    "map": "MAP@k",
    "ndcg": "NDCG@k",
    "coverage": "Catalogue coverage@k",
}


def write_report(
    result: EvaluationResult,
    out: str | Path,
    title: str = "Evaluation",
    extra: Callable[[Path], None] | None = None,
) -> Path:
    """Write the report folder ``out`` (replaced whole) and return its path; ``extra(folder)``
    writes more files into it before it replaces ``out`` (the off-policy files)."""
    with atomic_dir(out) as tmp:
        if extra is not None:
            extra(tmp)
        (tmp / "results.json").write_text(json.dumps(result.to_dict(), indent=2, sort_keys=True))
        (tmp / "report.md").write_text(markdown(result, title))
        plot_metrics(result, tmp / PLOT)
        (tmp / "queries").mkdir()
        for name, model_result in result.models.items():
            csv_safe(model_result.queries).to_csv(
                tmp / "queries" / f"{_file_name(name)}.csv", index=False
            )
    return Path(out)


def markdown(result: EvaluationResult, title: str = "Evaluation") -> str:
    """The Markdown report text."""
    lines = [f"# {title}", ""]
    if result.split:
        lines += _split_section(result.split)
    lines += [
        f"## Metrics at k = {result.k}",
        "",
        _table(result.summary_frame().reset_index()),
        "",
        "Ranking metrics are means over queries with at least one held-out treatment that "
        "worked; precision divides by k. `outcome_auc`: chance that a held-out treatment "
        "that worked outscores one that failed or harmed (0.5 = random). `harm_rank`: mean "
        "normalised rank of harmful held-out treatments (0 = ranked first, 1 = last or "
        "excluded; higher is safer, 0.5 = random).",
        "",
        f"![metrics vs k]({PLOT})",
        "",
        "## Queries",
        "",
        _table(_counts(result)),
        "",
    ]
    if result.planted is not None:
        lines += _planted_section(result.planted)
    if result.truth is not None:
        lines += _truth_section(result.truth)
    return "\n".join(lines)


def plot_metrics(result: EvaluationResult, path: str | Path) -> None:
    """PNG grid of every metric in ``PLOT_METRICS`` against k, one line per model."""
    columns = 3
    rows = math.ceil(len(PLOT_METRICS) / columns)
    figure = Figure(figsize=(4.2 * columns, 3.4 * rows), layout="constrained")
    FigureCanvasAgg(figure)
    for position, metric in enumerate(PLOT_METRICS, start=1):
        axes = figure.add_subplot(rows, columns, position)
        curves = result.compare(metric)
        for name in curves.columns:
            axes.plot(curves.index, curves[name], marker="o", label=name)
        axes.set(title=TITLES[metric], xlabel="k", ylim=(0, 1.02), xticks=list(result.ks))
        axes.grid(alpha=0.3)
    figure.axes[0].legend(fontsize="small")
    figure.savefig(path, dpi=100)


# --- sections -----------------------------------------------------------------------------------


def _split_section(split: dict) -> list[str]:
    dropped = ", ".join(f"{reason} {n}" for reason, n in split.get("dropped", {}).items() if n)
    return [
        "## Split",
        "",
        f"- method: `{split.get('method')}`",
        f"- training rows: {split.get('n_train_rows')}; held-out rows: {split.get('n_test_rows')}",
        f"- held-out rows dropped as unscorable: {dropped or 'none'}",
        "",
    ]


def _counts(result: EvaluationResult) -> pd.DataFrame:
    keys = ("n_queries", "n_queries_with_relevant", "n_queries_auc", "n_queries_harm")
    return pd.DataFrame(
        [{"model": name, **{k: r.summary[k] for k in keys}} for name, r in result.models.items()]
    )


def _planted_section(planted) -> list[str]:
    rows = [{"model": name, "hit@1": value} for name, value in planted.hit_at_1.items()]
    rows.append({"model": "(popularity rule, expected)", "hit@1": planted.popularity_rate})
    rows.append({"model": "(Bayes-optimal, expected)", "hit@1": planted.bayes_rate})
    return [
        "## Planted cohort",
        "",
        f"Trained on all tables; {planted.n_episodes} held-out episodes, each checked for "
        "rank 1 = the planted best therapy.",
        "",
        _table(pd.DataFrame(rows)),
        "",
    ]


def _truth_section(truth) -> list[str]:
    rows = [{"policy": name, **values} for name, values in truth.values.items()]
    rows += [{"policy": f"({name})", **values} for name, values in truth.reference.items()]
    gaps = [{"model": name, **values} for name, values in truth.gaps.items()]
    return [
        "## Policy value against the truth (generated cohort)",
        "",
        "Trained on all tables; each held-out episode asked as of its start. Value: the mean "
        "true P(success) of the rank-1 therapy, for every patient, warm patients (with an "
        f"outcome history) and cold-start ones ({truth.n_episodes}). Reference policies in "
        "parentheses: the guideline's first choice, the best choice from the observables, "
        "the Bayes bound from the observables and the history, the oracle that knows the "
        "hidden trait.",
        "",
        _table(pd.DataFrame(rows)),
        "",
        "Share of the guideline-to-bound gap closed:",
        "",
        _table(pd.DataFrame(gaps)),
        "",
    ]


def _table(frame: pd.DataFrame) -> str:
    """A GitHub Markdown table; floats with 4 decimals, missing values as '-' (cells escaped)."""

    def cell(value) -> str:
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return "-"
        return f"{value:.4f}" if isinstance(value, float) else str(value)

    header = markdown_row(frame.columns)
    rule = "|" + "|".join("---" for _ in frame.columns) + "|"
    body = [markdown_row(cell(v) for v in row) for row in frame.itertuples(index=False)]
    return "\n".join([header, rule, *body])


def _file_name(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name)
