//! One function of the experiment, as a pure step: the node's built-in
//! `consistency_probe` supplies the reads and writes (through the call's
//! store, so through its consistency mode), `probe` decides what they are.

use crate::record::{Log, Read, Version, Written};

/// Runs one function of the experiment.
///
/// `inputs` are its upstreams' logs, or at a source the log a call starts
/// with (its plan). Its level is one more than its deepest upstream's (0 at
/// a source). Past the first level it first waits the plan's pause
/// (`pause(ms)`). It reads every key the plan names for its level (`read`
/// answers a key's LWW bytes, `None` for no value); at the plan's last
/// level — the sink — it writes every key of the plan's `write` line at the
/// plan's version, each value naming the others and everything the call
/// read (`write`). `reader` tells this invocation's reads from others'.
/// Returns its log: the plan, its level, every read so far.
pub fn probe(
    inputs: &[&[u8]],
    reader: u64,
    pause: impl FnOnce(u32),
    mut read: impl FnMut(&str) -> Result<Option<Vec<u8>>, String>,
    mut write: impl FnMut(&str, Version, Vec<u8>) -> Result<(), String>,
) -> Result<Vec<u8>, String> {
    let mut logs = inputs
        .iter()
        .map(|i| Log::parse(i).map_err(|e| e.to_string()));
    let Some(first) = logs.next() else {
        return Err("needs the call's plan (at a source) or its upstreams' logs".into());
    };
    let mut log = first?;
    let mut level = log.at.map_or(0, |a| a + 1);
    for other in logs {
        let other = other?;
        if other.plan != log.plan {
            return Err("its upstreams' logs are of different calls".into());
        }
        level = level.max(other.at.map_or(0, |a| a + 1));
        for r in other.reads {
            if !log.reads.contains(&r) {
                log.reads.push(r);
            }
        }
    }
    let levels = log.plan.levels.len();
    let Some(keys) = log.plan.levels.get(level as usize) else {
        return Err(format!(
            "runs at level {level}, but its plan has {levels} levels"
        ));
    };
    if level > 0 && log.plan.pause_ms > 0 {
        pause(log.plan.pause_ms);
    }
    let mut mine: Vec<&String> = keys.iter().collect();
    mine.dedup();
    let mut got = Vec::with_capacity(mine.len());
    for key in mine {
        let written = match read(key)? {
            None => None,
            Some(bytes) => Some(
                std::str::from_utf8(&bytes)
                    .map_err(|_| format!("key {key:?} holds bytes the experiment did not write"))
                    .and_then(|t| Written::parse(t).map_err(|e| format!("key {key:?}: {e}")))?,
            ),
        };
        got.push(Read {
            level,
            reader,
            key: key.clone(),
            written,
        });
    }
    log.reads.extend(got);
    log.at = Some(level);
    if level as usize + 1 == levels && !log.plan.writes.is_empty() {
        let mut read = Vec::new();
        for r in &log.reads {
            let dep = (r.key.clone(), r.version());
            if !read.contains(&dep) {
                read.push(dep);
            }
        }
        let value = Written {
            version: log.plan.version,
            co_written: log.plan.writes.clone(),
            read,
        }
        .encode()
        .into_bytes();
        for key in &log.plan.writes {
            write(key, log.plan.version, value.clone())?;
        }
    }
    Ok(log.encode())
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::record::Plan;

    #[test]
    fn a_chain_reads_its_levels_keys_and_the_sink_writes_with_its_dependencies() {
        let version = Version {
            clock: 50,
            writer: 7,
        };
        let plan = Plan::new(
            version,
            vec![vec!["a".into()], vec!["a".into(), "b".into()]],
            vec!["b".into(), "c".into()],
            5,
        )
        .unwrap();
        let old = Written {
            version: Version {
                clock: 4,
                writer: 1,
            },
            co_written: vec!["a".into()],
            read: vec![],
        };
        let mut store: HashMap<String, (Version, Vec<u8>)> = HashMap::new();
        store.insert("a".into(), (old.version, old.encode().into_bytes()));
        let mut writes = Vec::new();
        let mut paused = Vec::new();
        let source = probe(
            &[&Log::start(plan).encode()],
            1,
            |ms| paused.push(ms),
            |k| Ok(store.get(k).map(|(_, b)| b.clone())),
            |_, _, _| panic!("a source that is not the sink writes nothing"),
        )
        .unwrap();
        let sink = probe(
            &[&source],
            2,
            |ms| paused.push(ms),
            |k| Ok(store.get(k).map(|(_, b)| b.clone())),
            |k, v, b| {
                writes.push((k.to_owned(), v, b));
                Ok(())
            },
        )
        .unwrap();
        assert_eq!(paused, [5], "only past the first level");
        let log = Log::parse(&sink).unwrap();
        assert_eq!(log.at, Some(1));
        let seen: Vec<(u32, u64, &str, Version)> = log
            .reads
            .iter()
            .map(|r| (r.level, r.reader, r.key.as_str(), r.version()))
            .collect();
        assert_eq!(
            seen,
            [
                (0, 1, "a", old.version),
                (1, 2, "a", old.version),
                (1, 2, "b", Version::default())
            ]
        );
        assert_eq!(writes.len(), 2);
        let w = Written::parse(std::str::from_utf8(&writes[0].2).unwrap()).unwrap();
        assert_eq!(writes[0].1, version);
        assert_eq!(w.co_written, ["b", "c"]);
        assert_eq!(
            w.read,
            [("a".into(), old.version), ("b".into(), Version::default())]
        );
        // A foreign value is refused, naming the key.
        let e = probe(
            &[&sink],
            3,
            |_| {},
            |_| Ok(Some(b"x".to_vec())),
            |_, _, _| Ok(()),
        )
        .unwrap_err();
        assert!(e.contains("level 2"), "{e}");
        let plan = Plan::new(version, vec![vec!["k".into()]], vec![], 0).unwrap();
        let e = probe(
            &[&Log::start(plan).encode()],
            1,
            |_| {},
            |_| Ok(Some(vec![0xff])),
            |_, _, _| Ok(()),
        )
        .unwrap_err();
        assert!(e.contains("\"k\""), "{e}");
    }
}
