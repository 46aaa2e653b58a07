"""The API's operations as plain requests and parsers, free of I/O.

Both clients (``Client`` and ``AsyncClient``) send these and parse the answers
the same way; only the sending differs.
"""

from __future__ import annotations

import json
import shlex
import unicodedata
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Generic, Iterator, List, Mapping, Optional, Sequence, TypeVar, Union
from urllib.parse import quote

import httpx

from ._errors import BrigError, ConnectionFailed, InvalidRequest, RateLimited, ServerError, Unavailable, error_for
from ._models import Ending, Event, Exit, Offsets, Result, Stderr, Stdout

T = TypeVar("T")

Command = Union[str, Sequence[str]]
Body = Union[bytes, Iterator[bytes]]

OPERATION_ATTR = "__brig_operation__"

# The longest a command may run on a server with default settings
# (MAX_EXEC_TIMEOUT_SECONDS): how long a command without a timeout of its own is waited for.
MAX_COMMAND_SECONDS = 300.0

F = TypeVar("F", bound=Callable[..., Any])


def operation(operation_id: str) -> Callable[[F], F]:
    """Marks a method as the SDK's form of the OpenAPI operation ``operation_id``."""

    def mark(method: F) -> F:
        setattr(method, OPERATION_ATTR, operation_id)
        return method

    return mark


def segment(value: str) -> str:
    """One path segment (an id), percent-encoded whole. ``.`` and ``..`` are
    refused here: HTTP clients resolve them away, sending the request elsewhere."""
    if value in ("", ".", ".."):
        raise InvalidRequest(f"{value!r} is not an id", code="invalid_request")
    return quote(value, safe="")


def file_path(path: str) -> str:
    """A workspace path, relative to ``/workspace``, encoded segment by segment;
    empty, ``.`` and ``..`` components are refused (as the server does) before
    the HTTP client could resolve them into another endpoint's path."""
    parts = path.lstrip("/").split("/")
    if any(part in ("", ".", "..") for part in parts):
        raise InvalidRequest(
            f"{path!r}: paths are relative to /workspace, without empty, . or .. components", code="invalid_path"
        )
    return "/".join(quote(part, safe="") for part in parts)


def command_line(command: Command) -> str:
    """A string is the command line as written; a list is argv, quoted for the
    server's POSIX word splitting so that it means exactly these arguments."""
    if isinstance(command, str):
        return command
    argv = list(command)
    if not argv:
        raise ValueError("an empty argv runs nothing")
    for arg in argv:
        if any(unicodedata.category(c) == "Cc" for c in arg):
            # The server refuses control characters in a command line.
            raise InvalidRequest(
                f"{arg!r}: an argument with a control character (a newline, a tab) cannot be sent; "
                "pass such text on stdin, in a file, or as code (run_code)",
                code="invalid_command",
            )
    return shlex.join(argv)


def new_session_id() -> str:
    return f"sdk-{uuid.uuid4().hex[:20]}"


def drop_none(values: Mapping[str, Any]) -> Dict[str, Any]:
    return {k: v for k, v in values.items() if v is not None}


@dataclass
class Call(Generic[T]):
    """One request and how to read its answer.

    ``retry``: whether it may be sent again after a 429/503 or a connection
    that failed before an answer (safe: reads, idempotent writes, and POSTs
    that carry an ``Idempotency-Key``).
    """

    method: str
    path: str
    parse: Callable[[httpx.Response], T]
    params: Optional[Dict[str, Any]] = None
    json: Any = None
    content: Optional[Body] = None
    headers: Dict[str, str] = field(default_factory=dict)
    retry: bool = True


def _json(response: httpx.Response) -> Any:
    return response.json()


def _none(response: httpx.Response) -> None:
    return None


def json_call(method: str, path: str, parse: Callable[[Any], T], **kw: Any) -> Call[T]:
    return Call(method, path, lambda response: parse(_json(response)), **kw)


def empty_call(method: str, path: str, **kw: Any) -> Call[None]:
    return Call(method, path, _none, **kw)


def execute_body(
    session_id: str,
    command: Command,
    timeout: Optional[float],
    cwd: Optional[str],
    stdin: Union[str, bytes, None],
    env: Optional[Mapping[str, str]],
) -> Dict[str, Any]:
    if isinstance(stdin, bytes):
        stdin = stdin.decode("utf-8")
    return drop_none(
        {
            "session_id": session_id,
            "command": command_line(command),
            "timeout": timeout,
            "working_dir": cwd,
            "stdin": stdin,
            "env": dict(env) if env is not None else None,
        }
    )


def idempotent(key: Optional[str]) -> Dict[str, str]:
    """The ``Idempotency-Key`` a POST that runs something carries (a fresh one unless given)."""
    return {"Idempotency-Key": key or uuid.uuid4().hex}


def resend_after(call: Call[Any], err: Exception) -> bool:
    """Whether a call whose connection failed may be sent again: one never made
    never reached the server; after that, only a read or an idempotent write
    (a command whose client went away is cancelled and its Idempotency-Key
    released, so sending it again would run it again)."""
    if isinstance(err, (httpx.ConnectError, httpx.ConnectTimeout)):
        return True
    return call.retry and call.method in ("GET", "PUT", "DELETE") and not isinstance(call.content, Iterator)


def retryable(call: Call[Any], error: BrigError) -> bool:
    if not call.retry:
        return False
    if isinstance(error, Unavailable):
        return True
    # An authentication budget or a cooldown is not waited out by a client.
    return isinstance(error, RateLimited) and error.code not in ("auth_rate_limited", "cooldown_active")


@dataclass
class Retry:
    """How calls are retried after 429/503 and failed connections.

    ``attempts`` in all (1: never retry); waits ``backoff`` seconds, doubling
    up to ``max_backoff``, or the server's ``Retry-After`` when it gives one; a
    ``Retry-After`` past ``max_wait`` is not waited for (the error is raised).
    """

    attempts: int = 4
    backoff: float = 0.25
    max_backoff: float = 4.0
    max_wait: float = 30.0

    def delay(self, attempt: int, error: Optional[BrigError]) -> Optional[float]:
        """Seconds to wait before attempt ``attempt + 1``, or None to give up."""
        if attempt + 1 >= self.attempts:
            return None
        wait: float = min(self.max_backoff, self.backoff * 2.0**attempt)
        if error is not None and error.retry_after is not None:
            if error.retry_after > self.max_wait:
                return None
            wait = max(wait, error.retry_after)
        return wait


class Lines:
    """Text lines split at ``\n`` only (``str.splitlines`` also splits at
    U+2028 and friends, which JSON carries unescaped inside a ``data:`` line)."""

    def __init__(self) -> None:
        self.rest = ""

    def feed(self, text: str) -> List[str]:
        self.rest += text
        *lines, self.rest = self.rest.split("\n")
        return lines


class SSEParser:
    """Server-sent events from lines (``event``, ``data``, ``id``; comments skipped)."""

    def __init__(self) -> None:
        self.event = ""
        self.data: List[str] = []
        self.id: Optional[str] = None

    def feed(self, line: str) -> Optional[tuple[str, str, Optional[str]]]:
        line = line.rstrip("\r\n")
        if not line:
            if not self.data and not self.event:
                return None
            done = (self.event or "message", "\n".join(self.data), self.id)
            self.event, self.data, self.id = "", [], None
            return done
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        if value.startswith(" "):
            value = value[1:]
        if name == "event":
            self.event = value
        elif name == "data":
            self.data.append(value)
        elif name == "id":
            self.id = value
        return None


def stream_error(data: str) -> BrigError:
    """The error an ``error`` event stands for."""
    try:
        body = json.loads(data)
    except ValueError:
        body = None
    if not isinstance(body, dict):
        return ServerError(data)
    return error_for(str(body.get("error", "")), str(body.get("detail", "")), body)


def stream_event(name: str, data: str, event_id: Optional[str]) -> Optional[Event]:
    """A typed event from an SSE event of ``/execute`` or ``/executions/{id}/events``
    (an ``error`` event raises; unknown ones are skipped)."""
    at = Offsets.parse(event_id) if event_id else None
    if name == "error":
        raise stream_error(data)
    if name not in ("stdout", "stderr", "exit"):
        return None
    body = json.loads(data)
    if name == "stdout":
        return Stdout(str(body.get("data", "")), at)
    if name == "stderr":
        return Stderr(str(body.get("data", "")), at)
    if "stdout" in body:  # /execute: the whole result
        result = Result.from_json(body)
        return Exit(result.exit_code, result.signal, result.reason, result, at)
    ending = Ending.from_json(body)
    return Exit(ending.exit_code, ending.signal, ending.reason, None, at)


def cut_short() -> ConnectionFailed:
    return ConnectionFailed("the stream ended before the command did (a proxy or the server closed it)")
