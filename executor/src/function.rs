//! Functions: the [`Function`] trait every function implements (native ones
//! today; WebAssembly guests will implement it too), the state API a call
//! sees ([`Context`]), and the built-ins.
//!
//! Arguments and results are byte strings. The numeric built-ins read and
//! write decimal text (`"41"`), so any client — the CLI included — can call
//! them without an encoding library.

use std::sync::Arc;
use std::time::Duration;

use kvs_core::lattice::{Lww, Timestamp, Value};
use thiserror::Error;

use crate::store::{Store, StoreError};

/// A failed call; the message names the function.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum FnError {
    #[error("function {function}: {message}")]
    Failed { function: String, message: String },
    #[error("function {function}: store: {source}")]
    Store {
        function: String,
        #[source]
        source: StoreError,
    },
}

/// What a function sees during a call.
pub struct Context<'a> {
    function: &'a str,
    executor_id: u64,
    store: &'a dyn Store,
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
    pub fn new(function: &'a str, executor_id: u64, store: &'a dyn Store) -> Context<'a> {
        Context {
            function,
            executor_id,
            store,
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

/// The built-in functions: name, factory, placement.
pub fn builtins() -> Vec<(&'static str, Factory, Placement)> {
    fn f<F: Function + 'static>(make: fn() -> F) -> Factory {
        Arc::new(move || Box::new(make()) as Box<dyn Function>)
    }
    vec![
        ("increment", f(|| Increment), Placement::Inline),
        ("square", f(|| Square), Placement::Inline),
        ("sum", f(|| Sum), Placement::Inline),
        ("echo", f(|| Echo), Placement::Inline),
        ("sleep_ms", f(|| SleepMs), Placement::Executor),
        ("counter", f(Counter::default), Placement::Executor),
        ("incr_key", f(|| IncrKey), Placement::Executor),
    ]
}
