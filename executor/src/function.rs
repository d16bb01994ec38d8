//! Functions: the [`Function`] trait every function implements (native ones,
//! and `wasm-host`'s WebAssembly guests), the state API a call sees
//! ([`Context`]), the built-ins ([`builtins`]) and the test fixtures
//! ([`fixtures`]).
//!
//! Arguments and results are byte strings. The numeric built-ins read and
//! write decimal text (`"41"`), so any client — the CLI included — can call
//! them without an encoding library.

use std::sync::Arc;
use std::time::Duration;

use kvs_core::lattice::{Lww, Timestamp, Value};
use thiserror::Error;

use crate::message::{Delivery, Message, Postbox};
use crate::store::{Store, StoreError};

/// A failed call; the message names the function.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum FnError {
    #[error("function {function}: {message}")]
    Failed { function: String, message: String },
    /// The function panicked; its instance was discarded. A DAG call may be
    /// re-run after this (the next run gets a fresh instance).
    #[error("function {function}: panicked: {message}")]
    Panicked { function: String, message: String },
    /// The function declared its result invalid: with competing replicas
    /// another replica's valid result wins.
    #[error("function {function}: invalid result: {reason}")]
    Invalid { function: String, reason: String },
    /// The function broke a sandbox limit (memory, CPU time, result size);
    /// its instance was discarded.
    #[error("function {function}: {message}")]
    LimitExceeded { function: String, message: String },
    #[error("function {function}: store: {source}")]
    Store {
        function: String,
        #[source]
        source: StoreError,
    },
}

impl FnError {
    /// Whether running the call again may succeed (a panic may come from
    /// lost instance state; a plain error or invalid result is the
    /// function's answer).
    #[must_use]
    pub fn is_retriable(&self) -> bool {
        matches!(
            self,
            FnError::Panicked { .. }
                | FnError::Store {
                    source: StoreError::Conflict(_),
                    ..
                }
        )
    }
}

/// What a function sees during a call.
pub struct Context<'a> {
    function: &'a str,
    executor_id: u64,
    store: &'a dyn Store,
    post: &'a Postbox,
}

impl std::fmt::Debug for Context<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("function", &self.function)
            .field("executor_id", &self.executor_id)
            .finish()
    }
}

impl<'a> Context<'a> {
    pub fn new(
        function: &'a str,
        executor_id: u64,
        store: &'a dyn Store,
        post: &'a Postbox,
    ) -> Context<'a> {
        Context {
            function,
            executor_id,
            store,
            post,
        }
    }
    /// This executor's id (the address other functions `send` to).
    #[must_use]
    pub fn get_id(&self) -> u64 {
        self.executor_id
    }
    pub fn get(&self, key: &[u8]) -> Result<Option<Value>, FnError> {
        self.store.get(key).map_err(|e| self.store_err(e))
    }
    /// Several keys at once; values in the order of `keys`.
    pub fn get_many(&self, keys: &[&[u8]]) -> Result<Vec<Option<Value>>, FnError> {
        self.store.get_many(keys).map_err(|e| self.store_err(e))
    }
    pub fn put(&self, key: &[u8], value: Value) -> Result<(), FnError> {
        self.store.put(key, value).map_err(|e| self.store_err(e))
    }
    /// An LWW put stamped by the store.
    pub fn put_bytes(&self, key: &[u8], bytes: Vec<u8>) -> Result<(), FnError> {
        self.put(key, Value::Lww(Lww::new(Timestamp::default(), bytes)))
    }
    pub fn delete(&self, key: &[u8]) -> Result<bool, FnError> {
        self.store.delete(key).map_err(|e| self.store_err(e))
    }
    /// Sends `bytes` to executor `dest_id`: into its mailbox, or its inbox
    /// key in the store when it cannot be reached directly.
    pub fn send(&self, dest_id: u64, bytes: Vec<u8>) -> Result<Delivery, FnError> {
        self.post
            .send(self.store, self.executor_id, dest_id, bytes)
            .map_err(|e| self.store_err(e))
    }
    /// Messages waiting for this executor (inbox key, then mailbox); empty
    /// if none. Never blocks.
    pub fn recv(&self) -> Result<Vec<Message>, FnError> {
        self.post
            .recv(self.store, self.executor_id)
            .map_err(|e| self.store_err(e))
    }
    /// Declares this call's result invalid (see [`FnError::Invalid`]).
    pub fn invalid(&self, reason: impl Into<String>) -> FnError {
        FnError::Invalid {
            function: self.function.to_owned(),
            reason: reason.into(),
        }
    }
    /// A failure of the running function, with its name.
    pub fn fail(&self, message: impl Into<String>) -> FnError {
        FnError::Failed {
            function: self.function.to_owned(),
            message: message.into(),
        }
    }
    fn store_err(&self, source: StoreError) -> FnError {
        FnError::Store {
            function: self.function.to_owned(),
            source,
        }
    }
}

/// A function. One instance lives per executor and may keep state across
/// calls (Cloudburst's class functions): `call` takes `&mut self`.
pub trait Function: Send {
    fn call(&mut self, cx: &mut Context<'_>, args: &[Vec<u8>]) -> Result<Vec<u8>, FnError>;

    /// Several triggers at once (DAG functions with `batch_max > 1`): one
    /// result per trigger, in order. The default calls `call` for each; a
    /// function that gains from batching (one model inference over many
    /// inputs) overrides it.
    fn call_batch(
        &mut self,
        cx: &mut Context<'_>,
        batch: &[Vec<Vec<u8>>],
    ) -> Vec<Result<Vec<u8>, FnError>> {
        batch.iter().map(|args| self.call(cx, args)).collect()
    }
}

/// Any stateless closure with the right signature is a function.
impl<F> Function for F
where
    F: FnMut(&mut Context<'_>, &[Vec<u8>]) -> Result<Vec<u8>, FnError> + Send,
{
    fn call(&mut self, cx: &mut Context<'_>, args: &[Vec<u8>]) -> Result<Vec<u8>, FnError> {
        self(cx, args)
    }
}

/// A factory for a function given as a closure (`Copy`, so each instance
/// gets its own).
pub fn factory_of<F>(f: F) -> Factory
where
    F: FnMut(&mut Context<'_>, &[Vec<u8>]) -> Result<Vec<u8>, FnError>
        + Send
        + Sync
        + Copy
        + 'static,
{
    Arc::new(move || Box::new(f) as Box<dyn Function>)
}

/// Makes a fresh instance for an executor.
pub type Factory = Arc<dyn Fn() -> Box<dyn Function> + Send + Sync>;

fn int(cx: &Context<'_>, arg: &[u8]) -> Result<i64, FnError> {
    std::str::from_utf8(arg)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .ok_or_else(|| {
            cx.fail(format!(
                "expected a decimal integer, got {:?}",
                String::from_utf8_lossy(arg)
            ))
        })
}

fn one<'b>(cx: &Context<'_>, args: &'b [Vec<u8>]) -> Result<&'b [u8], FnError> {
    match args {
        [a] => Ok(a),
        _ => Err(cx.fail(format!("takes exactly one argument, got {}", args.len()))),
    }
}

fn text(n: i64) -> Vec<u8> {
    n.to_string().into_bytes()
}

struct Increment;
impl Function for Increment {
    fn call(&mut self, cx: &mut Context<'_>, args: &[Vec<u8>]) -> Result<Vec<u8>, FnError> {
        let n = int(cx, one(cx, args)?)?;
        n.checked_add(1)
            .map(text)
            .ok_or_else(|| cx.fail("overflow"))
    }
}

struct Square;
impl Function for Square {
    fn call(&mut self, cx: &mut Context<'_>, args: &[Vec<u8>]) -> Result<Vec<u8>, FnError> {
        let n = int(cx, one(cx, args)?)?;
        n.checked_mul(n)
            .map(text)
            .ok_or_else(|| cx.fail("overflow"))
    }
}

struct Sum;
impl Function for Sum {
    fn call(&mut self, cx: &mut Context<'_>, args: &[Vec<u8>]) -> Result<Vec<u8>, FnError> {
        let mut total = 0i64;
        for a in args {
            total = total
                .checked_add(int(cx, a)?)
                .ok_or_else(|| cx.fail("overflow"))?;
        }
        Ok(text(total))
    }
}

struct Echo;
impl Function for Echo {
    fn call(&mut self, _cx: &mut Context<'_>, args: &[Vec<u8>]) -> Result<Vec<u8>, FnError> {
        Ok(args.concat())
    }
}

/// Counts its calls on this executor (class-function state) and returns the
/// count.
#[derive(Default)]
struct Counter {
    calls: u64,
}
impl Function for Counter {
    fn call(&mut self, _cx: &mut Context<'_>, _args: &[Vec<u8>]) -> Result<Vec<u8>, FnError> {
        self.calls += 1;
        Ok(self.calls.to_string().into_bytes())
    }
}

/// Adds 1 to the decimal LWW value stored at the key given as its argument
/// (missing = 0), stores it, and returns it: state through the store.
struct IncrKey;
impl Function for IncrKey {
    fn call(&mut self, cx: &mut Context<'_>, args: &[Vec<u8>]) -> Result<Vec<u8>, FnError> {
        let key = one(cx, args)?;
        let current = match cx.get(key)? {
            None => 0,
            Some(Value::Lww(l)) => int(cx, l.value())?,
            Some(other) => {
                return Err(cx.fail(format!("key holds a {} value, not a number", other.kind())))
            }
        };
        let next = current.checked_add(1).ok_or_else(|| cx.fail("overflow"))?;
        cx.put_bytes(key, text(next))?;
        Ok(text(next))
    }
}

// Test fixtures (see [`fixtures`]).

/// Sleeps for its argument in milliseconds (≤ 60 000), then returns it.
struct SleepMs;
impl Function for SleepMs {
    fn call(&mut self, cx: &mut Context<'_>, args: &[Vec<u8>]) -> Result<Vec<u8>, FnError> {
        let arg = one(cx, args)?;
        let ms = int(cx, arg)?;
        if !(0..=60_000).contains(&ms) {
            return Err(cx.fail(format!("sleeps 0 to 60000 ms, not {ms}")));
        }
        std::thread::sleep(Duration::from_millis(ms as u64));
        Ok(arg.to_vec())
    }
}

/// Returns this executor's id (`get_id`).
struct WhoAmI;
impl Function for WhoAmI {
    fn call(&mut self, cx: &mut Context<'_>, _args: &[Vec<u8>]) -> Result<Vec<u8>, FnError> {
        Ok(text(cx.get_id() as i64))
    }
}

/// `send_to DEST PAYLOAD`: sends PAYLOAD to executor DEST; returns
/// `direct` or `inbox`.
struct SendTo;
impl Function for SendTo {
    fn call(&mut self, cx: &mut Context<'_>, args: &[Vec<u8>]) -> Result<Vec<u8>, FnError> {
        let [dest, payload] = args else {
            return Err(cx.fail(format!(
                "takes DEST and PAYLOAD, got {} arguments",
                args.len()
            )));
        };
        let dest = u64::try_from(int(cx, dest)?).map_err(|_| cx.fail("DEST is an executor id"))?;
        Ok(match cx.send(dest, payload.clone())? {
            Delivery::Direct => b"direct".to_vec(),
            Delivery::Inbox => b"inbox".to_vec(),
        })
    }
}

/// `recv_wait MS`: waits up to MS (≤ 60 000) milliseconds for messages,
/// polling `recv`; returns their payloads joined by `,`.
struct RecvWait;
impl Function for RecvWait {
    fn call(&mut self, cx: &mut Context<'_>, args: &[Vec<u8>]) -> Result<Vec<u8>, FnError> {
        let ms = int(cx, one(cx, args)?)?;
        if !(0..=60_000).contains(&ms) {
            return Err(cx.fail(format!("waits 0 to 60000 ms, not {ms}")));
        }
        let until = std::time::Instant::now() + Duration::from_millis(ms as u64);
        loop {
            let got = cx.recv()?;
            if !got.is_empty() {
                let parts: Vec<&[u8]> = got.iter().map(|m| m.bytes.as_slice()).collect();
                return Ok(parts.join(&b','));
            }
            if std::time::Instant::now() >= until {
                return Err(cx.fail(format!("no message within {ms} ms")));
            }
            std::thread::sleep(Duration::from_micros(200));
        }
    }
}

/// `valid_on ID`: valid (returns the executor id) only on executor ID;
/// elsewhere it declares its result invalid. For competitive execution.
struct ValidOn;
impl Function for ValidOn {
    fn call(&mut self, cx: &mut Context<'_>, args: &[Vec<u8>]) -> Result<Vec<u8>, FnError> {
        let want = int(cx, args.first().map_or(&[][..], Vec::as_slice))?;
        if cx.get_id() as i64 == want {
            Ok(text(want))
        } else {
            Err(cx.invalid(format!("executor {} is not {want}", cx.get_id())))
        }
    }
}

/// Returns, for every trigger, how many triggers its invocation received
/// (shows batching).
struct BatchSize;
impl Function for BatchSize {
    fn call(&mut self, _cx: &mut Context<'_>, _args: &[Vec<u8>]) -> Result<Vec<u8>, FnError> {
        Ok(b"1".to_vec())
    }
    fn call_batch(
        &mut self,
        _cx: &mut Context<'_>,
        batch: &[Vec<Vec<u8>>],
    ) -> Vec<Result<Vec<u8>, FnError>> {
        let n = text(batch.len() as i64);
        batch.iter().map(|_| Ok(n.clone())).collect()
    }
}

/// `fail_first KEY`: counts its calls in KEY (through the store); the
/// first call panics, later ones return the count. For re-runs.
struct FailFirst;
impl Function for FailFirst {
    fn call(&mut self, cx: &mut Context<'_>, args: &[Vec<u8>]) -> Result<Vec<u8>, FnError> {
        let count = IncrKey.call(cx, args)?;
        assert!(count != b"1", "first call fails on purpose");
        Ok(count)
    }
}

/// `consistency_probe LOG…`: one function of the consistency experiment
/// (`loadgen consistency`; the record formats and the step are the
/// `anomaly` crate's): reads its level's keys through the call's store,
/// writes at the sink, returns its log. A store failure keeps its own
/// error (a session limit stays `LimitExceeded`).
#[derive(Default)]
struct ConsistencyProbe {
    invocations: u64,
}
impl Function for ConsistencyProbe {
    fn call(&mut self, cx: &mut Context<'_>, args: &[Vec<u8>]) -> Result<Vec<u8>, FnError> {
        self.invocations += 1;
        // Unique per executor thread and invocation: tells this
        // invocation's reads from its upstreams'.
        let reader = (cx.get_id() << 32) | (self.invocations & 0xffff_ffff);
        let cx = &*cx;
        let failure = std::cell::RefCell::new(None);
        let keep = |e: FnError| {
            let m = e.to_string();
            failure.borrow_mut().get_or_insert(e);
            m
        };
        let inputs: Vec<&[u8]> = args.iter().map(Vec::as_slice).collect();
        let out = anomaly::probe::probe(
            &inputs,
            reader,
            |ms| std::thread::sleep(Duration::from_millis(u64::from(ms))),
            |key| match cx.get(key.as_bytes()).map_err(keep)? {
                None => Ok(None),
                Some(Value::Lww(l)) => Ok(Some(l.into_parts().1)),
                Some(other) => Err(format!("key {key:?} holds a {} value", other.kind())),
            },
            |key, v, bytes| {
                let ts = Timestamp {
                    clock: v.clock,
                    writer: v.writer,
                };
                cx.put(key.as_bytes(), Value::Lww(Lww::new(ts, bytes)))
                    .map_err(keep)
            },
        );
        match (out, failure.into_inner()) {
            (Ok(log), _) => Ok(log),
            (Err(_), Some(e)) => Err(e),
            (Err(m), None) => Err(cx.fail(m)),
        }
    }
}

/// Where a function may run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Placement {
    /// On the shard's own thread, inside the request: for functions that
    /// never touch the store, never block, and finish in microseconds. No
    /// thread hand-off at all.
    Inline,
    /// On an executor thread beside the shard: anything that uses the store,
    /// blocks, or may run long.
    Executor,
}

fn factory<F: Function + 'static>(make: fn() -> F) -> Factory {
    Arc::new(move || Box::new(make()) as Box<dyn Function>)
}

/// The built-in functions: name, factory, placement.
pub fn builtins() -> Vec<(&'static str, Factory, Placement)> {
    vec![
        ("increment", factory(|| Increment), Placement::Inline),
        ("square", factory(|| Square), Placement::Inline),
        ("sum", factory(|| Sum), Placement::Inline),
        ("echo", factory(|| Echo), Placement::Inline),
        ("counter", factory(Counter::default), Placement::Executor),
        ("incr_key", factory(|| IncrKey), Placement::Executor),
        (
            "consistency_probe",
            factory(ConsistencyProbe::default),
            Placement::Executor,
        ),
    ]
}

/// The test fixtures: functions that exist for tests of the engine (they
/// sleep, report the executor id, pass messages between executors, fail
/// on purpose, show batching). Name, factory, placement; registered by
/// [`Registry::with_fixtures`](crate::registry::Registry::with_fixtures).
pub fn fixtures() -> Vec<(&'static str, Factory, Placement)> {
    vec![
        ("sleep_ms", factory(|| SleepMs), Placement::Executor),
        ("whoami", factory(|| WhoAmI), Placement::Executor),
        ("send_to", factory(|| SendTo), Placement::Executor),
        ("recv_wait", factory(|| RecvWait), Placement::Executor),
        ("valid_on", factory(|| ValidOn), Placement::Executor),
        ("batch_size", factory(|| BatchSize), Placement::Executor),
        ("fail_first", factory(|| FailFirst), Placement::Executor),
    ]
}
