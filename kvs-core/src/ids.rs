//! Sized identifiers shared across crate boundaries.

use std::fmt;

/// A shard (one core, one partition) inside a node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct ShardId(pub u16);

impl fmt::Display for ShardId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "shard-{}", self.0)
    }
}

/// A node of the cluster: chosen at random when the node first starts and
/// kept in its data directory, so a restarted node is the same member.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct NodeId(pub u64);

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "node-{:016x}", self.0)
    }
}

/// Log sequence number of a WAL record; strictly increasing per shard.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Lsn(pub u64);

impl Lsn {
    /// The next sequence number.
    #[must_use]
    pub fn next(self) -> Lsn {
        Lsn(self.0 + 1)
    }
}

impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "lsn-{}", self.0)
    }
}

/// The largest id of an atomic call's transaction (58 bits: with its
/// stage it fits in an LWW writer id).
pub const TXN_ID_MAX: u64 = (1 << 58) - 1;

/// Writer ids of the versions atomic calls' commits write have both top
/// bits set (a node's own writer ids set only the top one).
pub const TXN_WRITER_BASE: u64 = 3 << 62;

const STAGE_BITS: u32 = 4;

/// The LWW writer id of the versions that stage `stage` (a DAG of a call
/// with continuations, from 0; fewer than 16) of transaction `txn` writes:
/// `TXN_WRITER_BASE | txn << 4 | stage`. A reader finds in it the commit
/// record a version came from.
#[must_use]
pub fn txn_writer(txn: u64, stage: usize) -> u64 {
    debug_assert!(txn <= TXN_ID_MAX && stage < 1 << STAGE_BITS);
    TXN_WRITER_BASE | (txn & TXN_ID_MAX) << STAGE_BITS | (stage as u64 & 0xf)
}

/// The transaction and stage a writer id names, if it is an atomic
/// call's ([`txn_writer`]).
#[must_use]
pub fn txn_of_writer(writer: u64) -> Option<(u64, usize)> {
    (writer & TXN_WRITER_BASE == TXN_WRITER_BASE).then(|| {
        let rest = writer & !TXN_WRITER_BASE;
        (rest >> STAGE_BITS, (rest & 0xf) as usize)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_txn_writer_names_its_transaction_and_stage_and_no_node_writer_does() {
        assert_eq!(txn_of_writer(txn_writer(0xabc, 2)), Some((0xabc, 2)));
        assert_eq!(
            txn_of_writer(txn_writer(TXN_ID_MAX, 15)),
            Some((TXN_ID_MAX, 15))
        );
        assert_eq!(txn_of_writer(1 << 63 | 3), None, "a node's own writer id");
        assert_eq!(txn_of_writer(7), None);
    }
}
