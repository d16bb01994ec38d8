//! The node's identity in a cluster: a node id chosen at random on its
//! first start, and an incarnation bumped at every start, kept in
//! `<data-dir>/node.id`. A restarted node is the same member with its data
//! (same id), yet its peers can tell it from the process that was there
//! before (higher incarnation).
//!
//! The file is text, three lines: `squall node identity v1`,
//! `id=<16 hex digits>`, `incarnation=<decimal>`. It is replaced
//! atomically (written to `node.id.tmp`, synced, renamed, the directory
//! synced), so a crash leaves the old identity or the new, never neither.
//! A file that does not parse stops the node: a new id would make it a
//! different member holding the old one's data.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use kvs_core::NodeId;

const FILE: &str = "node.id";
const HEADER: &str = "squall node identity v1";

/// Who this node is, this time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Identity {
    pub id: NodeId,
    pub incarnation: u64,
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum IdentityError {
    #[error("{what} {}: {source}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{} is not a node identity ({why}); restore it from a backup, or remove it \
         to start this data directory as a new node",
        path.display()
    )]
    Corrupt { path: PathBuf, why: String },
    #[error("no randomness for a new node id: {0}")]
    Random(String),
}

fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> IdentityError {
    let path = path.to_owned();
    move |source| IdentityError::Io { what, path, source }
}

/// This start's identity: the stored one with its incarnation bumped, or a
/// new id at incarnation 1 for a data directory that has none.
pub(crate) fn start(data_dir: &Path) -> Result<Identity, IdentityError> {
    std::fs::create_dir_all(data_dir).map_err(io("creating", data_dir))?;
    let path = data_dir.join(FILE);
    let identity = match std::fs::read_to_string(&path) {
        Ok(text) => {
            let old = parse(&text).map_err(|why| IdentityError::Corrupt {
                path: path.clone(),
                why,
            })?;
            Identity {
                id: old.id,
                incarnation: old.incarnation + 1,
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Identity {
            id: new_id()?,
            incarnation: 1,
        },
        Err(e) => return Err(io("reading", &path)(e)),
    };
    store(data_dir, identity)?;
    Ok(identity)
}

fn new_id() -> Result<NodeId, IdentityError> {
    loop {
        let id = getrandom::u64().map_err(|e| IdentityError::Random(e.to_string()))?;
        if id != 0 {
            return Ok(NodeId(id));
        }
    }
}

fn parse(text: &str) -> Result<Identity, String> {
    let mut lines = text.lines();
    if lines.next() != Some(HEADER) {
        return Err(format!("its first line is not {HEADER:?}"));
    }
    let mut field = |name: &str| {
        lines
            .next()
            .and_then(|l| l.strip_prefix(name))
            .and_then(|l| l.strip_prefix('='))
            .ok_or_else(|| format!("no {name}= line"))
    };
    let id = field("id")?;
    let id = u64::from_str_radix(id, 16).map_err(|e| format!("id {id:?}: {e}"))?;
    let incarnation = field("incarnation")?;
    let incarnation = incarnation
        .parse::<u64>()
        .map_err(|e| format!("incarnation {incarnation:?}: {e}"))?;
    if id == 0 || incarnation == 0 || incarnation == u64::MAX {
        return Err("id and incarnation must be positive (and below the maximum)".into());
    }
    Ok(Identity {
        id: NodeId(id),
        incarnation,
    })
}

fn store(data_dir: &Path, identity: Identity) -> Result<(), IdentityError> {
    let path = data_dir.join(FILE);
    let tmp = data_dir.join(format!("{FILE}.tmp"));
    let text = format!(
        "{HEADER}\nid={:016x}\nincarnation={}\n",
        identity.id.0, identity.incarnation
    );
    let mut f = std::fs::File::create(&tmp).map_err(io("creating", &tmp))?;
    f.write_all(text.as_bytes()).map_err(io("writing", &tmp))?;
    f.sync_all().map_err(io("syncing", &tmp))?;
    std::fs::rename(&tmp, &path).map_err(io("renaming to", &path))?;
    std::fs::File::open(data_dir)
        .and_then(|d| d.sync_all())
        .map_err(io("syncing", data_dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "squall-identity-{name}-{}-{}",
            std::process::id(),
            getrandom::u64().unwrap()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn the_id_stays_and_the_incarnation_grows_with_every_start() {
        let dir = temp("restart");
        let first = start(&dir).unwrap();
        assert_eq!(first.incarnation, 1);
        assert_ne!(first.id, NodeId(0));
        let second = start(&dir).unwrap();
        assert_eq!((second.id, second.incarnation), (first.id, 2));
        assert_eq!(start(&dir).unwrap().incarnation, 3);
        assert!(!dir.join("node.id.tmp").exists());
        let other = start(&temp("other")).unwrap();
        assert_ne!(other.id, first.id, "a new data directory is a new node");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_damaged_file_stops_the_start_and_says_how_to_recover() {
        let dir = temp("corrupt");
        start(&dir).unwrap();
        for bad in [
            "",
            "hello\n",
            "squall node identity v1\nid=xyz\nincarnation=1\n",
            "squall node identity v1\nid=00000000000000ff\n",
            "squall node identity v1\nid=0000000000000000\nincarnation=4\n",
        ] {
            std::fs::write(dir.join("node.id"), bad).unwrap();
            let err = start(&dir).unwrap_err();
            let msg = err.to_string();
            assert!(matches!(err, IdentityError::Corrupt { .. }), "{msg}");
            assert!(msg.contains("remove it"), "{msg}");
            assert_eq!(std::fs::read_to_string(dir.join("node.id")).unwrap(), bad);
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
