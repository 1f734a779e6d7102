"""Everything one app instance serves with: model store, tokens, audit log, metrics.

Built once by ``create_app`` (in the gunicorn master when the app is preloaded, so workers
inherit it) and kept in ``app.extensions["recommender"]``; nothing lives at module level.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from recommender.data.feedback import FeedbackStore

from .audit import AuditLog
from .config import ConfigError
from .metrics import Metrics
from .model_store import ModelStore, ReloadError
from .tokens import TokenStore

log = logging.getLogger(__name__)


@dataclass
class ReloadOutcome:
    """What a reload did (returned by the admin endpoint, logged by the SIGHUP handler)."""

    ok: bool
    artifact: str
    model_version: str
    previous_version: str
    error: str | None = None
    warnings: tuple[str, ...] = ()
    #: The tokens in force after this reload (``TokenStore.summary``) and whether they are
    #: the file just read (``reloaded``) or the previous ones (``kept``).
    tokens: dict | None = None

    def to_dict(self) -> dict:
        body = {
            "status": "reloaded" if self.ok else "refused",
            "artifact": self.artifact,
            "model_version": self.model_version,
            "previous_version": self.previous_version,
        }
        if self.tokens is not None:
            body["tokens"] = self.tokens
        if self.error:
            body["error"] = self.error
        if self.warnings:
            body["warnings"] = list(self.warnings)
        return body


class Runtime:
    """The service's state. Construction fails with a clear message if anything is missing.

    Raises
    ------
    ConfigError
        Tokens file unreadable or invalid, audit log not writable, artifact or key refused.
    """

    def __init__(self, config: Mapping):
        self.config = config
        self.tokens = TokenStore.from_file(config["API_TOKENS_FILE"])
        if not len(self.tokens):
            log.warning(
                "the API tokens file %s holds no token: every call will be refused",
                config["API_TOKENS_FILE"],
            )
        try:
            self.audit = AuditLog(
                config["AUDIT_LOG"],
                fsync=config["AUDIT_FSYNC"],
                fsync_interval=config["AUDIT_FSYNC_INTERVAL_MS"] / 1000,
            )
        except OSError as exc:
            raise ConfigError(
                f"RECOMMENDER_AUDIT_LOG: cannot open {config['AUDIT_LOG']} for "
                f"appending ({exc.strerror})"
            ) from None
        try:
            self.store = ModelStore.open(config["ARTIFACT"], config["PSEUDONYM_KEY_FILE"])
        except ReloadError as exc:
            raise ConfigError(f"cannot serve the artifact: {exc}") from None
        self.metrics = Metrics(self.model_labels)
        self.feedback = _feedback_store(config["FEEDBACK_LOG"])
        self.cds = None
        if config["CDS_ISSUERS"]:
            from .cds_hooks import CdsRuntime

            self.cds = CdsRuntime(config)

    def model_labels(self) -> tuple[dict, float]:
        served = self.store.current
        return (
            {
                "version": served.version,
                "type": served.info["type"],
                "data_fingerprint": served.info["data"]["fingerprint"],
            },
            served.loaded_at,
        )

    def reload(self, artifact: str | Path | None = None) -> ReloadOutcome:
        """Re-read tokens and key, load ``artifact`` (default: the current path), swap.

        A tokens file that fails to load refuses the whole reload: nothing changes and the
        outcome names the tokens still in force (a failed revocation must not look like a
        reload). With the tokens read, a refused artifact leaves the current model serving
        (the new tokens apply: a revocation does not wait for a good model); the outcome says
        why, and which tokens are in force.
        """
        previous = self.store.current
        try:
            tokens = TokenStore.from_file(self.config["API_TOKENS_FILE"])
        except ConfigError as exc:
            kept = self.tokens.summary()
            log.error(
                "reload refused, tokens file not reloaded: %s; the previous %d tokens (loaded "
                "%s) stay in force and model %s keeps serving",
                exc,
                kept["count"],
                kept["loaded_at"],
                previous.version,
            )
            self.metrics.reload(False)
            return ReloadOutcome(
                False,
                str(artifact or previous.path),
                previous.version,
                previous.version,
                f"tokens file not reloaded, nothing changed: {exc}",
                tokens={"status": "kept", **kept},
            )
        self.tokens = tokens
        in_force = {"status": "reloaded", **tokens.summary()}
        warnings: tuple[str, ...] = ()
        if self.cds is not None:
            keys = self.cds.reload_keys()
            warnings += (f"CDS client keys not reloaded: {keys}",) if keys else ()
        try:
            served = self.store.reload(artifact)
        except ReloadError as exc:
            log.error("reload refused, model %s keeps serving: %s", previous.version, exc)
            self.metrics.reload(False)
            return ReloadOutcome(
                False,
                str(artifact or previous.path),
                previous.version,
                previous.version,
                str(exc),
                warnings,
                in_force,
            )
        self.metrics.reload(True)
        return ReloadOutcome(
            True, str(served.path), served.version, previous.version, None, warnings, in_force
        )


def _feedback_store(path: str) -> FeedbackStore:
    """The clinicians' decisions file, checked writable at start (created 0600, a torn tail
    moved aside)."""
    try:
        return FeedbackStore(path)
    except OSError as exc:
        raise ConfigError(
            f"RECOMMENDER_FEEDBACK_LOG: cannot open {path} for appending ({exc.strerror})"
        ) from None
