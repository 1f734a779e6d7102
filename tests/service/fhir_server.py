"""A small FHIR R4 test server the CDS Hooks tests start: read, search (by ``patient``, with
``_include`` of the Medication a request refers to, paged), a TLS variant with its own
certificate authority, and switches for the failures a real server shows (a refused type, a
redirect, a slow answer).

It serves only what the tests put in it and records every request (path, query and the
``Authorization`` header) so that a test can check what the service sent.
"""

from __future__ import annotations

import datetime
import http.server
import ipaddress
import json
import ssl
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs, urlparse

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


@dataclass
class Seen:
    path: str
    query: dict
    authorization: str | None


@dataclass
class FhirServer:
    """The server's state; :func:`start` runs it on 127.0.0.1 (``base`` is its FHIR base URL)."""

    resources: list[dict] = field(default_factory=list)
    token: str | None = None  # required bearer token (None: any)
    page_size: int = 50
    refuse: dict = field(default_factory=dict)  # resource type -> HTTP status
    redirect: dict = field(default_factory=dict)  # resource type -> Location
    delay: float = 0.0
    seen: list[Seen] = field(default_factory=list)
    base: str = ""
    next_base: str | None = None  # where next links point (default: this server)

    def add(self, *resources: dict) -> FhirServer:
        self.resources += resources
        return self

    def answer(self, path: str, query: dict, authorization: str | None):
        """(status, headers, body) for one GET."""
        self.seen.append(Seen(path, query, authorization))
        if self.delay:
            time.sleep(self.delay)
        if self.token is not None and authorization != f"Bearer {self.token}":
            return 401, {}, {"resourceType": "OperationOutcome", "issue": []}
        parts = [p for p in path.split("/") if p][1:]  # after "fhir"
        if not parts:
            return 404, {}, None
        rtype = parts[0]
        if rtype in self.redirect:
            return 302, {"Location": self.redirect[rtype]}, None
        if rtype in self.refuse:
            return self.refuse[rtype], {}, {"resourceType": "OperationOutcome", "issue": []}
        if len(parts) == 2:
            found = next(
                (r for r in self.resources if r["resourceType"] == rtype and r["id"] == parts[1]),
                None,
            )
            return (200, {}, found) if found else (404, {}, None)
        return 200, {}, self._search(rtype, query)

    def _search(self, rtype: str, query: dict) -> dict:
        patient = (query.get("patient") or [""])[0]
        matches = [r for r in self.resources if r["resourceType"] == rtype and _owner(r) == patient]
        offset = int((query.get("_offset") or ["0"])[0])
        page = matches[offset : offset + self.page_size]
        entries = [{"resource": r, "search": {"mode": "match"}} for r in page]
        if any(value.endswith(":medication") for value in query.get("_include", [])):
            for resource in page:
                ref = (resource.get("medicationReference") or {}).get("reference", "")
                target = next(
                    (
                        m
                        for m in self.resources
                        if m["resourceType"] == "Medication" and f"Medication/{m['id']}" == ref
                    ),
                    None,
                )
                if target is not None:
                    entries.append({"resource": target, "search": {"mode": "include"}})
        bundle = {"resourceType": "Bundle", "type": "searchset", "entry": entries}
        if offset + self.page_size < len(matches):
            base = self.next_base or self.base
            bundle["link"] = [
                {
                    "relation": "next",
                    "url": f"{base}/{rtype}?patient={patient}&_offset={offset + self.page_size}",
                }
            ]
        return bundle

    def paths(self) -> list[str]:
        return [seen.path for seen in self.seen]


def _owner(resource: dict) -> str:
    reference = (resource.get("subject") or resource.get("patient") or {}).get("reference", "")
    return reference.rsplit("/", 1)[-1]


def start(state: FhirServer, tls: tuple[Path, Path] | None = None):
    """Serve ``state`` on a free port (https with ``tls`` = (certificate, key) files).

    Returns the ``http.server`` instance; stop it with :func:`stop`.
    """

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - the standard library's name
            url = urlparse(self.path)
            status, headers, body = state.answer(
                url.path, parse_qs(url.query), self.headers.get("Authorization")
            )
            raw = json.dumps(body).encode() if body is not None else b""
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Type", "application/fhir+json")
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            try:
                self.wfile.write(raw)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the service gave up waiting (the time-limit tests)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    scheme = "http"
    if tls is not None:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(str(tls[0]), str(tls[1]))
        server.socket = context.wrap_socket(server.socket, server_side=True)
        scheme = "https"
    state.base = f"{scheme}://127.0.0.1:{server.server_port}/fhir"
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def stop(server) -> None:
    server.shutdown()
    server.server_close()


def certificate(folder: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (it is its own authority): (cert, key) PEM files."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test FHIR server")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = folder / "fhir-cert.pem", folder / "fhir-key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_file, key_file
