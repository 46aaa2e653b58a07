"""brig.Client against the live server."""

from __future__ import annotations

import io
import os
import tarfile
import time

import pytest

import brig
from conftest import setting


def test_run_sends_a_string_as_written_and_a_list_as_exactly_its_arguments(session: brig.Session) -> None:
    assert session.run("echo hi there").stdout == "hi there\n"
    tricky = ["a b", "it's", '"quoted"', "$HOME", "*", ";", "", "back\\slash"]
    result = session.run(["sh", "-c", 'for a in "$@"; do echo "[$a]"; done', "sh", *tricky])
    assert result.ok, result
    assert result.stdout.splitlines() == [f"[{a}]" for a in tricky]
    assert result.reason == "exited"
    assert result.duration > 0
    assert result.session_id == session.id


def test_run_takes_stdin_env_cwd_and_reports_timeouts_and_exit_codes(session: brig.Session) -> None:
    assert session.run("cat", stdin="fed in\n").stdout == "fed in\n"
    assert session.run("cat", stdin=b"bytes too").stdout == "bytes too"
    assert session.run(["sh", "-c", "echo $GREETING"], env={"GREETING": "hello"}).stdout == "hello\n"
    session.run("mkdir -p sub/dir")
    assert session.run("pwd", cwd="/workspace/sub/dir").stdout == "/workspace/sub/dir\n"
    failed = session.run(["sh", "-c", "echo oops >&2; exit 3"])
    assert (failed.exit_code, failed.stderr, failed.ok) == (3, "oops\n", False)
    slow = session.run("sleep 5", timeout=0.5)
    assert slow.timed_out and slow.exit_code == 124 and slow.reason == "timed_out"


def test_errors_are_typed_with_the_api_code_and_detail(client: brig.Client, session: brig.Session) -> None:
    with pytest.raises(brig.CommandNotAllowed) as refused:
        session.run("rm -rf /workspace")
    assert refused.value.status == 403 and refused.value.code == "command_not_allowed"
    with pytest.raises(brig.InvalidRequest) as bad_env:
        session.run("env", env={"PATH": "/evil"})
    assert bad_env.value.code == "invalid_env" and "PATH" in bad_env.value.detail
    with pytest.raises(brig.InvalidRequest):
        session.run("echo hi", timeout=-1)
    with pytest.raises(brig.NotFound):
        client.session("never-made-here").info()
    with pytest.raises(brig.Unauthorized):
        brig.Client(client.url, api_key="not-a-key-of-this-server").sessions()
    assert issubclass(brig.CommandNotAllowed, brig.BrigError)


def test_the_session_context_creates_and_deletes_and_is_nobody_elses(client: brig.Client, bob: brig.Client) -> None:
    with client.session(memory_limit="256m", ttl_seconds=120, env={"TEAM": "blue"}) as s:
        info = s.info()
        assert info.session_id == s.id and info.status == "active"
        assert info.ttl_seconds == 120 and info.memory_limit == 256 * 1024 * 1024
        assert s.run(["sh", "-c", "echo $TEAM"]).stdout == "blue\n"
        assert s.id in [listed.session_id for listed in client.sessions()]
        assert s.id not in [listed.session_id for listed in bob.sessions()]
        with pytest.raises(brig.NotFound):
            bob.session(s.id).info()
        again = client.session(s.id).create()  # idempotent
        assert again.session_id == s.id
        assert s.renew(ttl_seconds=300).ttl_seconds == 300
        network = s.network()
        assert network.enabled is False and network.allow == []
        with pytest.raises(brig.Forbidden) as egress:
            s.set_network(["pypi.org:443"])
        assert egress.value.code == "egress_not_allowed"
    with pytest.raises(brig.NotFound):
        s.info()
    with client.session(keep=True) as kept:
        pass
    assert kept.info().status == "active"
    kept.delete()
    kept.delete(missing_ok=True)


def test_stream_yields_typed_events_then_the_result(session: brig.Session) -> None:
    events = list(session.stream(["sh", "-c", "echo one; echo two >&2; sleep 0.2; echo three"]))
    assert isinstance(events[-1], brig.Exit)
    assert events[-1].result is not None and events[-1].result.stdout == "one\nthree\n"
    assert events[-1].exit_code == 0
    out = "".join(e.data for e in events if isinstance(e, brig.Stdout))
    err = "".join(e.data for e in events if isinstance(e, brig.Stderr))
    assert (out, err) == ("one\nthree\n", "two\n")
    with pytest.raises(brig.CommandNotAllowed):
        list(session.stream("rm -rf /"))


def test_files_round_trip_small_large_listed_removed_and_archived(session: brig.Session) -> None:
    session.files.write("notes/a.txt", b"alpha")
    session.files.write("notes/b.txt", "beta")
    assert session.files.read("notes/a.txt") == b"alpha"
    assert "notes" in session.files.list().names()  # the workspace itself
    listing = session.files.list("notes")
    assert sorted(listing.names()) == ["a.txt", "b.txt"]
    assert {e.name: e.size for e in listing.entries}["a.txt"] == 5
    big = os.urandom(3 * 1024 * 1024 + 7)
    session.files.write("big.bin", io.BytesIO(big))
    sink = io.BytesIO()
    assert session.files.download("big.bin", sink) == len(big)
    assert sink.getvalue() == big
    assert session.files.read("big.bin") == big
    session.files.remove("notes/b.txt")
    assert session.files.list("notes").names() == ["a.txt"]
    with pytest.raises(brig.NotFound):
        session.files.read("notes/b.txt")

    tar = io.BytesIO()
    session.files.read_archive(tar, dir="notes")
    tar.seek(0)
    with tarfile.open(fileobj=tar) as opened:
        assert "a.txt" in [m.name.lstrip("./") for m in opened.getmembers()]
    made = io.BytesIO()
    with tarfile.open(fileobj=made, mode="w") as out:
        data = b"from a tar"
        member = tarfile.TarInfo("unpacked/x.txt")
        member.size = len(data)
        out.addfile(member, io.BytesIO(data))
    session.files.write_archive(made.getvalue())
    assert session.run("cat unpacked/x.txt").stdout == "from a tar"
    evil = io.BytesIO()
    with tarfile.open(fileobj=evil, mode="w") as out:
        member = tarfile.TarInfo("../escape.txt")
        out.addfile(member, io.BytesIO(b""))
    with pytest.raises(brig.InvalidRequest) as refused:
        session.files.write_archive(io.BytesIO(evil.getvalue()))
    assert refused.value.code == "invalid_archive"


def test_executions_start_wait_cancel_and_list(session: brig.Session) -> None:
    quick = session.start(["sh", "-c", "echo started; exit 4"])
    result = quick.wait(timeout=30)
    assert (result.exit_code, result.stdout) == (4, "started\n")
    assert quick.status().status == "completed"
    slow = session.start("sleep 30")
    assert slow.status().running
    assert slow.cancel().status == "cancelled"
    with pytest.raises(brig.Conflict):
        slow.signal("INT")
    listed = [e.execution_id for e in session.executions()]
    assert listed[-2:] == [quick.id, slow.id]
    waiting = session.start("sleep 5")
    with pytest.raises(TimeoutError):
        waiting.wait(timeout=0.3)
    waiting.cancel()


def test_a_pipe_takes_stdin_and_output_is_read_by_offset_and_followed(session: brig.Session) -> None:
    cat = session.start("cat", pipe=True, timeout=60)
    assert cat.write(b"first line\n") is True
    assert cat.write("second line\n", close=True) is True
    result = cat.wait(timeout=30)
    assert result.stdout == "first line\nsecond line\n"
    page = cat.output()
    assert page.stdout == "first line\nsecond line\n" and page.complete
    assert page.ending is not None and page.ending.reason == "exited"
    tail = cat.output(brig.Offsets(stdout=11))
    assert tail.stdout == "second line\n" and tail.next == page.next
    events = list(cat.events(since=brig.Offsets(stdout=6)))
    assert "".join(e.data for e in events if isinstance(e, brig.Stdout)) == "line\nsecond line\n"
    assert isinstance(events[-1], brig.Exit) and events[-1].exit_code == 0

    counting = session.start(["sh", "-c", "for i in 1 2 3; do echo $i; sleep 0.2; done"])
    seen = [e for e in counting.events()]
    assert "".join(e.data for e in seen if isinstance(e, brig.Stdout)) == "1\n2\n3\n"
    offsets = [e.at for e in seen if isinstance(e, brig.Stdout)]
    assert offsets[-1] == brig.Offsets(6, 0)


def test_signals_and_a_terminal_over_the_attachment(session: brig.Session) -> None:
    sleeper = session.start(["sh", "-c", "sleep 30"])
    time.sleep(0.3)
    sleeper.signal("INT")
    ended = sleeper.wait(timeout=30)
    assert ended.reason == "signalled"
    with pytest.raises(brig.InvalidRequest):
        session.start("sleep 1").signal("STOP")

    shell = session.start(["sh", "-i"], tty=(24, 80), timeout=60)
    with shell.attach() as attached:
        attached.send("stty size\n")
        seen = b""
        while b"24 80" not in seen:
            chunk = attached.recv()
            assert chunk is not None, seen
            seen += chunk
        shell.resize(40, 100)
        attached.send("stty size; exit 3\n")
        rest = b"".join(attached)
    assert b"40 100" in rest
    assert attached.exit is not None and attached.exit.exit_code == 3

    piped = session.start("cat", pipe=True, timeout=60)
    big = os.urandom(3 * 1024 * 1024)  # past the server's 1 MiB a message: sent as several
    with piped.attach() as attached:
        attached.send(b"through the socket\n")
        attached.send(big)
        attached.eof()
        echoed = b"".join(attached)
    assert echoed == b"through the socket\n" + big
    assert attached.exit is not None and attached.exit.exit_code == 0
    piped.wait(timeout=30)  # its record too says it ended (the exit message may come first)
    with pytest.raises(brig.Conflict):
        piped.attach()


def test_run_code_keeps_state_and_contexts_report_errors_and_timeouts(session: brig.Session, bob: brig.Client) -> None:
    assert session.run_code("x = 41").error is None
    assert session.run_code("x + 1").result == "42"
    printed = session.run_code("print('out'); x * 2")
    assert (printed.stdout, printed.result) == ("out\n", "82")
    failed = session.run_code("1 / 0")
    assert failed.error is not None and failed.error.name == "ZeroDivisionError"
    assert "Traceback" in failed.error.traceback
    context = session.context("python")
    spun = context.run("while True: pass", timeout=1)
    assert spun.timed_out and spun.error is not None and spun.error.name == "KeyboardInterrupt"
    assert context.run("'still here'").result == "'still here'"
    context.interrupt()
    with pytest.raises(brig.NotFound):
        bob.context(context.id).run("1")
    context.delete()
    with pytest.raises(brig.NotFound):
        context.run("1")
    with pytest.raises(brig.InvalidRequest):
        session.context("cobol")
    for _ in range(2):  # a language that cannot run is refused each time, not remembered
        with pytest.raises(brig.InvalidRequest):
            session.run_code("1", language="cobol")
    # The context run_code made ends (here: deleted): the next call says so, the one after starts anew.
    session._contexts["python"].delete()
    with pytest.raises(brig.NotFound):
        session.run_code("x")
    fresh = session.run_code("x")
    assert fresh.error is not None and fresh.error.name == "NameError"


def test_snapshots_restore_and_suspend_resumes(client: brig.Client) -> None:
    with client.session() as first:
        first.files.write("kept.txt", b"worth keeping")
        snap = first.snapshot()
        assert snap.session_id == first.id and snap.bytes > 0 and len(snap.sha256) == 64
        assert snap.snapshot_id in [s.snapshot_id for s in client.snapshots()]
        assert client.snapshot(snap.snapshot_id) == snap
        with client.session(from_snapshot=snap.snapshot_id) as second:
            assert second.files.read("kept.txt") == b"worth keeping"
        client.delete_snapshot(snap.snapshot_id)
        with pytest.raises(brig.NotFound):
            client.snapshot(snap.snapshot_id)

        assert first.suspend().status == "suspended"
        resumed = first.run("cat kept.txt")
        assert resumed.session_resumed and resumed.stdout == "worth keeping"


def test_the_service_endpoints_and_mcp(client: brig.Client) -> None:
    assert client.health()["status"] == "ok"
    assert client.ready()["status"] == "ready"
    assert client.openapi()["info"]["title"] == "brig"
    with pytest.raises(brig.Forbidden) as not_admin:
        client.nodes()
    assert not_admin.value.code == "admin_only"
    with pytest.raises(brig.Unauthorized):
        client.metrics("wrong-token")
    assert "brig_" in client.metrics(setting("BRIG_METRICS_TOKEN"))
    with pytest.raises(brig.NotFound) as disabled:
        client.generate("print the time")
    assert disabled.value.code == "not_enabled"
    with pytest.raises(brig.NotFound):
        client.generate_and_execute("print the time")
    hello = client.mcp(
        {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "initialize",
            "params": {"protocolVersion": "2025-03-26", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}},
        }
    )
    assert hello is not None and hello["result"]["serverInfo"]["name"]
    tools = client.mcp({"jsonrpc": "2.0", "id": 2, "method": "tools/list"})
    assert tools is not None and "execute" in [t["name"] for t in tools["result"]["tools"]]


def test_429s_are_retried_honouring_retry_after_and_surface_when_retries_are_off() -> None:
    url, key = setting("BRIG_LIMITED_URL"), setting("BRIG_API_KEY")
    with brig.Client(url, key, retry=brig.Retry(attempts=1)) as impatient:
        with pytest.raises(brig.RateLimited) as limited:
            for _ in range(10):
                impatient.sessions()
        assert limited.value.code == "rate_limited" and limited.value.retry_after
    with brig.Client(url, key) as patient:
        started = time.monotonic()
        for _ in range(4):
            patient.sessions()
        assert time.monotonic() - started > 0.5  # it waited for the budget, as told
