"""Type stubs of the native module (python/src/lib.rs)."""

import os
from types import TracebackType
from typing import Dict, Iterable, List, Literal, Mapping, Optional, Sequence, Set, Tuple, Type, Union, final, overload

_Bytes = Union[bytes, str]
"""A key or value: bytes, or str (sent as UTF-8)."""
_Argument = Union[bytes, str, int, "Ref"]
"""A function argument: bytes, str, int (sent as its decimal digits) or a Ref."""
_PathOrBytes = Union[bytes, str, "os.PathLike[str]"]
_Lattice = Literal["lww", "set", "ordered_set", "max", "priority", "causal", "multi_causal"]
_Clock = Mapping[int, int]
"""A vector clock: writer id -> counter."""
_Consistency = Literal["lww", "dsrr", "sk", "mk", "dsc"]
_StoredValue = Union[bytes, Set[bytes], List[bytes], int, Tuple[int, bytes]]
"""What `get` returns per lattice: lww bytes; set a set of bytes; ordered_set
a sorted list; max an int; priority (priority, bytes); the causal lattices a
list of bytes (one per concurrent version)."""

__all__ = [
    "AuthError", "Conflict", "Connection", "ConnectionClosed", "ConnectionFailed",
    "FunctionFailed", "Future", "InvalidArgument", "NotFound", "Overloaded", "Ref",
    "SquallError", "Timeout", "Unavailable", "_error_for_status", "connect",
]

class SquallError(Exception):
    """Any error of Squall's."""
    code: Optional[int]
    """The wire status code; None for errors found on this side."""
    status: Optional[str]
    """The status's stable name, e.g. "value_too_large"."""

class ConnectionFailed(SquallError):
    """The node could not be reached, or broke the protocol."""

class ConnectionClosed(ConnectionFailed):
    """The connection was closed (Connection.close)."""

class Timeout(SquallError):
    """No answer within the timeout, or the call's deadline passed on the node."""

class InvalidArgument(SquallError):
    """The request was refused as malformed or over a limit."""

class NotFound(SquallError):
    """No such function or DAG is registered."""

class FunctionFailed(SquallError):
    """A function of the call failed; the message says which and why."""

class Unavailable(SquallError):
    """The node cannot serve the request now; a retry may succeed."""

class Overloaded(Unavailable):
    """The node refused the request to protect itself; retry later."""

class Conflict(SquallError):
    """The call kept reading what its consistency mode forbids, and gave up."""

class AuthError(SquallError):
    """Authentication is required, failed, or does not allow this request."""

@final
class Ref:
    """A key a function reads on the node, just before it runs, as an argument."""
    def __new__(cls, key: _Bytes) -> "Ref": ...
    @property
    def key(self) -> bytes: ...

@final
class Future:
    """The result of a DAG call made with an output key, to come."""
    def result(self, timeout: Optional[float] = None) -> bytes:
        """Waits up to `timeout` seconds (None: 60 s); raises the call's error, or Timeout."""
    def done(self) -> bool:
        """Whether the call has finished (its result or error is stored)."""
    @property
    def key(self) -> bytes: ...

@final
class Connection:
    """A connection to a Squall node (and through it, its cluster).

    Calls from several threads take turns on it; use one connection per
    thread for parallel calls. Usable as a context manager (closes on exit).
    """
    @property
    def addr(self) -> str: ...
    @property
    def closed(self) -> bool: ...
    def put(
        self,
        key: _Bytes,
        value: Union[_Bytes, int, Iterable[_Bytes]],
        lattice: _Lattice = "lww",
        priority: int = 0,
        clock: Optional[_Clock] = None,
        deps: Optional[Mapping[_Bytes, _Clock]] = None,
    ) -> None:
        """Stores `value` under `key`, merged by `lattice` (lww: bytes or str; set and
        ordered_set: an iterable of them; max: an int; priority: bytes with `priority`,
        the lowest winning; causal and multi_causal: bytes at vector `clock`, with
        `deps` (key -> clock) for multi_causal)."""
    def get_causal(self, key: _Bytes) -> Optional[List[Tuple[bytes, Dict[int, int], Dict[bytes, Dict[int, int]]]]]:
        """A causal key's concurrent versions as (bytes, clock, deps), or None."""
    def get(self, key: _Bytes) -> Optional[_StoredValue]:
        """The value under `key`, or None."""
    def get_many(self, keys: Iterable[_Bytes]) -> List[Optional[_StoredValue]]:
        """The values under `keys`, in order (None for each absent)."""
    def delete(self, key: _Bytes) -> bool:
        """Deletes `key`; True if it held a value."""
    def call(self, function: str, *args: _Argument, timeout: Optional[float] = None) -> bytes:
        """Calls `function` with `args`; returns its result."""
    def register_function(self, name: str, builtin: str) -> None:
        """Registers `name` as another name of built-in function `builtin`."""
    def register_wasm(self, name: str, module: _PathOrBytes, memory_mb: int = 0, timeout_ms: int = 0) -> None:
        """Uploads a WebAssembly module (bytes or a path) as function `name`, with its
        sandbox limits (0: the node's defaults)."""
    def delete_function(self, name: str) -> bool: ...
    def list_functions(self) -> List[str]: ...
    def register_dag(
        self,
        name: str,
        functions: Sequence[str],
        edges: Sequence[Tuple[str, str]] = ...,
        replicas: Union[int, Mapping[str, int], None] = None,
        batch: Union[int, Mapping[str, int], None] = None,
    ) -> None:
        """Registers DAG `name`: `functions` in order ("fn#tag" is another use of fn),
        `edges` as (from, to); `replicas` and `batch` for all or by function."""
    def delete_dag(self, name: str) -> bool: ...
    def list_dags(self) -> List[str]: ...
    @overload
    def call_dag(
        self,
        name: str,
        args: Mapping[str, Union[_Argument, Sequence[_Argument]]],
        consistency: _Consistency = "lww",
        output_key: None = None,
        timeout: Optional[float] = None,
        retries: int = 0,
        atomic: bool = False,
    ) -> bytes:
        """Calls DAG `name` with `args` (source function -> argument or list of them);
        returns the sink's result. `mk` and `dsc` calls are always atomic (effects once,
        no fractured reads), with or without `atomic=True`."""
    @overload
    def call_dag(
        self,
        name: str,
        args: Mapping[str, Union[_Argument, Sequence[_Argument]]],
        consistency: _Consistency = "lww",
        *,
        output_key: _Bytes,
        timeout: Optional[float] = None,
        retries: int = 0,
        atomic: bool = False,
    ) -> Future:
        """As above, with the result stored under `output_key`: a Future at once."""
    def put_model(self, name: str, model: _PathOrBytes, labels: Optional[_PathOrBytes] = None, dag: str = "predict", replicas: int = 3) -> None:
        """Stores ONNX model `name` and its labels (one a line) and registers function
        `name`; with labels also the prediction DAG `dag` that `predict` calls."""
    def predict(self, image: _PathOrBytes, model: str = "squeezenet", dag: str = "predict", timeout: Optional[float] = None) -> List[Tuple[int, float, str]]:
        """Classifies a PNG or JPEG image: the top 5 as (class, probability, label)."""
    def ping(self) -> None: ...
    def stats(self) -> List[Dict[str, int]]:
        """Every shard's counters, one dict per shard."""
    def cluster_status(self) -> Dict[str, object]:
        """epoch, node (its id) and members (node, addr, incarnation, shards, state, state_ms)."""
    def close(self) -> None:
        """Closes the connection; later calls raise ConnectionClosed."""
    def __enter__(self) -> "Connection": ...
    def __exit__(self, ty: Optional[Type[BaseException]], value: Optional[BaseException], tb: Optional[TracebackType]) -> bool: ...

def _error_for_status(code: int, message: str) -> SquallError:
    """The exception a node's error with status `code` raises (tests of the mapping)."""

def connect(addr: str, token: Optional[str] = None, timeout: float = 10.0) -> Connection:
    """Connects to the node at "host:port". `token`: the secret for a node with
    authentication (default: $SQUALL_TOKEN if set); `timeout`: seconds for
    connecting and for each call."""
