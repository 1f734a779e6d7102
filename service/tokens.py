"""API tokens: the file of SHA-256 hashes the service checks bearer tokens against.

File format (``RECOMMENDER_API_TOKENS_FILE``)::

    {"tokens": [{"id": "ward-7-ehr", "sha256": "<64 hex digits>", "role": "clinician"},
                {"id": "ops", "sha256": "...", "role": "admin"}]}

The file never holds a token, only its hash; a token is shown once, when it is created::

    python -m service.tokens add --file tokens.json --id ward-7-ehr --role clinician
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import os
import re
import secrets
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from .config import ConfigError

CLINICIAN, ADMIN = "clinician", "admin"
ROLES = (CLINICIAN, ADMIN)
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_ID = re.compile(r"^[A-Za-z0-9._@:-]{1,64}$")


@dataclass(frozen=True)
class Principal:
    """Who is calling: the token's id (recorded in the audit log) and its role."""

    id: str
    role: str


def hash_token(token: str) -> str:
    """Hex SHA-256 of a token, as stored in the tokens file."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


class TokenStore:
    """Token hashes and their principals; :meth:`authenticate` compares in constant time."""

    def __init__(self, principals: Sequence[tuple[str, Principal]]):
        self._entries = tuple(
            (bytes.fromhex(digest), principal) for digest, principal in principals
        )
        self.loaded_at = time.time()

    def summary(self) -> dict:
        """Which tokens are in force (ids and roles, never a hash), and since when."""
        return {
            "count": len(self._entries),
            "ids": sorted(principal.id for _, principal in self._entries),
            "loaded_at": datetime.fromtimestamp(self.loaded_at, timezone.utc).isoformat(
                timespec="seconds"
            ),
        }

    def __len__(self) -> int:
        return len(self._entries)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, TokenStore) and self._entries == other._entries

    def __hash__(self) -> int:
        return hash(self._entries)

    def authenticate(self, token: str) -> Principal | None:
        """The principal whose hash matches ``token``, or None.

        Every entry is compared with :func:`hmac.compare_digest`, without stopping at a match,
        so the time taken says nothing about which entry (or how much of a hash) matched.
        """
        digest = hashlib.sha256(token.encode("utf-8")).digest()
        found = None
        for expected, principal in self._entries:
            if hmac.compare_digest(digest, expected):
                found = principal
        return found

    def entries(self) -> tuple[tuple[bytes, Principal], ...]:
        """(SHA-256 digest of the token, principal) of every token (console session binding)."""
        return self._entries

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> TokenStore:
        """Read and check a tokens file.

        Raises
        ------
        ConfigError
            Unreadable file, bad JSON, or an entry without a valid id, hash or role.
        """
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except OSError as exc:
            raise ConfigError(f"API tokens file {path}: cannot read it ({exc.strerror})") from None
        except json.JSONDecodeError as exc:
            raise ConfigError(f"API tokens file {path}: not valid JSON ({exc})") from None
        return cls(_parse_entries(data, path))


def _parse_entries(data, path: Path) -> list[tuple[str, Principal]]:
    if not isinstance(data, dict) or not isinstance(data.get("tokens"), list):
        raise ConfigError(
            f'API tokens file {path}: expected {{"tokens": [{{"id", "sha256", "role"}}, ...]}}'
        )
    entries, seen = [], set()
    for number, entry in enumerate(data["tokens"]):
        where = f"API tokens file {path}, tokens[{number}]"
        if not isinstance(entry, dict) or set(entry) != {"id", "sha256", "role"}:
            raise ConfigError(f'{where}: expected exactly the fields "id", "sha256" and "role"')
        token_id, digest, role = entry["id"], entry["sha256"], entry["role"]
        if not isinstance(token_id, str) or not _ID.match(token_id):
            raise ConfigError(
                f"{where}: id must be 1-64 characters of A-Z a-z 0-9 . _ @ : -; got {token_id!r}"
            )
        if token_id in seen:
            raise ConfigError(f"{where}: id {token_id!r} is used twice")
        if not isinstance(digest, str) or not _HEX64.match(digest):
            raise ConfigError(
                f"{where} ({token_id}): sha256 must be 64 lower-case hex digits "
                "(the SHA-256 of the token, never the token itself)"
            )
        if role not in ROLES:
            raise ConfigError(
                f"{where} ({token_id}): role must be one of {list(ROLES)}; got {role!r}"
            )
        seen.add(token_id)
        entries.append((digest, Principal(token_id, role)))
    return entries


def add_token(path: str | os.PathLike, token_id: str, role: str) -> str:
    """Create a token, append its hash to the file (created 0600 if missing); returns the token."""
    path = Path(path)
    data = json.loads(path.read_text()) if path.exists() else {"tokens": []}
    _parse_entries(data, path)
    token = secrets.token_urlsafe(32)
    data["tokens"].append({"id": token_id, "sha256": hash_token(token), "role": role})
    _parse_entries(data, path)  # the new entry is checked like the others (id, role, duplicates)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)
    return token


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m service.tokens", description="Manage the service's API tokens file."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    add = commands.add_parser("add", help="create a token, store its hash, print the token once")
    add.add_argument("--file", required=True, help="tokens file (RECOMMENDER_API_TOKENS_FILE)")
    add.add_argument("--id", required=True, help="who holds the token (recorded in the audit log)")
    add.add_argument("--role", required=True, choices=ROLES)
    args = parser.parse_args(argv)
    try:
        token = add_token(args.file, args.id, args.role)
    except (ConfigError, OSError, json.JSONDecodeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(token)
    return 0


if __name__ == "__main__":
    sys.exit(main())
