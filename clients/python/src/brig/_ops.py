"""Every operation's request, built once for both clients."""

from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional, Union

from ._calls import (
    Body,
    Call,
    Command,
    drop_none,
    empty_call,
    execute_body,
    file_path,
    idempotent,
    json_call,
    segment,
)
from ._models import (
    CodeResult,
    ExecutionStatus,
    Generated,
    Listing,
    Network,
    Output,
    Offsets,
    Result,
    SessionInfo,
    Snapshot,
)

Stdin = Union[str, bytes, None]


def _session(sid: str, rest: str = "") -> str:
    return f"/sessions/{segment(sid)}{rest}"


def _execution(eid: str, rest: str = "") -> str:
    return f"/executions/{segment(eid)}{rest}"


def _context(cid: str, rest: str = "") -> str:
    return f"/contexts/{segment(cid)}{rest}"


# Sessions


def session_options(
    image: Optional[str],
    memory_limit: Optional[str],
    cpu_limit: Optional[float],
    runtime: Optional[str],
    ttl_seconds: Optional[int],
    env: Optional[Mapping[str, str]],
    network: Optional[List[str]],
    from_snapshot: Optional[str],
) -> Dict[str, Any]:
    """The body of ``POST /sessions`` but the id."""
    return drop_none(
        {
            "image": image,
            "memory_limit": memory_limit,
            "cpu_limit": cpu_limit,
            "runtime": runtime,
            "ttl_seconds": ttl_seconds,
            "env": dict(env) if env is not None else None,
            "network": {"allow": list(network)} if network is not None else None,
            "from_snapshot": from_snapshot,
        }
    )


def create_session(sid: str, options: Mapping[str, Any]) -> Call[SessionInfo]:
    return json_call("POST", "/sessions", SessionInfo.from_json, json=drop_none({"session_id": sid, **options}))


def get_session(sid: str) -> Call[SessionInfo]:
    return json_call("GET", _session(sid), SessionInfo.from_json)


def list_sessions() -> Call[List[SessionInfo]]:
    return json_call("GET", "/sessions", lambda b: [SessionInfo.from_json(s) for s in b["sessions"]])


def delete_session(sid: str) -> Call[None]:
    return empty_call("DELETE", _session(sid))


def renew_session(sid: str, ttl_seconds: Optional[int]) -> Call[SessionInfo]:
    return json_call(
        "POST", _session(sid, "/renew"), SessionInfo.from_json, json=drop_none({"ttl_seconds": ttl_seconds})
    )


def suspend_session(sid: str) -> Call[SessionInfo]:
    return json_call("POST", _session(sid, "/suspend"), SessionInfo.from_json)


def get_network(sid: str) -> Call[Network]:
    return json_call("GET", _session(sid, "/network"), Network.from_json)


def set_network(sid: str, allow: List[str]) -> Call[Network]:
    return json_call("PUT", _session(sid, "/network"), Network.from_json, json={"allow": list(allow)})


# Commands


def execute(
    sid: str,
    command: Command,
    timeout: Optional[float],
    cwd: Optional[str],
    stdin: Stdin,
    env: Optional[Mapping[str, str]],
    idempotency_key: Optional[str],
) -> Call[Result]:
    return json_call(
        "POST",
        "/execute",
        Result.from_json,
        json=execute_body(sid, command, timeout, cwd, stdin, env),
        headers=idempotent(idempotency_key),
    )


def execute_stream(
    sid: str,
    command: Command,
    timeout: Optional[float],
    cwd: Optional[str],
    stdin: Stdin,
    env: Optional[Mapping[str, str]],
) -> Call[None]:
    # A stream is not replayed by an Idempotency-Key, and a stream cut midway
    # is not retried: the command may have run.
    return empty_call(
        "POST",
        "/execute",
        json=execute_body(sid, command, timeout, cwd, stdin, env),
        headers={"Accept": "text/event-stream"},
        retry=False,
    )


def start_execution(
    sid: str,
    command: Command,
    timeout: Optional[float],
    cwd: Optional[str],
    stdin: Stdin,
    env: Optional[Mapping[str, str]],
    pipe: bool,
    tty: Optional[tuple[int, int]],
    idempotency_key: Optional[str],
) -> Call[ExecutionStatus]:
    if pipe and stdin is not None:
        raise ValueError("stdin data and pipe=True are exclusive: write to the pipe instead")
    body = execute_body(sid, command, timeout, cwd, stdin, env)
    if pipe:
        body["stdin"] = "pipe"
    if tty is not None:
        body["tty"] = {"rows": tty[0], "cols": tty[1]}
    return json_call(
        "POST", "/executions", ExecutionStatus.from_json, json=body, headers=idempotent(idempotency_key)
    )


def get_execution(eid: str) -> Call[ExecutionStatus]:
    return json_call("GET", _execution(eid), ExecutionStatus.from_json)


def list_executions(sid: str) -> Call[List[ExecutionStatus]]:
    return json_call("GET", _session(sid, "/executions"), lambda b: [ExecutionStatus.from_json(e) for e in b])


def cancel_execution(eid: str) -> Call[ExecutionStatus]:
    return json_call("POST", _execution(eid, "/cancel"), ExecutionStatus.from_json)


def execution_output(eid: str, since: Offsets) -> Call[Output]:
    params = {"stdout_offset": since.stdout, "stderr_offset": since.stderr}
    return json_call("GET", _execution(eid, "/output"), Output.from_json, params=params)


def follow_execution(eid: str, since: Offsets) -> Call[None]:
    return empty_call(
        "GET",
        _execution(eid, "/events"),
        headers={"Accept": "text/event-stream", "Last-Event-ID": str(since)},
    )


def write_stdin(eid: str, data: bytes, close: bool) -> Call[bool]:
    """True once the command took the bytes (204), False when they wait in the sandbox's queue (202)."""
    params = {"close": "true"} if close else None
    return Call(
        "POST",
        _execution(eid, "/stdin"),
        lambda response: response.status_code == 204,
        params=params,
        content=data,
        headers={"Content-Type": "application/octet-stream"},
        retry=False,
    )


def signal_execution(eid: str, signal: str) -> Call[ExecutionStatus]:
    name = signal.upper().removeprefix("SIG")
    return json_call(
        "POST", _execution(eid, "/signal"), ExecutionStatus.from_json, json={"signal": name}, retry=False
    )


def resize_execution(eid: str, rows: int, cols: int) -> Call[None]:
    return empty_call("POST", _execution(eid, "/resize"), json={"rows": rows, "cols": cols})


def attach_path(eid: str, since: Offsets) -> str:
    return _execution(eid, f"/attach?stdout_offset={since.stdout}&stderr_offset={since.stderr}")


# Code contexts


def create_context(sid: str, language: str) -> Call[Dict[str, Any]]:
    return json_call("POST", _session(sid, "/contexts"), dict, json={"language": language}, retry=False)


def run_in_context(cid: str, code: str, timeout: Optional[float]) -> Call[CodeResult]:
    return json_call(
        "POST",
        _context(cid, "/run"),
        CodeResult.from_json,
        json=drop_none({"code": code, "timeout": timeout}),
        retry=False,
    )


def interrupt_context(cid: str) -> Call[None]:
    # Not repeated: a second interrupt could stop the next cell.
    return empty_call("POST", _context(cid, "/interrupt"), retry=False)


def delete_context(cid: str) -> Call[None]:
    return empty_call("DELETE", _context(cid))


# Files


def write_file(sid: str, path: str, data: Body, retry: bool) -> Call[None]:
    return empty_call(
        "PUT",
        _session(sid, f"/files/{file_path(path)}"),
        content=data,
        headers={"Content-Type": "application/octet-stream"},
        retry=retry,
    )


def read_file(sid: str, path: str) -> Call[None]:
    return empty_call("GET", _session(sid, f"/files/{file_path(path)}"))


def list_files(sid: str, directory: str) -> Call[Listing]:
    # "." is the workspace itself, which the server names by no dir at all.
    params = {"dir": directory} if directory not in ("", ".") else None
    return json_call("GET", _session(sid, "/files"), Listing.from_json, params=params)


def delete_file(sid: str, path: str) -> Call[None]:
    return empty_call("DELETE", _session(sid, f"/files/{file_path(path)}"))


def read_archive(sid: str, directory: Optional[str]) -> Call[None]:
    return empty_call("GET", _session(sid, "/archive"), params=drop_none({"path": directory}))


def write_archive(sid: str, directory: Optional[str], tar: Body, retry: bool) -> Call[None]:
    return empty_call(
        "PUT",
        _session(sid, "/archive"),
        params=drop_none({"path": directory}),
        content=tar,
        headers={"Content-Type": "application/x-tar"},
        retry=retry,
    )


# Snapshots


def create_snapshot(sid: str) -> Call[Snapshot]:
    return json_call("POST", _session(sid, "/snapshots"), Snapshot.from_json, retry=False)


def list_snapshots() -> Call[List[Snapshot]]:
    return json_call("GET", "/snapshots", lambda b: [Snapshot.from_json(s) for s in b["snapshots"]])


def get_snapshot(snap: str) -> Call[Snapshot]:
    return json_call("GET", f"/snapshots/{segment(snap)}", Snapshot.from_json)


def delete_snapshot(snap: str) -> Call[None]:
    return empty_call("DELETE", f"/snapshots/{segment(snap)}")


# The model, the service


def generate(query: str, language: Optional[str]) -> Call[Generated]:
    return json_call(
        "POST", "/generate", Generated.from_json, json=drop_none({"query": query, "language": language}), retry=False
    )


def generate_and_execute(
    query: str,
    language: Optional[str],
    session_id: Optional[str],
    timeout: Optional[float],
    memory_limit: Optional[str],
    cpu_limit: Optional[float],
) -> Call[Result]:
    body = {
        "query": query,
        "language": language,
        "session_id": session_id,
        "timeout": timeout,
        "memory_limit": memory_limit,
        "cpu_limit": cpu_limit,
    }
    return json_call("POST", "/generate-and-execute", Result.from_json, json=drop_none(body), retry=False)


def list_nodes() -> Call[Dict[str, Any]]:
    return json_call("GET", "/nodes", dict)


def drain_node(node_id: str, drain: bool) -> Call[Dict[str, Any]]:
    return json_call("PUT", f"/nodes/{segment(node_id)}/drain", dict, json={"drain": drain})


def health() -> Call[Dict[str, Any]]:
    return json_call("GET", "/health", dict)


def ready() -> Call[Dict[str, Any]]:
    return json_call("GET", "/ready", dict, retry=False)


def openapi() -> Call[Dict[str, Any]]:
    return json_call("GET", "/openapi.json", dict)


def metrics(token: Optional[str]) -> Call[str]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return Call("GET", "/metrics", lambda response: response.text, headers=headers)


def mcp(message: Mapping[str, Any]) -> Call[Optional[Dict[str, Any]]]:
    """One JSON-RPC message; a notification's answer is None."""
    return Call(
        "POST",
        "/mcp",
        lambda response: response.json() if response.content else None,
        json=dict(message),
        headers={"Accept": "application/json, text/event-stream"},
        retry=False,
    )
