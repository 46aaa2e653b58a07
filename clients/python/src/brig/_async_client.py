"""The asyncio client: the same surface as :class:`brig.Client`, awaited."""

from __future__ import annotations

import asyncio
import ssl
import time
from types import TracebackType
from typing import IO, Any, AsyncIterator, Dict, List, Mapping, Optional, Type, TypeVar, Union

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
from ._client import CHUNK, _chunks, _settings
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

T = TypeVar("T")


class AsyncClient:
    """A brig server, for asyncio: ``async with brig.AsyncClient() as client``.
    Arguments as for :class:`brig.Client`."""

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
        self._http = httpx.AsyncClient(base_url=self.url, headers=self._headers, timeout=timeout)

    async def __aenter__(self) -> "AsyncClient":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    async def close(self) -> None:
        await self._http.aclose()

    # Sending

    async def _send(self, call: Call[Any], stream: bool = False, timeout: Optional[float] = None) -> httpx.Response:
        attempt = 0
        while True:
            error: Optional[BrigError] = None
            try:
                request = self._http.build_request(
                    call.method,
                    call.path,
                    params=call.params,
                    json=call.json,
                    content=_async_body(call.content),
                    headers=call.headers,
                    timeout=timeout if timeout is not None else httpx.USE_CLIENT_DEFAULT,
                )
                response = await self._http.send(request, stream=stream)
            except httpx.TransportError as err:
                error = ConnectionFailed(f"{call.method} {call.path}: {err!r}")
                if not resend_after(call, err):
                    raise error from err
            else:
                if response.status_code < 400:
                    return response
                body = await response.aread()
                await response.aclose()
                error = error_from(response.status_code, body, response.headers)
                if not retryable(call, error):
                    raise error
            delay = self.retry.delay(attempt, error)
            if delay is None:
                raise error
            await asyncio.sleep(delay)
            attempt += 1

    async def _do(self, call: Call[T], timeout: Optional[float] = None) -> T:
        return call.parse(await self._send(call, timeout=timeout))

    async def _events(self, call: Call[Any], timeout: Optional[float]) -> AsyncIterator[Event]:
        response = await self._send(call, stream=True, timeout=timeout)
        try:
            parser, lines = SSEParser(), Lines()
            async for text in response.aiter_text():
                for line in lines.feed(text):
                    done = parser.feed(line)
                    event = stream_event(*done) if done else None
                    if event is not None:
                        yield event
                        if isinstance(event, Exit):
                            return
            raise cut_short()
        finally:
            await response.aclose()

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
    ) -> "AsyncSession":
        """``async with client.session() as s:`` creates it and deletes it at the end unless ``keep``."""
        options = ops.session_options(
            image, memory_limit, cpu_limit, runtime, ttl_seconds, env, network, from_snapshot
        )
        return AsyncSession(self, session_id or new_session_id(), options, keep)

    @operation("listSessions")
    async def sessions(self) -> List[SessionInfo]:
        return await self._do(ops.list_sessions())

    def execution(self, execution_id: str) -> "AsyncExecution":
        return AsyncExecution(self, execution_id, "")

    def context(self, context_id: str) -> "AsyncContext":
        return AsyncContext(self, context_id, "", "")

    @operation("listSnapshots")
    async def snapshots(self) -> List[Snapshot]:
        return await self._do(ops.list_snapshots())

    @operation("getSnapshot")
    async def snapshot(self, snapshot_id: str) -> Snapshot:
        return await self._do(ops.get_snapshot(snapshot_id))

    @operation("deleteSnapshot")
    async def delete_snapshot(self, snapshot_id: str) -> None:
        await self._do(ops.delete_snapshot(snapshot_id))

    @operation("generateCode")
    async def generate(self, query: str, language: Optional[str] = None) -> Generated:
        return await self._do(ops.generate(query, language))

    @operation("generateAndExecute")
    async def generate_and_execute(
        self,
        query: str,
        language: Optional[str] = None,
        session_id: Optional[str] = None,
        timeout: Optional[float] = None,
        memory_limit: Optional[str] = None,
        cpu_limit: Optional[float] = None,
    ) -> Result:
        call = ops.generate_and_execute(query, language, session_id, timeout, memory_limit, cpu_limit)
        return await self._do(call, self._command_timeout(timeout))

    @operation("listNodes")
    async def nodes(self) -> Dict[str, Any]:
        """The nodes sharing the server's store (``{"node_id", "nodes": [...]}``); the admin role only."""
        return await self._do(ops.list_nodes())

    @operation("drainNode")
    async def drain_node(self, node_id: str, drain: bool = True) -> Dict[str, Any]:
        """Drains node ``node_id`` (no new sessions; its sessions suspended to
        resume on other nodes), or lifts its drain; the admin role only."""
        return await self._do(ops.drain_node(node_id, drain))

    @operation("health")
    async def health(self) -> Dict[str, Any]:
        return await self._do(ops.health())

    @operation("ready")
    async def ready(self) -> Dict[str, Any]:
        return await self._do(ops.ready())

    @operation("openapiDocument")
    async def openapi(self) -> Dict[str, Any]:
        return await self._do(ops.openapi())

    @operation("scrapeMetrics")
    async def metrics(self, token: Optional[str] = None) -> str:
        return await self._do(ops.metrics(token))

    @operation("callMcp")
    async def mcp(self, message: Mapping[str, Any]) -> Optional[Dict[str, Any]]:
        return await self._do(ops.mcp(message))


def _async_body(content: Any) -> Any:
    """httpx.AsyncClient streams only async iterables: a file's chunks are wrapped."""
    if content is None or isinstance(content, bytes):
        return content

    async def chunks() -> AsyncIterator[bytes]:
        for chunk in content:
            yield chunk

    return chunks()


class AsyncSession:
    """One sandbox of the caller's; see :class:`brig.Session`."""

    def __init__(self, client: AsyncClient, session_id: str, options: Mapping[str, Any], keep: bool) -> None:
        self.client = client
        self.id = session_id
        self.options = dict(options)
        self.keep = keep
        self.files = AsyncFiles(self)
        self._contexts: Dict[str, AsyncContext] = {}

    def __repr__(self) -> str:
        return f"AsyncSession({self.id!r})"

    async def __aenter__(self) -> "AsyncSession":
        await self.create()
        return self

    async def __aexit__(
        self, kind: Optional[Type[BaseException]], value: Optional[BaseException], tb: Optional[TracebackType]
    ) -> None:
        if not self.keep:
            await self.delete(missing_ok=True)

    @operation("createSession")
    async def create(self) -> SessionInfo:
        return await self.client._do(ops.create_session(self.id, self.options))

    @operation("getSession")
    async def info(self) -> SessionInfo:
        return await self.client._do(ops.get_session(self.id))

    @operation("renewSession")
    async def renew(self, ttl_seconds: Optional[int] = None) -> SessionInfo:
        return await self.client._do(ops.renew_session(self.id, ttl_seconds))

    @operation("suspendSession")
    async def suspend(self) -> SessionInfo:
        return await self.client._do(ops.suspend_session(self.id))

    @operation("deleteSession")
    async def delete(self, missing_ok: bool = False) -> None:
        self._contexts.clear()
        try:
            await self.client._do(ops.delete_session(self.id))
        except NotFound:
            if not missing_ok:
                raise

    @operation("getSessionNetwork")
    async def network(self) -> Network:
        return await self.client._do(ops.get_network(self.id))

    @operation("setSessionNetwork")
    async def set_network(self, allow: List[str]) -> Network:
        return await self.client._do(ops.set_network(self.id, allow))

    @operation("execute")
    async def run(
        self,
        command: Command,
        timeout: Optional[float] = None,
        cwd: Optional[str] = None,
        stdin: Union[str, bytes, None] = None,
        env: Optional[Mapping[str, str]] = None,
        *,
        idempotency_key: Optional[str] = None,
    ) -> Result:
        call = ops.execute(self.id, command, timeout, cwd, stdin, env, idempotency_key)
        return await self.client._do(call, self.client._command_timeout(timeout))

    def stream(
        self,
        command: Command,
        timeout: Optional[float] = None,
        cwd: Optional[str] = None,
        stdin: Union[str, bytes, None] = None,
        env: Optional[Mapping[str, str]] = None,
    ) -> AsyncIterator[Event]:
        """``async for event in s.stream(...)``: Stdout/Stderr as written, then Exit."""
        call = ops.execute_stream(self.id, command, timeout, cwd, stdin, env)
        return self.client._events(call, self.client._command_timeout(timeout))

    @operation("startExecution")
    async def start(
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
    ) -> "AsyncExecution":
        call = ops.start_execution(self.id, command, timeout, cwd, stdin, env, pipe, tty, idempotency_key)
        started = await self.client._do(call)
        return AsyncExecution(self.client, started.execution_id, self.id)

    @operation("listSessionExecutions")
    async def executions(self) -> List[ExecutionStatus]:
        return await self.client._do(ops.list_executions(self.id))

    @operation("createSnapshot")
    async def snapshot(self) -> Snapshot:
        return await self.client._do(ops.create_snapshot(self.id))

    @operation("createContext")
    async def context(self, language: str = "python") -> "AsyncContext":
        made = await self.client._do(ops.create_context(self.id, language))
        return AsyncContext(self.client, str(made["context_id"]), self.id, language)

    async def run_code(self, code: str, language: str = "python", timeout: Optional[float] = None) -> CodeResult:
        context = self._contexts.get(language)
        if context is None:
            context = self._contexts[language] = await self.context(language)
        try:
            return await context.run(code, timeout)
        except (NotFound, Conflict) as err:
            # A context that ended (deleted, past its deadline, its interpreter
            # gone) is forgotten: the next call starts a new one. Its variables
            # are gone, so this call says so instead of silently starting over.
            if isinstance(err, NotFound) or err.code == "execution_not_running":
                self._contexts.pop(language, None)
            raise


class AsyncFiles:
    """The session's ``/workspace``; see :class:`brig.Files`."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session
        self._client = session.client

    @operation("writeFile")
    async def write(self, path: str, data: Union[bytes, str, IO[bytes]]) -> None:
        body, again = _chunks(data)
        await self._client._do(ops.write_file(self.session.id, path, body, again))

    @operation("readFile")
    async def read(self, path: str) -> bytes:
        response = await self._client._send(ops.read_file(self.session.id, path))
        return response.content

    async def download(self, path: str, into: IO[bytes]) -> int:
        return await self._copy(ops.read_file(self.session.id, path), into)

    @operation("listFiles")
    async def list(self, dir: str = ".") -> Listing:
        return await self._client._do(ops.list_files(self.session.id, dir))

    @operation("deleteFile")
    async def remove(self, path: str) -> None:
        await self._client._do(ops.delete_file(self.session.id, path))

    @operation("readArchive")
    async def read_archive(self, into: IO[bytes], dir: Optional[str] = None) -> int:
        return await self._copy(ops.read_archive(self.session.id, dir), into)

    @operation("writeArchive")
    async def write_archive(self, tar: Union[bytes, IO[bytes]], dir: Optional[str] = None) -> None:
        body, again = _chunks(tar)
        await self._client._do(ops.write_archive(self.session.id, dir, body, again))

    async def _copy(self, call: Call[None], into: IO[bytes]) -> int:
        response = await self._client._send(call, stream=True)
        total = 0
        try:
            async for chunk in response.aiter_bytes(CHUNK):
                into.write(chunk)
                total += len(chunk)
        finally:
            await response.aclose()
        return total


class AsyncExecution:
    """A background command; see :class:`brig.Execution`."""

    def __init__(self, client: AsyncClient, execution_id: str, session_id: str) -> None:
        self.client = client
        self.id = execution_id
        self.session_id = session_id

    def __repr__(self) -> str:
        return f"AsyncExecution({self.id!r})"

    @operation("getExecution")
    async def status(self) -> ExecutionStatus:
        return await self.client._do(ops.get_execution(self.id))

    async def wait(self, timeout: Optional[float] = None, poll: float = 0.05) -> Result:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            current = await self.status()
            if current.result is not None:
                return current.result
            if current.failure is not None:
                raise error_for(current.failure.get("error", ""), current.failure.get("detail", ""))
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"execution {self.id} still running after {timeout} s")
            await asyncio.sleep(poll)
            poll = min(poll * 2, 1.0)

    @operation("cancelExecution")
    async def cancel(self) -> ExecutionStatus:
        return await self.client._do(ops.cancel_execution(self.id))

    @operation("getExecutionOutput")
    async def output(self, since: Offsets = Offsets()) -> Output:
        return await self.client._do(ops.execution_output(self.id, since))

    @operation("followExecution")
    async def events(self, since: Offsets = Offsets()) -> AsyncIterator[Event]:
        at, failures = since, 0
        while True:
            try:
                async for event in self.client._events(ops.follow_execution(self.id, at), None):
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
                await asyncio.sleep(delay)

    @operation("writeExecutionStdin")
    async def write(self, data: Union[bytes, str], close: bool = False) -> bool:
        body = data.encode() if isinstance(data, str) else bytes(data)
        return await self.client._do(ops.write_stdin(self.id, body, close))

    async def close_stdin(self) -> bool:
        return await self.write(b"", close=True)

    @operation("signalExecution")
    async def signal(self, signal: str) -> ExecutionStatus:
        return await self.client._do(ops.signal_execution(self.id, signal))

    @operation("resizeExecution")
    async def resize(self, rows: int, cols: int) -> None:
        await self.client._do(ops.resize_execution(self.id, rows, cols))

    @operation("attachExecution")
    async def attach(self, since: Offsets = Offsets()) -> "AsyncAttachment":
        attachment = AsyncAttachment(self.client, ops.attach_path(self.id, since))
        await attachment._open()
        return attachment


class AsyncAttachment:
    """See :class:`brig.Attachment`; ``async for chunk in attachment``."""

    def __init__(self, client: AsyncClient, path: str) -> None:
        self._client = client
        self._path = path
        self._inbox = ws.Inbox()

    async def _open(self) -> None:
        host, port, tls = ws.endpoint(self._client.url)
        opened = asyncio.open_connection(
            host, port, ssl=ssl.create_default_context() if tls else None, server_hostname=host if tls else None
        )
        self._rx, self._tx = await asyncio.wait_for(opened, self._client.timeout)
        request, accept = ws.handshake(self._client.url + self._path, self._client._headers)
        try:
            self._tx.write(request)
            buffer = b""
            while (split := ws.split_head(buffer)) is None:
                buffer += await asyncio.wait_for(self._recv(), self._client.timeout)
            head, rest = split
            if not ws.is_upgrade(head):
                while len(rest) < ws.body_length(head):
                    more = await asyncio.wait_for(self._rx.read(CHUNK), self._client.timeout)
                    if not more:
                        break
                    rest += more
            ws.check_answer(head, rest, accept)
            await self._take(rest)
        except BaseException:
            self._tx.close()
            raise

    async def __aenter__(self) -> "AsyncAttachment":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    async def _recv(self) -> bytes:
        data = await self._rx.read(CHUNK)
        if not data:
            raise ConnectionFailed("the server closed the attachment")
        return data

    @property
    def exit(self) -> Optional[Exit]:
        return self._inbox.exit

    async def _take(self, data: bytes) -> None:
        owed = self._inbox.take(data)
        if owed:
            await self._write(owed)

    async def _write(self, data: bytes) -> None:
        self._tx.write(data)
        await self._tx.drain()

    async def send(self, data: Union[bytes, str]) -> None:
        await self._write(ws.data_frames(data.encode() if isinstance(data, str) else bytes(data)))

    async def resize(self, rows: int, cols: int) -> None:
        await self._write(ws.resize_frame(rows, cols))

    async def signal(self, signal: str) -> None:
        await self._write(ws.signal_frame(signal))

    async def eof(self) -> None:
        await self._write(ws.eof_frame())

    async def recv(self) -> Optional[bytes]:
        while not self._inbox.pending:
            if self._inbox.exit is not None:
                return None
            await self._take(await self._recv())
        return self._inbox.pending.popleft()

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._chunks()

    async def _chunks(self) -> AsyncIterator[bytes]:
        while (chunk := await self.recv()) is not None:
            yield chunk

    async def close(self) -> None:
        try:
            await self._write(ws.frame(ws.CLOSE, b""))
        except OSError:
            pass
        self._tx.close()


class AsyncContext:
    """A code context; see :class:`brig.Context`."""

    def __init__(self, client: AsyncClient, context_id: str, session_id: str, language: str) -> None:
        self.client = client
        self.id = context_id
        self.session_id = session_id
        self.language = language

    def __repr__(self) -> str:
        return f"AsyncContext({self.id!r})"

    @operation("runInContext")
    async def run(self, code: str, timeout: Optional[float] = None) -> CodeResult:
        return await self.client._do(
            ops.run_in_context(self.id, code, timeout), self.client._command_timeout(timeout)
        )

    @operation("interruptContext")
    async def interrupt(self) -> None:
        await self.client._do(ops.interrupt_context(self.id))

    @operation("deleteContext")
    async def delete(self) -> None:
        await self.client._do(ops.delete_context(self.id))
