"""The SDK's own logic, without a server: retries, quoting, events, errors."""

from __future__ import annotations

import json
import shlex
from typing import List

import httpx
import pytest

import brig
from brig._calls import SSEParser, command_line, stream_event


def scripted(answers: List[httpx.Response], seen: List[httpx.Request]) -> brig.Client:
    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return answers.pop(0)

    client = brig.Client("http://brig.test", api_key="k" * 20, retry=brig.Retry(backoff=0.001))
    client._http = httpx.Client(base_url=client.url, headers=client._headers, transport=httpx.MockTransport(handle))
    return client


def busy(status: int = 503, code: str = "sandbox_unavailable", retry_after: str = "0") -> httpx.Response:
    return httpx.Response(status, json={"error": code, "detail": "later"}, headers={"Retry-After": retry_after})


RESULT = {"session_id": "s", "exit_code": 0, "stdout": "ok\n", "stderr": "", "execution_time": 0.01}


def test_a_retried_execute_carries_the_same_idempotency_key() -> None:
    seen: List[httpx.Request] = []
    client = scripted([busy(), busy(429, "rate_limited"), httpx.Response(200, json=RESULT)], seen)
    assert client.session("s").run("echo ok").stdout == "ok\n"
    keys = {request.headers["Idempotency-Key"] for request in seen}
    assert len(seen) == 3 and len(keys) == 1 and keys != {""}
    assert seen[0].headers["X-API-Key"] == "k" * 20


def test_calls_that_are_not_safe_to_repeat_are_not_retried() -> None:
    seen: List[httpx.Request] = []
    client = scripted([busy()], seen)
    with pytest.raises(brig.Unavailable):
        client.execution("e").signal("INT")
    assert len(seen) == 1


def test_a_retry_after_past_the_limit_is_not_waited_for() -> None:
    seen: List[httpx.Request] = []
    client = scripted([busy(429, "rate_limited", "3600")], seen)
    with pytest.raises(brig.RateLimited) as limited:
        client.sessions()
    assert limited.value.retry_after == 3600 and len(seen) == 1


def test_retries_stop_after_their_attempts() -> None:
    seen: List[httpx.Request] = []
    client = scripted([busy() for _ in range(4)], seen)
    with pytest.raises(brig.Unavailable):
        client.sessions()
    assert len(seen) == 4


def test_errors_map_by_status_and_code() -> None:
    cases = {
        (401, "unauthorized"): brig.Unauthorized,
        (403, "command_not_allowed"): brig.CommandNotAllowed,
        (403, "egress_not_allowed"): brig.Forbidden,
        (404, "not_found"): brig.NotFound,
        (409, "context_busy"): brig.Conflict,
        (410, "cursor_expired"): brig.Gone,
        (413, "stdin_too_large"): brig.PayloadTooLarge,
        (413, "snapshot_quota_exceeded"): brig.QuotaExceeded,
        (422, "invalid_env"): brig.InvalidRequest,
        (429, "session_quota_exceeded"): brig.QuotaExceeded,
        (429, "rate_limited"): brig.RateLimited,
        (502, "sandbox_error"): brig.ServerError,
        (503, "shutting_down"): brig.Unavailable,
    }
    for (status, code), kind in cases.items():
        seen: List[httpx.Request] = []
        client = scripted([httpx.Response(status, json={"error": code, "detail": "d"})], seen)
        client.retry = brig.Retry(attempts=1)
        with pytest.raises(kind) as raised:
            client.sessions()
        assert (raised.value.status, raised.value.code, raised.value.detail) == (status, code, "d")


def test_argv_is_quoted_so_posix_splitting_gives_it_back() -> None:
    argv = ["echo", "a b", "it's", '"x"', "$HOME", "", "\\", "*?[]", "~", "#"]
    assert shlex.split(command_line(argv)) == argv
    assert command_line("ls -la") == "ls -la"
    with pytest.raises(ValueError):
        command_line([])


def test_server_sent_events_are_parsed_into_typed_events() -> None:
    parser = SSEParser()
    raw = 'event: stdout\nid: 3:0\ndata: {"data": "hi\\n"}\n\n: comment\n\nevent: exit\nid: 3:0\ndata: '
    raw += json.dumps({"exit_code": 1, "signal": None, "reason": "exited"}) + "\n\n"
    events = [stream_event(*done) for line in raw.split("\n") if (done := parser.feed(line))]
    assert events[0] == brig.Stdout("hi\n", brig.Offsets(3, 0))
    assert isinstance(events[1], brig.Exit) and events[1].exit_code == 1 and events[1].result is None
    with pytest.raises(brig.Unavailable):
        stream_event("error", '{"error": "shutting_down", "detail": "bye"}', None)
