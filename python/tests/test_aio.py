"""The asyncio variants: awaited calls, calls in parallel on two
connections, an event loop that keeps running while a call waits."""

import asyncio

import pytest

import squall
import squall.aio


def test_awaited_calls_and_a_loop_that_keeps_running(node):
    async def main():
        async with await squall.aio.connect(node.addr) as a, \
                await squall.aio.connect(node.addr) as b:
            await a.put("aio-k", b"v")
            assert await b.get("aio-k") == b"v"
            await a.register_dag("aio_compose", ["increment", "square"],
                                 [("increment", "square")])
            r1, r2 = await asyncio.gather(
                a.call_dag("aio_compose", {"increment": 5}),
                b.call_dag("aio_compose", {"increment": 6}),
            )
            assert (r1, r2) == (b"36", b"49")
            fut = await a.call_dag("aio_compose", {"increment": 7}, output_key="aio-out")
            assert await a.result(fut, timeout=10) == b"64"
            ticks = 0

            async def ticker():
                nonlocal ticks
                while True:
                    await asyncio.sleep(0.01)
                    ticks += 1

            t = asyncio.create_task(ticker())
            await a.call("sleep_ms", 300)
            t.cancel()
            assert ticks >= 5, ticks
            with pytest.raises(squall.NotFound):
                await a.call("no_such_function")

    asyncio.run(main())
