"""Trusting the CDS client: the EHR's signed JWT on every CDS Hooks call (CDS Hooks 2.0,
"Trusting CDS Clients").

A call carries ``Authorization: Bearer <JWT>`` signed with the EHR's private key. It is accepted
only when all of these hold:

- the header's ``alg`` is an asymmetric signature algorithm (:data:`ALGORITHMS`: RSA, RSA-PSS,
  ECDSA, EdDSA; the specification recommends ES384 and RS384). ``none`` and the HMAC family are
  refused: the spec forbids unsigned tokens and shared secrets;
- ``iss`` is on the allow-list (``RECOMMENDER_CDS_ISSUERS``) and the signature verifies with a
  key of that issuer's JWK Set (``RECOMMENDER_CDS_JWKS``), chosen by ``kid``. The ``jku`` header
  is never followed: keys come only from the configured set;
- ``aud`` is the URL of the endpoint being called (``RECOMMENDER_CDS_BASE_URL`` + the path), so
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
    extra = sorted(set(data) - set(issuers))
    if extra:
        raise ConfigError(
            f"RECOMMENDER_CDS_JWKS: {path} names issuer(s) {extra} that are not in "
            "RECOMMENDER_CDS_ISSUERS"
        )
    missing = [issuer for issuer in issuers if issuer not in data]
    if missing:
        raise ConfigError(f"RECOMMENDER_CDS_JWKS: {path} has no keys for issuer(s) {missing}")
    sources = {}
    for issuer, value in data.items():
        where = f"{path} [{issuer}]"
        if isinstance(value, str) and value.startswith(("https://", "http://")):
            sources[issuer] = RemoteKeys(value)
        elif isinstance(value, str):
            target = (path.parent / value).expanduser()
            sources[issuer] = StaticKeys(_read_json(target), f"{target} ({issuer})")
        else:
            sources[issuer] = StaticKeys(value, where)
    return sources


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
        if not isinstance(issuer, str) or issuer not in self.keys:
            raise CdsAuthError(
                "invalid_token", f"JWT issuer {issuer!r} is not allowed (RECOMMENDER_CDS_ISSUERS)"
            )
        kid = head.get("kid")
        key = self.keys[issuer].key(kid if isinstance(kid, str) else None)
        if KEY_TYPES[algorithm[:2]] != key.key_type:
            raise CdsAuthError(
                "invalid_token",
                f"the issuer's key {key.key_id!r} "
                f"({key.key_type}) does not fit algorithm {algorithm}",
            )
        claims = self._decode(token, key, algorithm, issuer, list(audiences))
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
            first = self.store.first_use(issuer, jti, claims["exp"] + LEEWAY, now)
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
        return ClientIdentity(issuer, tenant if isinstance(tenant, str) else None, jti)

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
