"""The API's answers: JSON documents, and errors as ``{"error": ..., "detail": ...}``."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from starlette.responses import Response


class JsonResponse(Response):
    """Compact UTF-8 JSON, never NaN, never cached."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return json.dumps(content, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode()

    def __init__(
        self, content: Any, status_code: int = 200, headers: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(content, status_code, {"cache-control": "no-store", **(headers or {})})


class ApiError(Exception):
    """Raised by a handler: answered as ``status`` with ``{"error": error, "detail": detail}``."""

    def __init__(self, status: int, error: str, detail: Any = None, headers: Mapping[str, str] | None = None):
        super().__init__(error)
        self.status = status
        self.error = error
        self.detail = detail
        self.headers = dict(headers or {})

    def response(self) -> JsonResponse:
        return JsonResponse({"error": self.error, "detail": self.detail}, self.status, self.headers)


def bad_request(detail: str) -> ApiError:
    return ApiError(400, "bad request", detail)


def not_found(detail: str) -> ApiError:
    return ApiError(404, "not found", detail)
