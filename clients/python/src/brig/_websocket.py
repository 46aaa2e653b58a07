"""Just enough WebSocket (RFC 6455) for ``GET /executions/{id}/attach``, with
no dependency: the handshake, masked client frames, and reading the server's
frames (fragments joined, pings answered). I/O-free; the attachments in
``_client`` and ``_async_client`` move the bytes.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import struct
from dataclasses import dataclass
from collections import deque
from typing import Deque, Dict, List, Optional, Tuple, Union
from urllib.parse import urlsplit

from ._errors import BrigError, ConnectionFailed, error_from
from ._models import Ending, Exit

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
TEXT, BINARY, CLOSE, PING, PONG = 0x1, 0x2, 0x8, 0x9, 0xA
MAX_MESSAGE = 4 << 20  # the server sends at most 1 MiB a message
MAX_HEAD = 16 << 10
MAX_SEND = 1 << 20  # the server takes messages of at most 1 MiB


def endpoint(url: str) -> Tuple[str, int, bool]:
    """(host, port, tls) of an http(s) URL."""
    parts = urlsplit(url)
    tls = parts.scheme == "https"
    return parts.hostname or "localhost", parts.port or (443 if tls else 80), tls


def handshake(url: str, headers: Dict[str, str]) -> Tuple[bytes, str]:
    """The upgrade request for ``url`` and the accept value the server must answer."""
    parts = urlsplit(url)
    key = base64.b64encode(os.urandom(16)).decode()
    target = parts.path + (f"?{parts.query}" if parts.query else "")
    lines = [
        f"GET {target} HTTP/1.1",
        f"Host: {parts.netloc}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {key}",
        "Sec-WebSocket-Version: 13",
    ]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    accept = base64.b64encode(hashlib.sha1(key.encode() + GUID).digest()).decode()
    return ("\r\n".join(lines) + "\r\n\r\n").encode(), accept


def body_length(head: bytes) -> int:
    """How much of an error answer's body to wait for (its Content-Length, at most 64 KiB)."""
    for line in head.decode("latin-1").split("\r\n")[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length" and value.strip().isdigit():
            return min(int(value.strip()), 64 << 10)
    return 0


def is_upgrade(head: bytes) -> bool:
    fields = head.split(b"\r\n", 1)[0].split(b" ")
    return len(fields) > 1 and fields[1] == b"101"


def data_frames(data: bytes) -> bytes:
    """Binary messages carrying ``data``, each within what the server accepts."""
    return b"".join(frame(BINARY, data[at : at + MAX_SEND]) for at in range(0, len(data), MAX_SEND))


def check_answer(head: bytes, body: bytes, accept: str) -> None:
    """Raises the API's error unless ``head`` is the 101 that ``accept`` expects."""
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    fields = status_line.split(" ", 2)
    status = int(fields[1]) if len(fields) > 1 and fields[1].isdigit() else 0
    headers = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if status != 101:
        raise error_from(status, body, headers)
    if headers.get("sec-websocket-accept") != accept:
        raise ConnectionFailed("the server's WebSocket handshake did not match")


def frame(opcode: int, payload: bytes) -> bytes:
    """One final, masked client frame."""
    head = bytes([0x80 | opcode])
    size = len(payload)
    if size < 126:
        head += bytes([0x80 | size])
    elif size < 1 << 16:
        head += bytes([0x80 | 126]) + struct.pack(">H", size)
    else:
        head += bytes([0x80 | 127]) + struct.pack(">Q", size)
    mask = os.urandom(4)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload)) if size < 4096 else _mask(payload, mask)
    return head + mask + masked


def _mask(payload: bytes, mask: bytes) -> bytes:
    key = int.from_bytes((mask * (len(payload) // 4 + 1))[: len(payload)], "big")
    return (int.from_bytes(payload, "big") ^ key).to_bytes(len(payload), "big")


def control(message: Dict[str, object]) -> bytes:
    return frame(TEXT, json.dumps(message).encode())


@dataclass
class Message:
    opcode: int
    data: bytes


class Reader:
    """The server's frames from bytes as they arrive: whole messages, and
    the pongs owed (``replies``)."""

    def __init__(self) -> None:
        self.buffer = bytearray()
        self.fragments: List[bytes] = []
        self.fragment_opcode = 0
        self.replies: List[bytes] = []

    def feed(self, data: bytes) -> List[Message]:
        self.buffer += data
        messages: List[Message] = []
        while True:
            parsed = self._frame()
            if parsed is None:
                return messages
            fin, opcode, payload = parsed
            if opcode == PING:
                self.replies.append(frame(PONG, payload))
            elif opcode == PONG:
                pass
            elif opcode == CLOSE:
                messages.append(Message(CLOSE, payload))
            elif opcode == 0:
                self.fragments.append(payload)
                if fin:
                    messages.append(Message(self.fragment_opcode, b"".join(self.fragments)))
                    self.fragments = []
            elif fin:
                messages.append(Message(opcode, payload))
            else:
                self.fragment_opcode, self.fragments = opcode, [payload]
            if sum(map(len, self.fragments)) > MAX_MESSAGE:
                raise ConnectionFailed("a WebSocket message past 4 MiB")

    def _frame(self) -> Optional[Tuple[bool, int, bytes]]:
        buf = self.buffer
        if len(buf) < 2:
            return None
        fin, opcode, masked, size = bool(buf[0] & 0x80), buf[0] & 0x0F, bool(buf[1] & 0x80), buf[1] & 0x7F
        at = 2
        if size == 126:
            if len(buf) < 4:
                return None
            size, at = struct.unpack(">H", buf[2:4])[0], 4
        elif size == 127:
            if len(buf) < 10:
                return None
            size, at = struct.unpack(">Q", buf[2:10])[0], 10
        if size > MAX_MESSAGE:
            raise ConnectionFailed("a WebSocket frame past 4 MiB")
        mask = b""
        if masked:
            mask, at = bytes(buf[at : at + 4]), at + 4
        if len(buf) < at + size:
            return None
        payload = bytes(buf[at : at + size])
        if masked:
            payload = _mask(payload, mask)
        del buf[: at + size]
        return fin, opcode, payload


def last_message(text: bytes) -> Union[Exit, BrigError, None]:
    """The server's closing text message: how the command ended, or why it could not be followed."""
    try:
        body = json.loads(text)
    except ValueError:
        return None
    if isinstance(body, dict) and isinstance(body.get("exit"), dict):
        ending = Ending.from_json(body["exit"])
        return Exit(ending.exit_code, ending.signal, ending.reason)
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        err = body["error"]
        return BrigError(str(err.get("detail", "")), code=str(err.get("error", "")), body=err)
    return None


def split_head(buffer: bytes) -> Optional[Tuple[bytes, bytes]]:
    """(head, rest) once the answer's head has arrived."""
    end = buffer.find(b"\r\n\r\n")
    if end < 0:
        if len(buffer) > MAX_HEAD:
            raise ConnectionFailed("the server's answer head is too long")
        return None
    return buffer[:end], buffer[end + 4 :]


class Inbox:
    """What the server sent an attachment, in order: output bytes, then how it ended."""

    def __init__(self) -> None:
        self.reader = Reader()
        self.pending: Deque[bytes] = deque()
        self.exit: Optional[Exit] = None

    def take(self, data: bytes) -> bytes:
        """Takes bytes as they arrived; returns the pongs owed (raises the server's closing error)."""
        for message in self.reader.feed(data):
            if message.opcode == BINARY:
                self.pending.append(message.data)
            elif message.opcode == TEXT:
                last = last_message(message.data)
                if isinstance(last, BrigError):
                    raise last
                if last is not None:
                    self.exit = last
        owed = b"".join(self.reader.replies)
        self.reader.replies.clear()
        return owed


def signal_frame(signal: str) -> bytes:
    return control({"signal": signal.upper().removeprefix("SIG")})


def resize_frame(rows: int, cols: int) -> bytes:
    return control({"resize": {"rows": rows, "cols": cols}})


def eof_frame() -> bytes:
    return control({"eof": True})
