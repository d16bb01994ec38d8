"""Squall's Python client.

Squall is a stateful serverless platform: functions and DAGs of functions
that share state through a built-in key-value store. This package is a thin
layer over Squall's Rust client (the native module ``squall._native``), so
it speaks the same protocol at native speed; Python's GIL is released while
a call waits on the network.

>>> import squall
>>> with squall.connect("127.0.0.1:7400") as c:
...     c.register_dag("compose", ["increment", "square"], [("increment", "square")])
...     c.call_dag("compose", {"increment": 5})
b'36'

Every error is a :class:`SquallError` carrying ``code`` (the wire status
code, ``None`` for errors found on this side) and ``status`` (its stable
name); wrong Python types raise ``TypeError``, bad values ``ValueError``.
"""

from ._native import (
    AuthError,
    Conflict,
    Connection,
    ConnectionClosed,
    ConnectionFailed,
    FunctionFailed,
    Future,
    InvalidArgument,
    NotFound,
    Overloaded,
    Ref,
    SquallError,
    Timeout,
    Unavailable,
    connect,
)

__all__ = [
    "AuthError",
    "Conflict",
    "Connection",
    "ConnectionClosed",
    "ConnectionFailed",
    "FunctionFailed",
    "Future",
    "InvalidArgument",
    "NotFound",
    "Overloaded",
    "Ref",
    "SquallError",
    "Timeout",
    "Unavailable",
    "connect",
]
