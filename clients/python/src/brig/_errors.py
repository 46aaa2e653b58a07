"""Errors: one class per kind of answer, each carrying the API's stable code."""

from __future__ import annotations

import json
from typing import Any, Mapping, Optional


class BrigError(Exception):
    """Anything brig answered with an error, or a call that reached no answer.

    ``status`` is the HTTP status (0 when nothing answered), ``code`` the API's
    stable error code (``"command_not_allowed"``, ...), ``detail`` its message,
    ``retry_after`` the seconds the server asked to wait, if it did.
    """

    def __init__(
        self,
        detail: str,
        *,
        status: int = 0,
        code: str = "",
        retry_after: Optional[float] = None,
        body: Any = None,
    ) -> None:
        super().__init__(f"{status} {code}: {detail}" if status else detail)
        self.status = status
        self.code = code
        self.detail = detail
        self.retry_after = retry_after
        self.body = body


class ConnectionFailed(BrigError):
    """No answer: the server could not be reached or the connection broke."""


class Unauthorized(BrigError):
    """401: a missing, wrong or expired API key or token."""


class Forbidden(BrigError):
    """403: the principal may not do this (egress it was not granted, ...)."""


class CommandNotAllowed(Forbidden):
    """403 ``command_not_allowed``: the allowlist or policy refused the command."""


class NotFound(BrigError):
    """404: no such session, execution, file, snapshot or context (or another principal's)."""


class Conflict(BrigError):
    """409: the thing exists or is busy (``session_exists``, ``context_busy``, ``execution_not_running``, ...)."""


class Gone(BrigError):
    """410: what was asked for left the server's keeping (``cursor_expired``, ``result_evicted``)."""


class PayloadTooLarge(BrigError):
    """413: a body, file or stdin past its limit (the detail names it)."""


class InvalidRequest(BrigError):
    """400/405/415/422: the request itself is wrong; ``detail`` says how."""


class RateLimited(BrigError):
    """429: too many requests or a busy sandbox; ``retry_after`` says when to come back."""


class QuotaExceeded(BrigError):
    """A quota of the principal is spent (sessions, snapshots)."""


class Unavailable(BrigError):
    """503: brig, its store, its engine or the sandbox cannot serve now; retry later."""


class ServerError(BrigError):
    """Any other 5xx (a sandbox or upstream that answered wrongly, a timeout upstream)."""


QUOTA_CODES = frozenset({"session_quota_exceeded", "snapshot_quota_exceeded"})

_BY_CODE: dict[str, type[BrigError]] = {
    "command_not_allowed": CommandNotAllowed,
    "unauthorized": Unauthorized,
    "not_found": NotFound,
    "rate_limited": RateLimited,
    "sandbox_busy": RateLimited,
    "unread_responses": RateLimited,
    **{code: Unavailable for code in (
        "store_unavailable", "engine_unavailable", "capacity_exhausted", "session_busy",
        "sandbox_unavailable", "sandbox_unresponsive", "not_ready", "shutting_down",
    )},
    **{code: QuotaExceeded for code in QUOTA_CODES},
}


def error_for(code: str, detail: str, body: Any = None) -> BrigError:
    """The error a code stands for where no status came with it (a stream's
    ``error`` event, a failed execution's record)."""
    return _BY_CODE.get(code, ServerError)(detail, code=code, body=body)


def _retry_after(headers: Mapping[str, str]) -> Optional[float]:
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


def error_from(status: int, body: bytes, headers: Mapping[str, str]) -> BrigError:
    """The error an answer of ``status`` with ``body`` stands for."""
    code, detail, parsed = "", "", None
    try:
        parsed = json.loads(body) if body else None
    except ValueError:
        pass
    if isinstance(parsed, dict):
        code = str(parsed.get("error", ""))
        detail = str(parsed.get("detail", ""))
    if not detail:
        detail = body[:500].decode("utf-8", "replace") or f"HTTP {status}"
    kind: type[BrigError]
    if code in QUOTA_CODES:
        kind = QuotaExceeded
    elif status == 401:
        kind = Unauthorized
    elif status == 403:
        kind = CommandNotAllowed if code == "command_not_allowed" else Forbidden
    elif status == 404:
        kind = NotFound
    elif status == 409:
        kind = Conflict
    elif status == 410:
        kind = Gone
    elif status == 413:
        kind = PayloadTooLarge
    elif status == 429:
        kind = RateLimited
    elif status == 503:
        kind = Unavailable
    elif status >= 500:
        kind = ServerError
    else:
        kind = InvalidRequest
    return kind(detail, status=status, code=code, retry_after=_retry_after(headers), body=parsed)
