//! # squall-guest — Squall functions in Rust, compiled to WebAssembly
//!
//! A function is `fn(&[Vec<u8>]) -> Result<Vec<u8>, Error>`; [`export!`]
//! turns it into a module Squall can run:
//!
//! ```ignore
//! use squall_guest::{export, Error};
//!
//! fn increment(args: &[Vec<u8>]) -> Result<Vec<u8>, Error> {
//!     let n: i64 = squall_guest::text_arg(args, 0)?.parse().map_err(|_| Error::failed("not a number"))?;
//!     Ok((n + 1).to_string().into_bytes())
//! }
//! export!(increment);
//! ```
//!
//! Build with `cargo build --release --target wasm32-unknown-unknown` (a
//! debug build is too large to upload) and register
//! `target/wasm32-unknown-unknown/release/NAME.wasm` with
//! `squall fn register NAME FILE`. The state API ([`get`], [`get_bytes`],
//! [`put`], [`delete`], [`get_id`], [`send`], [`recv`], [`log`]) reaches the
//! node's store and the other executors; [`text_arg`] reads an argument as
//! text. The ABI underneath is specified in Squall's `docs/functions.md`.

use std::sync::Mutex;

/// The host API (module `squall`). Pointers and lengths are guest memory
/// offsets; the host bounds-checks every one.
mod sys {
    #[link(wasm_import_module = "squall")]
    extern "C" {
        pub fn get(key: *const u8, key_len: usize) -> i32;
        pub fn put(key: *const u8, key_len: usize, value: *const u8, value_len: usize);
        pub fn delete(key: *const u8, key_len: usize) -> i32;
        pub fn take_pending(dst: *mut u8);
        pub fn send(dest: i64, bytes: *const u8, len: usize) -> i32;
        pub fn recv() -> i32;
        pub fn fail(kind: i32, message: *const u8, len: usize);
        pub fn log(level: i32, message: *const u8, len: usize);
        pub fn get_id() -> i64;
    }
}

/// Why a call did not produce a result.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Error {
    /// The call failed; the node reports `function_failed` with this text.
    Failed(String),
    /// The result is not valid: with competing replicas, another replica's
    /// valid result wins.
    Invalid(String),
}

impl Error {
    pub fn failed(message: impl Into<String>) -> Error {
        Error::Failed(message.into())
    }
    pub fn invalid(reason: impl Into<String>) -> Error {
        Error::Invalid(reason.into())
    }
}

/// A lattice value (causal values are not readable by guests yet).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Value {
    /// Last writer wins; the node stamps the write.
    Lww(Vec<u8>),
    Set(Vec<Vec<u8>>),
    OrderedSet(Vec<Vec<u8>>),
    Max(u64),
    /// Lowest priority wins.
    Priority(u64, Vec<u8>),
}

fn put_list(out: &mut Vec<u8>, items: &[Vec<u8>]) {
    out.extend_from_slice(&(items.len() as u32).to_le_bytes());
    for i in items {
        out.extend_from_slice(&(i.len() as u32).to_le_bytes());
        out.extend_from_slice(i);
    }
}

fn take_list(mut b: &[u8]) -> Option<Vec<Vec<u8>>> {
    fn next_u32(b: &mut &[u8]) -> Option<usize> {
        let (n, rest) = b.split_at_checked(4)?;
        *b = rest;
        Some(u32::from_le_bytes([n[0], n[1], n[2], n[3]]) as usize)
    }
    let count = next_u32(&mut b)?;
    let mut out = Vec::with_capacity(count.min(1024));
    for _ in 0..count {
        let len = next_u32(&mut b)?;
        let (item, rest) = b.split_at_checked(len)?;
        out.push(item.to_vec());
        b = rest;
    }
    Some(out)
}

impl Value {
    /// The lattice type's name, as the node's messages and CLI spell it:
    /// `lww`, `set`, `ordered-set`, `max`, `priority`.
    pub fn kind(&self) -> &'static str {
        match self {
            Value::Lww(_) => "lww",
            Value::Set(_) => "set",
            Value::OrderedSet(_) => "ordered-set",
            Value::Max(_) => "max",
            Value::Priority(..) => "priority",
        }
    }

    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        match self {
            Value::Lww(b) => {
                out.push(0);
                out.extend_from_slice(b);
            }
            Value::Set(items) => {
                out.push(1);
                put_list(&mut out, items);
            }
            Value::OrderedSet(items) => {
                out.push(2);
                put_list(&mut out, items);
            }
            Value::Max(n) => {
                out.push(3);
                out.extend_from_slice(&n.to_le_bytes());
            }
            Value::Priority(p, b) => {
                out.push(4);
                out.extend_from_slice(&p.to_le_bytes());
                out.extend_from_slice(b);
            }
        }
        out
    }

    fn decode(b: &[u8]) -> Option<Value> {
        let (&tag, rest) = b.split_first()?;
        let num = |r: &[u8]| {
            r.get(..8)
                .and_then(|x| x.try_into().ok())
                .map(u64::from_le_bytes)
        };
        Some(match tag {
            0 => Value::Lww(rest.to_vec()),
            1 => Value::Set(take_list(rest)?),
            2 => Value::OrderedSet(take_list(rest)?),
            3 => Value::Max(num(rest)?),
            4 => Value::Priority(num(rest)?, rest.get(8..)?.to_vec()),
            _ => return None,
        })
    }
}

/// What the host left for `take_pending` (`len` bytes).
fn pending(len: i32) -> Vec<u8> {
    let mut buf = vec![0u8; len as usize];
    // SAFETY: the host writes exactly the `len` bytes it announced into
    // `buf`, which holds that many.
    unsafe { sys::take_pending(buf.as_mut_ptr()) };
    buf
}

/// Reads a key; `None` if it has no value.
pub fn get(key: &[u8]) -> Option<Value> {
    // SAFETY: the host reads `key.len()` bytes at `key`.
    let len = unsafe { sys::get(key.as_ptr(), key.len()) };
    if len < 0 {
        return None;
    }
    Value::decode(&pending(len))
}

/// The LWW bytes at `key`: `Ok(None)` if it has no value, an error naming
/// the stored type if it holds another lattice (`?` fails the call with
/// it: `key "k" holds a value of type max, not lww`).
pub fn get_bytes(key: &[u8]) -> Result<Option<Vec<u8>>, Error> {
    match get(key) {
        None => Ok(None),
        Some(Value::Lww(b)) => Ok(Some(b)),
        Some(other) => Err(Error::failed(format!(
            "key {:?} holds a value of type {}, not lww",
            String::from_utf8_lossy(key),
            other.kind()
        ))),
    }
}

/// Merges `value` into `key` (acknowledged once durable). A store refusal
/// (type mismatch, size) ends the call with the node's reason.
pub fn put(key: &[u8], value: &Value) {
    let v = value.encode();
    // SAFETY: the host reads the two buffers within their lengths.
    unsafe { sys::put(key.as_ptr(), key.len(), v.as_ptr(), v.len()) }
}

/// Deletes `key`; `true` if a live value went away.
pub fn delete(key: &[u8]) -> bool {
    // SAFETY: the host reads `key.len()` bytes at `key`.
    unsafe { sys::delete(key.as_ptr(), key.len()) == 1 }
}

/// This executor's id (what other functions `send` to).
pub fn get_id() -> u64 {
    // SAFETY: no arguments.
    unsafe { sys::get_id() as u64 }
}

/// How a message was delivered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Delivery {
    /// Into the destination executor's mailbox.
    Direct,
    /// Into its inbox key in the store (it was unreachable).
    Inbox,
}

/// Sends `bytes` to executor `dest`.
pub fn send(dest: u64, bytes: &[u8]) -> Delivery {
    // SAFETY: the host reads `bytes.len()` bytes at `bytes`.
    match unsafe { sys::send(dest as i64, bytes.as_ptr(), bytes.len()) } {
        0 => Delivery::Direct,
        _ => Delivery::Inbox,
    }
}

/// A message and the executor that sent it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    pub from: u64,
    pub bytes: Vec<u8>,
}

/// Messages waiting for this executor (never blocks; empty if none).
pub fn recv() -> Vec<Message> {
    // SAFETY: no arguments.
    let len = unsafe { sys::recv() };
    if len <= 0 {
        return Vec::new();
    }
    let buf = pending(len);
    let mut b = &buf[..];
    let mut out = Vec::new();
    let count = b
        .get(..4)
        .map_or(0, |n| u32::from_le_bytes([n[0], n[1], n[2], n[3]]));
    b = &b[4.min(b.len())..];
    for _ in 0..count {
        let Some(head) = b.get(..12) else { break };
        let from = u64::from_le_bytes(head[..8].try_into().unwrap_or_default());
        let len = u32::from_le_bytes(head[8..12].try_into().unwrap_or_default()) as usize;
        let Some(bytes) = b.get(12..12 + len) else {
            break;
        };
        out.push(Message {
            from,
            bytes: bytes.to_vec(),
        });
        b = &b[12 + len..];
    }
    out
}

/// Log levels for [`log`].
#[derive(Clone, Copy, Debug)]
pub enum Level {
    Error = 0,
    Warn = 1,
    Info = 2,
    Debug = 3,
}

/// Writes a line to the node's log (target `squall::guest`).
pub fn log(level: Level, message: &str) {
    // SAFETY: the host reads `message.len()` bytes at `message`.
    unsafe { sys::log(level as i32, message.as_ptr(), message.len()) }
}

/// Argument `i` as UTF-8 text.
pub fn text_arg(args: &[Vec<u8>], i: usize) -> Result<&str, Error> {
    let a = args.get(i).ok_or_else(|| {
        Error::failed(format!(
            "expected at least {} argument(s), got {}",
            i + 1,
            args.len()
        ))
    })?;
    std::str::from_utf8(a).map_err(|_| Error::failed(format!("argument {i} is not UTF-8")))
}

/// The last result, kept until the next call (the host copies it out first).
static LAST_RESULT: Mutex<Vec<u8>> = Mutex::new(Vec::new());

/// A function a module exports.
pub type Handler = fn(&[Vec<u8>]) -> Result<Vec<u8>, Error>;

#[doc(hidden)]
pub fn __alloc(len: usize) -> *mut u8 {
    // A boxed slice has exactly this layout, so `__call` can free it.
    Box::into_raw(vec![0u8; len.max(1)].into_boxed_slice()).cast::<u8>()
}

/// # Safety
/// `ptr` must come from `__alloc(len)` with the same `len`, and be passed
/// here once (the host does this for every call).
#[doc(hidden)]
pub unsafe fn __call(f: Handler, ptr: *mut u8, len: usize) -> i64 {
    static HOOK: std::sync::Once = std::sync::Once::new();
    HOOK.call_once(|| {
        std::panic::set_hook(Box::new(|info| {
            let msg = format!("{info}");
            // SAFETY: the host reads `msg.len()` bytes at `msg`.
            unsafe { sys::fail(0, msg.as_ptr(), msg.len()) }
        }))
    });
    // SAFETY: per this function's contract, `ptr` is the boxed slice of
    // `len.max(1)` bytes `__alloc` leaked, handed back exactly once.
    let input = unsafe { Box::from_raw(std::ptr::slice_from_raw_parts_mut(ptr, len.max(1))) };
    let args = take_list(&input[..len]).unwrap_or_default();
    drop(input);
    let outcome = f(&args);
    let mut last = LAST_RESULT
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    match outcome {
        Ok(out) => {
            *last = out;
            ((last.as_ptr() as u32 as i64) << 32) | last.len() as u32 as i64
        }
        Err(e) => {
            let (kind, msg) = match &e {
                Error::Failed(m) => (0, m),
                Error::Invalid(m) => (1, m),
            };
            // SAFETY: the host reads `msg.len()` bytes at `msg`.
            unsafe { sys::fail(kind, msg.as_ptr(), msg.len()) };
            0
        }
    }
}

/// Exports `f` as this module's function (`squall_alloc`, `squall_call`).
#[macro_export]
macro_rules! export {
    ($f:path) => {
        #[no_mangle]
        pub extern "C" fn squall_alloc(len: usize) -> *mut u8 {
            $crate::__alloc(len)
        }
        /// # Safety
        /// Called by the host only, with the buffer `squall_alloc(len)` gave.
        #[no_mangle]
        pub unsafe extern "C" fn squall_call(ptr: *mut u8, len: usize) -> i64 {
            // SAFETY: the host passes back the buffer it got from
            // `squall_alloc(len)`, once per call.
            unsafe { $crate::__call($f, ptr, len) }
        }
    };
}
