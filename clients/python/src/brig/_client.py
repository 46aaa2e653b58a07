"""The blocking client."""

from __future__ import annotations

import os
import socket
import ssl
import time
from types import TracebackType
from typing import IO, Any, Dict, Iterator, List, Mapping, Optional, Type, TypeVar, Union

import httpx

from . import _ops as ops
from . import _websocket as ws
from ._calls import (
    MAX_COMMAND_SECONDS,
    Call,
    Command,
    Lines,
    Retry,
    SSEParser,
    cut_short,
    new_session_id,
    operation,
    resend_after,
    retryable,
    stream_event,
)
from ._errors import BrigError, Conflict, ConnectionFailed, NotFound, error_for, error_from
from ._models import (
    CodeResult,
    Event,
    ExecutionStatus,
    Exit,
    Generated,
    Listing,
    Network,
    Offsets,
    Output,
    Result,
    SessionInfo,
    Snapshot,
)
from ._version import __version__

T = TypeVar("T")
CHUNK = 64 * 1024


def _settings(url: Optional[str], api_key: Optional[str], token: Optional[str]) -> tuple[str, Dict[str, str]]:
    base = (url or os.environ.get("BRIG_URL") or "http://localhost:8000").rstrip("/")
    headers = {"User-Agent": f"brig-sdk-python/{__version__}"}
    token = token or os.environ.get("BRIG_TOKEN")
    api_key = api_key or (None if token else os.environ.get("BRIG_API_KEY"))
    if api_key:
        headers["X-API-Key"] = api_key
    elif token:
        headers["Authorization"] = f"Bearer {token}"
    return base, headers


def _chunks(data: Union[bytes, str, IO[bytes]]) -> tuple[Union[bytes, Iterator[bytes]], bool]:
    """A body and whether it can be sent again (bytes can; a file is read once, streamed)."""
    if isinstance(data, str):
        return data.encode(), True
    if isinstance(data, (bytes, bytearray, memoryview)):
        return bytes(data), True

    def read() -> Iterator[bytes]:
        while chunk := data.read(CHUNK):
            yield chunk

    return read(), False


class Client:
    """A brig server: ``Client()`` reads ``BRIG_URL`` and ``BRIG_API_KEY`` (or ``BRIG_TOKEN``).

    ``timeout`` bounds each request's connect, read and write (seconds); a
    command's own ``timeout`` is added to it while it runs. ``retry`` says how
    429/503 answers and failed connections are retried (see :class:`Retry`).
    """

    def __init__(
        self,
        url: Optional[str] = None,
        api_key: Optional[str] = None,
        token: Optional[str] = None,
        timeout: float = 60.0,
        retry: Optional[Retry] = None,
    ) -> None:
        self.url, self._headers = _settings(url, api_key, token)
        self.timeout = timeout
        self.retry = retry or Retry()
        self._http = httpx.Client(base_url=self.url, headers=self._headers, timeout=timeout)

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    # Sending

    def _send(self, call: Call[Any], stream: bool = False, timeout: Optional[float] = None) -> httpx.Response:
        attempt = 0
        while True:
            error: Optional[BrigError] = None
            try:
                request = self._http.build_request(
                    call.method,
                    call.path,
                    params=call.params,
                    json=call.json,
                    content=call.content,
                    headers=call.headers,
                    timeout=timeout if timeout is not None else httpx.USE_CLIENT_DEFAULT,
                )
                response = self._http.send(request, stream=stream)
            except httpx.TransportError as err:
                error = ConnectionFailed(f"{call.method} {call.path}: {err!r}")
                if not resend_after(call, err):
                    raise error from err
            else:
                if response.status_code < 400:
                    return response
                body = response.read()
                response.close()
                error = error_from(response.status_code, body, response.headers)
                if not retryable(call, error):
                    raise error
            delay = self.retry.delay(attempt, error)
            if delay is None:
                raise error
            time.sleep(delay)
            attempt += 1

    def _do(self, call: Call[T], timeout: Optional[float] = None) -> T:
        return call.parse(self._send(call, timeout=timeout))

    def _events(self, call: Call[Any], timeout: Optional[float]) -> Iterator[Event]:
        response = self._send(call, stream=True, timeout=timeout)
        try:
            parser, lines = SSEParser(), Lines()
            for text in response.iter_text():
                for line in lines.feed(text):
                    done = parser.feed(line)
                    event = stream_event(*done) if done else None
                    if event is not None:
                        yield event
                        if isinstance(event, Exit):
                            return
            raise cut_short()
        finally:
            response.close()

    def _command_timeout(self, timeout: Optional[float]) -> float:
        """How long to wait for a command's answer: its own timeout (else the
        server's largest, 300 s by default) plus the request's."""
        return self.timeout + (MAX_COMMAND_SECONDS if timeout is None else timeout)

    # Sessions

    def session(
        self,
        session_id: Optional[str] = None,
        image: Optional[str] = None,
        memory_limit: Optional[str] = None,
        cpu_limit: Optional[float] = None,
        runtime: Optional[str] = None,
        keep: bool = False,
        *,
        ttl_seconds: Optional[int] = None,
        env: Optional[Mapping[str, str]] = None,
        network: Optional[List[str]] = None,
        from_snapshot: Optional[str] = None,
    ) -> "Session":
        """A session. ``with client.session() as s:`` creates it (idempotently) and
        deletes it at the end unless ``keep``; without ``with``, call ``create()``."""
        options = ops.session_options(
            image, memory_limit, cpu_limit, runtime, ttl_seconds, env, network, from_snapshot
        )
        return Session(self, session_id or new_session_id(), options, keep)

    @operation("listSessions")
    def sessions(self) -> List[SessionInfo]:
        return self._do(ops.list_sessions())

    def execution(self, execution_id: str) -> "Execution":
        """A handle on an execution started earlier (by id)."""
        return Execution(self, execution_id, "")

    def context(self, context_id: str) -> "Context":
        """A handle on a code context made earlier (by id)."""
        return Context(self, context_id, "", "")

    # Snapshots

    @operation("listSnapshots")
    def snapshots(self) -> List[Snapshot]:
        return self._do(ops.list_snapshots())

    @operation("getSnapshot")
    def snapshot(self, snapshot_id: str) -> Snapshot:
        return self._do(ops.get_snapshot(snapshot_id))

    @operation("deleteSnapshot")
    def delete_snapshot(self, snapshot_id: str) -> None:
        self._do(ops.delete_snapshot(snapshot_id))

    # The model

    @operation("generateCode")
    def generate(self, query: str, language: Optional[str] = None) -> Generated:
        return self._do(ops.generate(query, language))

    @operation("generateAndExecute")
    def generate_and_execute(
        self,
        query: str,
        language: Optional[str] = None,
        session_id: Optional[str] = None,
        timeout: Optional[float] = None,
        memory_limit: Optional[str] = None,
        cpu_limit: Optional[float] = None,
    ) -> Result:
        """Code from the server's model for ``query``, run in a sandbox. The
        result's ``raw`` holds ``generated_code`` and ``validation_result``."""
        call = ops.generate_and_execute(query, language, session_id, timeout, memory_limit, cpu_limit)
        return self._do(call, self._command_timeout(timeout))

    # The service

    @operation("listNodes")
    def nodes(self) -> Dict[str, Any]:
        """The nodes sharing the server's store (``{"node_id", "nodes": [...]}``); the admin role only."""
        return self._do(ops.list_nodes())

    @operation("drainNode")
    def drain_node(self, node_id: str, drain: bool = True) -> Dict[str, Any]:
        """Drains node ``node_id`` (no new sessions; its sessions suspended to
        resume on other nodes), or lifts its drain; the admin role only."""
        return self._do(ops.drain_node(node_id, drain))

    @operation("health")
    def health(self) -> Dict[str, Any]:
        return self._do(ops.health())

    @operation("ready")
    def ready(self) -> Dict[str, Any]:
        """The readiness report; :class:`Unavailable` names what is not ready."""
        return self._do(ops.ready())

    @operation("openapiDocument")
    def openapi(self) -> Dict[str, Any]:
        return self._do(ops.openapi())

    @operation("scrapeMetrics")
    def metrics(self, token: Optional[str] = None) -> str:
        """Prometheus text; ``token`` is the server's ``METRICS_TOKEN``."""
        return self._do(ops.metrics(token))

    @operation("callMcp")
    def mcp(self, message: Mapping[str, Any]) -> Optional[Dict[str, Any]]:
        """One Model Context Protocol (JSON-RPC) message to the server's tool server."""
        return self._do(ops.mcp(message))


class Session:
    """One sandbox of the caller's. ``files`` reaches its ``/workspace``."""

    def __init__(self, client: Client, session_id: str, options: Mapping[str, Any], keep: bool) -> None:
        self.client = client
        self.id = session_id
        self.options = dict(options)
        self.keep = keep
        self.files = Files(self)
        self._contexts: Dict[str, Context] = {}

    def __repr__(self) -> str:
        return f"Session({self.id!r})"

    def __enter__(self) -> "Session":
        self.create()
        return self

    def __exit__(
        self, kind: Optional[Type[BaseException]], value: Optional[BaseException], tb: Optional[TracebackType]
    ) -> None:
        if not self.keep:
            self.delete(missing_ok=True)

    @operation("createSession")
    def create(self) -> SessionInfo:
        """Creates the session, or finds it if it exists (same id, same caller)."""
        return self.client._do(ops.create_session(self.id, self.options))

    @operation("getSession")
    def info(self) -> SessionInfo:
        return self.client._do(ops.get_session(self.id))

    @operation("renewSession")
    def renew(self, ttl_seconds: Optional[int] = None) -> SessionInfo:
        return self.client._do(ops.renew_session(self.id, ttl_seconds))

    @operation("suspendSession")
    def suspend(self) -> SessionInfo:
        """Keeps the workspace and removes the container; the next use resumes it."""
        return self.client._do(ops.suspend_session(self.id))

    @operation("deleteSession")
    def delete(self, missing_ok: bool = False) -> None:
        self._contexts.clear()
        try:
            self.client._do(ops.delete_session(self.id))
        except NotFound:
            if not missing_ok:
                raise

    @operation("getSessionNetwork")
    def network(self) -> Network:
        return self.client._do(ops.get_network(self.id))

    @operation("setSessionNetwork")
    def set_network(self, allow: List[str]) -> Network:
        return self.client._do(ops.set_network(self.id, allow))

    @operation("execute")
    def run(
        self,
        command: Command,
        timeout: Optional[float] = None,
        cwd: Optional[str] = None,
        stdin: Union[str, bytes, None] = None,
        env: Optional[Mapping[str, str]] = None,
        *,
        idempotency_key: Optional[str] = None,
    ) -> Result:
        """Runs a command and waits for it. A string is a command line (split
        by the server, no shell); a list is argv. Retried safely: the call
        carries an ``Idempotency-Key``, so a retry never runs it twice."""
        call = ops.execute(self.id, command, timeout, cwd, stdin, env, idempotency_key)
        return self.client._do(call, self.client._command_timeout(timeout))

    def stream(
        self,
        command: Command,
        timeout: Optional[float] = None,
        cwd: Optional[str] = None,
        stdin: Union[str, bytes, None] = None,
        env: Optional[Mapping[str, str]] = None,
    ) -> Iterator[Event]:
        """Runs a command, yielding :class:`Stdout` and :class:`Stderr` as it
        writes, then one :class:`Exit` carrying the whole result."""
        call = ops.execute_stream(self.id, command, timeout, cwd, stdin, env)
        return self.client._events(call, self.client._command_timeout(timeout))

    @operation("startExecution")
    def start(
        self,
        command: Command,
        timeout: Optional[float] = None,
        cwd: Optional[str] = None,
        stdin: Union[str, bytes, None] = None,
        env: Optional[Mapping[str, str]] = None,
        *,
        pipe: bool = False,
        tty: Optional[tuple[int, int]] = None,
        idempotency_key: Optional[str] = None,
    ) -> "Execution":
        """Starts a command in the background. ``pipe=True`` keeps its stdin
        open for :meth:`Execution.write`; ``tty=(rows, cols)`` runs it under a terminal."""
        call = ops.start_execution(self.id, command, timeout, cwd, stdin, env, pipe, tty, idempotency_key)
        started = self.client._do(call)
        return Execution(self.client, started.execution_id, self.id)

    @operation("listSessionExecutions")
    def executions(self) -> List[ExecutionStatus]:
        return self.client._do(ops.list_executions(self.id))

    @operation("createSnapshot")
    def snapshot(self) -> Snapshot:
        """Stores the workspace; ``client.session(from_snapshot=...)`` starts from it."""
        return self.client._do(ops.create_snapshot(self.id))

    @operation("createContext")
    def context(self, language: str = "python") -> "Context":
        """A new interpreter kept alive in the sandbox: its variables persist between runs."""
        made = self.client._do(ops.create_context(self.id, language))
        return Context(self.client, str(made["context_id"]), self.id, language)

    def run_code(self, code: str, language: str = "python", timeout: Optional[float] = None) -> CodeResult:
        """Runs code in this session's context for ``language`` (made at the
        first call): variables persist between calls, like a notebook."""
        context = self._contexts.get(language)
        if context is None:
            context = self._contexts[language] = self.context(language)
        try:
            return context.run(code, timeout)
        except (NotFound, Conflict) as err:
            # A context that ended (deleted, past its deadline, its interpreter
            # gone) is forgotten: the next call starts a new one. Its variables
            # are gone, so this call says so instead of silently starting over.
            if isinstance(err, NotFound) or err.code == "execution_not_running":
                self._contexts.pop(language, None)
            raise


class Files:
    """The session's ``/workspace``; paths are relative to it."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self._client = session.client

    @operation("writeFile")
    def write(self, path: str, data: Union[bytes, str, IO[bytes]]) -> None:
        """Writes a file (parents made); a file object is streamed, any size the workspace holds."""
        body, again = _chunks(data)
        self._client._do(ops.write_file(self.session.id, path, body, again))

    @operation("readFile")
    def read(self, path: str) -> bytes:
        response = self._client._send(ops.read_file(self.session.id, path))
        return response.content

    def download(self, path: str, into: IO[bytes]) -> int:
        """Streams a file into ``into``; returns the bytes written."""
        return self._copy(ops.read_file(self.session.id, path), into)

    @operation("listFiles")
    def list(self, dir: str = ".") -> Listing:
        return self._client._do(ops.list_files(self.session.id, dir))

    @operation("deleteFile")
    def remove(self, path: str) -> None:
        self._client._do(ops.delete_file(self.session.id, path))

    @operation("readArchive")
    def read_archive(self, into: IO[bytes], dir: Optional[str] = None) -> int:
        """Streams a directory (relative to ``/workspace``; default: all of it) as a tar into ``into``; returns its size."""
        return self._copy(ops.read_archive(self.session.id, dir), into)

    @operation("writeArchive")
    def write_archive(self, tar: Union[bytes, IO[bytes]], dir: Optional[str] = None) -> None:
        """Extracts a tar into a directory (relative to ``/workspace``; default: it): all of it, or nothing."""
        body, again = _chunks(tar)
        self._client._do(ops.write_archive(self.session.id, dir, body, again))

    def _copy(self, call: Call[None], into: IO[bytes]) -> int:
        response = self._client._send(call, stream=True)
        total = 0
        try:
            for chunk in response.iter_bytes(CHUNK):
                into.write(chunk)
                total += len(chunk)
        finally:
            response.close()
        return total


class Execution:
    """A command running (or run) in the background; any replica answers for it."""

    def __init__(self, client: Client, execution_id: str, session_id: str) -> None:
        self.client = client
        self.id = execution_id
        self.session_id = session_id

    def __repr__(self) -> str:
        return f"Execution({self.id!r})"

    @operation("getExecution")
    def status(self) -> ExecutionStatus:
        return self.client._do(ops.get_execution(self.id))

    def wait(self, timeout: Optional[float] = None, poll: float = 0.05) -> Result:
        """Waits for the end and returns the result; a failed execution raises
        its error, and ``TimeoutError`` comes after ``timeout`` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            current = self.status()
            if current.result is not None:
                return current.result
            if current.failure is not None:
                raise error_for(current.failure.get("error", ""), current.failure.get("detail", ""))
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"execution {self.id} still running after {timeout} s")
            time.sleep(poll)
            poll = min(poll * 2, 1.0)

    @operation("cancelExecution")
    def cancel(self) -> ExecutionStatus:
        """Kills its process tree (nothing if it ended)."""
        return self.client._do(ops.cancel_execution(self.id))

    @operation("getExecutionOutput")
    def output(self, since: Offsets = Offsets()) -> Output:
        """Up to 1 MiB of its output from ``since``; ``next`` is where to go on."""
        return self.client._do(ops.execution_output(self.id, since))

    @operation("followExecution")
    def events(self, since: Offsets = Offsets()) -> Iterator[Event]:
        """Its output from ``since`` as it comes, then an :class:`Exit`. A broken
        connection is resumed where it stopped (no byte lost or repeated)."""
        at, failures = since, 0
        while True:
            try:
                for event in self.client._events(ops.follow_execution(self.id, at), None):
                    failures = 0
                    if event.at is not None:
                        at = event.at
                    yield event
                    if isinstance(event, Exit):
                        return
            except (httpx.TransportError, ConnectionFailed):
                failures += 1
                delay = self.client.retry.delay(failures - 1, None)
                if delay is None:
                    raise
                time.sleep(delay)

    @operation("writeExecutionStdin")
    def write(self, data: Union[bytes, str], close: bool = False) -> bool:
        """Sends bytes to its stdin (started with ``pipe=True``). True once the
        command took them; False if they wait in the sandbox's queue (never send them again)."""
        body = data.encode() if isinstance(data, str) else bytes(data)
        return self.client._do(ops.write_stdin(self.id, body, close))

    def close_stdin(self) -> bool:
        return self.write(b"", close=True)

    @operation("signalExecution")
    def signal(self, signal: str) -> ExecutionStatus:
        """``INT``, ``TERM``, ``KILL`` or ``HUP`` to its process group."""
        return self.client._do(ops.signal_execution(self.id, signal))

    @operation("resizeExecution")
    def resize(self, rows: int, cols: int) -> None:
        self.client._do(ops.resize_execution(self.id, rows, cols))

    @operation("attachExecution")
    def attach(self, since: Offsets = Offsets()) -> "Attachment":
        """A live, two-way connection (WebSocket) to the command's terminal or stdin pipe."""
        return Attachment(self.client, ops.attach_path(self.id, since))


class Attachment:
    """Bytes both ways with a running execution: iterate for its output;
    ``exit`` is set once it ended (then iteration stops)."""

    def __init__(self, client: Client, path: str) -> None:
        host, port, tls = ws.endpoint(client.url)
        self._inbox = ws.Inbox()
        request, accept = ws.handshake(client.url + path, client._headers)
        self._sock = socket.create_connection((host, port), timeout=client.timeout)
        try:
            if tls:
                self._sock = ssl.create_default_context().wrap_socket(self._sock, server_hostname=host)
            self._sock.sendall(request)
            buffer = b""
            while (split := ws.split_head(buffer)) is None:
                buffer += self._recv()
            head, rest = split
            if not ws.is_upgrade(head):
                # An error answer: its body names why (wait for it, bounded).
                while len(rest) < ws.body_length(head) and (more := self._sock.recv(CHUNK)):
                    rest += more
            ws.check_answer(head, rest, accept)
            self._sock.settimeout(None)
            self._take(rest)
        except BaseException:
            self._sock.close()
            raise

    def __enter__(self) -> "Attachment":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _recv(self) -> bytes:
        data = self._sock.recv(CHUNK)
        if not data:
            raise ConnectionFailed("the server closed the attachment")
        return data

    @property
    def exit(self) -> Optional[Exit]:
        """How the command ended, once it did."""
        return self._inbox.exit

    def _take(self, data: bytes) -> None:
        owed = self._inbox.take(data)
        if owed:
            self._sock.sendall(owed)

    def send(self, data: Union[bytes, str]) -> None:
        """Bytes for its stdin (under a terminal, ``"\\x03"`` is Ctrl-C)."""
        self._sock.sendall(ws.data_frames(data.encode() if isinstance(data, str) else bytes(data)))

    def resize(self, rows: int, cols: int) -> None:
        self._sock.sendall(ws.resize_frame(rows, cols))

    def signal(self, signal: str) -> None:
        self._sock.sendall(ws.signal_frame(signal))

    def eof(self) -> None:
        """Ends its stdin (after the bytes sent before)."""
        self._sock.sendall(ws.eof_frame())

    def recv(self) -> Optional[bytes]:
        """Its next output bytes, or None once it ended."""
        while not self._inbox.pending:
            if self._inbox.exit is not None:
                return None
            self._take(self._recv())
        return self._inbox.pending.popleft()

    def __iter__(self) -> Iterator[bytes]:
        while (chunk := self.recv()) is not None:
            yield chunk

    def close(self) -> None:
        """Detaches (the command goes on)."""
        try:
            self._sock.sendall(ws.frame(ws.CLOSE, b""))
        except OSError:
            pass
        self._sock.close()


class Context:
    """A code context: an interpreter whose variables persist between runs."""

    def __init__(self, client: Client, context_id: str, session_id: str, language: str) -> None:
        self.client = client
        self.id = context_id
        self.session_id = session_id
        self.language = language

    def __repr__(self) -> str:
        return f"Context({self.id!r})"

    @operation("runInContext")
    def run(self, code: str, timeout: Optional[float] = None) -> CodeResult:
        return self.client._do(ops.run_in_context(self.id, code, timeout), self.client._command_timeout(timeout))

    @operation("interruptContext")
    def interrupt(self) -> None:
        self.client._do(ops.interrupt_context(self.id))

    @operation("deleteContext")
    def delete(self) -> None:
        self.client._do(ops.delete_context(self.id))
