"""Subgroup audit reports: JSON, Markdown and PNG charts in one folder, written atomically.

Layout of the folder (a temporary folder renamed into place)::

    OUT/
      audit.json                   AuditResult.to_dict(): settings, groups, metrics, gaps,
                                   exposure, flags and notes (NaN as null; no patient ids)
      audit.md                     flags, then per attribute: group sizes and metrics, gaps,
                                   the charts and the largest exposure differences
      metrics_<attribute>.png      one panel per metric: a bar per group with a 95% interval,
                                   groups left out of the gap in grey, the cohort value dashed
      exposure_<attribute>.png     heat map: share of top-k slots (%) of the most exposed
                                   treatments (rows) per group (columns)

Plots use matplotlib's Agg canvas directly (no pyplot state, no display needed).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from ..utils.escaping import markdown_row
from ..utils.fileutil import atomic_dir
from .subgroup_audit import HEATMAP_ROWS, JSON_FILE, MARKDOWN_FILE, AuditResult
from .subgroups import ALL, UNKNOWN, group_order

#: Exposure differences listed per attribute in the Markdown report.
TOP_EXPOSURE_GAPS = 5


def write_audit(result: AuditResult, out: str | Path) -> Path:
    """Write the report folder ``out`` (replaced whole) and return its path."""
    with atomic_dir(out) as tmp:
        (tmp / JSON_FILE).write_text(json.dumps(result.to_dict(), indent=2, sort_keys=True))
        (tmp / MARKDOWN_FILE).write_text(markdown(result))
        for attribute in result.attributes:
            plot_group_metrics(result, attribute, tmp / metrics_plot(attribute))
            plot_exposure(result, attribute, tmp / exposure_plot(attribute))
    return Path(out)


def metrics_plot(attribute: str) -> str:
    return f"metrics_{_file_name(attribute)}.png"


def exposure_plot(attribute: str) -> str:
    return f"exposure_{_file_name(attribute)}.png"


# --- Markdown -----------------------------------------------------------------------------------


def markdown(result: AuditResult) -> str:
    """The Markdown report text."""
    info = result.info
    split = info["split"]
    lines = [
        f"# Subgroup audit of {info['artifact']['version']}",
        "",
        f"- model: `{info['model']['type']}` {json.dumps(info['model']['params'], sort_keys=True)}",
        f"- artifact data fingerprint: `{info['artifact']['data_fingerprint']}`; audit data "
        f"fingerprint: `{info['data']['fingerprint']}`",
        f"- quality: the model kind re-fitted on a `{split['method']}` split of the audit data "
        f"({split['n_train_rows']} training rows, {split['n_test_rows']} held-out rows, "
        f"{split['n_queries']} queries), metrics at k = {result.k}",
        f"- exposure: the artifact's own model, {info['exposure']['n_requests']} top-{result.k} "
        f"lists ({_request_text(info['exposure']['requests'])})",
        f"- age bands at {info['data']['reference_year']} (the year of the latest outcome)",
        f"- a gap counts groups with at least {result.min_group_size} queries for the metric; "
        f"gaps above {result.max_gap:g} are flagged",
        "",
    ]
    if info.get("notes"):
        lines += [f"Note: {note}." for note in info["notes"]] + [""]
    lines += ["## Flags", ""] + _flag_lines(result)
    for attribute in result.attributes:
        lines += _attribute_section(result, attribute)
    lines += [
        "## Reading this report",
        "",
        "Ranking metrics and MRR average the queries with a held-out treatment that worked; "
        "`outcome_auc` and `harm_rank` (higher is safer) average the queries that define "
        "them. `±` is one standard error; a gap smaller than about twice its standard error "
        "may be noise, and with many groups the largest gap is larger by chance alone. "
        "Exposure differences mix the model's behaviour with case mix (groups have "
        "different conditions and histories). See `docs/audit.md`.",
        "",
    ]
    return "\n".join(lines)


def _request_text(mode: str) -> str:
    return (
        "one per patient and diagnosed condition with candidate treatments"
        if mode == "condition"
        else "one per patient over every treatment"
    )


def _flag_lines(result: AuditResult) -> list[str]:
    flags = result.flags
    if flags.empty:
        return [
            f"No gap above {result.max_gap:g} among groups with at least "
            f"{result.min_group_size} queries.",
            "",
        ]
    # metrics that coincide (hit, recall, precision ... at k = 1) share one line
    keys = ["attribute", "high_group", "low_group", flags["gap"].round(9), flags["high"].round(9)]
    lines = []
    for _, same in flags.groupby(keys, sort=False):
        row = same.iloc[0]
        metrics = ", ".join(f"`{m}`" for m in same["metric"])
        lines.append(
            f"- **{row.attribute}**, {metrics}: gap {row.gap:.3f} (± {_num(row.se)}, "
            f"z {_num(row.z, 1)}) between {row.high_group} ({row.high:.3f}) and "
            f"{row.low_group} ({row.low:.3f})"
            + (" — within noise (z < 2)" if not row.z >= 2 else "")
        )
    return lines + [""]


def _attribute_section(result: AuditResult, attribute: str) -> list[str]:
    groups = result.groups[result.groups["attribute"] == attribute]
    metrics = result.metrics[result.metrics["attribute"] == attribute]
    names = [
        m
        for m in pd.unique(result.metrics["metric"])
        if metrics.loc[metrics["metric"] == m, "n"].sum() > 0
    ]
    rows = []
    for group in groups.itertuples():
        label = group.group + (" *" if group.small or group.group == UNKNOWN else "")
        row = {
            "group": label,
            "patients": group.n_patients,
            "queries": group.n_queries,
            "candidates": _num(group.mean_allowed, 1),
            "requests": group.n_requests,
        }
        for name in names:
            cell = metrics[(metrics["group"] == group.group) & (metrics["metric"] == name)]
            row[name] = (
                f"{cell['value'].iloc[0]:.3f} ± {_num(cell['se'].iloc[0])}"
                if len(cell) and cell["n"].iloc[0] > 0
                else "-"
            )
        rows.append(row)
    gaps = result.gaps[(result.gaps["attribute"] == attribute) & result.gaps["metric"].isin(names)]
    gap_rows = [
        {
            "metric": g.metric,
            "gap": _num(g.gap),
            "± se": _num(g.se),
            "z": _num(g.z, 1),
            "highest": f"{g.high_group} {_num(g.high)}" if pd.notna(g.high_group) else "-",
            "lowest": f"{g.low_group} {_num(g.low)}" if pd.notna(g.low_group) else "-",
            "groups": g.n_groups,
            "flag": "**yes**" if g.flagged else "",
        }
        for g in gaps.itertuples()
    ]
    lines = [
        f"## {attribute}",
        "",
        _table(pd.DataFrame(rows)),
        "",
        f"\\* fewer than {result.min_group_size} queries, or unknown: shown, not used for gaps. "
        "`candidates`: treatments a query could rank after the exclusions, on average (fewer "
        "candidates make a query easier).",
        "",
        _table(pd.DataFrame(gap_rows)),
        "",
        f"![metrics by {attribute}]({metrics_plot(attribute)})",
        "",
        f"### Exposure by {attribute}",
        "",
    ]
    top = result.exposure_gaps[result.exposure_gaps["attribute"] == attribute].head(
        TOP_EXPOSURE_GAPS
    )
    if top.empty:
        lines += ["No two groups have enough requests to compare.", ""]
    else:
        lines += [
            f"Largest differences in the share of top-{result.k} slots:",
            "",
            _table(
                pd.DataFrame(
                    [
                        {
                            "treatment": _treatment_label(result, t.treatment_id),
                            "difference": f"{t.gap:.1%}",
                            "highest": f"{t.high_group} {t.high:.1%}",
                            "lowest": f"{t.low_group} {t.low:.1%}",
                        }
                        for t in top.itertuples()
                    ]
                )
            ),
            "",
        ]
    lines += [f"![exposure by {attribute}]({exposure_plot(attribute)})", ""]
    return lines


def _treatment_label(result: AuditResult, treatment_id: str, width: int = 40) -> str:
    name = result.treatment_names.get(str(treatment_id))
    if not name:
        return str(treatment_id)
    name = name if len(name) <= width else name[: width - 1] + "…"
    return f"{treatment_id} {name}"


def _num(value, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.{digits}f}"


def _table(frame: pd.DataFrame) -> str:
    """A GitHub Markdown table of already formatted cells."""
    if frame.empty:
        return "(none)"
    header = markdown_row(frame.columns)
    rule = "|" + "|".join("---" for _ in frame.columns) + "|"
    body = [markdown_row(row) for row in frame.itertuples(index=False)]
    return "\n".join([header, rule, *body])


# --- plots --------------------------------------------------------------------------------------


def plot_group_metrics(result: AuditResult, attribute: str, path: str | Path) -> None:
    """PNG: one panel per metric with a bar per group (95% interval), cohort value dashed.

    Metrics for which no group has ``min_group_size`` queries are left out (the Markdown table
    still lists them); metrics equal in every group (hit, recall, precision ... at k = 1) share
    a panel.
    """
    metrics = result.metrics[result.metrics["attribute"] == attribute]
    overall = result.metrics[result.metrics["attribute"] == ALL].set_index("metric")["value"]
    gaps = result.gaps[result.gaps["attribute"] == attribute].set_index("metric")
    groups = sorted(pd.unique(metrics["group"]), key=group_order)
    names = _distinct_panels(metrics, groups)
    columns = min(4, max(1, len(names)))
    rows = max(1, math.ceil(len(names) / columns))
    width = max(3.2, 0.32 * len(groups) + 1.2)
    figure = Figure(figsize=(width * columns, 3.3 * rows), layout="constrained")
    FigureCanvasAgg(figure)
    x = np.arange(len(groups))
    for position, (name, same) in enumerate(names.items(), start=1):
        axes = figure.add_subplot(rows, columns, position)
        part = metrics[metrics["metric"] == name].set_index("group").reindex(groups)
        values = part["value"].to_numpy(np.float64)
        errors = np.nan_to_num(1.96 * part["se"].to_numpy(np.float64))
        used = part["used"].fillna(False).to_numpy(bool)
        axes.bar(
            x,
            np.nan_to_num(values),
            yerr=errors,
            capsize=2,
            color=np.where(used, "tab:blue", "lightgray"),
            edgecolor="gray",
            error_kw={"elinewidth": 0.8},
        )
        if name in overall and np.isfinite(overall[name]):
            axes.axhline(overall[name], color="black", linestyle="--", linewidth=0.8)
        gap = gaps["gap"].get(name, float("nan"))
        flagged = bool(gaps["flagged"].get(name, False))
        label = name + (f" (= {', '.join(m.split('@')[0] for m in same)})" if same else "")
        title = label if not np.isfinite(gap) else f"{label}: gap {gap:.3f}"
        title += " (flagged)" if flagged else ""
        axes.set_title(title, color="tab:red" if flagged else "black", fontsize="medium")
        tilt = len(groups) > 4
        axes.set_xticks(
            x,
            groups,
            rotation=60 if tilt else 0,
            ha="right" if tilt else "center",
            fontsize="small",
        )
        axes.set_ylim(0, 1.05)
        axes.grid(axis="y", alpha=0.3)
    figure.suptitle(
        f"Metrics by {attribute} (grey: fewer than {result.min_group_size} queries or "
        "unknown; dashed: whole cohort)",
        fontsize="medium",
    )
    figure.savefig(path, dpi=100)


def _distinct_panels(metrics: pd.DataFrame, groups: list[str]) -> dict[str, list[str]]:
    """Metric -> metrics with the same value in every group (one panel for all of them), for
    the metrics where some group is used for the gap."""
    panels: dict[str, list[str]] = {}
    seen: dict[tuple, str] = {}
    for name in pd.unique(metrics["metric"]):
        part = metrics[metrics["metric"] == name].set_index("group").reindex(groups)
        if not part["used"].fillna(False).any():
            continue
        key = tuple(np.round(part["value"].to_numpy(np.float64), 9).tolist())
        if key in seen:
            panels[seen[key]].append(name)
        else:
            seen[key], panels[name] = name, []
    return panels


def plot_exposure(result: AuditResult, attribute: str, path: str | Path) -> None:
    """PNG heat map: share (%) of each group's top-k slots of the most exposed treatments."""
    exposure = result.exposure
    overall = (
        exposure[exposure["attribute"] == ALL]
        .sort_values("share", ascending=False)
        .head(HEATMAP_ROWS)["treatment_id"]
        .tolist()
    )
    part = exposure[(exposure["attribute"] == attribute) & exposure["treatment_id"].isin(overall)]
    table = part.pivot(index="treatment_id", columns="group", values="share").reindex(overall)
    groups = sorted(table.columns, key=group_order)
    table = table[groups].fillna(0.0) * 100
    requests = result.groups[result.groups["attribute"] == attribute].set_index("group")[
        "n_requests"
    ]
    figure = Figure(
        figsize=(max(5.0, 0.75 * len(groups) + 4.5), max(3.0, 0.32 * len(overall) + 1.8)),
        layout="constrained",
    )
    FigureCanvasAgg(figure)
    axes = figure.add_subplot(1, 1, 1)
    image = axes.imshow(table.to_numpy(), aspect="auto", cmap="Blues")
    axes.set_xticks(
        np.arange(len(groups)),
        [f"{g}\n(n={int(requests.get(g, 0))})" for g in groups],
        rotation=60 if len(groups) > 6 else 0,
        ha="right" if len(groups) > 6 else "center",
        fontsize="small",
    )
    axes.set_yticks(
        np.arange(len(overall)),
        [_treatment_label(result, t, 28) for t in overall],
        fontsize="small",
    )
    if table.size <= 400:
        top = float(table.to_numpy().max()) if table.size else 0.0
        for (i, j), value in np.ndenumerate(table.to_numpy()):
            axes.text(
                j,
                i,
                f"{value:.1f}",
                ha="center",
                va="center",
                fontsize="x-small",
                color="white" if value > 0.6 * top else "black",
            )
    figure.colorbar(image, ax=axes, label=f"% of the group's top-{result.k} slots")
    axes.set_title(
        f"Exposure by {attribute}\n(the {len(overall)} most suggested treatments)",
        fontsize="medium",
    )
    figure.savefig(path, dpi=100)


def _file_name(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name)
