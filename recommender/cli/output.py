"""Plain-text renderings shared by the commands (``--format table``)."""

from __future__ import annotations

from ..ranking import RecommendationList


def table(answer: RecommendationList) -> str:
    """One answer as aligned text: rank, treatment, score, evidence, name; exclusions; notes."""
    lines = [
        f"patient {answer.patient_id}"
        + (f", condition {answer.condition_id}" if answer.condition_id else ""),
        f"{'rank':>4}  {'treatment':<24} {'score':>9}  {'response rate (95% CI), n':<28} name",
    ]
    for r in answer.recommendations:
        evidence = (r.explanation or {}).get("evidence") or {}
        rate = evidence.get("response_rate")
        low, high = evidence.get("response_rate_ci95", [0, 1])
        summary = (
            f"{rate:.0%} ({low:.0%}-{high:.0%}), n={evidence['outcomes_recorded']}"
            if rate is not None
            else ""
        )
        flags = "".join(f"  [moderate interaction with {f['with']}]" for f in r.flags)
        lines.append(
            f"{r.rank:>4}  {r.treatment_id:<24} {r.score:>9.4f}  {summary:<28} "
            f"{r.treatment_name or ''}{flags}"
        )
    if answer.excluded:
        lines.append("excluded:")
        lines += [
            f"  {e.treatment_id:<24} {e.reason}: {e.detail}"
            + (f" ({e.treatment_name})" if e.treatment_name else "")
            for e in answer.excluded
        ]
    lines += [f"note: {n}" for n in answer.notes]
    return "\n".join(lines)
