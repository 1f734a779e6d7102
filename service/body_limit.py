"""Chunked request bodies get the same size limit as bodies with a ``Content-Length``.

Werkzeug stops reading a chunked body at ``MAX_CONTENT_LENGTH`` without saying so, so an
over-long body was silently cut to 262,144 bytes and processed, while the same body with a
``Content-Length`` got 413. Here a chunked body is read before the view, at most one byte
past the limit: over it is a 413 ``body_too_large``, a malformed chunk a 400, and otherwise the
view reads the buffered body with its length known. Bodies are small (the limit is 256 KiB by
default), so buffering costs nothing worth counting.
"""

from __future__ import annotations

import io

from flask import Request
from werkzeug.exceptions import RequestEntityTooLarge

from .errors import ApiError


def buffer_chunked_body(req: Request, limit: int) -> None:
    """Read a body sent without ``Content-Length`` into memory, if at most ``limit`` bytes.

    Raises
    ------
    RequestEntityTooLarge
        The body is longer than ``limit`` bytes.
    ApiError
        400 ``bad_request``: the chunked encoding is malformed or the client went away.
    """
    environ = req.environ
    if (
        environ.get("CONTENT_LENGTH")
        or "chunked" not in environ.get("HTTP_TRANSFER_ENCODING", "").lower()
    ):
        return
    stream, parts, size = environ["wsgi.input"], [], 0
    try:
        while size <= limit:
            part = stream.read(min(65536, limit + 1 - size))
            if not part:
                break
            parts.append(part)
            size += len(part)
    except (OSError, ValueError):  # gunicorn's InvalidChunkSize, NoMoreData ... are IOErrors
        raise ApiError(400, "bad_request", "malformed chunked request body") from None
    if size > limit:
        raise RequestEntityTooLarge()
    body = b"".join(parts)
    environ["wsgi.input"], environ["CONTENT_LENGTH"] = io.BytesIO(body), str(len(body))
    for cached in ("stream", "content_length"):  # werkzeug caches both on first access
        req.__dict__.pop(cached, None)
