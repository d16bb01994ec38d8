//! The anomaly checker: which guarantees one call's reads broke.
//!
//! A call's log holds every read its functions made: level, reader
//! (invocation), key, and the value found, which names its version and its
//! dependencies (the keys written with it, what its writer read). In the
//! experiment's DAGs every function of a level is downstream of every
//! function of the level before, so "r2 is causally after r1" is "r2's
//! level is higher, or r2 is the same invocation". With `ver(r)` the
//! version a read found and `deps(r)` its value's dependencies, a call
//! breaks:
//!
//! * **DSRR** (repeatable read across the call) when two reads of one key
//!   found different versions;
//! * **single-key causal** when a read causally after another of the same
//!   key found an older version;
//! * **multi-key causal** (each function reads a causal cut) when one
//!   invocation read `k` older than a dependency on `k` of another value it
//!   read;
//! * **distributed-session causal** when a read found `k` older than what
//!   a causally earlier read (same invocation or upstream) read of `k` or
//!   depended on for `k`;
//! * **read atomic** (no fractured reads) when any read found `k` older
//!   than a value another read found was written together with.
//!
//! The sink's own writes come after all its reads, so a call never reads
//! its own writes here.

use crate::record::Log;

/// The guarantees the checker tests, in report order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Guarantee {
    Dsrr,
    SingleKeyCausal,
    MultiKeyCausal,
    DistributedSessionCausal,
    ReadAtomic,
}

impl Guarantee {
    pub const ALL: [Guarantee; 5] = [
        Guarantee::Dsrr,
        Guarantee::SingleKeyCausal,
        Guarantee::MultiKeyCausal,
        Guarantee::DistributedSessionCausal,
        Guarantee::ReadAtomic,
    ];

    /// The short name reports use (`dsrr`, `sk`, `mk`, `dsc`, `ra`).
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Guarantee::Dsrr => "dsrr",
            Guarantee::SingleKeyCausal => "sk",
            Guarantee::MultiKeyCausal => "mk",
            Guarantee::DistributedSessionCausal => "dsc",
            Guarantee::ReadAtomic => "ra",
        }
    }
}

/// One call's verdict: which guarantees its reads broke.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Anomalies([bool; 5]);

impl Anomalies {
    #[must_use]
    pub fn broke(&self, g: Guarantee) -> bool {
        self.0[g as usize]
    }

    fn mark(&mut self, g: Guarantee) {
        self.0[g as usize] = true;
    }

    #[must_use]
    pub fn any(&self) -> bool {
        self.0.iter().any(|&b| b)
    }
}

/// Checks one call's log (see the module doc).
#[must_use]
pub fn check(log: &Log) -> Anomalies {
    use Guarantee::*;
    let mut a = Anomalies::default();
    for r1 in &log.reads {
        let v1 = r1.version();
        for r2 in &log.reads {
            let v2 = r2.version();
            let same = r1.reader == r2.reader;
            let after = same || r2.level > r1.level;
            if r1.key == r2.key {
                if v1 != v2 {
                    a.mark(Dsrr);
                }
                if after && v2 < v1 {
                    a.mark(SingleKeyCausal);
                    a.mark(DistributedSessionCausal);
                }
            }
            let Some(w) = &r1.written else { continue };
            for (k, dep) in w.dependencies() {
                if k != r2.key || k == r1.key || v2 >= dep {
                    continue;
                }
                if same {
                    a.mark(MultiKeyCausal);
                }
                if after {
                    a.mark(DistributedSessionCausal);
                }
                if dep == w.version && w.co_written.iter().any(|c| c == k) {
                    a.mark(ReadAtomic);
                }
            }
        }
    }
    a
}

/// Calls checked and, per guarantee, how many broke it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    pub calls: u64,
    broke: [u64; 5],
}

impl Tally {
    pub fn add(&mut self, a: Anomalies) {
        self.calls += 1;
        for (n, b) in self.broke.iter_mut().zip(a.0) {
            *n += u64::from(b);
        }
    }

    /// Calls that broke `g`.
    #[must_use]
    pub fn anomalies(&self, g: Guarantee) -> u64 {
        self.broke[g as usize]
    }

    pub fn merge(&mut self, other: &Tally) {
        self.calls += other.calls;
        for (n, o) in self.broke.iter_mut().zip(other.broke) {
            *n += o;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Guarantee::*;
    use super::*;
    use crate::record::{Plan, Read, Version, Written};

    fn v(clock: u64) -> Version {
        Version { clock, writer: 1 }
    }

    fn w(version: u64, co: &[&str], read: &[(&str, u64)]) -> Option<Written> {
        Some(Written {
            version: v(version),
            co_written: co.iter().map(|k| (*k).to_owned()).collect(),
            read: read.iter().map(|(k, r)| ((*k).to_owned(), v(*r))).collect(),
        })
    }

    fn read(level: u32, reader: u64, key: &str, written: Option<Written>) -> Read {
        Read {
            level,
            reader,
            key: key.into(),
            written,
        }
    }

    fn verdict(reads: Vec<Read>) -> Vec<&'static str> {
        let plan = Plan::new(v(99), vec![vec![], vec![]], vec![], 0).unwrap();
        let a = check(&Log {
            plan,
            at: Some(1),
            reads,
        });
        Guarantee::ALL
            .into_iter()
            .filter(|&g| a.broke(g))
            .map(Guarantee::name)
            .collect()
    }

    #[test]
    fn consistent_reads_pass() {
        let x = w(5, &["a", "b"], &[("c", 2)]);
        // Newer downstream breaks repeatable read, nothing causal.
        assert_eq!(
            verdict(vec![
                read(0, 1, "a", x.clone()),
                read(0, 1, "b", x.clone()),
                read(0, 1, "c", w(2, &["c"], &[])),
                read(1, 2, "a", x.clone()),
                read(1, 2, "c", w(3, &["c"], &[])),
            ]),
            ["dsrr"]
        );
        assert_eq!(
            verdict(vec![
                read(0, 1, "a", x.clone()),
                read(0, 1, "b", x.clone()),
                read(1, 2, "c", w(2, &["c"], &[])),
                read(1, 2, "d", None),
            ]),
            Vec::<&str>::new()
        );
    }

    #[test]
    fn planted_violations_are_caught_each_by_its_guarantee() {
        // The same key at two versions, newer first downstream: only DSRR.
        assert_eq!(
            verdict(vec![
                read(0, 1, "k", w(1, &[], &[])),
                read(1, 2, "k", w(2, &[], &[]))
            ]),
            ["dsrr"]
        );
        // Going back in time downstream: DSRR, SK and DSC.
        assert_eq!(
            verdict(vec![
                read(0, 1, "k", w(2, &[], &[])),
                read(1, 2, "k", w(1, &[], &[]))
            ]),
            ["dsrr", "sk", "dsc"]
        );
        // Parallel functions at one level: not causally ordered, so only
        // DSRR.
        assert_eq!(
            verdict(vec![
                read(0, 1, "k", w(2, &[], &[])),
                read(0, 2, "k", w(1, &[], &[]))
            ]),
            ["dsrr"]
        );
        // One invocation reads a value depending on b@4 and b@3: MK, DSC.
        assert_eq!(
            verdict(vec![
                read(0, 1, "a", w(5, &["a"], &[("b", 4)])),
                read(0, 1, "b", w(3, &["b"], &[]))
            ]),
            ["mk", "dsc"]
        );
        // The same, b read downstream: DSC only.
        assert_eq!(
            verdict(vec![
                read(0, 1, "a", w(5, &["a"], &[("b", 4)])),
                read(1, 2, "b", w(3, &["b"], &[]))
            ]),
            ["dsc"]
        );
        // A fractured write set: a and b were written together at 5; a
        // parallel function sees b older: read atomic only.
        assert_eq!(
            verdict(vec![
                read(0, 1, "a", w(5, &["a", "b"], &[])),
                read(0, 2, "b", w(3, &["b"], &[]))
            ]),
            ["ra"]
        );
        // Missing is older than anything.
        assert_eq!(
            verdict(vec![
                read(0, 1, "a", w(5, &["a", "b"], &[])),
                read(0, 1, "b", None)
            ]),
            ["mk", "dsc", "ra"]
        );
    }

    /// A history of committed write sets, each written at a version drawn
    /// at random (so LWW order is not commit order) and depending on what
    /// its writer read from an earlier snapshot; then a call whose every
    /// read comes from one snapshot (for each key, the highest version
    /// committed before it). Such reads break no guarantee: the checker
    /// must say so (no false alarm).
    fn snapshot_call(seed: u64) -> Log {
        let mut state = seed | 1;
        let mut next = move |n: u64| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state % n
        };
        let keys = ["a", "b", "c", "d"];
        let mut history: Vec<Written> = Vec::new();
        let at = |history: &[Written], before: usize, key: &str| {
            history[..before]
                .iter()
                .filter(|w| w.co_written.iter().any(|k| k == key))
                .max_by_key(|w| w.version)
                .cloned()
        };
        for i in 0..next(20) {
            let co_written: Vec<String> = keys
                .iter()
                .filter(|_| next(2) == 0)
                .map(|k| (*k).to_owned())
                .collect();
            let seen = next(i + 1) as usize;
            let read = keys
                .iter()
                .filter(|_| next(2) == 0)
                .map(|k| {
                    let v = at(&history, seen, k).map_or_else(Version::default, |w| w.version);
                    ((*k).to_owned(), v)
                })
                .collect();
            history.push(Written {
                version: Version {
                    clock: 1 + next(1000),
                    writer: i,
                },
                co_written,
                read,
            });
        }
        let snapshot = next(history.len() as u64 + 1) as usize;
        let reads = (0..1 + next(8))
            .map(|_| {
                let key = keys[next(4) as usize];
                let level = next(3) as u32;
                read(
                    level,
                    u64::from(level) * 10 + next(2),
                    key,
                    at(&history, snapshot, key),
                )
            })
            .collect();
        let plan = Plan::new(v(1), vec![vec![]; 3], vec![], 0).unwrap();
        Log {
            plan,
            at: Some(2),
            reads,
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2000))]

        #[test]
        fn reads_from_one_snapshot_break_nothing(seed in proptest::prelude::any::<u64>()) {
            let log = snapshot_call(seed);
            proptest::prop_assert!(!check(&log).any(), "{:?}", log);
        }
    }

    #[test]
    fn a_tally_counts_calls_per_guarantee() {
        let mut t = Tally::default();
        let mut a = Anomalies::default();
        t.add(a);
        a.mark(ReadAtomic);
        t.add(a);
        let mut u = Tally::default();
        u.merge(&t);
        u.merge(&t);
        assert_eq!(
            (u.calls, u.anomalies(ReadAtomic), u.anomalies(Dsrr)),
            (4, 2, 0)
        );
    }
}
