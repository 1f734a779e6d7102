"""HL7 CDS Hooks 2.0: the recommender inside the EHR's workflow.

- ``GET /cds-services`` (open): discovery, the two services and their prefetch templates
  (:mod:`.discovery`).
- ``POST /cds-services/therapy-suggestions`` (``patient-view``) and
  ``POST /cds-services/therapy-order-check`` (``order-select``): cards (:mod:`.hooks`,
  :mod:`.cards`) built from the prefetch (:mod:`.prefetch`) and the model's record
  (:mod:`.patient`).
- ``POST /cds-services/{id}/feedback``: accepted / overridden suggestions stored in the
  recommender's feedback store (:mod:`.feedback`).

Every call but discovery needs the EHR's signed JWT (:mod:`.security`); every call that reads
or writes patient data is audited like the REST endpoints. On only when
``RECOMMENDER_CDS_ISSUERS`` is set; operators' guide: ``service/README.md``.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Mapping

from ..config import ConfigError
from .fhir_client import tls_context
from .security import JwtVerifier, load_keys
from .store import CdsStore, StoreError

log = logging.getLogger(__name__)


class CdsRuntime:
    """The CDS Hooks state of one app: the store and the JWT verifier.

    Raises
    ------
    ConfigError
        The store cannot be opened or the keys are unusable.
    """

    def __init__(self, config: Mapping):
        self.config = config
        try:
            self.store = CdsStore(
                config["CDS_STORE"],
                max_tokens=config["CDS_JTI_CACHE_SIZE"],
                card_ttl_days=config["CDS_CARD_TTL_DAYS"],
            )
        except StoreError as exc:
            raise ConfigError(f"RECOMMENDER_CDS_STORE: {exc}") from None
        self.verifier = JwtVerifier(self._keys(), self.store, config["CDS_JWT_MAX_LIFETIME"])
        try:
            tls_context(config["CDS_FHIR_CA_FILE"])
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(
                f"RECOMMENDER_CDS_FHIR_CA_FILE: {config['CDS_FHIR_CA_FILE']} is not a readable "
                f"PEM file of certificates ({exc})"
            ) from None

    def _keys(self):
        return load_keys(self.config["CDS_JWKS"], self.config["CDS_ISSUERS"])

    def reload_keys(self) -> str | None:
        """Re-read the JWK Sets; on a problem keep the current keys and return the message."""
        try:
            self.verifier.keys = dict(self._keys())
        except ConfigError as exc:
            log.error("CDS client keys not reloaded, the previous keys stay in force: %s", exc)
            return str(exc)
        return None

    def audiences(self, path: str) -> list[str]:
        """Acceptable JWT ``aud`` values for a request to ``path``.

        The called URL; for feedback also the service's URL, which some EHRs send.
        """
        base = self.config["CDS_BASE_URL"]
        audiences = [base + path]
        if path.endswith("/feedback"):
            audiences.append(base + path[: -len("/feedback")])
        return audiences
