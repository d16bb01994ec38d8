//! The byte layouts between host and guest (`docs/functions.md`): call
//! arguments, lattice values, messages. All integers little-endian.

use std::collections::BTreeSet;

use executor::message::Message;
use kvs_core::lattice::{Lww, Priority, Timestamp, Value};
use wasmtime::{ExternType, Module};

/// `fail(kind, …)`: the call's result is invalid (competitive execution);
/// any other kind (the SDK sends 0) is an error.
pub const FAIL_INVALID: i32 = 1;

/// Host calls that touch neither the store nor other executors: a guest
/// importing only these is pure.
pub const PURE_IMPORTS: [&str; 4] = ["fail", "log", "get_id", "take_pending"];

const TAG_LWW: u8 = 0;
const TAG_SET: u8 = 1;
const TAG_ORDERED_SET: u8 = 2;
const TAG_MAX: u8 = 3;
const TAG_PRIORITY: u8 = 4;

/// Arguments: `count:u32`, then per argument `len:u32 bytes`.
pub fn encode_args(args: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + args.iter().map(|a| 4 + a.len()).sum::<usize>());
    put_list(&mut out, args.iter().map(Vec::as_slice));
    out
}

fn put_list<'a>(out: &mut Vec<u8>, items: impl ExactSizeIterator<Item = &'a [u8]>) {
    out.extend_from_slice(&(items.len() as u32).to_le_bytes());
    for i in items {
        out.extend_from_slice(&(i.len() as u32).to_le_bytes());
        out.extend_from_slice(i);
    }
}

/// A value as a guest sees it: `tag:u8` then
/// LWW `bytes`; Set / OrderedSet `count:u32 (len:u32 bytes)*`; Max `u64`;
/// Priority `priority:u64 bytes`. Causal values are not exposed yet.
pub fn encode_value(v: &Value) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    match v {
        Value::Lww(l) => {
            out.push(TAG_LWW);
            out.extend_from_slice(l.value());
        }
        Value::Set(s) | Value::OrderedSet(s) => {
            out.push(if matches!(v, Value::Set(_)) {
                TAG_SET
            } else {
                TAG_ORDERED_SET
            });
            put_list(&mut out, s.iter().map(Vec::as_slice));
        }
        Value::Max(n) => {
            out.push(TAG_MAX);
            out.extend_from_slice(&n.to_le_bytes());
        }
        Value::Priority(p) => {
            out.push(TAG_PRIORITY);
            out.extend_from_slice(&p.priority.to_le_bytes());
            out.extend_from_slice(&p.value);
        }
        Value::SingleKeyCausal(_) | Value::MultiKeyCausal(_) => {
            return Err(format!(
                "{} values are not readable by WebAssembly guests yet",
                v.kind()
            ))
        }
    }
    Ok(out)
}

/// The inverse of [`encode_value`] (LWW values get timestamp 0: the store
/// stamps them).
pub fn decode_value(b: &[u8]) -> Result<Value, String> {
    let (&tag, rest) = b.split_first().ok_or("an empty value")?;
    let u64_at = |r: &[u8]| -> Result<u64, String> {
        r.get(..8)
            .and_then(|x| x.try_into().ok())
            .map(u64::from_le_bytes)
            .ok_or_else(|| "a truncated number".to_owned())
    };
    Ok(match tag {
        TAG_LWW => Value::Lww(Lww::new(Timestamp::default(), rest.to_vec())),
        TAG_SET | TAG_ORDERED_SET => {
            let items: BTreeSet<Vec<u8>> = take_list(rest)?.into_iter().collect();
            if tag == TAG_SET {
                Value::Set(items)
            } else {
                Value::OrderedSet(items)
            }
        }
        TAG_MAX => Value::Max(u64_at(rest)?),
        TAG_PRIORITY => Value::Priority(Priority {
            priority: u64_at(rest)?,
            value: rest[8..].to_vec(),
        }),
        t => return Err(format!("unknown value tag {t}")),
    })
}

fn take_list(mut b: &[u8]) -> Result<Vec<Vec<u8>>, String> {
    let u32_next = |b: &mut &[u8]| -> Result<usize, String> {
        let (n, rest) = b.split_at_checked(4).ok_or("a truncated list")?;
        *b = rest;
        Ok(u32::from_le_bytes([n[0], n[1], n[2], n[3]]) as usize)
    };
    let count = u32_next(&mut b)?;
    let mut out = Vec::with_capacity(count.min(1024));
    for _ in 0..count {
        let len = u32_next(&mut b)?;
        let (item, rest) = b.split_at_checked(len).ok_or("a truncated list item")?;
        out.push(item.to_vec());
        b = rest;
    }
    Ok(out)
}

/// Messages: `count:u32`, then per message `from:u64 len:u32 bytes`.
pub fn encode_messages(messages: &[Message]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&(messages.len() as u32).to_le_bytes());
    for m in messages {
        out.extend_from_slice(&m.from.to_le_bytes());
        out.extend_from_slice(&(m.bytes.len() as u32).to_le_bytes());
        out.extend_from_slice(&m.bytes);
    }
    out
}

/// The exports every guest must have, with their types.
pub fn check_exports(module: &Module) -> Result<(), String> {
    match module.get_export("memory") {
        Some(ExternType::Memory(_)) => {}
        Some(_) => return Err("export `memory` is not a memory".to_owned()),
        None => return Err("missing export `memory`".to_owned()),
    }
    for (name, params, results) in [
        ("squall_alloc", "i32", "i32"),
        ("squall_call", "i32 i32", "i64"),
    ] {
        let Some(ExternType::Func(f)) = module.get_export(name) else {
            return Err(format!(
                "missing export function `{name}` ({params}) -> {results}"
            ));
        };
        let join = |it: &mut dyn Iterator<Item = wasmtime::ValType>| {
            it.map(|t| t.to_string()).collect::<Vec<_>>().join(" ")
        };
        let (p, r) = (join(&mut f.params()), join(&mut f.results()));
        if p != params || r != results {
            return Err(format!(
                "export `{name}` has type ({p}) -> {r}; it must be ({params}) -> {results}"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_round_trip_through_the_guest_layout() {
        for v in [
            Value::Lww(Lww::new(Timestamp::default(), b"x".to_vec())),
            Value::Set(BTreeSet::from([b"a".to_vec(), b"bb".to_vec()])),
            Value::OrderedSet(BTreeSet::new()),
            Value::Max(7),
            Value::Priority(Priority {
                priority: 3,
                value: b"p".to_vec(),
            }),
        ] {
            assert_eq!(decode_value(&encode_value(&v).unwrap()).unwrap(), v);
        }
        assert!(decode_value(&[9]).is_err());
        assert!(decode_value(&[TAG_SET, 1, 0, 0, 0, 9, 0, 0, 0]).is_err());
        assert!(decode_value(&[TAG_MAX, 1]).is_err());
    }
}
