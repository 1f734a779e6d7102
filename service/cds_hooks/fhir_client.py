"""The EHR's FHIR server, for what the prefetch lacks (CDS Hooks 2.0, "FHIR Resource Access").

When a call names ``fhirServer`` and gives a usable ``fhirAuthorization`` (token type Bearer,
not already expired), the prefetch keys the client did not satisfy are fetched as the templates
say (:func:`fetch_missing`), and so are Medication resources a ``medicationReference`` names
but the prefetch does not hold (:meth:`FhirClient.medication`). Bounds and rules:

- at most ``max_calls`` HTTP requests per hook call, and all of them within ``timeout`` seconds
  (each request gets what is left); a searchset's ``next`` pages count as calls and are followed
  only on the same scheme, host and port as ``fhirServer``;
- only the access token given, as ``Authorization: Bearer``, to that server only: redirects are
  not followed (a redirect could carry the token elsewhere) and the token is never logged;
- ``https`` only, unless the site allows plain http (``RECOMMENDER_CDS_FHIR_ALLOW_HTTP``);
  certificates are verified (against ``RECOMMENDER_CDS_FHIR_CA_FILE`` when set);
- logs name the server's host, the resource type and the HTTP status, never the query (it holds
  the patient id) nor the token.

A server that cannot be reached (refused scheme, connection error, timeout, call budget spent)
ends the fetching for the call; what was not obtained stays "not provided", so a patient the
model does not know is refused with 412 only when neither the prefetch nor the server gave the
data the safety rules need.
"""

from __future__ import annotations

import functools
import json
import logging
import ssl
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import quote, urljoin, urlparse

from .prefetch import PREFETCH, invalid_resource

log = logging.getLogger(__name__)

#: Largest response body read, in bytes (a larger one counts as a failed call).
MAX_BYTES = 8 * 2**20
ACCEPT = "application/fhir+json, application/json;q=0.9"


class FhirUnavailable(Exception):
    """The FHIR server cannot be used for this call (the message holds no token or query)."""


@dataclass(frozen=True)
class FhirSettings:
    """The site's bounds on FHIR server calls.

    Attributes
    ----------
    timeout : float
        Seconds for all calls of one hook request together.
    max_calls : int
        HTTP requests per hook request (0: never call the FHIR server).
    allow_http : bool
        Plain ``http`` servers are allowed (test and development sites only).
    ca_file : str or None
        PEM file of the certificate authorities to trust (default: the system's).
    """

    timeout: float = 5.0
    max_calls: int = 10
    allow_http: bool = False
    ca_file: str | None = None

    @classmethod
    def from_config(cls, config: Mapping) -> FhirSettings:
        return cls(
            float(config["CDS_FHIR_TIMEOUT"]),
            int(config["CDS_FHIR_MAX_CALLS"]),
            bool(config["CDS_FHIR_ALLOW_HTTP"]),
            config["CDS_FHIR_CA_FILE"],
        )


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None  # urllib then raises HTTPError for the 3xx: the token stays with the server


@dataclass
class FhirClient:
    """Calls to one EHR FHIR server with one access token, within :class:`FhirSettings`.

    A base URL that is not absolute, or plain http where the site does not allow it, makes a
    client that calls nothing: :attr:`down` says why.
    """

    base_url: str
    token: str = field(repr=False)
    settings: FhirSettings = field(default_factory=FhirSettings)
    calls: int = 0
    notes: list[str] = field(default_factory=list)  # what could not be fetched, for the cards

    def __post_init__(self):
        parsed = urlparse(self.base_url)
        self.down: str | None = None  # why the server is unusable, once it is
        if parsed.scheme not in ("https", "http") or not parsed.hostname:
            self.down = "the EHR's FHIR server was not used: fhirServer is not an absolute URL"
        elif parsed.scheme == "http" and not self.settings.allow_http:
            self.down = (
                "the EHR's FHIR server was not used: fhirServer is not https and this site "
                "does not allow plain http (RECOMMENDER_CDS_FHIR_ALLOW_HTTP)"
            )
        if self.down:
            log.warning("FHIR server %s: %s", parsed.hostname, self.down)
        self.base_url = self.base_url.rstrip("/") + "/"
        self.origin = (parsed.scheme, parsed.hostname, parsed.port)
        self.host = parsed.hostname
        self.deadline = time.monotonic() + self.settings.timeout
        self._opener = urllib.request.build_opener(
            _NoRedirect(), urllib.request.HTTPSHandler(context=tls_context(self.settings.ca_file))
        )

    def get(self, url: str, what: str) -> Mapping | None:
        """The JSON resource at ``url`` (absolute, on this server); None for a 4xx answer.

        Raises
        ------
        FhirUnavailable
            Budget spent, server unreachable, a 5xx or 3xx answer or a body that is not JSON.
        """
        if self.down:
            raise FhirUnavailable(self.down)
        if self.calls >= self.settings.max_calls:
            raise self._fail(f"the call limit ({self.settings.max_calls}) was reached")
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise self._fail(f"the time limit ({self.settings.timeout:g} s) was reached")
        self.calls += 1
        request = urllib.request.Request(
            url, headers={"Accept": ACCEPT, "Authorization": f"Bearer {self.token}"}
        )
        started = time.monotonic()
        try:
            with self._opener.open(request, timeout=left) as response:
                raw = response.read(MAX_BYTES + 1)
                status = response.status
        except urllib.error.HTTPError as exc:
            status = exc.code
            exc.close()
            log.info("FHIR server %s: %s -> HTTP %d", self.host, what, status)
            if 400 <= status < 500:
                return None
            raise self._fail(f"it answered HTTP {status}") from None
        except (urllib.error.URLError, OSError, ValueError) as exc:
            reason = getattr(exc, "reason", exc)
            if isinstance(reason, TimeoutError):
                raise self._fail(
                    f"the time limit ({self.settings.timeout:g} s) was reached"
                ) from None
            raise self._fail(f"it could not be reached ({type(reason).__name__})") from None
        log.info(
            "FHIR server %s: %s -> HTTP %d in %.0f ms",
            self.host,
            what,
            status,
            1000 * (time.monotonic() - started),
        )
        if len(raw) > MAX_BYTES:
            raise self._fail(f"an answer was larger than {MAX_BYTES} bytes")
        try:
            document = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            raise self._fail("an answer was not JSON") from None
        return document if isinstance(document, Mapping) else None

    def _fail(self, why: str) -> FhirUnavailable:
        self.down = f"the EHR's FHIR server was not used further: {why}"
        log.warning("FHIR server %s: %s", self.host, self.down)
        return FhirUnavailable(self.down)

    def same_origin(self, url: str) -> bool:
        parsed = urlparse(url)
        return (parsed.scheme, parsed.hostname, parsed.port) == self.origin

    def query(self, relative: str, what: str) -> Mapping | None:
        """A read or search, a searchset's pages merged into one Bundle; None when refused."""
        document = self.get(urljoin(self.base_url, relative), what)
        if document is None or document.get("resourceType") != "Bundle":
            return document
        entries = list(document.get("entry") or [])
        page = document
        while True:
            following = _next_link(page)
            if following is None:
                break
            if not self.same_origin(following):
                self.notes.append(f"{what}: a next page on another server was not read")
                break
            try:
                page = self.get(following, what)
            except FhirUnavailable:
                self.notes.append(f"{what}: not every page could be read")
                break
            if page is None or page.get("resourceType") != "Bundle":
                self.notes.append(f"{what}: not every page could be read")
                break
            entries += list(page.get("entry") or [])
        return {**document, "entry": entries, "link": []}

    def medication(self, key: str) -> Mapping | None:
        """``Medication/<id>`` from the server (None when absent, refused or invalid)."""
        try:
            found = self.get(urljoin(self.base_url, quote(key, safe="/")), "Medication")
        except FhirUnavailable:
            return None
        if (
            found is None
            or found.get("resourceType") != "Medication"
            or invalid_resource("Medication", found)
        ):
            return None
        return found


@functools.lru_cache(maxsize=4)
def tls_context(ca_file: str | None) -> ssl.SSLContext:
    """The verifying TLS context for FHIR calls (built once: loading the CAs takes a while).

    Raises
    ------
    OSError, ssl.SSLError
        ``ca_file`` cannot be read or holds no certificate.
    """
    return ssl.create_default_context(cafile=ca_file)


def _next_link(bundle: Mapping) -> str | None:
    for link in bundle.get("link") or []:
        if isinstance(link, Mapping) and link.get("relation") == "next":
            url = link.get("url")
            return url if isinstance(url, str) and url else None
    return None


def usable_authorization(body: Mapping) -> str | None:
    """The access token of ``fhirAuthorization`` when it can be used: type Bearer and not
    expired (``expires_in`` is optional: some clients omit it or send it as text)."""
    authorization = body.get("fhirAuthorization")
    if not isinstance(authorization, Mapping) or not body.get("fhirServer"):
        return None
    if str(authorization.get("token_type", "")).lower() != "bearer":
        return None
    expires = authorization.get("expires_in")
    try:
        if expires is not None and float(expires) <= 0:
            return None
    except (TypeError, ValueError):
        return None
    return authorization.get("access_token") or None


def fill(template: str, context: Mapping) -> str | None:
    """A prefetch template with its ``{{context.x}}`` tokens replaced (None if one is missing)."""
    text = template
    while "{{context." in text:
        start = text.index("{{context.")
        end = text.index("}}", start)
        value = context.get(text[start + len("{{context.") : end])
        if not isinstance(value, (str, int)) or isinstance(value, bool):
            return None
        text = text[:start] + quote(str(value), safe="") + text[end + 2 :]
    return text


def fetch_missing(client: FhirClient, provided: set, context: Mapping) -> dict:
    """The prefetch keys not in ``provided``, fetched from the server as the templates say.

    Returns
    -------
    dict
        Key -> resource or Bundle for each key the server answered; a key it refused (4xx) or
        that was not fetched because the server became unusable is absent (not provided).
    """
    found = {}
    for key, template in PREFETCH.items():
        if key in provided:
            continue
        relative = fill(template, context)
        if relative is None:
            continue
        what = relative.split("?", 1)[0].split("/", 1)[0]
        try:
            document = client.query(relative, what)
        except FhirUnavailable:
            break
        if document is None:
            client.notes.append(f"{what}: the FHIR server refused the query")
            continue
        found[key] = document
    return found
