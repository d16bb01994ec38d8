//! `squall._native`: Squall's Python client, a thin layer over the Rust
//! client ([`client::Client`]) — not a second implementation of the
//! protocol. The package `squall` (python/squall) re-exports it with type
//! stubs; this crate's boundary is the conversion between Python objects
//! and the client's types.
//!
//! * **A `Connection`** is one `client::Client` and a tokio runtime of its
//!   own (current thread), behind a mutex: calls from several Python
//!   threads take turns on it. The GIL is released while a call waits on
//!   the network (`Python::allow_threads`), so other Python threads run.
//! * **Values**: `bytes` or `str` (sent as UTF-8) in, and for arguments an
//!   `int` (sent as its decimal digits) or a `Ref` (a key the node reads
//!   just before the call). Out: `bytes` for `lww`, a `set` of `bytes` for
//!   `set`, a sorted `list` for `ordered_set`, an `int` for `max`,
//!   `(priority, bytes)` for `priority`, a `list` of `bytes` (concurrent
//!   versions) for the causal lattices.
//! * **Errors**: every wire status maps to one exception class, each a
//!   `SquallError` carrying `code` (the wire status code; `None` for what
//!   this side found) and `status` (its stable name, e.g.
//!   `"value_too_large"`). Python types that do not fit raise `TypeError`,
//!   values that do not (an unknown lattice) `ValueError`.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use client::{Client, ClientError, ClientOptions};
use pyo3::create_exception;
use pyo3::exceptions::{PyException, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PySet, PyString, PyTuple, PyType};
use wire::message::{
    Arg, CausalVersion, ClockEntry, Consistency, DagCall, DagDef, Dependency, LwwValue,
    PriorityValue, SourceArgs, Value,
};
use wire::Status;

create_exception!(squall, SquallError, PyException, "Any error of Squall's.");
create_exception!(
    squall,
    ConnectionFailed,
    SquallError,
    "The node could not be reached, or broke the protocol."
);
create_exception!(
    squall,
    ConnectionClosed,
    ConnectionFailed,
    "The connection was closed (`Connection.close`)."
);
create_exception!(
    squall,
    Timeout,
    SquallError,
    "No answer within the timeout, or the call's deadline passed on the node."
);
create_exception!(
    squall,
    InvalidArgument,
    SquallError,
    "The request was refused as malformed or over a limit (key, value, frame, DAG)."
);
create_exception!(
    squall,
    NotFound,
    SquallError,
    "No such function or DAG is registered."
);
create_exception!(
    squall,
    FunctionFailed,
    SquallError,
    "A function of the call failed; the message says which and why."
);
create_exception!(
    squall,
    Unavailable,
    SquallError,
    "The node (or a node it needed) cannot serve the request now; a retry may succeed."
);
create_exception!(
    squall,
    Overloaded,
    Unavailable,
    "The node refused the request to protect itself; retry later."
);
create_exception!(
    squall,
    Conflict,
    SquallError,
    "The call kept reading what its consistency mode forbids, and gave up."
);
create_exception!(
    squall,
    AuthError,
    SquallError,
    "Authentication is required, failed, or does not allow this request."
);

/// The exception class of a wire status.
fn class_of(py: Python<'_>, status: Status) -> Bound<'_, PyType> {
    use Status as S;
    match status {
        S::BadFrame
        | S::FrameTooLarge
        | S::VersionMismatch
        | S::InvalidArgument
        | S::KeyTooLarge
        | S::ValueTooLarge
        | S::TypeMismatch
        | S::InvalidDag
        | S::LimitExceeded => py.get_type::<InvalidArgument>(),
        S::UnknownFunction | S::UnknownDag => py.get_type::<NotFound>(),
        S::FunctionFailed => py.get_type::<FunctionFailed>(),
        S::Timeout => py.get_type::<Timeout>(),
        S::Overloaded => py.get_type::<Overloaded>(),
        S::Conflict => py.get_type::<Conflict>(),
        S::HandshakeRequired | S::Unauthenticated | S::Forbidden => py.get_type::<AuthError>(),
        S::ShuttingDown
        | S::StorageFailure
        | S::Internal
        | S::ClockSkew
        | S::WrongOwner
        | S::Unavailable => py.get_type::<Unavailable>(),
    }
}

/// An exception of `class` with `message`, `code` and `status` set.
fn error(
    py: Python<'_>,
    class: Bound<'_, PyType>,
    message: String,
    status: Option<Status>,
) -> PyErr {
    let err = PyErr::from_type(class, message);
    let value = err.value(py);
    // Setting attributes on a fresh exception instance does not fail.
    let _ = value.setattr("code", status.map(Status::code));
    let _ = value.setattr("status", status.map(Status::name));
    err
}

/// The Python exception for a client error.
fn raise(e: ClientError) -> PyErr {
    Python::with_gil(|py| {
        let message = e.to_string();
        match e {
            ClientError::Server { status, .. } => {
                error(py, class_of(py, status), message, Some(status))
            }
            ClientError::Timeout { .. } => error(py, py.get_type::<Timeout>(), message, None),
            ClientError::Io { .. } | ClientError::Protocol { .. } => {
                error(py, py.get_type::<ConnectionFailed>(), message, None)
            }
            ClientError::Invalid(_) => error(py, py.get_type::<InvalidArgument>(), message, None),
            ClientError::UnknownStatus { code, .. } => {
                let err = error(py, py.get_type::<SquallError>(), message, None);
                let _ = err.value(py).setattr("code", code);
                err
            }
        }
    })
}

/// The bytes of a key or value: `bytes`, `bytearray` or `str` (UTF-8).
fn bytes_of(obj: &Bound<'_, PyAny>, what: &str) -> PyResult<Vec<u8>> {
    if let Ok(b) = obj.downcast::<PyBytes>() {
        return Ok(b.as_bytes().to_vec());
    }
    if let Ok(s) = obj.downcast::<PyString>() {
        return Ok(s.to_cow()?.as_bytes().to_vec());
    }
    if let Ok(b) = obj.downcast::<pyo3::types::PyByteArray>() {
        return Ok(b.to_vec());
    }
    Err(PyTypeError::new_err(format!(
        "{what} must be bytes or str, not {}",
        type_name(obj)
    )))
}

/// The name of `obj`'s type, for messages.
fn type_name(obj: &Bound<'_, PyAny>) -> String {
    (obj.get_type().name()).map_or_else(|_| "?".to_owned(), |n| n.to_string())
}

/// A function argument: bytes, str, int (its decimal digits) or [`Ref`].
fn arg_of(obj: &Bound<'_, PyAny>) -> PyResult<Arg> {
    if let Ok(r) = obj.downcast::<Ref>() {
        return Ok(Arg::Ref(r.get().key.clone()));
    }
    if obj.is_instance_of::<pyo3::types::PyInt>() && !obj.is_instance_of::<pyo3::types::PyBool>() {
        let n: i128 = obj.extract()?;
        return Ok(Arg::Value(n.to_string().into_bytes()));
    }
    bytes_of(obj, "an argument").map(Arg::Value).map_err(|_| {
        let name = type_name(obj);
        PyTypeError::new_err(format!(
            "an argument must be bytes, str, int or squall.Ref, not {name}"
        ))
    })
}

/// A value's lattice, as `put` names it.
fn kind(value: &Value) -> &'static str {
    match value {
        Value::Lww(_) => "lww",
        Value::Set(_) => "set",
        Value::OrderedSet(_) => "ordered_set",
        Value::Max(_) => "max",
        Value::Priority(_) => "priority",
        Value::SingleKeyCausal(_) => "causal",
        Value::MultiKeyCausal(_) => "multi_causal",
    }
}

/// A Python object for a value read back.
fn py_value(py: Python<'_>, value: Value) -> PyResult<PyObject> {
    Ok(match value {
        Value::Lww(l) => PyBytes::new(py, &l.bytes).into_any().unbind(),
        Value::Set(items) => {
            let set = PySet::empty(py)?;
            for i in items {
                set.add(PyBytes::new(py, &i))?;
            }
            set.into_any().unbind()
        }
        Value::OrderedSet(items) => PyList::new(py, items.iter().map(|i| PyBytes::new(py, i)))?
            .into_any()
            .unbind(),
        Value::Max(m) => m.into_pyobject(py)?.into_any().unbind(),
        Value::Priority(p) => PyTuple::new(
            py,
            [
                p.priority.into_pyobject(py)?.into_any(),
                PyBytes::new(py, &p.bytes).into_any(),
            ],
        )?
        .into_any()
        .unbind(),
        Value::SingleKeyCausal(vs) | Value::MultiKeyCausal(vs) => {
            PyList::new(py, vs.iter().map(|v| PyBytes::new(py, &v.bytes)))?
                .into_any()
                .unbind()
        }
    })
}

/// A vector clock from a dict of writer → counter (sorted by writer).
fn clock_of(obj: &Bound<'_, PyAny>) -> PyResult<Vec<ClockEntry>> {
    let map: std::collections::BTreeMap<u64, u64> = obj.extract().map_err(|_| {
        PyTypeError::new_err("a clock is a dict of writer id (int) → counter (int)")
    })?;
    Ok(map
        .into_iter()
        .map(|(node, counter)| ClockEntry { node, counter })
        .collect())
}

/// A clock as a dict of writer → counter.
fn clock_dict<'py>(py: Python<'py>, clock: &[ClockEntry]) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    for e in clock {
        d.set_item(e.node, e.counter)?;
    }
    Ok(d)
}

/// A causal value's version for `lattice`: `value`'s bytes at `clock`
/// (required), with `deps` (key → clock) for `multi_causal`.
fn causal_of(
    value: &Bound<'_, PyAny>,
    lattice: &str,
    clock: Option<&Bound<'_, PyAny>>,
    deps: Option<&Bound<'_, PyAny>>,
) -> PyResult<Value> {
    let clock = match clock.map(clock_of).transpose()? {
        Some(c) if !c.is_empty() => c,
        _ => {
            return Err(PyValueError::new_err(format!(
                "a {lattice} value needs clock={{writer: counter, ...}} (its vector clock)"
            )))
        }
    };
    let mut version = CausalVersion {
        clock,
        deps: Vec::new(),
        bytes: bytes_of(value, "a causal value")?,
    };
    if lattice == "causal" {
        if deps.is_some() {
            return Err(PyValueError::new_err(
                "deps are for lattice=\"multi_causal\"; a causal value has none",
            ));
        }
        return Ok(Value::SingleKeyCausal(vec![version]));
    }
    if let Some(deps) = deps {
        let deps = deps.downcast::<PyDict>().map_err(|_| {
            PyTypeError::new_err("deps is a dict of key → clock (a dict of writer → counter)")
        })?;
        for (k, c) in deps.iter() {
            version.deps.push(Dependency {
                key: bytes_of(&k, "a dependency's key")?,
                clock: clock_of(&c)?,
            });
        }
    }
    Ok(Value::MultiKeyCausal(vec![version]))
}

/// The value to put for `lattice`.
fn value_of(
    value: &Bound<'_, PyAny>,
    lattice: &str,
    priority: u64,
    (clock, deps): (Option<&Bound<'_, PyAny>>, Option<&Bound<'_, PyAny>>),
) -> PyResult<Value> {
    if matches!(lattice, "causal" | "multi_causal") {
        return causal_of(value, lattice, clock, deps);
    }
    if clock.is_some() || deps.is_some() {
        return Err(PyValueError::new_err(format!(
            "clock and deps are for the causal lattices, not {lattice:?}"
        )));
    }
    Ok(match lattice {
        "lww" => Value::Lww(LwwValue {
            timestamp: 0,
            writer: 0,
            bytes: bytes_of(value, "an lww value")?,
        }),
        "set" | "ordered_set" => {
            if value.is_instance_of::<PyBytes>() || value.is_instance_of::<PyString>() {
                return Err(PyTypeError::new_err(format!(
                    "a {lattice} value is an iterable of bytes or str (e.g. [b\"a\", b\"b\"]), \
                     not one bytes or str"
                )));
            }
            let items = value
                .try_iter()?
                .map(|i| bytes_of(&i?, "a set member"))
                .collect::<PyResult<Vec<_>>>()?;
            match lattice {
                "set" => Value::Set(items),
                _ => Value::OrderedSet(items),
            }
        }
        "max" => Value::Max(
            value
                .extract::<u64>()
                .map_err(|_| PyTypeError::new_err("a max value is an int from 0 to 2**64 - 1"))?,
        ),
        "priority" => Value::Priority(PriorityValue {
            priority,
            bytes: bytes_of(value, "a priority value")?,
        }),
        other => {
            return Err(PyValueError::new_err(format!(
                "lattice {other:?} is unknown: lww, set, ordered_set, max, priority, causal \
                 or multi_causal"
            )))
        }
    })
}

/// Milliseconds of a timeout in seconds (`None`: 0, the node's default).
fn timeout_ms_of(timeout: Option<f64>) -> PyResult<u32> {
    match timeout {
        None => Ok(0),
        Some(t) if t.is_finite() && t > 0.0 && t * 1000.0 <= f64::from(u32::MAX) => {
            Ok(((t * 1000.0).ceil() as u32).max(1))
        }
        Some(t) => Err(PyValueError::new_err(format!(
            "a timeout is a positive number of seconds, not {t}"
        ))),
    }
}

/// The bytes of a file or of `bytes`: a path (`str` or `os.PathLike`) is read.
fn bytes_or_file(obj: &Bound<'_, PyAny>, what: &str) -> PyResult<Vec<u8>> {
    if let Ok(b) = obj.downcast::<PyBytes>() {
        return Ok(b.as_bytes().to_vec());
    }
    let path: PathBuf = obj.extract().map_err(|_| {
        let name = type_name(obj);
        PyTypeError::new_err(format!("{what} is bytes or a path, not {name}"))
    })?;
    std::fs::read(&path).map_err(|e| {
        pyo3::exceptions::PyOSError::new_err(format!("reading {}: {e}", path.display()))
    })
}

/// A key a function reads on the node, just before it runs, as an argument.
#[pyclass(module = "squall", frozen, eq, hash)]
#[derive(Clone, PartialEq, Eq, Hash)]
struct Ref {
    key: Vec<u8>,
}

#[pymethods]
impl Ref {
    #[new]
    fn new(key: &Bound<'_, PyAny>) -> PyResult<Ref> {
        Ok(Ref {
            key: bytes_of(key, "a key")?,
        })
    }

    #[getter]
    fn key<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        PyBytes::new(py, &self.key)
    }

    fn __repr__(&self) -> String {
        format!("Ref({:?})", String::from_utf8_lossy(&self.key))
    }
}

/// What a connection shares with its futures.
struct Inner {
    runtime: tokio::runtime::Runtime,
    client: Mutex<Option<Client>>,
    addr: String,
}

impl Inner {
    /// Runs `f` on the client with the GIL released.
    fn run<T: Send>(
        &self,
        py: Python<'_>,
        f: impl AsyncFnOnce(&mut Client) -> Result<T, ClientError> + Send,
    ) -> PyResult<T> {
        py.allow_threads(|| {
            let mut guard = self.lock();
            let Some(client) = guard.as_mut() else {
                return Err(Python::with_gil(|py| {
                    let msg = format!("the connection to {} is closed", self.addr);
                    error(py, py.get_type::<ConnectionClosed>(), msg, None)
                }));
            };
            self.runtime.block_on(f(client)).map_err(raise)
        })
    }

    fn lock(&self) -> MutexGuard<'_, Option<Client>> {
        self.client.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A connection to a Squall node (and through it, its cluster).
#[pyclass(module = "squall", frozen)]
struct Connection {
    inner: Arc<Inner>,
}

/// The ranked classes of a prediction: `(class, probability, label)`.
type Ranked = Vec<(usize, f64, String)>;

fn parse_ranked(text: &str) -> PyResult<Ranked> {
    text.lines()
        .map(|line| {
            let mut parts = line.splitn(3, '\t');
            match (parts.next(), parts.next(), parts.next()) {
                (Some(c), Some(p), Some(l)) => match (c.parse(), p.parse()) {
                    (Ok(c), Ok(p)) => Ok((c, p, l.to_owned())),
                    _ => Err(()),
                },
                _ => Err(()),
            }
            .map_err(|()| {
                PyValueError::new_err(format!(
                    "the prediction DAG answered {line:?}, not a ranked class"
                ))
            })
        })
        .collect()
}

/// Per-function option values: one int for all, or a dict by function.
fn per_function(obj: Option<&Bound<'_, PyAny>>, function: &str, what: &str) -> PyResult<u32> {
    let Some(obj) = obj else { return Ok(1) };
    if let Ok(d) = obj.downcast::<PyDict>() {
        return match d.get_item(function)? {
            Some(v) => v.extract(),
            None => Ok(1),
        };
    }
    obj.extract()
        .map_err(|_| PyTypeError::new_err(format!("{what} is an int or a dict of function → int")))
}

#[pymethods]
impl Connection {
    /// Stores `value` under `key`, merged by `lattice`; a causal version
    /// carries its vector `clock` (and, `multi_causal`, its `deps`).
    #[pyo3(signature = (key, value, lattice = "lww", priority = 0, clock = None, deps = None))]
    #[allow(clippy::too_many_arguments)] // Python's keyword arguments
    fn put(
        &self,
        py: Python<'_>,
        key: &Bound<'_, PyAny>,
        value: &Bound<'_, PyAny>,
        lattice: &str,
        priority: u64,
        clock: Option<&Bound<'_, PyAny>>,
        deps: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        let key = bytes_of(key, "a key")?;
        let value = value_of(value, lattice, priority, (clock, deps))?;
        self.inner.run(py, async move |c| c.put(&key, value).await)
    }

    /// A causal key's versions (`None` if absent): `(bytes, clock, deps)`
    /// each, the clock a dict of writer → counter, deps of key → clock.
    fn get_causal<'py>(
        &self,
        py: Python<'py>,
        key: &Bound<'_, PyAny>,
    ) -> PyResult<Option<Vec<Bound<'py, PyTuple>>>> {
        let key = bytes_of(key, "a key")?;
        let versions = match self.inner.run(py, async move |c| c.get(&key).await)? {
            None => return Ok(None),
            Some(Value::SingleKeyCausal(vs) | Value::MultiKeyCausal(vs)) => vs,
            Some(other) => {
                let msg = format!("the key holds a {} value, not a causal one", kind(&other));
                return Err(error(py, py.get_type::<InvalidArgument>(), msg, None));
            }
        };
        let tuple = |v: CausalVersion| -> PyResult<Bound<'py, PyTuple>> {
            let deps = PyDict::new(py);
            for d in &v.deps {
                deps.set_item(PyBytes::new(py, &d.key), clock_dict(py, &d.clock)?)?;
            }
            let bytes = PyBytes::new(py, &v.bytes).into_any();
            PyTuple::new(
                py,
                [bytes, clock_dict(py, &v.clock)?.into_any(), deps.into_any()],
            )
        };
        versions
            .into_iter()
            .map(tuple)
            .collect::<PyResult<_>>()
            .map(Some)
    }

    /// The value under `key`, or `None`.
    fn get(&self, py: Python<'_>, key: &Bound<'_, PyAny>) -> PyResult<Option<PyObject>> {
        let key = bytes_of(key, "a key")?;
        let value = self.inner.run(py, async move |c| c.get(&key).await)?;
        value.map(|v| py_value(py, v)).transpose()
    }

    /// The values under `keys`, in order (`None` for each absent).
    fn get_many(&self, py: Python<'_>, keys: &Bound<'_, PyAny>) -> PyResult<Vec<Option<PyObject>>> {
        let keys = keys
            .try_iter()?
            .map(|k| bytes_of(&k?, "a key"))
            .collect::<PyResult<Vec<_>>>()?;
        let values = self.inner.run(py, async move |c| {
            let refs: Vec<&[u8]> = keys.iter().map(Vec::as_slice).collect();
            c.get_many(&refs).await
        })?;
        values
            .into_iter()
            .map(|v| v.map(|v| py_value(py, v)).transpose())
            .collect()
    }

    /// Deletes `key`; `True` if it held a value.
    fn delete(&self, py: Python<'_>, key: &Bound<'_, PyAny>) -> PyResult<bool> {
        let key = bytes_of(key, "a key")?;
        self.inner.run(py, async move |c| c.delete(&key).await)
    }

    /// Calls function `function` with `args`; returns its result.
    #[pyo3(signature = (function, *args, timeout = None))]
    fn call<'py>(
        &self,
        py: Python<'py>,
        function: &str,
        args: &Bound<'py, PyTuple>,
        timeout: Option<f64>,
    ) -> PyResult<Bound<'py, PyBytes>> {
        let args = args
            .iter()
            .map(|a| arg_of(&a))
            .collect::<PyResult<Vec<_>>>()?;
        let timeout_ms = timeout_ms_of(timeout)?;
        let function = function.to_owned();
        let out = self.inner.run(py, async move |c| {
            c.call_function_with(&function, args, timeout_ms).await
        })?;
        Ok(PyBytes::new(py, &out))
    }

    /// Registers `name` as another name of built-in function `builtin`.
    fn register_function(&self, py: Python<'_>, name: String, builtin: String) -> PyResult<()> {
        self.inner.run(py, async move |c| {
            c.register_function(&name, &builtin).await
        })
    }

    /// Uploads a WebAssembly module (bytes, or a path to a `.wasm` file) as
    /// function `name`, with its sandbox limits (0: the node's defaults).
    #[pyo3(signature = (name, module, memory_mb = 0, timeout_ms = 0))]
    fn register_wasm(
        &self,
        py: Python<'_>,
        name: String,
        module: &Bound<'_, PyAny>,
        memory_mb: u32,
        timeout_ms: u32,
    ) -> PyResult<()> {
        let module = bytes_or_file(module, "a module")?;
        self.inner.run(py, async move |c| {
            c.register_wasm(&name, module, memory_mb, timeout_ms).await
        })
    }

    /// Removes function `name`; `True` if it existed.
    fn delete_function(&self, py: Python<'_>, name: String) -> PyResult<bool> {
        self.inner
            .run(py, async move |c| c.delete_function(&name).await)
    }

    /// Every registered function's name.
    fn list_functions(&self, py: Python<'_>) -> PyResult<Vec<String>> {
        self.inner.run(py, async move |c| c.list_functions().await)
    }

    /// Registers DAG `name`: `functions` in order (fan-in arguments follow
    /// it; `fn#tag` is another use of `fn`), `edges` as (from, to) pairs;
    /// `replicas` and `batch` an int for every function or a dict by name.
    #[pyo3(signature = (name, functions, edges = Vec::new(), replicas = None, batch = None))]
    fn register_dag(
        &self,
        py: Python<'_>,
        name: String,
        functions: Vec<String>,
        edges: Vec<(String, String)>,
        replicas: Option<&Bound<'_, PyAny>>,
        batch: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        let fs: Vec<&str> = functions.iter().map(String::as_str).collect();
        let es: Vec<(&str, &str)> = edges
            .iter()
            .map(|(a, b)| (a.as_str(), b.as_str()))
            .collect();
        let mut def = DagDef::new(&name, &fs, &es);
        for f in &mut def.functions {
            let fname = String::from_utf8_lossy(&f.name).into_owned();
            f.replicas = per_function(replicas, &fname, "replicas")?;
            f.batch_max = per_function(batch, &fname, "batch")?;
        }
        self.inner.run(py, async move |c| c.register_dag(def).await)
    }

    /// Removes DAG `name`; `True` if it existed.
    fn delete_dag(&self, py: Python<'_>, name: String) -> PyResult<bool> {
        self.inner.run(py, async move |c| c.delete_dag(&name).await)
    }

    /// Every registered DAG's name.
    fn list_dags(&self, py: Python<'_>) -> PyResult<Vec<String>> {
        self.inner.run(py, async move |c| c.list_dags().await)
    }

    /// Calls DAG `name` with `args` (source function → one argument or a
    /// list of them). Returns the sink's result; with `output_key`, a
    /// `Future` at once (the node stores the result under that key).
    #[pyo3(signature = (name, args, consistency = "lww", output_key = None, timeout = None, retries = 0, atomic = false))]
    #[allow(clippy::too_many_arguments)] // Python's keyword arguments
    fn call_dag(
        &self,
        py: Python<'_>,
        name: String,
        args: &Bound<'_, PyDict>,
        consistency: &str,
        output_key: Option<&Bound<'_, PyAny>>,
        timeout: Option<f64>,
        retries: u32,
        atomic: bool,
    ) -> PyResult<PyObject> {
        let mut sources = Vec::with_capacity(args.len());
        for (function, a) in args.iter() {
            let function: String = function.extract().map_err(|_| {
                PyTypeError::new_err("args maps source function names (str) to arguments")
            })?;
            let list = match a.downcast::<PyList>() {
                Ok(l) => l.iter().map(|x| arg_of(&x)).collect::<PyResult<Vec<_>>>()?,
                Err(_) => match a.downcast::<PyTuple>() {
                    Ok(t) => t.iter().map(|x| arg_of(&x)).collect::<PyResult<Vec<_>>>()?,
                    Err(_) => vec![arg_of(&a)?],
                },
            };
            sources.push(SourceArgs {
                function: function.into_bytes(),
                args: list,
            });
        }
        let mode = Consistency::from_name(consistency).ok_or_else(|| {
            PyValueError::new_err(format!(
                "consistency {consistency:?} is unknown: lww, dsrr, sk, mk or dsc"
            ))
        })?;
        let mut call = DagCall::new(&name, sources).with_consistency(mode);
        call.timeout_ms = timeout_ms_of(timeout)?;
        call.retries = retries;
        if atomic {
            let mut id = [0u8; 8];
            getrandom::fill(&mut id)
                .map_err(|e| PyValueError::new_err(format!("no randomness: {e}")))?;
            // Transaction ids are 1 to 2^58 - 1.
            call = call.with_txn((u64::from_le_bytes(id) >> 6).max(1));
        }
        match output_key {
            None => {
                let out = self
                    .inner
                    .run(py, async move |c| c.call_dag_with(call).await)?;
                Ok(PyBytes::new(py, &out).into_any().unbind())
            }
            Some(key) => {
                let key = bytes_of(key, "an output key")?;
                call.output_key = key.clone();
                self.inner
                    .run(py, async move |c| c.call_dag_to_key(call).await)?;
                let future = Future {
                    inner: self.inner.clone(),
                    key,
                };
                Ok(Py::new(py, future)?.into_any())
            }
        }
    }

    /// Stores model `name` (ONNX: bytes or a path) with its class labels
    /// (bytes, or a path; one label a line) and registers function `name`
    /// running it; with labels, also the prediction DAG `dag` (preprocess →
    /// `replicas` uses of the model → average → top 5) that `predict` calls.
    #[pyo3(signature = (name, model, labels = None, dag = "predict", replicas = 3))]
    fn put_model(
        &self,
        py: Python<'_>,
        name: String,
        model: &Bound<'_, PyAny>,
        labels: Option<&Bound<'_, PyAny>>,
        dag: &str,
        replicas: u32,
    ) -> PyResult<()> {
        let model = bytes_or_file(model, "a model")?;
        let labels = labels.map(|l| bytes_or_file(l, "labels")).transpose()?;
        let def = labels
            .is_some()
            .then(|| client::pipeline::prediction_dag(dag, &name, replicas));
        self.inner.run(py, async move |c| {
            c.put_model(&name, &model, labels.as_deref()).await?;
            match def {
                Some(def) => c.register_dag(def).await,
                None => Ok(()),
            }
        })
    }

    /// Classifies an image (PNG or JPEG: bytes or a path) with the
    /// prediction DAG; returns the top 5 as `(class, probability, label)`.
    #[pyo3(signature = (image, model = "squeezenet", dag = "predict", timeout = None))]
    fn predict(
        &self,
        py: Python<'_>,
        image: &Bound<'_, PyAny>,
        model: &str,
        dag: &str,
        timeout: Option<f64>,
    ) -> PyResult<Ranked> {
        let image = bytes_or_file(image, "an image")?;
        let call = client::pipeline::prediction_call(dag, model, image, timeout_ms_of(timeout)?);
        let out = self
            .inner
            .run(py, async move |c| c.call_dag_with(call).await)?;
        parse_ranked(&String::from_utf8_lossy(&out))
    }

    /// For benchmarks (python/bench/overhead.py): `calls` serial calls of
    /// DAG `name` with `arg` for source function `source`, in a Rust loop on
    /// this connection — the Rust client's cost, no Python in between; each
    /// call's time in µs.
    fn _time_rust_calls(
        &self,
        py: Python<'_>,
        name: String,
        source: String,
        arg: Vec<u8>,
        calls: usize,
    ) -> PyResult<Vec<f64>> {
        self.inner.run(py, async move |c| {
            let mut took_us = Vec::with_capacity(calls);
            for _ in 0..calls {
                let t = std::time::Instant::now();
                let args = vec![SourceArgs::values(&source, vec![arg.clone()])];
                c.call_dag_with(DagCall::new(&name, args)).await?;
                took_us.push(t.elapsed().as_secs_f64() * 1e6);
            }
            Ok(took_us)
        })
    }

    /// One round trip to the node.
    fn ping(&self, py: Python<'_>) -> PyResult<()> {
        self.inner.run(py, async move |c| c.ping(0).await)
    }

    /// Every shard's counters, one dict per shard.
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Vec<Bound<'py, PyDict>>> {
        let stats = self.inner.run(py, async move |c| c.stats().await)?;
        stats
            .into_iter()
            .map(|s| {
                let d = PyDict::new(py);
                macro_rules! put {
                    ($($f:ident),*) => { $( d.set_item(stringify!($f), s.$f)?; )* };
                }
                put!(
                    shard,
                    live_keys,
                    tombstones,
                    gets,
                    puts,
                    deletes,
                    errors,
                    forwarded_out,
                    forwarded_in,
                    connections,
                    connections_refused,
                    last_lsn,
                    durable_lsn,
                    wal_bytes,
                    snapshots,
                    uptime_ms,
                    node_forwards,
                    stale_epoch,
                    primary_keys,
                    cache_keys,
                    cache_bytes,
                    cache_hits,
                    cache_misses
                );
                Ok(d)
            })
            .collect()
    }

    /// The node's view of its cluster: `epoch`, `node` (its id) and
    /// `members` (dicts of `node`, `addr`, `incarnation`, `shards`,
    /// `state` — "up", "down" or "leaving" — and `state_ms`).
    fn cluster_status<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let view = self
            .inner
            .run(py, async move |c| c.cluster_status().await)?;
        let d = PyDict::new(py);
        d.set_item("epoch", view.epoch)?;
        d.set_item("node", format!("{:016x}", view.node))?;
        let members = PyList::empty(py);
        for m in view.members {
            let md = PyDict::new(py);
            md.set_item("node", format!("{:016x}", m.node))?;
            md.set_item("addr", String::from_utf8_lossy(&m.addr))?;
            md.set_item("incarnation", m.incarnation)?;
            md.set_item("shards", m.shards)?;
            let state = match m.state {
                wire::message::MEMBER_UP => "up",
                wire::message::MEMBER_DOWN => "down",
                wire::message::MEMBER_LEAVING => "leaving",
                _ => "unknown",
            };
            md.set_item("state", state)?;
            md.set_item("state_ms", m.state_ms)?;
            members.append(md)?;
        }
        d.set_item("members", members)?;
        Ok(d)
    }

    /// Closes the connection; later calls raise `ConnectionClosed`.
    fn close(&self, py: Python<'_>) {
        let client = py.allow_threads(|| self.inner.lock().take());
        drop(client);
    }

    /// Whether `close` was called.
    #[getter]
    fn closed(&self) -> bool {
        self.inner.lock().is_none()
    }

    #[getter]
    fn addr(&self) -> &str {
        &self.inner.addr
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    fn __exit__(
        &self,
        py: Python<'_>,
        _ty: Option<&Bound<'_, PyAny>>,
        _value: Option<&Bound<'_, PyAny>>,
        _tb: Option<&Bound<'_, PyAny>>,
    ) -> bool {
        self.close(py);
        false
    }

    fn __repr__(&self) -> String {
        let state = if self.closed() { "closed" } else { "open" };
        format!("<squall.Connection to {} ({state})>", self.inner.addr)
    }
}

/// The result of a DAG call made with an output key, to come.
#[pyclass(module = "squall", frozen)]
struct Future {
    inner: Arc<Inner>,
    key: Vec<u8>,
}

#[pymethods]
impl Future {
    /// Waits up to `timeout` seconds (`None`: 60 s) for the call's result;
    /// raises the call's error, or `Timeout`.
    #[pyo3(signature = (timeout = None))]
    fn result<'py>(&self, py: Python<'py>, timeout: Option<f64>) -> PyResult<Bound<'py, PyBytes>> {
        let wait = Duration::from_millis(u64::from(match timeout {
            None => 60_000,
            t => timeout_ms_of(t)?,
        }));
        let key = self.key.clone();
        let out = self
            .inner
            .run(py, async move |c| c.wait_for(&key, wait).await)?;
        Ok(PyBytes::new(py, &out))
    }

    /// Whether the call has finished (its result or error is stored).
    fn done(&self, py: Python<'_>) -> PyResult<bool> {
        let error_key = [wire::ERROR_KEY_PREFIX.as_bytes(), &self.key].concat();
        let key = self.key.clone();
        let found = self
            .inner
            .run(py, async move |c| c.get_many(&[&key, &error_key]).await)?;
        Ok(found.iter().any(Option::is_some))
    }

    /// The key the result is stored under.
    #[getter]
    fn key<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        PyBytes::new(py, &self.key)
    }

    fn __repr__(&self) -> String {
        format!(
            "<squall.Future for key {:?}>",
            String::from_utf8_lossy(&self.key)
        )
    }
}

/// The exception a node's error with status `code` raises (for
/// tests of the mapping: most statuses are hard to provoke on purpose).
#[pyfunction]
fn _error_for_status(code: u16, message: String) -> PyErr {
    match Status::from_code(code) {
        Some(status) => raise(ClientError::Server { status, message }),
        None => raise(ClientError::UnknownStatus { code, message }),
    }
}

/// Connects to the Squall node at `addr` ("host:port"). `token`: the secret
/// for a node with authentication (default: the `SQUALL_TOKEN` environment
/// variable, if set); `timeout`: seconds for connecting and for each call.
#[pyfunction]
#[pyo3(signature = (addr, token = None, timeout = 10.0))]
fn connect(
    py: Python<'_>,
    addr: String,
    token: Option<&str>,
    timeout: f64,
) -> PyResult<Connection> {
    let timeout = Duration::from_millis(u64::from(timeout_ms_of(Some(timeout))?));
    let token = match token {
        Some(t) => {
            Some(wire::auth::Secret::new(t.trim().as_bytes()).map_err(PyValueError::new_err)?)
        }
        None => client::load_token(None).map_err(PyValueError::new_err)?,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| pyo3::exceptions::PyOSError::new_err(format!("no runtime: {e}")))?;
    let opts = ClientOptions {
        timeout,
        client_name: "squall-python".to_owned(),
        token,
        ..ClientOptions::default()
    };
    let client = py.allow_threads(|| {
        runtime
            .block_on(Client::connect(&addr, opts))
            .map_err(raise)
    })?;
    Ok(Connection {
        inner: Arc::new(Inner {
            runtime,
            client: Mutex::new(Some(client)),
            addr,
        }),
    })
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add_function(wrap_pyfunction!(connect, m)?)?;
    m.add_function(wrap_pyfunction!(_error_for_status, m)?)?;
    m.add_class::<Connection>()?;
    m.add_class::<Ref>()?;
    m.add_class::<Future>()?;
    m.add("SquallError", py.get_type::<SquallError>())?;
    m.add("ConnectionFailed", py.get_type::<ConnectionFailed>())?;
    m.add("ConnectionClosed", py.get_type::<ConnectionClosed>())?;
    m.add("Timeout", py.get_type::<Timeout>())?;
    m.add("InvalidArgument", py.get_type::<InvalidArgument>())?;
    m.add("NotFound", py.get_type::<NotFound>())?;
    m.add("FunctionFailed", py.get_type::<FunctionFailed>())?;
    m.add("Unavailable", py.get_type::<Unavailable>())?;
    m.add("Overloaded", py.get_type::<Overloaded>())?;
    m.add("Conflict", py.get_type::<Conflict>())?;
    m.add("AuthError", py.get_type::<AuthError>())?;
    Ok(())
}
