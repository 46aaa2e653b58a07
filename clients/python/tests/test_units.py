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


def failing(errors: List[Exception], answer: httpx.Response, seen: List[httpx.Request]) -> brig.Client:
    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if errors:
            raise errors.pop(0)
        return answer

    client = brig.Client("http://brig.test", api_key="k" * 20, retry=brig.Retry(backoff=0.001))
    client._http = httpx.Client(base_url=client.url, headers=client._headers, transport=httpx.MockTransport(handle))
    return client


def test_a_command_whose_connection_broke_after_sending_is_not_sent_again() -> None:
    # The server cancels a command whose client went away and releases its key:
    # sending it again would run it again.
    seen: List[httpx.Request] = []
    client = failing([httpx.ReadTimeout("slow")], httpx.Response(200, json=RESULT), seen)
    with pytest.raises(brig.ConnectionFailed):
        client.session("s").run("echo ok")
    assert len(seen) == 1
    # A connection never made reached nobody: that is sent again, even for a command.
    seen.clear()
    client = failing([httpx.ConnectError("refused")], httpx.Response(200, json=RESULT), seen)
    assert client.session("s").run("echo ok").stdout == "ok\n"
    assert len(seen) == 2
    # A read whose connection broke is simply read again.
    seen.clear()
    listing = httpx.Response(200, json={"sessions": []})
    client = failing([httpx.ReadError("reset")], listing, seen)
    assert client.sessions() == [] and len(seen) == 2


def test_paths_and_ids_that_http_would_resolve_elsewhere_are_refused_before_sending() -> None:
    seen: List[httpx.Request] = []
    client = scripted([], seen)
    session = client.session("s")
    for path in ["../../../snapshots/snap-1", "a/./b", "a//b", "a/..", ""]:
        with pytest.raises(brig.InvalidRequest) as refused:
            session.files.remove(path)
        assert refused.value.code == "invalid_path"
    for sid in ["..", "."]:
        with pytest.raises(brig.InvalidRequest):
            client.session(sid).info()
    with pytest.raises(brig.InvalidRequest) as refused:
        session.run(["python3", "-c", "import os\nprint(1)"])
    assert refused.value.code == "invalid_command"
    assert seen == []


def test_files_list_names_the_workspace_by_no_dir_and_paths_are_encoded() -> None:
    seen: List[httpx.Request] = []
    listing = {"dir": "", "entries": [], "truncated": False}
    client = scripted([httpx.Response(200, json=listing), httpx.Response(204)], seen)
    client.session("s").files.list()
    assert seen[0].url.path == "/sessions/s/files" and seen[0].url.query == b""
    client.session("a b").files.remove("dir/na me#1.txt")
    assert seen[1].url.raw_path == b"/sessions/a%20b/files/dir/na%20me%231.txt"


def test_event_lines_split_at_newlines_only() -> None:
    from brig._calls import Lines

    lines = Lines()
    assert lines.feed('data: {"data": "a\u2028b\u0085c"}\nda') == ['data: {"data": "a\u2028b\u0085c"}']
    assert lines.feed("ta: x\n\n") == ["data: x", ""]
