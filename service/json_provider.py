"""Flask's JSON responses through orjson.

A recommendation list with its explanations is a few kilobytes of nested dicts; the standard
library's encoder spent a tenth of a millisecond on it per request, orjson a tenth of that.
Output is the same compact JSON (same key order, same float representation; non-ASCII text as
UTF-8 rather than escaped, and NaN as ``null`` rather than the invalid ``NaN``). Anything orjson
refuses (an integer beyond 64 bits, non-string keys, pretty-printing in debug mode) goes through
Flask's default provider unchanged. Request bodies are still parsed by the standard library
(``service/schemas.py``), whose errors the API reports.
"""

from __future__ import annotations

from typing import Any

import orjson
from flask import Response
from flask.json.provider import DefaultJSONProvider

#: Datetimes and dataclasses go to Flask's ``default`` (HTTP dates, ``asdict``) as before.
_OPTIONS = (
    orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS
)
#: A response body is the document and a newline, as Flask writes it.
_BODY_OPTIONS = _OPTIONS | orjson.OPT_APPEND_NEWLINE


class OrjsonProvider(DefaultJSONProvider):
    """:class:`DefaultJSONProvider` whose compact ``dumps`` is orjson's."""

    def dumps(self, obj: Any, **kwargs: Any) -> str:
        if kwargs.get("indent") is None and not kwargs.get("sort_keys", self.sort_keys):
            try:
                return orjson.dumps(obj, default=self.default, option=_OPTIONS).decode()
            except (orjson.JSONEncodeError, TypeError):
                pass  # the standard encoder either manages or raises its own error
        return super().dumps(obj, **kwargs)

    def response(self, *args: Any, **kwargs: Any) -> Response:
        """``jsonify``: the body straight from orjson's bytes.

        Flask's own ``response`` decodes the JSON to text, appends the newline and encodes the
        text again (three copies of a few kilobytes per answer); the bytes are the same.
        """
        if self.sort_keys or self.compact is False or (self.compact is None and self._app.debug):
            return super().response(*args, **kwargs)
        obj = self._prepare_response_obj(args, kwargs)
        try:
            body = orjson.dumps(obj, default=self.default, option=_BODY_OPTIONS)
        except (orjson.JSONEncodeError, TypeError):
            return super().response(*args, **kwargs)
        return self._app.response_class(body, mimetype=self.mimetype)
