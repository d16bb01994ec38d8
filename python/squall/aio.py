"""asyncio variants of the client: each call runs on a worker thread of the
event loop's default executor (the GIL released while it waits on the
network), so the loop keeps running meanwhile.

>>> import asyncio, squall.aio
>>> async def main():
...     c = await squall.aio.connect("127.0.0.1:7400")
...     return await c.call_dag("compose", {"increment": 5})
>>> asyncio.run(main())
b'36'

One connection serves one call at a time, as the blocking one does: open
several for calls in parallel (each costs a thread hand-off, tens of µs, on
top of the blocking call).
"""

import asyncio
import functools
from typing import Any, Callable, List, Optional, TypeVar

from ._native import Connection, Future
from ._native import connect as _connect

T = TypeVar("T")


async def _off_loop(f: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(None, functools.partial(f, *args, **kwargs))


async def connect(addr: str, token: Optional[str] = None, timeout: float = 10.0) -> "AsyncConnection":
    """As `squall.connect`, without blocking the event loop."""
    return AsyncConnection(await _off_loop(_connect, addr, token=token, timeout=timeout))


class AsyncConnection:
    """A `squall.Connection` whose calls are awaited; `sync` is the connection
    itself. Each method takes the arguments of its blocking namesake."""

    def __init__(self, sync: Connection) -> None:
        self.sync = sync

    async def put(self, *args: Any, **kwargs: Any) -> None:
        return await _off_loop(self.sync.put, *args, **kwargs)

    async def get(self, *args: Any, **kwargs: Any) -> Any:
        return await _off_loop(self.sync.get, *args, **kwargs)

    async def get_many(self, *args: Any, **kwargs: Any) -> List[Any]:
        return await _off_loop(self.sync.get_many, *args, **kwargs)

    async def delete(self, *args: Any, **kwargs: Any) -> bool:
        return await _off_loop(self.sync.delete, *args, **kwargs)

    async def call(self, *args: Any, **kwargs: Any) -> bytes:
        return await _off_loop(self.sync.call, *args, **kwargs)

    async def register_dag(self, *args: Any, **kwargs: Any) -> None:
        return await _off_loop(self.sync.register_dag, *args, **kwargs)

    async def register_wasm(self, *args: Any, **kwargs: Any) -> None:
        return await _off_loop(self.sync.register_wasm, *args, **kwargs)

    async def call_dag(self, *args: Any, **kwargs: Any) -> Any:
        """The sink's result; with `output_key`, a `squall.Future` (await
        `result(future)` for its value)."""
        return await _off_loop(self.sync.call_dag, *args, **kwargs)

    async def result(self, future: Future, timeout: Optional[float] = None) -> bytes:
        """The result of a call made with an output key (`Future.result`)."""
        return await _off_loop(future.result, timeout)

    async def put_model(self, *args: Any, **kwargs: Any) -> None:
        return await _off_loop(self.sync.put_model, *args, **kwargs)

    async def predict(self, *args: Any, **kwargs: Any) -> Any:
        return await _off_loop(self.sync.predict, *args, **kwargs)

    async def stats(self) -> Any:
        return await _off_loop(self.sync.stats)

    async def cluster_status(self) -> Any:
        return await _off_loop(self.sync.cluster_status)

    async def ping(self) -> None:
        return await _off_loop(self.sync.ping)

    async def close(self) -> None:
        return await _off_loop(self.sync.close)

    async def __aenter__(self) -> "AsyncConnection":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()
