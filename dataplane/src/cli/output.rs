//! What the CLI writes on stdout: text, one JSON object, or raw bytes.
//!
//! Every write goes through [`write_stdout`], which turns a closed pipe
//! (`squall kv get KEY | head`) into [`StdoutClosed`]: the command stops and
//! exits 0 without a message, as `cat` or `grep` would when the reader has
//! what it wanted.
//!
//! In JSON, byte strings (values, members, results) are text when they are
//! UTF-8 and base64 (RFC 4648, with padding) otherwise; the object's
//! `"encoding"` says which: `"utf8"` or `"base64"`.

use std::io::{ErrorKind, Write as _};

use serde_json::json;
use wire::message::Value;

/// Standard output was closed by its reader (`EPIPE`); the command stops
/// quietly with exit status 0.
#[derive(Debug)]
pub struct StdoutClosed;

impl std::fmt::Display for StdoutClosed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("standard output was closed")
    }
}

impl std::error::Error for StdoutClosed {}

/// Writes `bytes` to stdout and flushes.
pub fn write_stdout(bytes: &[u8]) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    match out.write_all(bytes).and_then(|()| out.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == ErrorKind::BrokenPipe => Err(StdoutClosed.into()),
        Err(e) => Err(anyhow::Error::new(e).context("writing to standard output")),
    }
}

/// Writes one line to stderr; a closed stderr is ignored (there is nowhere
/// left to report it).
pub fn note(line: &str) {
    let _ = writeln!(std::io::stderr().lock(), "{line}");
}

/// Prints `obj` (with `--json`) or `text`, each as one line.
pub fn emit(json: bool, obj: &serde_json::Value, text: &str) -> anyhow::Result<()> {
    let line = if json {
        format!("{obj}\n")
    } else {
        format!("{text}\n")
    };
    write_stdout(line.as_bytes())
}

/// How one byte string is written in JSON: `(string, encoding)`.
pub fn encoded(bytes: &[u8]) -> (String, &'static str) {
    match std::str::from_utf8(bytes) {
        Ok(s) => (s.to_owned(), "utf8"),
        Err(_) => (base64(bytes), "base64"),
    }
}

/// Members of a set in JSON, all in one encoding: UTF-8 text if every
/// member is UTF-8, else every member in base64.
fn encoded_all(members: &[Vec<u8>]) -> (Vec<String>, &'static str) {
    if members.iter().all(|m| std::str::from_utf8(m).is_ok()) {
        (members.iter().map(|m| text(m)).collect(), "utf8")
    } else {
        (members.iter().map(|m| base64(m)).collect(), "base64")
    }
}

/// Standard base64 (RFC 4648 §4) with `=` padding.
#[must_use]
pub fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let byte = |i: usize| u32::from(chunk.get(i).copied().unwrap_or(0));
        let n = (byte(0) << 16) | (byte(1) << 8) | byte(2);
        for i in 0..4 {
            if i <= chunk.len() {
                let sextet = (n >> (18 - 6 * i)) & 63;
                out.push(char::from(ALPHABET[sextet as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Bytes as text, invalid UTF-8 replaced by U+FFFD (the text mode).
pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A value in the text mode; `true` if some bytes were not UTF-8 (and so
/// were shown as U+FFFD).
pub fn value_text(v: &Value) -> (String, bool) {
    let lossy = |b: &[u8]| std::str::from_utf8(b).is_err();
    match v {
        Value::Lww(l) => (text(&l.bytes), lossy(&l.bytes)),
        Value::Set(s) | Value::OrderedSet(s) => (
            s.iter().map(|e| text(e)).collect::<Vec<_>>().join("\n"),
            s.iter().any(|e| lossy(e)),
        ),
        Value::Max(m) => (m.to_string(), false),
        Value::Priority(p) => (
            format!("{}\t{}", p.priority, text(&p.bytes)),
            lossy(&p.bytes),
        ),
        Value::SingleKeyCausal(vs) | Value::MultiKeyCausal(vs) => (
            vs.iter()
                .map(|v| text(&v.bytes))
                .collect::<Vec<_>>()
                .join("\n"),
            vs.iter().any(|v| lossy(&v.bytes)),
        ),
    }
}

/// The bytes `kv get --raw` writes: the value exactly as stored (a max
/// lattice as its decimal digits); refused for lattices holding several
/// byte strings, which only `--json` can show unambiguously.
pub fn value_raw(key: &str, v: &Value) -> anyhow::Result<Vec<u8>> {
    match v {
        Value::Lww(l) => Ok(l.bytes.clone()),
        Value::Priority(p) => Ok(p.bytes.clone()),
        Value::Max(m) => Ok(m.to_string().into_bytes()),
        Value::SingleKeyCausal(vs) | Value::MultiKeyCausal(vs) if vs.len() == 1 => {
            Ok(vs.iter().flat_map(|c| c.bytes.iter().copied()).collect())
        }
        Value::SingleKeyCausal(vs) | Value::MultiKeyCausal(vs) => anyhow::bail!(
            "--raw writes one value, and {key:?} has {} concurrent versions; \
             `--json` shows each",
            vs.len()
        ),
        Value::Set(s) | Value::OrderedSet(s) => anyhow::bail!(
            "--raw writes one value, and {key:?} is a set of {} members; \
             `--json` lists them (base64 when a member is not UTF-8)",
            s.len()
        ),
    }
}

/// A value's JSON fields (merged into `{"key", "found"}` by `kv get`).
pub fn value_json(v: &Value) -> serde_json::Value {
    match v {
        Value::Lww(l) => {
            let (value, encoding) = encoded(&l.bytes);
            json!({"lattice": "lww", "value": value, "encoding": encoding,
                   "timestamp": l.timestamp, "writer": l.writer})
        }
        Value::Set(s) => {
            let (value, encoding) = encoded_all(s);
            json!({"lattice": "set", "value": value, "encoding": encoding})
        }
        Value::OrderedSet(s) => {
            let (value, encoding) = encoded_all(s);
            json!({"lattice": "ordered-set", "value": value, "encoding": encoding})
        }
        Value::Max(m) => json!({"lattice": "max", "value": m}),
        Value::Priority(p) => {
            let (value, encoding) = encoded(&p.bytes);
            json!({"lattice": "priority", "value": value, "encoding": encoding,
                   "priority": p.priority})
        }
        Value::SingleKeyCausal(vs) | Value::MultiKeyCausal(vs) => {
            let kind = if matches!(v, Value::SingleKeyCausal(_)) {
                "single-key-causal"
            } else {
                "multi-key-causal"
            };
            let versions: Vec<_> = vs
                .iter()
                .map(|c| {
                    let (value, encoding) = encoded(&c.bytes);
                    json!({"value": value, "encoding": encoding,
                       "clock": c.clock.iter().map(|e| json!([e.node, e.counter])).collect::<Vec<_>>()})
                })
                .collect();
            json!({"lattice": kind, "versions": versions})
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc_4648_vectors() {
        let vectors = [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ];
        for (plain, enc) in vectors {
            assert_eq!(base64(plain.as_bytes()), enc, "{plain:?}");
        }
        assert_eq!(base64(&[0xff, 0xfe, 0x00, b'a']), "//4AYQ==");
    }

    #[test]
    fn utf8_stays_text_and_other_bytes_become_base64() {
        assert_eq!(encoded("héllo".as_bytes()), ("héllo".to_owned(), "utf8"));
        assert_eq!(encoded(&[0xff]), ("/w==".to_owned(), "base64"));
    }
}
