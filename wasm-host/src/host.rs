//! The host API guests import (module `squall`), and the per-instance state
//! behind it. Every pointer and length a guest passes is bounds-checked
//! against its memory; a bad one ends the call with an error.

use executor::function::{Context, FnError};
use executor::registry::SandboxLimits;
use thiserror::Error;
use wasmtime::{Caller, Linker, Memory, ResourceLimiter, Store};

use crate::abi;

/// A host call that ends the guest's call, with the reason.
#[derive(Debug, Error)]
#[error("{0}")]
pub struct HostError(pub String);

/// The guest tried to grow its memory past its limit.
#[derive(Debug, Error)]
#[error("memory limit")]
pub struct MemoryLimit;

/// Enforces the linear-memory limit and remembers a refusal.
#[derive(Debug)]
pub struct Limiter {
    memory_bytes_max: usize,
    pub denied: bool,
}

impl ResourceLimiter for Limiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.memory_bytes_max {
            self.denied = true;
            return Err(wasmtime::Error::new(MemoryLimit));
        }
        Ok(true)
    }
    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 100_000)
    }
}

/// One instance's host-side state.
#[derive(Debug)]
pub struct Host {
    pub limiter: Limiter,
    pub memory: Option<Memory>,
    /// Address of the running call's `Context` (0 between calls); see
    /// [`with_context`].
    cx_addr: usize,
    /// Bytes the last `get`/`recv` produced, until `take_pending` copies them.
    pending: Vec<u8>,
    /// What the guest declared with `fail` during this call.
    pub outcome: Option<(i32, String)>,
}

impl Host {
    pub fn new(limits: SandboxLimits) -> Host {
        Host {
            limiter: Limiter {
                memory_bytes_max: limits.memory_mb as usize * 1024 * 1024,
                denied: false,
            },
            memory: None,
            cx_addr: 0,
            pending: Vec::new(),
            outcome: None,
        }
    }
}

/// Runs `f` (a call into the guest) with `cx` reachable from host calls.
pub fn with_context<R>(
    store: &mut Store<Host>,
    cx: &mut Context<'_>,
    f: impl FnOnce(&mut Store<Host>) -> R,
) -> R {
    store.data_mut().cx_addr = std::ptr::from_mut(cx) as usize;
    store.data_mut().pending.clear();
    let out = f(store);
    store.data_mut().cx_addr = 0;
    out
}

/// The running call's context.
#[allow(unsafe_code)]
fn context<'a>(caller: &'a mut Caller<'_, Host>) -> wasmtime::Result<&'a mut Context<'static>> {
    let addr = caller.data().cx_addr;
    if addr == 0 {
        return Err(wasmtime::Error::new(HostError(
            "host call outside a function call".into(),
        )));
    }
    // SAFETY: `cx_addr` is set by `with_context` from a live `&mut Context`
    // for exactly the duration of one synchronous call into the guest on this
    // thread, and cleared before that borrow ends; host calls run only inside
    // that call, so the pointer is valid and not aliased by any other live
    // reference (the caller of `with_context` does not touch `cx` meanwhile).
    // The `'static` is never observable: the reference is bounded by `'a`,
    // which ends before the host call returns.
    Ok(unsafe { &mut *(addr as *mut Context<'static>) })
}

fn memory(caller: &Caller<'_, Host>) -> wasmtime::Result<Memory> {
    caller
        .data()
        .memory
        .ok_or_else(|| wasmtime::Error::new(HostError("the module exports no memory".into())))
}

/// A copy of the guest's bytes at `ptr..ptr+len`.
fn read(caller: &Caller<'_, Host>, ptr: i32, len: i32) -> wasmtime::Result<Vec<u8>> {
    let mem = memory(caller)?;
    let (start, len) = (ptr as u32 as usize, len as u32 as usize);
    mem.data(caller)
        .get(start..start.saturating_add(len))
        .map(<[u8]>::to_vec)
        .ok_or_else(|| {
            wasmtime::Error::new(HostError(format!(
                "pointer {start} + {len} is outside the guest's memory"
            )))
        })
}

/// A refused state call (`get`, `put`, `delete`, `send`, `recv`) ends the
/// guest's call with the executor's error as is: it names the function
/// once (`function F: store: ...`), and the runtime returns it unchanged.
fn state_error(e: FnError) -> wasmtime::Error {
    wasmtime::Error::new(e)
}

fn fail(message: String) -> wasmtime::Error {
    wasmtime::Error::new(HostError(message))
}

/// Leaves `bytes` for `take_pending`; returns their length.
fn hand_over(caller: &mut Caller<'_, Host>, bytes: Vec<u8>) -> wasmtime::Result<i32> {
    let len = i32::try_from(bytes.len()).map_err(|_| fail("a value over 2 GiB".into()))?;
    caller.data_mut().pending = bytes;
    Ok(len)
}

/// Defines every host call.
pub fn define(linker: &mut Linker<Host>) -> wasmtime::Result<()> {
    linker.func_wrap(
        "squall",
        "get_id",
        |mut caller: Caller<'_, Host>| -> wasmtime::Result<i64> {
            Ok(context(&mut caller)?.get_id() as i64)
        },
    )?;
    // get(key) -> length of the encoded value (then take_pending), or -1.
    linker.func_wrap(
        "squall",
        "get",
        |mut caller: Caller<'_, Host>, key_ptr: i32, key_len: i32| -> wasmtime::Result<i32> {
            let key = read(&caller, key_ptr, key_len)?;
            let value = context(&mut caller)?.get(&key).map_err(state_error)?;
            match value {
                None => Ok(-1),
                Some(v) => {
                    let bytes = abi::encode_value(&v).map_err(fail)?;
                    hand_over(&mut caller, bytes)
                }
            }
        },
    )?;
    linker.func_wrap(
        "squall",
        "put",
        |mut caller: Caller<'_, Host>,
         key_ptr: i32,
         key_len: i32,
         val_ptr: i32,
         val_len: i32|
         -> wasmtime::Result<()> {
            let key = read(&caller, key_ptr, key_len)?;
            let value = abi::decode_value(&read(&caller, val_ptr, val_len)?)
                .map_err(|e| fail(format!("put: {e}")))?;
            context(&mut caller)?.put(&key, value).map_err(state_error)
        },
    )?;
    linker.func_wrap(
        "squall",
        "delete",
        |mut caller: Caller<'_, Host>, key_ptr: i32, key_len: i32| -> wasmtime::Result<i32> {
            let key = read(&caller, key_ptr, key_len)?;
            let removed = context(&mut caller)?.delete(&key).map_err(state_error)?;
            Ok(i32::from(removed))
        },
    )?;
    // send(dest, bytes) -> 0 delivered directly, 1 left in the inbox key.
    linker.func_wrap(
        "squall",
        "send",
        |mut caller: Caller<'_, Host>, dest: i64, ptr: i32, len: i32| -> wasmtime::Result<i32> {
            let bytes = read(&caller, ptr, len)?;
            let delivery = context(&mut caller)?
                .send(dest as u64, bytes)
                .map_err(state_error)?;
            Ok(match delivery {
                executor::message::Delivery::Direct => 0,
                executor::message::Delivery::Inbox => 1,
            })
        },
    )?;
    // recv() -> length of the encoded messages (then take_pending); 0 when
    // none are waiting.
    linker.func_wrap(
        "squall",
        "recv",
        |mut caller: Caller<'_, Host>| -> wasmtime::Result<i32> {
            let messages = context(&mut caller)?.recv().map_err(state_error)?;
            if messages.is_empty() {
                return Ok(0);
            }
            hand_over(&mut caller, abi::encode_messages(&messages))
        },
    )?;
    linker.func_wrap(
        "squall",
        "take_pending",
        |mut caller: Caller<'_, Host>, dst: i32| -> wasmtime::Result<()> {
            let pending = std::mem::take(&mut caller.data_mut().pending);
            let mem = memory(&caller)?;
            mem.write(&mut caller, dst as u32 as usize, &pending)
                .map_err(|_| fail("take_pending: destination outside the guest's memory".into()))
        },
    )?;
    // fail(kind, message): 0 = error, 1 = invalid result; the guest then
    // returns normally and its result is ignored.
    linker.func_wrap(
        "squall",
        "fail",
        |mut caller: Caller<'_, Host>, kind: i32, ptr: i32, len: i32| -> wasmtime::Result<()> {
            let message = String::from_utf8_lossy(&read(&caller, ptr, len)?).into_owned();
            caller.data_mut().outcome = Some((kind, message));
            Ok(())
        },
    )?;
    // log(level, message): 0 error, 1 warn, 2 info, 3 debug.
    linker.func_wrap(
        "squall",
        "log",
        |mut caller: Caller<'_, Host>, level: i32, ptr: i32, len: i32| -> wasmtime::Result<()> {
            let message = String::from_utf8_lossy(&read(&caller, ptr, len)?).into_owned();
            let id = context(&mut caller)?.get_id();
            let level = match level {
                0 => log::Level::Error,
                1 => log::Level::Warn,
                2 => log::Level::Info,
                _ => log::Level::Debug,
            };
            log::log!(target: "squall::guest", level, "executor {id}: {message}");
            Ok(())
        },
    )?;
    Ok(())
}
