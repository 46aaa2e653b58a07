"""brig: run commands in hardened, per-session sandboxes.

    import brig

    with brig.Client() as client, client.session() as s:
        print(s.run("echo hi").stdout)
"""

from ._async_client import AsyncAttachment, AsyncClient, AsyncContext, AsyncExecution, AsyncFiles, AsyncSession
from ._calls import Retry
from ._client import Attachment, Client, Context, Execution, Files, Session
from ._errors import (
    BrigError,
    CommandNotAllowed,
    Conflict,
    ConnectionFailed,
    Forbidden,
    Gone,
    InvalidRequest,
    NotFound,
    PayloadTooLarge,
    QuotaExceeded,
    RateLimited,
    ServerError,
    Unauthorized,
    Unavailable,
)
from ._models import (
    CellError,
    CodeResult,
    Ending,
    Event,
    ExecutionStatus,
    Exit,
    FileEntry,
    Generated,
    Listing,
    Network,
    Offsets,
    Output,
    Result,
    SessionInfo,
    Snapshot,
    Stderr,
    Stdout,
)
from ._version import __version__

__all__ = [
    "AsyncAttachment",
    "AsyncClient",
    "AsyncContext",
    "AsyncExecution",
    "AsyncFiles",
    "AsyncSession",
    "Attachment",
    "BrigError",
    "CellError",
    "Client",
    "CodeResult",
    "CommandNotAllowed",
    "Conflict",
    "ConnectionFailed",
    "Context",
    "Ending",
    "Event",
    "Execution",
    "ExecutionStatus",
    "Exit",
    "FileEntry",
    "Files",
    "Forbidden",
    "Generated",
    "Gone",
    "InvalidRequest",
    "Listing",
    "Network",
    "NotFound",
    "Offsets",
    "Output",
    "PayloadTooLarge",
    "QuotaExceeded",
    "RateLimited",
    "Result",
    "Retry",
    "ServerError",
    "Session",
    "SessionInfo",
    "Snapshot",
    "Stderr",
    "Stdout",
    "Unauthorized",
    "Unavailable",
    "__version__",
]
