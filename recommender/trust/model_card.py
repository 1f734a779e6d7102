"""Model cards: what a trained artifact is for, how it works, how well it did and where it fails.

:func:`model_card_markdown` builds the card from the artifact's manifest alone (no arrays are
read), optionally with the JSON of an evaluation report (``recommender evaluate``:
``results.json``) and of a subgroup audit (``recommender audit``: ``audit.json``). The service
serves the same text at ``GET /v1/model/card``; ``recommender model-card`` writes it to a file.

Sections, in order (``SECTIONS``): model details, intended use and users, inputs, how the
algorithm works, training data, validation results, subgroup results, safety rules applied,
known limitations, version.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path

from ..exceptions import DataValidationError
from ..models.persistence import Artifact, read_manifest
from ..ranking.safety import REASONS
from ..utils.escaping import markdown_row
from ..utils.fileutil import atomic_file

SECTIONS = (
    "Model details",
    "Intended use and users",
    "Inputs",
    "How the algorithm works",
    "Training data",
    "Validation results",
    "Subgroup results",
    "Safety rules applied",
    "Known limitations",
    "Version",
)
EVALUATION_FILE, AUDIT_FILE, OPE_FILE = "results.json", "audit.json", "ope.json"

#: Plain-language description of each model kind.
ALGORITHMS = {
    "als": "Alternating least squares (matrix factorisation). Every patient and every treatment "
    "is summarised by a short list of numbers learned so that, multiplied together, they "
    "reproduce who did well on what: a treatment that worked counts as a strong yes, one "
    "that failed or harmed as a confident no, and a diagnosis as a weaker yes. A "
    "treatment scores high for a patient when patients with a similar record did well "
    "on it. Treatments that are prescribed often carry more evidence and so tend to "
    "score higher.",
    "bpr": "Bayesian personalised ranking (matrix factorisation). Patients and treatments are "
    "summarised by learned numbers trained so that, for each patient, treatments that "
    "worked rank above treatments the patient never received. Failures are not used for "
    "learning (they act only through the safety rules), so the model learns what tends "
    "to work together rather than what fails.",
    "lmf": "Logistic matrix factorisation. Patients and treatments are summarised by learned "
    "numbers that give the probability that a treatment is among those that worked for a "
    "patient, contrasted with randomly drawn treatments the patient did not receive. "
    "Failures act only through the safety rules.",
    "cosine": "Treatment-to-treatment similarity (nearest neighbours, cosine). Two treatments "
    "are similar when they worked for the same patients; diagnoses take part too, so a "
    "condition points to the treatments that worked for patients who have it. A "
    "patient's score for a treatment adds up its similarity to what worked for them.",
    "bm25": "Treatment-to-treatment similarity (nearest neighbours, BM25 weighting). As cosine "
    "similarity, but very common treatments and diagnoses count less, so a shared rare "
    "success weighs more than a shared routine one.",
    "outcome": "Outcome model (gradient-boosted trees, LightGBM). For each past treatment "
    "decision it sees the patient as they were then (age, sex, diagnoses, the latest labs "
    "before the decision, never later ones) and their earlier outcomes summarised by "
    "collaborative filtering, and learns the chance that each therapy works and the chance "
    "that it harms. Because clinicians give some drugs to sicker patients, each decision is "
    "weighted by the inverse of how likely clinicians were to make it (a propensity model of "
    "their choices), so a drug is not blamed for the severity of the patients who got it. "
    "The score is the predicted chance of success, with a 95% interval from bootstrap "
    "replicates of the model, widened when few comparable patients received the therapy.",
    "latent-class": "Response phenotypes (a latent-class mixture model). The model assumes "
    "patients fall into a few hidden groups that respond differently to "
    "treatments, and learns each group's chance of response, partial response, "
    "failure and harm for every treatment from recorded outcomes only. A "
    "patient's own outcomes tell how likely they belong to each group, and a "
    "treatment's score is its expected outcome over those groups; how often a "
    "treatment is prescribed does not raise its score.",
    "popular": "Overall popularity (a baseline). Treatments are ranked by how many patients they "
    "worked for; every patient gets the same list, minus the exclusions.",
    "condition-popular": "Per-condition success rate (a baseline a guideline-following "
    "clinician would use). For the condition asked about, treatments are "
    "ranked by the share of their recorded outcomes that worked, pulled "
    "towards the treatment's overall rate when it has little evidence. It "
    "is not personalised beyond the condition.",
}
#: Safety rule reason code -> what it guarantees; ``{...}`` fields come from the manifest.
SAFETY_RULES = {
    "previous_harm": "a treatment that harmed this patient before (an adverse flag, or an outcome "
    "below {harm_threshold}) is never offered, not even when tried treatments "
    "are allowed",
    "contraindicated": "a treatment contraindicated by any of the patient's conditions or "
    "allergies (the contraindications table) is never offered",
    "severe_interaction": "a treatment with a severe interaction with one of the patient's "
    "active treatments is never offered; a moderate one is flagged",
    "duplicate_therapy": "an active treatment, or a treatment with the same active ingredient "
    "(another strength or product, a combination holding it), is {duplicates}",
    "insufficient_evidence": "a treatment received by fewer than {min_support} patients in the "
    "training data is not offered, so no suggestion rests on one or "
    "two people",
    "already_tried": "treatments the patient already has an outcome for are left out unless the "
    "request asks to include them",
}
#: Implicit-feedback kinds: how often a treatment is given raises its score.
EXPOSURE_DRIVEN = ("als", "bpr", "lmf", "cosine", "bm25", "popular")


def model_card_markdown(
    artifact: Artifact | Mapping | str | Path,
    audit: Mapping | str | Path | None = None,
    evaluation: Mapping | str | Path | None = None,
) -> str:
    """The model card of ``artifact`` as Markdown.

    Parameters
    ----------
    artifact : Artifact, manifest mapping, or artifact folder
    audit : mapping, audit folder or audit.json, optional
        A subgroup audit (``recommender audit``) of this artifact.
    evaluation : mapping, evaluation folder or results.json, optional
        An evaluation report (``recommender evaluate``).

    Raises
    ------
    ArtifactError
        An artifact folder that is missing or whose manifest fails its checksum.
    DataValidationError
        A report path that does not exist or is not JSON.
    """
    manifest = _manifest(artifact)
    audit = load_report(audit, AUDIT_FILE) if audit is not None else None
    ope = _ope_report(evaluation)
    evaluation = load_report(evaluation, EVALUATION_FILE) if evaluation is not None else None
    if evaluation is not None and ope is not None:
        evaluation["ope"] = ope
    kind = manifest["model"]["type"]
    parts = [
        f"# Model card: {manifest.get('version', kind)}",
        "",
        f"Generated {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC from the artifact's "
        "manifest. Suggestions support a clinician's decision; they never replace it.",
        "",
    ]
    builders = (
        _details,
        _intended_use,
        _inputs,
        _algorithm,
        _training_data,
        lambda m: _validation(m, evaluation),
        lambda m: _subgroups(m, audit),
        _safety,
        lambda m: _limitations(m, audit, evaluation),
        _version,
    )
    for title, build in zip(SECTIONS, builders):
        parts += [f"## {title}", "", *build(manifest), ""]
    return "\n".join(parts)


def write_model_card(artifact, out: str | Path, audit=None, evaluation=None) -> Path:
    """Write :func:`model_card_markdown` to ``out`` atomically and return the path."""
    with atomic_file(out) as handle:
        handle.write(model_card_markdown(artifact, audit=audit, evaluation=evaluation))
    return Path(out)


def _ope_report(source) -> dict | None:
    """The off-policy results (``ope.json``) of an evaluation folder, when it has them."""
    if isinstance(source, Mapping):
        return source.get("ope")
    if source is not None and Path(source).is_dir() and (Path(source) / OPE_FILE).is_file():
        return load_report(Path(source) / OPE_FILE, OPE_FILE)
    return None


def load_report(source: Mapping | str | Path, file_name: str) -> dict:
    """A report's JSON from a mapping, a JSON file, or a report folder holding ``file_name``."""
    if isinstance(source, Mapping):
        return dict(source)
    path = Path(source)
    if path.is_dir():
        path = path / file_name
    if not path.is_file():
        raise DataValidationError(
            f"no report there (expected a folder with {file_name} or a JSON file)", file=str(path)
        )
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise DataValidationError(f"not valid JSON ({exc})", file=str(path)) from None


def _manifest(artifact) -> dict:
    if isinstance(artifact, Artifact):
        return artifact.manifest
    if isinstance(artifact, Mapping):
        return dict(artifact)
    return read_manifest(artifact)


# --- sections -----------------------------------------------------------------------------------


def _details(manifest: Mapping) -> list[str]:
    model = manifest["model"]
    params = ", ".join(f"{k}={v}" for k, v in sorted(model.get("params", {}).items())) or "none"
    return [
        f"- model kind: `{model['type']}` ({model.get('class', '?')})",
        f"- hyperparameters: {params}",
        f"- version: `{manifest.get('version')}`, trained {manifest.get('created')}",
        "- output: for a patient (and optionally a condition), up to k treatments ranked by "
        "score, each with its basis, and every excluded treatment with the rule that excluded it",
    ]


def _intended_use(manifest: Mapping) -> list[str]:
    return [
        "- **Use**: decision support at the point of care. For a patient and a condition, the "
        "model suggests therapies that worked for patients with a similar treatment history, "
        "with the evidence behind each suggestion, so that a clinician can weigh them.",
        "- **Users**: licensed clinicians and clinical pharmacists who make and own the "
        "treatment decision; clinical safety officers and data scientists who review this "
        "card, the evaluation and the subgroup audit before and during deployment.",
        "- **Never**: an autonomous prescriber, a replacement for clinical judgment, "
        "guidelines or the product label, a tool for patients without a clinician, or a basis "
        "for coverage, triage or resource decisions.",
        "- **Out of scope**: patients, conditions or treatments unlike the training data "
        "(other care settings, populations or eras) until validated locally.",
    ]


def _inputs(manifest: Mapping) -> list[str]:
    data = manifest["data"]
    side = data.get("side_info", {})
    used = [name for name in ("conditions", "age_band", "sex") if side.get(name)]
    policy = data.get("policy", {})
    lines = [
        "- per request: a patient id known to the model (pseudonymised with the site key when "
        "the model was trained with one), or a new patient's treatment history (treatment, "
        "outcome, optional date and adverse flag) with diagnoses and allergies; optionally "
        "the condition asked about and the list length k",
        "- learned from: each patient's latest outcome per treatment on a scale from -1 "
        "(harm) to 1 (responded), turned into confidences "
        f"(alpha {policy.get('alpha', '?')}; outcomes above {policy.get('positive_threshold', 0)} "
        "count as worked)",
        f"- side information the model sees: {', '.join(used) if used else 'none'} "
        "(never recommended; sex and age band only when listed here)",
        "- also used by the safety rules: contraindications, drug interactions and the "
        "patient's adverse outcomes",
        "- not used: free text, laboratory values, vital signs, doses, costs",
    ]
    if manifest["model"]["type"] in ("latent-class", "popular", "condition-popular"):
        lines.append(
            f"- the {manifest['model']['type']} model ignores side information when scoring"
        )
    return lines


def _algorithm(manifest: Mapping) -> list[str]:
    kind = manifest["model"]["type"]
    return [
        ALGORITHMS.get(kind, f"Model kind {kind!r} has no description in this release."),
        "",
        "In every case the scores then pass through the safety rules (below): excluded "
        "treatments are removed, never just ranked low, and only the top k of what remains "
        "is shown.",
    ]


def _training_data(manifest: Mapping) -> list[str]:
    data, training = manifest["data"], manifest.get("training", {})
    lines = [
        f"- {data.get('n_patients')} patients, {data.get('n_treatments')} treatments, "
        f"{data.get('n_conditions')} conditions and allergies, {data.get('n_outcomes')} "
        "patient-treatment outcomes (latest per pair)",
        f"- latest outcome year: {data.get('reference_year') or 'unknown (no dates)'}; age "
        "bands are computed at that year",
        f"- harm threshold: outcomes below {data.get('harm_threshold', 0)} or flagged adverse "
        "count as harm",
        f"- data fingerprint (SHA-256 of the source tables): `{data.get('fingerprint')}`",
    ]
    if training:
        lines.append(
            f"- source folder: `{training.get('data_folder')}`, "
            f"{training.get('n_outcome_rows')} outcome rows"
        )
    return lines


def _validation(manifest: Mapping, evaluation: Mapping | None) -> list[str]:
    lines = []
    metrics = manifest.get("metrics") or {}
    if metrics:
        lines += [
            "Recorded in the artifact:",
            "",
            _table(
                ["metric", "value"], [[k, _fmt(v)] for k, v in sorted(_flatten(metrics).items())]
            ),
            "",
        ]
    if evaluation:
        lines += _evaluation_lines(manifest["model"]["type"], evaluation)
    if not lines:
        lines = [
            "No validation results were recorded. Run `recommender evaluate` on held-out data "
            "and pass its report with `--evaluation` before any clinical use."
        ]
    return lines


def _evaluation_lines(kind: str, evaluation: Mapping) -> list[str]:
    k = evaluation.get("k", 10)
    split = evaluation.get("split") or {}
    columns = [
        f"hit@{k}",
        f"ndcg@{k}",
        f"recall@{k}",
        "mrr",
        "outcome_auc",
        "harm_rank",
        f"coverage@{k}",
    ]
    rows = [
        [name + (" (this model's kind)" if name == kind else "")]
        + [_fmt(result.get("summary", {}).get(c)) for c in columns]
        for name, result in evaluation.get("models", {}).items()
    ]
    lines = [
        f"Evaluation report: split `{split.get('method', '?')}`, {split.get('n_train_rows', '?')} "
        f"training rows, {split.get('n_test_rows', '?')} held-out rows; metrics at k = {k}, "
        "rankings with the safety exclusions applied.",
        "",
        _table(["model", *columns], rows),
        "",
        "`outcome_auc`: chance that a held-out treatment that worked outscores one that failed "
        "(0.5 = random). `harm_rank`: mean normalised rank of harmful held-out treatments "
        "(higher is safer).",
    ]
    truth = evaluation.get("truth")
    if truth:
        lines += [
            "",
            "Policy value against the truth of a generated observational cohort (the true "
            "success rate of each model's first choices on held-out episodes, and the share "
            "of the gap from the guideline's choice to the Bayes bound it closes):",
            "",
            _table(
                ["model", "value", "gap closed", "warm", "cold start"],
                [
                    [
                        name,
                        _fmt(v["all"]),
                        _fmt(truth["gaps"][name]["all"]),
                        _fmt(truth["gaps"][name]["warm"]),
                        _fmt(truth["gaps"][name]["cold"]),
                    ]
                    for name, v in truth.get("values", {}).items()
                ],
            ),
        ]
    ope = evaluation.get("ope")
    if ope:
        lines += [
            "",
            f"Off-policy evaluation on {ope.get('split', {}).get('method', 'a time split')}: "
            "the success rate each model's first choices would have had on the logged "
            "first-line decisions after the cutoff (95% patient-bootstrap intervals); the "
            f"clinicians' observed rate was {_fmt(ope.get('behaviour', {}).get('value'))}.",
            "",
            _table(
                ["model", "decisions", "DR", "SNIPS", "IPS"],
                [
                    [name, entry.get("episodes")]
                    + [
                        f"{_fmt(entry['estimates'][e]['value'])} "
                        f"[{_fmt(entry['estimates'][e]['ci95'][0])}, "
                        f"{_fmt(entry['estimates'][e]['ci95'][1])}]"
                        for e in ("dr", "snips", "ips")
                    ]
                    for name, entry in ope.get("models", {}).items()
                ],
            ),
        ]
    planted = evaluation.get("planted")
    if planted:
        hits = ", ".join(f"{n} {_fmt(v)}" for n, v in planted.get("hit@1", {}).items())
        lines += [
            "",
            f"Planted synthetic cohort ({planted.get('n_episodes')} episodes): hit@1 "
            f"against the true best therapy {hits}; Bayes-optimal "
            f"{_fmt(planted.get('bayes_rate'))}, popularity rule "
            f"{_fmt(planted.get('popularity_rate'))}.",
        ]
    return lines


def _subgroups(manifest: Mapping, audit: Mapping | None) -> list[str]:
    if not audit:
        return [
            "No subgroup audit was given. Run `recommender audit` and pass its report with "
            "`--audit`: quality can differ between patient groups."
        ]
    k = audit.get("k", 10)
    lines = []
    version = (audit.get("artifact") or {}).get("version")
    if version and version != manifest.get("version"):
        lines += [f"**Warning**: this audit is of artifact `{version}`, not of this one.", ""]
    split = audit.get("split") or {}
    lines += [
        f"Held-out quality by group (the model kind re-fitted on a `{split.get('method', '?')}` "
        f"split, {split.get('n_queries', '?')} queries, k = {k}); gaps count groups with at "
        f"least {audit.get('min_group_size')} queries and are flagged above "
        f"{audit.get('max_gap')}.",
        "",
    ]
    headline = (f"hit@{k}", f"ndcg@{k}", "mrr", "reachable", "outcome_auc", "harm_rank")
    rows = [
        [
            g["attribute"],
            g["metric"],
            _fmt(g["gap"]),
            f"{g['high_group']} {_fmt(g['high'])}",
            f"{g['low_group']} {_fmt(g['low'])}",
            "**yes**" if g["flagged"] else "",
        ]
        for g in audit.get("gaps", [])
        if g["metric"] in headline and g.get("gap") is not None
    ]
    lines += [_table(["attribute", "metric", "gap", "highest", "lowest", "flagged"], rows), ""]
    flags = audit.get("flags", [])
    lines.append(f"{len(flags)} gap(s) flagged." if flags else "No gap was flagged.")
    return lines


def _safety(manifest: Mapping) -> list[str]:
    data = manifest["data"]
    fields = {
        "harm_threshold": data.get("harm_threshold", 0),
        "min_support": (data.get("safety") or {}).get("min_support", "the configured minimum"),
        "duplicates": "offered as a dose change, flagged (the active treatment itself is not "
        "offered)"
        if (data.get("safety") or {}).get("duplicates") == "flag"
        else "never offered",
    }
    lines = [
        f"- `{code}`: " + SAFETY_RULES.get(code, "see the ranking documentation").format(**fields)
        for code in _reason_codes()
    ]
    return lines + [
        "- with a condition, only treatments recorded for that condition are candidates",
        "- every exclusion is reported with its reason, so a reviewer sees what was "
        "left out and why",
    ]


def _reason_codes() -> list[str]:
    """The exclusion reasons of this release, in reporting priority."""
    return list(REASONS.values())


def _limitations(manifest: Mapping, audit: Mapping | None, evaluation: Mapping | None) -> list[str]:
    kind = manifest["model"]["type"]
    lines = [
        "- **Observational data**: outcomes come from routine care, not from trials; a high "
        "score is an association in past records, not a proven treatment effect.",
        (
            "- **Confounding by indication**: clinicians choose therapies by severity and "
            "history. This model weights past decisions by the inverse of their estimated "
            "propensity and conditions on the recorded covariates, which corrects for what the "
            "record holds; severity that no table records still biases it. Therapies rarely "
            "given to patients like this one are flagged (low overlap) and their intervals "
            "widened."
            if kind == "outcome"
            else "- **Confounding by indication**: clinicians choose therapies by severity and "
            "history, so a therapy given to sicker patients can look worse (or better) than "
            "it is."
        ),
        "- **Exposure bias**: often-prescribed therapies have more evidence; rarely used ones "
        "have uncertain scores and may be withheld by the minimum-evidence rule."
        + (
            f" The {kind} model also scores a therapy higher the more often it worked, so "
            "prescribing habits feed back into suggestions."
            if kind in EXPOSURE_DRIVEN
            else ""
        ),
        "- **Outcome definitions**: responses are derived from records by import rules "
        "(e.g. a condition resolving, a therapy switch); they are proxies for what a clinician "
        "would call a response.",
        "- **Small groups**: quality numbers for small patient groups are uncertain, and groups "
        "absent from the training data are not represented at all.",
        "- **Synthetic versus real data**: results on synthetic cohorts (generated or "
        "Synthea) show that the method works, not that it works on a given site's patients; "
        "validate on local data before use.",
        "- **Drift**: practice, formularies and populations change after "
        f"{manifest['data'].get('reference_year') or 'the training period'}; re-evaluate "
        "and retrain regularly.",
        "- **New patients**: a patient with little or no history gets suggestions close to "
        "what works for the condition in general.",
    ]
    if audit:
        small = [
            f"{g['attribute']}={g['group']} ({g['n_queries']})"
            for g in audit.get("groups", [])
            if g.get("small") and g.get("group") != "unknown"
        ]
        if small:
            lines.append(
                f"- **Groups too small to audit** (fewer than {audit.get('min_group_size')} "
                f"held-out queries): {', '.join(small[:20])}" + (" ..." if len(small) > 20 else "")
            )
    if evaluation and evaluation.get("planted"):
        lines.append("- The evaluation given here ran on a synthetic cohort with planted truth.")
    return lines


def _version(manifest: Mapping) -> list[str]:
    pseudonyms = manifest.get("pseudonyms") or {}
    libraries = ", ".join(f"{k} {v}" for k, v in sorted((manifest.get("libraries") or {}).items()))
    key = pseudonyms.get("key_fingerprint")
    return [
        f"- version: `{manifest.get('version')}`",
        f"- created: {manifest.get('created')}",
        f"- data fingerprint: `{manifest['data'].get('fingerprint')}`",
        f"- artifact format: {manifest.get('format')} v{manifest.get('format_version')}",
        f"- patient ids: {pseudonyms.get('scheme', 'none')}"
        + (f" (key fingerprint `{key}`)" if key else ""),
        f"- libraries: {libraries or 'unknown'}",
    ]


# --- helpers ------------------------------------------------------------------------------------


def _flatten(values: Mapping, prefix: str = "") -> dict:
    flat = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(_flatten(value, name + "."))
        else:
            flat[name] = value
    return flat


def _fmt(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def _table(header: list[str], rows: list[list]) -> str:
    if not rows:
        return "(none)"
    lines = [markdown_row(header), "|" + "|".join("---" for _ in header) + "|"]
    return "\n".join(lines + [markdown_row(row) for row in rows])
