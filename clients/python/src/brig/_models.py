"""What the API answers, as typed values. Each keeps the raw JSON as ``raw``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, NamedTuple, Optional, Union


def _opt_int(value: Any) -> Optional[int]:
    return None if value is None else int(value)


@dataclass(frozen=True)
class Result:
    """A finished command: ``POST /execute``'s answer, or a finished execution's."""

    stdout: str
    stderr: str
    exit_code: int
    signal: Optional[int]
    timed_out: bool
    truncated: bool
    stdout_truncated: bool
    stderr_truncated: bool
    reason: str
    duration: float
    started_at: str
    finished_at: str
    session_id: str
    session_created: bool
    session_resumed: bool
    raw: Dict[str, Any] = field(repr=False, compare=False)
    #: Set once another node recreated the session after its own was lost,
    #: as :attr:`SessionInfo.recreated` is.
    session_recreated: Optional[Dict[str, Any]] = None

    @property
    def ok(self) -> bool:
        """The command exited 0."""
        return self.exit_code == 0 and not self.timed_out

    @classmethod
    def from_json(cls, raw: Dict[str, Any]) -> "Result":
        return cls(
            stdout=raw.get("stdout", ""),
            stderr=raw.get("stderr", ""),
            exit_code=int(raw.get("exit_code", -1)),
            signal=_opt_int(raw.get("signal")),
            timed_out=bool(raw.get("timed_out", False)),
            truncated=bool(raw.get("truncated", False)),
            stdout_truncated=bool(raw.get("stdout_truncated", False)),
            stderr_truncated=bool(raw.get("stderr_truncated", False)),
            reason=str(raw.get("reason", "")),
            duration=float(raw.get("execution_time", 0.0)),
            started_at=str(raw.get("started_at", "")),
            finished_at=str(raw.get("finished_at", "")),
            session_id=str(raw.get("session_id", "")),
            session_created=bool(raw.get("session_created", False)),
            session_resumed=bool(raw.get("session_resumed", False)),
            raw=raw,
            session_recreated=raw.get("session_recreated"),
        )


class Offsets(NamedTuple):
    """Byte offsets into an execution's stdout and stderr."""

    stdout: int = 0
    stderr: int = 0

    @classmethod
    def parse(cls, text: str) -> Optional["Offsets"]:
        out, sep, err = text.partition(":")
        if not sep or not out.isdigit() or not err.isdigit():
            return None
        return cls(int(out), int(err))

    def __str__(self) -> str:
        return f"{self.stdout}:{self.stderr}"


@dataclass(frozen=True)
class Ending:
    """How an execution ended, as its output endpoints tell it."""

    exit_code: int
    signal: Optional[int]
    reason: str
    raw: Dict[str, Any] = field(repr=False, compare=False)

    @classmethod
    def from_json(cls, raw: Dict[str, Any]) -> "Ending":
        return cls(int(raw.get("exit_code", -1)), _opt_int(raw.get("signal")), str(raw.get("reason", "")), raw)


@dataclass(frozen=True)
class Stdout:
    """Text the command wrote to stdout; ``at`` is where the next byte starts (executions only)."""

    data: str
    at: Optional[Offsets] = None


@dataclass(frozen=True)
class Stderr:
    """Text the command wrote to stderr; ``at`` as for :class:`Stdout`."""

    data: str
    at: Optional[Offsets] = None


@dataclass(frozen=True)
class Exit:
    """The end of a stream: the whole ``result`` (``stream``) or the ``ending`` (an execution's events)."""

    exit_code: int
    signal: Optional[int]
    reason: str
    result: Optional[Result] = None
    at: Optional[Offsets] = None


Event = Union[Stdout, Stderr, Exit]


@dataclass(frozen=True)
class Output:
    """One page of an execution's kept output (``GET /executions/{id}/output``)."""

    stdout: str
    stderr: str
    next: Offsets
    complete: bool
    ending: Optional[Ending]

    @classmethod
    def from_json(cls, raw: Dict[str, Any]) -> "Output":
        ending = raw.get("ending")
        return cls(
            stdout=raw.get("stdout", ""),
            stderr=raw.get("stderr", ""),
            next=Offsets(int(raw.get("stdout_offset", 0)), int(raw.get("stderr_offset", 0))),
            complete=bool(raw.get("complete", False)),
            ending=Ending.from_json(ending) if isinstance(ending, dict) else None,
        )


@dataclass(frozen=True)
class ExecutionStatus:
    """An execution's record: ``running``, ``completed``, ``timed_out``, ``cancelled`` or ``failed``."""

    execution_id: str
    session_id: str
    status: str
    result: Optional[Result]
    failure: Optional[Dict[str, str]]
    raw: Dict[str, Any] = field(repr=False, compare=False)

    @property
    def running(self) -> bool:
        return self.status == "running"

    @classmethod
    def from_json(cls, raw: Dict[str, Any]) -> "ExecutionStatus":
        finished = "exit_code" in raw
        failure = raw.get("failure")
        return cls(
            execution_id=str(raw["execution_id"]),
            session_id=str(raw.get("session_id", "")),
            status=str(raw.get("status", "")),
            result=Result.from_json(raw) if finished else None,
            failure=failure if isinstance(failure, dict) else None,
            raw=raw,
        )


@dataclass(frozen=True)
class SessionInfo:
    """A session as ``GET /sessions/{id}`` tells it."""

    session_id: str
    status: str
    created_at: str
    expires_at: str
    ttl_seconds: int
    image: str
    runtime: str
    memory_limit: int
    cpu_limit: float
    raw: Dict[str, Any] = field(repr=False, compare=False)
    #: Set once another node recreated the session after its own was lost:
    #: ``{"at", "lost_node", "snapshot_id"?}`` (no ``snapshot_id``: its
    #: workspace started empty).
    recreated: Optional[Dict[str, Any]] = None

    @classmethod
    def from_json(cls, raw: Dict[str, Any]) -> "SessionInfo":
        return cls(
            session_id=str(raw["session_id"]),
            status=str(raw.get("status", "")),
            created_at=str(raw.get("created_at", "")),
            expires_at=str(raw.get("expires_at", "")),
            ttl_seconds=int(raw.get("ttl_seconds", 0)),
            image=str(raw.get("image", "")),
            runtime=str(raw.get("runtime", "")),
            memory_limit=int(raw.get("memory_limit", 0)),
            cpu_limit=float(raw.get("cpu_limit", 0.0)),
            raw=raw,
            recreated=raw.get("recreated"),
        )


@dataclass(frozen=True)
class Network:
    """A session's egress: its own patterns, the deployment's default ones, whether it has a proxy."""

    allow: List[str]
    default: List[str]
    enabled: bool

    @classmethod
    def from_json(cls, raw: Dict[str, Any]) -> "Network":
        return cls(list(raw.get("allow", [])), list(raw.get("default", [])), bool(raw.get("enabled", False)))


@dataclass(frozen=True)
class FileEntry:
    name: str
    type: str
    size: int


@dataclass(frozen=True)
class Listing:
    """A directory of the workspace; ``truncated`` when it held more entries than one answer carries."""

    dir: str
    entries: List[FileEntry]
    truncated: bool

    @classmethod
    def from_json(cls, raw: Dict[str, Any]) -> "Listing":
        entries = [FileEntry(str(e["name"]), str(e["type"]), int(e.get("size", 0))) for e in raw.get("entries", [])]
        return cls(str(raw.get("dir", "")), entries, bool(raw.get("truncated", False)))

    def names(self) -> List[str]:
        return [entry.name for entry in self.entries]


@dataclass(frozen=True)
class Snapshot:
    """A stored copy of a session's workspace."""

    snapshot_id: str
    session_id: str
    bytes: int
    sha256: str
    created_at: str

    @classmethod
    def from_json(cls, raw: Dict[str, Any]) -> "Snapshot":
        return cls(
            str(raw["snapshot_id"]),
            str(raw.get("session_id", "")),
            int(raw.get("bytes", 0)),
            str(raw.get("sha256", "")),
            str(raw.get("created_at", "")),
        )


@dataclass(frozen=True)
class CellError:
    """The exception a cell raised."""

    name: str
    message: str
    traceback: str


@dataclass(frozen=True)
class CodeResult:
    """A cell run in a code context: its output, the repr of its last expression, its error."""

    stdout: str
    stderr: str
    result: Optional[str]
    error: Optional[CellError]
    timed_out: bool

    @classmethod
    def from_json(cls, raw: Dict[str, Any]) -> "CodeResult":
        error = raw.get("error")
        return cls(
            stdout=raw.get("stdout", ""),
            stderr=raw.get("stderr", ""),
            result=raw.get("result"),
            error=CellError(str(error["name"]), str(error["message"]), str(error.get("traceback", "")))
            if isinstance(error, dict)
            else None,
            timed_out=bool(raw.get("timed_out", False)),
        )


@dataclass(frozen=True)
class Generated:
    """``POST /generate``: code a model wrote for a query, not run."""

    query: str
    language: str
    code: str
    validation_result: str
    explanation: str

    @classmethod
    def from_json(cls, raw: Dict[str, Any]) -> "Generated":
        return cls(
            str(raw.get("query", "")),
            str(raw.get("language", "")),
            str(raw.get("generated_code", "")),
            str(raw.get("validation_result", "")),
            str(raw.get("explanation", "")),
        )
