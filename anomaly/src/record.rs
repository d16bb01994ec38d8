//! The experiment's text formats. Every token is separated by one space;
//! keys are 1 to [`KEY_BYTES_MAX`] printable ASCII bytes without spaces or
//! `=` (the plan refuses others), so no escaping is needed.
//!
//! * A **version** is `clock.writer` (decimal): an LWW timestamp. The
//!   experiment writes with explicit timestamps, so the order of versions
//!   is exactly the order in which the store's LWW merge keeps them. A key
//!   never written has version `0.0`.
//! * A **written value** ([`Written`]) is `VERSION w K… r K=VERSION…`: its
//!   version, the keys written together with it (same version), and the
//!   versions its writer read (its dependencies).
//! * A **plan** ([`Plan`]) is the lines `plan VERSION PAUSE_MS` (how long
//!   each function past the first level waits before its reads: a slow
//!   function, which widens the window for concurrent writes), then one line
//!   `level K…` per level of the DAG (the keys every function of that
//!   level reads), then `write K…` (the keys the sink writes, at VERSION).
//! * A **log** ([`Log`]) is a plan, then `at N` (the level of the function
//!   that produced it; absent in the plan a call starts with), then one
//!   line `got LEVEL READER KEY WRITTEN` per read (`-` for a key with no
//!   value). `READER` tells one function invocation's reads from
//!   another's.

use std::fmt;
use std::str::FromStr;

use thiserror::Error;

/// Bytes in one key of the experiment.
pub const KEY_BYTES_MAX: usize = 128;
/// Levels of one plan (a DAG of 2 to 5 functions has at most 5).
pub const LEVELS_MAX: usize = 16;
/// Keys one level reads, and keys the sink writes.
pub const KEYS_PER_LEVEL_MAX: usize = 64;
/// How long a function past the first level may wait before its reads.
pub const PAUSE_MS_MAX: u32 = 10_000;

/// A record that does not parse, or a plan that is not valid.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
#[error("consistency record: {0}")]
pub struct RecordError(pub String);

fn bad(what: impl Into<String>) -> RecordError {
    RecordError(what.into())
}

/// An LWW timestamp: ordered by clock, then writer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Version {
    pub clock: u64,
    pub writer: u64,
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.clock, self.writer)
    }
}

impl FromStr for Version {
    type Err = RecordError;
    fn from_str(s: &str) -> Result<Version, RecordError> {
        let (c, w) = s
            .split_once('.')
            .ok_or_else(|| bad(format!("version {s:?} is not CLOCK.WRITER")))?;
        let num = |t: &str| {
            t.parse::<u64>()
                .map_err(|_| bad(format!("version {s:?} is not CLOCK.WRITER")))
        };
        Ok(Version {
            clock: num(c)?,
            writer: num(w)?,
        })
    }
}

/// Checks a key of the experiment (see the module doc).
pub fn check_key(key: &str) -> Result<(), RecordError> {
    let ok = !key.is_empty()
        && key.len() <= KEY_BYTES_MAX
        && key.bytes().all(|b| b.is_ascii_graphic() && b != b'=');
    if ok {
        Ok(())
    } else {
        Err(bad(format!(
            "key {key:?} must be 1 to {KEY_BYTES_MAX} printable ASCII bytes without spaces or '='"
        )))
    }
}

/// A value the sink of a call wrote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Written {
    pub version: Version,
    /// Every key the call wrote (this one included), all at `version`.
    pub co_written: Vec<String>,
    /// What the call read: its dependencies.
    pub read: Vec<(String, Version)>,
}

impl Written {
    /// The text form (see the module doc).
    #[must_use]
    pub fn encode(&self) -> String {
        let mut s = format!("{} w", self.version);
        for k in &self.co_written {
            s.push(' ');
            s.push_str(k);
        }
        s.push_str(" r");
        for (k, v) in &self.read {
            s.push_str(&format!(" {k}={v}"));
        }
        s
    }

    /// Parses the text form.
    pub fn parse(text: &str) -> Result<Written, RecordError> {
        let mut tokens = text.split(' ');
        let version = tokens.next().unwrap_or_default().parse()?;
        if tokens.next() != Some("w") {
            return Err(bad(format!("written value {text:?} lacks its `w` part")));
        }
        let mut co_written = Vec::new();
        let mut read = Vec::new();
        let mut in_reads = false;
        for t in tokens {
            match (in_reads, t.split_once('=')) {
                (false, None) if t == "r" => in_reads = true,
                (false, None) => co_written.push(t.to_owned()),
                (true, Some((k, v))) => read.push((k.to_owned(), v.parse()?)),
                _ => return Err(bad(format!("written value {text:?}: stray token {t:?}"))),
            }
        }
        if !in_reads {
            return Err(bad(format!("written value {text:?} lacks its `r` part")));
        }
        Ok(Written {
            version,
            co_written,
            read,
        })
    }

    /// What a reader of this value depends on: the keys written with it
    /// (at its version) and what its writer read.
    pub fn dependencies(&self) -> impl Iterator<Item = (&str, Version)> {
        self.co_written
            .iter()
            .map(|k| (k.as_str(), self.version))
            .chain(self.read.iter().map(|(k, v)| (k.as_str(), *v)))
    }
}

/// What a call of the experiment does: the keys each level of its DAG
/// reads, the keys its sink writes, and the version it writes them at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    pub version: Version,
    pub levels: Vec<Vec<String>>,
    pub writes: Vec<String>,
    pub pause_ms: u32,
}

impl Plan {
    /// A checked plan.
    pub fn new(
        version: Version,
        levels: Vec<Vec<String>>,
        writes: Vec<String>,
        pause_ms: u32,
    ) -> Result<Plan, RecordError> {
        if pause_ms > PAUSE_MS_MAX {
            return Err(bad(format!(
                "a plan pauses 0 to {PAUSE_MS_MAX} ms, not {pause_ms}"
            )));
        }
        if levels.is_empty() || levels.len() > LEVELS_MAX {
            return Err(bad(format!(
                "a plan has 1 to {LEVELS_MAX} levels, not {}",
                levels.len()
            )));
        }
        for keys in levels.iter().chain([&writes]) {
            if keys.len() > KEYS_PER_LEVEL_MAX {
                return Err(bad(format!(
                    "a level reads, and the sink writes, at most {KEYS_PER_LEVEL_MAX} keys, not {}",
                    keys.len()
                )));
            }
            keys.iter().try_for_each(|k| check_key(k))?;
        }
        Ok(Plan {
            version,
            levels,
            writes,
            pause_ms,
        })
    }
}

/// One read a function made.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Read {
    pub level: u32,
    /// The function invocation that read it.
    pub reader: u64,
    pub key: String,
    /// What it found (`None`: no value).
    pub written: Option<Written>,
}

impl Read {
    /// The version read (`0.0` for no value).
    #[must_use]
    pub fn version(&self) -> Version {
        self.written
            .as_ref()
            .map_or_else(Version::default, |w| w.version)
    }
}

/// What a function hands downstream (and a call's result): the plan, the
/// level of the function that produced it, and every read so far.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Log {
    pub plan: Plan,
    /// `None` in the plan a call starts with.
    pub at: Option<u32>,
    pub reads: Vec<Read>,
}

impl Log {
    /// The log a call starts with: its plan, no reads.
    #[must_use]
    pub fn start(plan: Plan) -> Log {
        Log {
            plan,
            at: None,
            reads: Vec::new(),
        }
    }

    /// The text form (see the module doc).
    #[must_use]
    pub fn encode(&self) -> Vec<u8> {
        let mut s = format!("plan {} {}\n", self.plan.version, self.plan.pause_ms);
        for keys in &self.plan.levels {
            s.push_str("level");
            for k in keys {
                s.push(' ');
                s.push_str(k);
            }
            s.push('\n');
        }
        s.push_str("write");
        for k in &self.plan.writes {
            s.push(' ');
            s.push_str(k);
        }
        s.push('\n');
        if let Some(at) = self.at {
            s.push_str(&format!("at {at}\n"));
        }
        for r in &self.reads {
            let found = r
                .written
                .as_ref()
                .map_or_else(|| "-".to_owned(), Written::encode);
            s.push_str(&format!("got {} {} {} {found}\n", r.level, r.reader, r.key));
        }
        s.into_bytes()
    }

    /// Parses the text form.
    pub fn parse(bytes: &[u8]) -> Result<Log, RecordError> {
        let text = std::str::from_utf8(bytes).map_err(|_| bad("a log is UTF-8 text"))?;
        let mut plan = None;
        let (mut levels, mut writes, mut at, mut reads) = (Vec::new(), None, None, Vec::new());
        for line in text.lines() {
            let (head, rest) = line.split_once(' ').unwrap_or((line, ""));
            let keys = || -> Vec<String> {
                rest.split(' ')
                    .filter(|k| !k.is_empty())
                    .map(str::to_owned)
                    .collect()
            };
            match head {
                "plan" => {
                    let (v, pause) = rest
                        .split_once(' ')
                        .ok_or_else(|| bad(format!("{line:?} is not `plan VERSION PAUSE_MS`")))?;
                    let pause: u32 = pause
                        .parse()
                        .map_err(|_| bad(format!("bad pause in {line:?}")))?;
                    plan = Some((v.parse()?, pause));
                }
                "level" => levels.push(keys()),
                "write" => writes = Some(keys()),
                "at" => {
                    at = Some(
                        rest.parse()
                            .map_err(|_| bad(format!("bad level in {line:?}")))?,
                    );
                }
                "got" => reads.push(parse_got(line, rest)?),
                _ => return Err(bad(format!("unknown line {line:?}"))),
            }
        }
        let (version, pause_ms) = plan.ok_or_else(|| bad("a log starts with its `plan` line"))?;
        let writes = writes.ok_or_else(|| bad("a log has a `write` line"))?;
        Ok(Log {
            plan: Plan::new(version, levels, writes, pause_ms)?,
            at,
            reads,
        })
    }
}

fn parse_got(line: &str, rest: &str) -> Result<Read, RecordError> {
    let mut parts = rest.splitn(4, ' ');
    let mut next = || {
        parts
            .next()
            .ok_or_else(|| bad(format!("short line {line:?}")))
    };
    let level = next()?
        .parse()
        .map_err(|_| bad(format!("bad level in {line:?}")))?;
    let reader = next()?
        .parse()
        .map_err(|_| bad(format!("bad reader in {line:?}")))?;
    let key = next()?.to_owned();
    let written = match next()? {
        "-" => None,
        w => Some(Written::parse(w)?),
    };
    Ok(Read {
        level,
        reader,
        key,
        written,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(clock: u64, writer: u64) -> Version {
        Version { clock, writer }
    }

    #[test]
    fn logs_and_written_values_round_trip() {
        let plan = Plan::new(
            v(10, 3),
            vec![vec!["a".into(), "b".into()], vec![]],
            vec!["c".into()],
            20,
        )
        .unwrap();
        let written = Written {
            version: v(7, 1),
            co_written: vec!["a".into(), "c".into()],
            read: vec![("b".into(), v(5, 2))],
        };
        assert_eq!(written.encode(), "7.1 w a c r b=5.2");
        assert_eq!(Written::parse(&written.encode()).unwrap(), written);
        let log = Log {
            plan,
            at: Some(1),
            reads: vec![
                Read {
                    level: 0,
                    reader: 9,
                    key: "a".into(),
                    written: Some(written),
                },
                Read {
                    level: 0,
                    reader: 9,
                    key: "b".into(),
                    written: None,
                },
            ],
        };
        assert_eq!(Log::parse(&log.encode()).unwrap(), log);
        assert_eq!(log.reads[1].version(), Version::default());
    }

    #[test]
    fn bad_records_and_plans_are_refused_with_a_reason() {
        assert!(Plan::new(v(1, 1), vec![], vec![], 0).is_err());
        assert!(Plan::new(v(1, 1), vec![vec![]], vec![], PAUSE_MS_MAX + 1).is_err());
        let e = Plan::new(v(1, 1), vec![vec!["a b".into()]], vec![], 0).unwrap_err();
        assert!(e.to_string().contains("without spaces"), "{e}");
        assert!(Log::parse(b"plan 1.1 0\nlevel a\nwrite\n").is_ok());
        assert!(Log::parse(b"level a\nwrite\n").is_err());
        assert!(Log::parse(b"plan 1.1\nlevel a\nwrite\n").is_err());
        assert!(Log::parse(b"plan 1.1 0\nlevel a\n").is_err());
        assert!(Log::parse(b"plan 1.1 0\nlevel a\nwrite\nbogus\n").is_err());
        assert!(Written::parse("1.1 r a=1.1").is_err());
        assert!(Written::parse("1.1 w a r b").is_err());
        assert!("12".parse::<Version>().is_err());
    }
}
