//! Faults between nodes, on purpose and reproducibly (tests only): the
//! node reads them from the file named by `SQUALL_LINK_FAULTS_FILE`, again
//! whenever it is older than `RECHECK_MS`, so a test switches them at run
//! time by writing or removing the file. Its text is the shard
//! transport's fault list (`transport::faults::Faults::parse`: `seed=`,
//! `drop=`, `duplicate=`, `delay_ms=`, in percent and milliseconds), plus
//! any number of `peer=HOST:PORT` parts: then only links and membership
//! packets to those peers are disturbed.
//!
//! On a link: a dropped request is never sent, or (half the time) sent and
//! its reply thrown away — the peer applied it, the sender does not know —
//! both failing with `unavailable`; a duplicated request is sent twice; a
//! delayed one waits 0..=`delay_ms` first. Membership packets are only
//! dropped. `drop=100,peer=X` on both sides cuts X off: a partition.

use std::cell::{Cell, RefCell};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::transport::faults::Faults;

/// The environment variable naming the faults file.
pub(crate) const ENV: &str = "SQUALL_LINK_FAULTS_FILE";

const RECHECK_MS: u64 = 100;

/// The faults now in force, re-read from the file every `RECHECK_MS`.
#[derive(Debug)]
pub(crate) struct LinkFaults {
    file: std::path::PathBuf,
    read_at: Cell<Option<Instant>>,
    now: RefCell<Option<(Faults, Vec<SocketAddr>)>>,
    rng: Cell<u64>,
}

/// What to do with one request.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Fate {
    pub drop_request: bool,
    pub drop_reply: bool,
    pub duplicate: bool,
    pub delay_ms: u64,
}

impl LinkFaults {
    /// From the environment; `None` when no faults file is named.
    pub fn from_env(salt: u64) -> Option<LinkFaults> {
        let file = std::env::var_os(ENV)?;
        log::warn!(
            "{ENV}={}: requests and packets to other nodes are disturbed on purpose",
            file.to_string_lossy()
        );
        Some(LinkFaults {
            file: file.into(),
            read_at: Cell::new(None),
            now: RefCell::new(None),
            rng: Cell::new(salt),
        })
    }

    fn current(&self, to: SocketAddr) -> Option<Faults> {
        if self
            .read_at
            .get()
            .is_none_or(|t| t.elapsed() >= Duration::from_millis(RECHECK_MS))
        {
            self.read_at.set(Some(Instant::now()));
            let text = std::fs::read_to_string(&self.file).unwrap_or_default();
            let parsed = parse(&text);
            if let Err(e) = &parsed {
                log::warn!("{ENV}: {e}; no faults");
            }
            let parsed = parsed.ok().flatten();
            if let Some((f, _)) = &parsed {
                self.rng.set(self.rng.get() ^ f.seed);
            }
            *self.now.borrow_mut() = parsed;
        }
        let now = self.now.borrow();
        let (faults, peers) = now.as_ref()?;
        (peers.is_empty() || peers.contains(&to)).then_some(*faults)
    }

    fn next(&self) -> u64 {
        crate::transport::faults::splitmix64(&self.rng)
    }

    fn chance(&self, percent: u8) -> bool {
        percent > 0 && self.next() % 100 < u64::from(percent)
    }

    /// What happens to a request to `to`.
    pub fn fate(&self, to: SocketAddr) -> Fate {
        let Some(f) = self.current(to) else {
            return Fate::default();
        };
        let dropped = self.chance(f.drop_percent);
        let reply_side = self.next() % 2 == 0;
        Fate {
            drop_request: dropped && !reply_side,
            drop_reply: dropped && reply_side,
            duplicate: self.chance(f.duplicate_percent),
            delay_ms: if f.delay_ms_max > 0 {
                self.next() % (f.delay_ms_max + 1)
            } else {
                0
            },
        }
    }

    /// Whether a membership packet to `to` is lost.
    pub fn drops_packet(&self, to: SocketAddr) -> bool {
        self.current(to)
            .is_some_and(|f| self.chance(f.drop_percent))
    }
}

/// The faults in a file's text (`None`: empty, no faults).
fn parse(text: &str) -> Result<Option<(Faults, Vec<SocketAddr>)>, String> {
    let mut rest = Vec::new();
    let mut peers = Vec::new();
    for part in text
        .split([',', '\n'])
        .map(str::trim)
        .filter(|p| !p.is_empty())
    {
        match part.strip_prefix("peer=") {
            Some(p) => peers.push(p.parse().map_err(|e| format!("peer={p}: {e}"))?),
            None => rest.push(part),
        }
    }
    if rest.is_empty() && peers.is_empty() {
        return Ok(None);
    }
    Ok(Some((Faults::parse(&rest.join(","))?, peers)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_parse_with_peers_and_seeded_fates_repeat() {
        assert!(parse("").unwrap().is_none());
        let (f, peers) = parse("drop=100\npeer=127.0.0.2:7400").unwrap().unwrap();
        assert_eq!(f.drop_percent, 100);
        assert_eq!(peers, vec!["127.0.0.2:7400".parse::<SocketAddr>().unwrap()]);
        assert!(parse("peer=nowhere").is_err());
        assert!(parse("drop=lots").is_err());

        let dir = std::env::temp_dir().join(format!("squall-link-faults-{}", std::process::id()));
        std::fs::write(
            &dir,
            "seed=3,drop=50,duplicate=20,delay_ms=4,peer=127.0.0.2:1",
        )
        .unwrap();
        let fates = |salt| {
            let lf = LinkFaults {
                file: dir.clone(),
                read_at: Cell::new(None),
                now: RefCell::new(None),
                rng: Cell::new(salt),
            };
            let to: SocketAddr = "127.0.0.2:1".parse().unwrap();
            let other: SocketAddr = "127.0.0.3:1".parse().unwrap();
            assert_eq!(
                lf.fate(other),
                Fate::default(),
                "other peers are left alone"
            );
            (0..200).map(|_| lf.fate(to)).collect::<Vec<_>>()
        };
        let a = fates(1);
        assert_eq!(a, fates(1), "same seed, same fates");
        let dropped = a.iter().filter(|f| f.drop_request || f.drop_reply).count();
        assert!(
            (60..140).contains(&dropped),
            "{dropped} of 200 dropped at 50%"
        );
        assert!(a.iter().all(|f| f.delay_ms <= 4));
        let _ = std::fs::remove_file(&dir);
    }
}
