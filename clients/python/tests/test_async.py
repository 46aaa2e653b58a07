"""brig.AsyncClient against the live server: the same paths, awaited."""

from __future__ import annotations

import asyncio
import io
from typing import Awaitable, Callable

import pytest

import brig
from conftest import setting


def live(test: Callable[[brig.AsyncClient], Awaitable[None]]) -> None:
    async def run() -> None:
        async with brig.AsyncClient(setting("BRIG_URL"), setting("BRIG_API_KEY")) as client:
            await test(client)

    asyncio.run(run())


def test_sessions_commands_and_errors() -> None:
    async def body(client: brig.AsyncClient) -> None:
        async with client.session(env={"MOOD": "calm"}) as s:
            assert (await s.info()).status == "active"
            result = await s.run(["sh", "-c", 'echo "$MOOD" "$1"', "sh", "it's here"])
            assert result.stdout == "calm it's here\n"
            with pytest.raises(brig.CommandNotAllowed):
                await s.run("rm -rf /")
            together = await asyncio.gather(*(s.run(["echo", str(i)]) for i in range(5)))
            assert [r.stdout for r in together] == [f"{i}\n" for i in range(5)]
            events = [e async for e in s.stream(["sh", "-c", "echo a; echo b >&2"])]
            assert isinstance(events[-1], brig.Exit) and events[-1].result is not None
            assert "".join(e.data for e in events if isinstance(e, brig.Stdout)) == "a\n"
        with pytest.raises(brig.NotFound):
            await s.info()

    live(body)


def test_files_executions_attachment_and_code() -> None:
    async def body(client: brig.AsyncClient) -> None:
        async with client.session() as s:
            await s.files.write("dir/data.bin", io.BytesIO(b"x" * 2_000_000))
            assert await s.files.read("dir/data.bin") == b"x" * 2_000_000
            assert (await s.files.list("dir")).names() == ["data.bin"]
            await s.files.remove("dir/data.bin")

            cat = await s.start("cat", pipe=True, timeout=60)
            assert await cat.write("piped\n", close=True)
            assert (await cat.wait(timeout=30)).stdout == "piped\n"
            followed = [e async for e in cat.events()]
            assert isinstance(followed[-1], brig.Exit)
            assert (await cat.output()).stdout == "piped\n"

            echo = await s.start("cat", pipe=True, timeout=60)
            attached = await echo.attach()
            async with attached:
                await attached.send(b"over the socket\n")
                await attached.eof()
                assert b"".join([chunk async for chunk in attached]) == b"over the socket\n"
            assert attached.exit is not None and attached.exit.exit_code == 0

            assert (await s.run_code("y = 6 * 7")).error is None
            assert (await s.run_code("y")).result == "42"
            sleeper = await s.start("sleep 30")
            assert (await sleeper.cancel()).status == "cancelled"
            assert len(await s.executions()) >= 3

    live(body)
