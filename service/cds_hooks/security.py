"""Trusting the CDS client: the EHR's signed JWT on every CDS Hooks call (CDS Hooks 2.0,
"Trusting CDS Clients").

A call carries ``Authorization: Bearer <JWT>`` signed with the EHR's private key. It is accepted
only when all of these hold:

- the header's ``alg`` is an asymmetric signature algorithm (:data:`ALGORITHMS`: RSA, RSA-PSS,
  ECDSA, EdDSA; the specification recommends ES384 and RS384). ``none`` and the HMAC family are
  refused: the spec forbids unsigned tokens and shared secrets;
- ``iss`` is on the allow-list (``RECOMMENDER_CDS_ISSUERS``; a trailing slash does not matter)
  and the signature verifies with a key of that issuer's JWK Set (``RECOMMENDER_CDS_JWKS``),
  chosen by ``kid``. The ``jku`` header is followed only for an issuer configured with an
  allow-list of JWK Set URLs (``jwks_urls``), and only to a URL on it; otherwise keys come
  only from the configured set (:class:`AllowListedKeys`);
- ``aud`` is the URL of the endpoint being called (``RECOMMENDER_CDS_BASE_URL`` + the path, a
  trailing slash aside), or one of the audiences configured for the issuer (``audiences``), so
  a token minted for another service cannot be replayed here;
- ``exp``, ``iat`` and ``jti`` are present, the token has not expired (30 s of clock skew
  allowed) and expires at most ``RECOMMENDER_CDS_JWT_MAX_LIFETIME`` seconds from now (which
  bounds the replay cache);
- its ``jti`` has not been used before by the same issuer (:class:`~.store.CdsStore`, shared by
  every worker, each id kept until its token expires).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import jwt
from jwt import PyJWK, PyJWKClient

from ..config import ConfigError
from ..errors import CredentialError
from .store import CdsStore, StoreError

log = logging.getLogger(__name__)

#: Asymmetric JWS algorithms accepted. Never ``none`` nor ``HS*``.
ALGORITHMS = (
    "RS256",
    "RS384",
    "RS512",
    "PS256",
    "PS384",
    "PS512",
    "ES256",
    "ES384",
    "ES512",
    "EdDSA",
)
#: Seconds of clock difference tolerated on ``exp`` and ``iat``.
LEEWAY = 30
#: JWK Sets fetched from a URL are cached this many seconds (a new ``kid`` refreshes at once).
JWKS_CACHE_SECONDS = 300
JWKS_TIMEOUT = 5
_ASYMMETRIC_KEY_TYPES = ("RSA", "EC", "OKP")
#: Algorithm family (first two letters) -> the JWK key type it needs.
KEY_TYPES = {"RS": "RSA", "PS": "RSA", "ES": "EC", "Ed": "OKP"}
_LOOPBACK = ("localhost", "127.0.0.1", "::1")


class CdsAuthError(CredentialError):
    """A refused client JWT: HTTP status, error code and a message naming what was wrong."""


# --- keys ---------------------------------------------------------------------------------------


class StaticKeys:
    """A JWK Set read from configuration (checked when loaded)."""

    def __init__(self, jwks: Mapping, where: str):
        keys = jwks.get("keys") if isinstance(jwks, Mapping) else None
        if not isinstance(keys, list) or not keys:
            raise ConfigError(
                f"RECOMMENDER_CDS_JWKS: {where} is not a JWK Set "
                '({"keys": [...]} with at least one key)'
            )
        self.keys = [_public_key(key, f"{where}, keys[{n}]") for n, key in enumerate(keys)]
        self.keys = [key for key in self.keys if key is not None]
        if not self.keys:
            raise ConfigError(f"RECOMMENDER_CDS_JWKS: {where} holds no signature key")

    def key(self, kid: str | None) -> PyJWK:
        return _choose(self.keys, kid)


class RemoteKeys:
    """A JWK Set fetched from a URL, cached for :data:`JWKS_CACHE_SECONDS`."""

    def __init__(self, url: str):
        self.url = _checked_url(url)
        self._client = PyJWKClient(
            url, cache_jwk_set=True, lifespan=JWKS_CACHE_SECONDS, timeout=JWKS_TIMEOUT
        )

    def key(self, kid: str | None) -> PyJWK:
        try:
            if kid is not None:
                return self._client.get_signing_key(kid)
            return _choose(self._client.get_signing_keys(), None)
        except jwt.PyJWKClientConnectionError as exc:
            log.error("cannot fetch the JWK Set %s: %s", self.url, exc)
            raise CdsAuthError(
                "keys_unavailable",
                "the CDS client's public keys could not be fetched; try again later",
                503,
            ) from None
        except jwt.PyJWKClientError as exc:
            raise CdsAuthError(
                "invalid_token", f"no usable key for this token in the issuer's JWK Set ({exc})"
            ) from None


def _public_key(data, where: str) -> PyJWK | None:
    if not isinstance(data, Mapping):
        raise ConfigError(f"RECOMMENDER_CDS_JWKS: {where} is not a JSON object")
    if data.get("use", "sig") != "sig":
        return None
    if data.get("kty") not in _ASYMMETRIC_KEY_TYPES:
        raise ConfigError(
            f"RECOMMENDER_CDS_JWKS: {where}: key type {data.get('kty')!r} is not "
            "allowed; CDS Hooks needs asymmetric keys "
            f"({', '.join(_ASYMMETRIC_KEY_TYPES)})"
        )
    if "d" in data:
        raise ConfigError(
            f"RECOMMENDER_CDS_JWKS: {where} is a private key; configure the EHR's public keys only"
        )
    try:
        return PyJWK(dict(data))
    except jwt.PyJWTError as exc:
        raise ConfigError(f"RECOMMENDER_CDS_JWKS: {where} is not a valid key ({exc})") from None


def _choose(keys: Iterable[PyJWK], kid: str | None) -> PyJWK:
    keys = list(keys)
    if kid is None:
        if len(keys) == 1:
            return keys[0]
        raise CdsAuthError(
            "invalid_token", "the JWT header has no 'kid' and the issuer has several keys"
        )
    for key in keys:
        if key.key_id == kid:
            return key
    raise CdsAuthError("invalid_token", f"no key with kid {kid!r} in the issuer's JWK Set")


def _checked_url(url: str) -> str:
    parsed = urlparse(url)
    if parsed.scheme == "https" or (parsed.scheme == "http" and parsed.hostname in _LOOPBACK):
        return url
    raise ConfigError(f"RECOMMENDER_CDS_JWKS: {url!r}: a JWK Set URL must use https")


def load_keys(spec: str, issuers: tuple[str, ...]) -> dict[str, StaticKeys | RemoteKeys]:
    """Each allowed issuer's key source, from ``RECOMMENDER_CDS_JWKS``.

    ``spec`` is a URL or a file path (a JWK Set for every issuer), or a file mapping each issuer
    to its JWK Set, given inline or as a path (relative to that file) or URL.

    Raises
    ------
    ConfigError
        Unreadable file, not a JWK Set, symmetric or private keys, an issuer without keys or
        keys for an issuer that is not allowed.
    """
    if spec.startswith(("https://", "http://")):
        source = RemoteKeys(spec)
        return {issuer: source for issuer in issuers}
    path = Path(spec).expanduser()
    data = _read_json(path)
    if isinstance(data, Mapping) and "keys" in data:
        source = StaticKeys(data, str(path))
        return {issuer: source for issuer in issuers}
    if not isinstance(data, Mapping):
        raise ConfigError(
            f"RECOMMENDER_CDS_JWKS: {path} must hold a JWK Set or an object "
            "mapping each issuer to its JWK Set"
        )
    allowed = {normalise_issuer(issuer) for issuer in issuers}
    extra = sorted(name for name in data if normalise_issuer(name) not in allowed)
    if extra:
        raise ConfigError(
            f"RECOMMENDER_CDS_JWKS: {path} names issuer(s) {extra} that are not in "
            "RECOMMENDER_CDS_ISSUERS"
        )
    named = {normalise_issuer(name) for name in data}
    missing = [issuer for issuer in issuers if normalise_issuer(issuer) not in named]
    if missing:
        raise ConfigError(f"RECOMMENDER_CDS_JWKS: {path} has no keys for issuer(s) {missing}")
    sources = {}
    for issuer, value in data.items():
        where = f"{path} [{issuer}]"
        if isinstance(value, Mapping) and "keys" not in value:
            sources[issuer] = issuer_entry(value, path, issuer)
        elif isinstance(value, str) and value.startswith(("https://", "http://")):
            sources[issuer] = RemoteKeys(value)
        elif isinstance(value, str):
            target = (path.parent / value).expanduser()
            sources[issuer] = StaticKeys(_read_json(target), f"{target} ({issuer})")
        else:
            sources[issuer] = StaticKeys(value, where)
    return sources


class AllowListedKeys:
    """An issuer's allow-list of JWK Set URLs (Oracle Health's model): a JWT's ``jku`` is
    followed only to a URL on the list; without ``jku`` the listed sets are searched in order.

    Parameters
    ----------
    urls : sequence of str
        https URLs (http only on the loopback interface, for tests).
    audiences : sequence of str
        ``aud`` values accepted for this issuer besides the endpoint's URL.
    """

    def __init__(self, urls, audiences=()):
        self.sources = {url: RemoteKeys(url) for url in urls}
        self.audiences = tuple(audiences)

    def key(self, kid: str | None, jku: str | None = None) -> PyJWK:
        if jku is not None:
            source = self.sources.get(jku)
            if source is None:
                raise CdsAuthError(
                    "invalid_token",
                    "the JWT 'jku' is not on this issuer's allow-list of JWK Set URLs",
                )
            return source.key(kid)
        problem = None
        for source in self.sources.values():
            try:
                return source.key(kid)
            except CdsAuthError as exc:
                if exc.status == 503:
                    raise
                problem = exc
        raise problem or CdsAuthError("invalid_token", "the issuer has no JWK Set URL")


class WithAudiences:
    """A key source with audiences configured for its issuer."""

    def __init__(self, source, audiences):
        self.source, self.audiences = source, tuple(audiences)

    def key(self, kid: str | None) -> PyJWK:
        return self.source.key(kid)


def issuer_entry(value: Mapping, path: Path, issuer: str):
    """An issuer's entry of the mapping file in its object form::

        {"jwks_urls": ["https://ehr.example.org/jwks.json"], "audiences": ["https://cds..."]}
        {"jwks": <JWK Set, path or URL>, "audiences": [...]}

    Raises
    ------
    ConfigError
        Neither ``jwks`` nor ``jwks_urls``, both, unknown members, or lists that are not lists
        of non-empty texts.
    """
    where = f"RECOMMENDER_CDS_JWKS: {path} [{issuer}]"
    unknown = sorted(set(value) - {"jwks", "jwks_urls", "audiences"})
    if unknown:
        raise ConfigError(
            f"{where}: unknown member(s) {unknown}; allowed: jwks, jwks_urls, audiences"
        )
    lists = {}
    for member in ("jwks_urls", "audiences"):
        items = value.get(member, [])
        if not isinstance(items, list) or not all(isinstance(i, str) and i for i in items):
            raise ConfigError(f"{where}: {member} must be a list of non-empty texts")
        lists[member] = items
    if ("jwks" in value) == bool(lists["jwks_urls"]):
        raise ConfigError(f"{where}: give either jwks (a JWK Set, path or URL) or jwks_urls")
    if lists["jwks_urls"]:
        for url in lists["jwks_urls"]:
            _checked_url(url)
        return AllowListedKeys(lists["jwks_urls"], lists["audiences"])
    jwks = value["jwks"]
    if isinstance(jwks, str) and jwks.startswith(("https://", "http://")):
        source = RemoteKeys(jwks)
    elif isinstance(jwks, str):
        target = (path.parent / jwks).expanduser()
        source = StaticKeys(_read_json(target), f"{target} ({issuer})")
    else:
        source = StaticKeys(jwks, f"{path} [{issuer}]")
    return WithAudiences(source, lists["audiences"])


def normalise_issuer(issuer: str) -> str:
    """An ``iss`` value compared without a trailing slash."""
    return issuer.rstrip("/")


def issuer_of(issuer, keys: Mapping) -> str | None:
    """The configured issuer a token's ``iss`` names (trailing slash aside), or None."""
    if not isinstance(issuer, str) or not issuer:
        return None
    if issuer in keys:
        return issuer
    wanted = normalise_issuer(issuer)
    return next((name for name in keys if normalise_issuer(name) == wanted), None)


def signing_key(source, kid: str | None, jku) -> PyJWK:
    """The key a token names: ``jku`` counts only for an :class:`AllowListedKeys` issuer (for
    others the keys are the configured ones and the header is not followed)."""
    if isinstance(source, AllowListedKeys):
        return source.key(kid, jku if isinstance(jku, str) else None)
    return source.key(kid)


def accepted_audiences(audiences: Iterable[str], source) -> list[str]:
    """The endpoint's audiences with and without a trailing slash, then the issuer's own."""
    found = []
    for audience in [*audiences, *getattr(source, "audiences", ())]:
        for variant in (audience, audience.rstrip("/"), audience.rstrip("/") + "/"):
            if variant not in found:
                found.append(variant)
    return found


def _read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except OSError as exc:
        raise ConfigError(f"RECOMMENDER_CDS_JWKS: cannot read {path} ({exc.strerror})") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"RECOMMENDER_CDS_JWKS: {path} is not valid JSON ({exc})") from None


# --- verification -------------------------------------------------------------------------------


@dataclass(frozen=True)
class ClientIdentity:
    """An authenticated CDS client: its issuer and, when the EHR sends it, the tenant."""

    issuer: str
    tenant: str | None
    jti: str


class JwtVerifier:
    """Checks client JWTs (see the module docstring).

    Parameters
    ----------
    keys : mapping
        Allowed issuer -> its key source (:func:`load_keys`).
    store : CdsStore
        Where used token ids are remembered.
    max_lifetime : int
        Largest ``exp`` accepted, in seconds from now.
    """

    def __init__(
        self, keys: Mapping[str, StaticKeys | RemoteKeys], store: CdsStore, max_lifetime: int
    ):
        self.keys, self.store, self.max_lifetime = dict(keys), store, max_lifetime

    def verify(
        self, header: str | None, audiences: Iterable[str], now: float | None = None
    ) -> ClientIdentity:
        """The client behind an ``Authorization`` header, if its JWT passes every check.

        Parameters
        ----------
        header : str or None
            The ``Authorization`` header.
        audiences : iterable of str
            Acceptable ``aud`` values (the called endpoint's URL).

        Raises
        ------
        CdsAuthError
            401 for a missing or refused token, 503 when the keys or the replay cache are
            unavailable.
        """
        token = _bearer(header)
        try:
            head = jwt.get_unverified_header(token)
            unverified = jwt.decode(token, options={"verify_signature": False})
        except jwt.PyJWTError:
            raise CdsAuthError("invalid_token", "the bearer token is not a JWT") from None
        algorithm = head.get("alg")
        if algorithm not in ALGORITHMS:
            raise CdsAuthError(
                "invalid_token",
                f"JWT algorithm {algorithm!r} is refused: "
                f"CDS Hooks needs an asymmetric signature ({', '.join(ALGORITHMS)})",
            )
        _check_times(unverified)
        issuer = unverified.get("iss")
        configured = issuer_of(issuer, self.keys)
        if configured is None:
            raise CdsAuthError(
                "invalid_token", f"JWT issuer {issuer!r} is not allowed (RECOMMENDER_CDS_ISSUERS)"
            )
        kid = head.get("kid")
        source = self.keys[configured]
        key = signing_key(source, kid if isinstance(kid, str) else None, head.get("jku"))
        if KEY_TYPES[algorithm[:2]] != key.key_type:
            raise CdsAuthError(
                "invalid_token",
                f"the issuer's key {key.key_id!r} "
                f"({key.key_type}) does not fit algorithm {algorithm}",
            )
        claims = self._decode(token, key, algorithm, issuer, accepted_audiences(audiences, source))
        now = time.time() if now is None else now
        if claims["exp"] > now + self.max_lifetime + LEEWAY:
            raise CdsAuthError(
                "invalid_token",
                f"the JWT expires more than {self.max_lifetime} s "
                "from now (RECOMMENDER_CDS_JWT_MAX_LIFETIME)",
            )
        jti = claims["jti"]
        if not isinstance(jti, str) or not jti:
            raise CdsAuthError("invalid_token", "the JWT 'jti' must be a non-empty string")
        try:
            first = self.store.first_use(configured, jti, claims["exp"] + LEEWAY, now)
        except StoreError as exc:
            log.error("JWT replay cache unavailable: %s", exc)
            raise CdsAuthError(
                "replay_cache_unavailable",
                "the service cannot check this token for replay right now; try again later",
                503,
            ) from None
        if not first:
            raise CdsAuthError(
                "invalid_token", "this JWT (iss, jti) was already used: tokens are accepted once"
            )
        tenant = claims.get("tenant")
        return ClientIdentity(configured, tenant if isinstance(tenant, str) else None, jti)

    def _decode(
        self, token: str, key: PyJWK, algorithm: str, issuer: str, audiences: list[str]
    ) -> dict:
        try:
            return jwt.decode(
                token,
                key=key.key,
                algorithms=[algorithm],
                audience=audiences,
                issuer=issuer,
                leeway=LEEWAY,
                options={"require": ["iss", "aud", "exp", "iat", "jti"]},
            )
        except jwt.ExpiredSignatureError:
            raise CdsAuthError("invalid_token", "the JWT has expired") from None
        except jwt.InvalidAudienceError:
            raise CdsAuthError(
                "invalid_token",
                f"the JWT 'aud' is not this endpoint's URL (expected {audiences[0]!r})",
            ) from None
        except jwt.MissingRequiredClaimError as exc:
            raise CdsAuthError("invalid_token", f"the JWT has no {exc.claim!r} claim") from None
        except jwt.InvalidSignatureError:
            raise CdsAuthError("invalid_token", "the JWT signature does not verify") from None
        except (jwt.InvalidKeyError, jwt.InvalidAlgorithmError, TypeError, ValueError):
            raise CdsAuthError(
                "invalid_token", f"the issuer's key does not fit algorithm {algorithm}"
            ) from None
        except jwt.PyJWTError as exc:
            raise CdsAuthError("invalid_token", f"the JWT is not valid ({exc})") from None


#: The JWT claims that are NumericDate values (RFC 7519 section 2).
TIME_CLAIMS = ("exp", "iat", "nbf")


def _check_times(claims: Mapping) -> None:
    """401 unless every time claim present is a finite JSON number (not a string or boolean).

    PyJWT converts them with ``int()``, which takes ``"9999999999"`` and ``true`` and fails on
    ``Infinity`` with an error it does not wrap; the numbers are compared later, so each must be
    a number here, before the token goes any further.
    """
    for name in TIME_CLAIMS:
        if name not in claims:
            continue
        value = claims[name]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not _finite(value):
            raise CdsAuthError(
                "invalid_token",
                f"the JWT {name!r} claim must be a NumericDate (seconds since 1970 as a "
                f"number); got {type(value).__name__}",
            )


def _finite(value: float) -> bool:
    return -1e15 < value < 1e15  # NaN compares false; beyond any date datetime can hold


def _bearer(header: str | None) -> str:
    if not header:
        raise CdsAuthError(
            "missing_token",
            "CDS Hooks calls need the EHR's signed JWT: 'Authorization: Bearer <JWT>'",
        )
    scheme, _, token = header.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or len(token) > 16_384:
        raise CdsAuthError("invalid_token", "the Authorization header must be 'Bearer <JWT>'")
    return token
