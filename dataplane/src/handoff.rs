//! Hand-off: keys go to the node that owns them now. Each shard runs one
//! task that wakes at every placement change (a node joins, fails, comes
//! back, or this node leaves), finds the entries (values and tombstones)
//! its partition holds that the placement puts on another node, and sends
//! them there in acknowledged batches: `Merge` requests of at most
//! `HANDOFF_BATCH_KEYS` keys, answered once applied and durable on the
//! receiver. Only then are they dropped here, and only those unchanged
//! since they were sent (a key written meanwhile goes in the next round).
//!
//! A batch that fails is tried again after a pause (100 ms doubling to
//! 5 s), with everything after it. When a round completes, the shard
//! records the placement version it handed off for; a leaving node waits
//! for every shard's record before it leaves the membership.
//!
//! Requests keep flowing meanwhile: those for a moved key already go to its
//! new owner, and the old owner's copy merges in there when it arrives
//! (lattices merge, so arriving late or twice is safe). Until it has, a
//! read at the new owner may miss a key not yet moved.

use std::rc::Rc;
use std::time::Duration;

use futures_lite::StreamExt as _;
use kvs_core::partition::Entry;
use wire::message as w;
use wire::Status;

use crate::convert::value_to_wire;
use crate::error::NodeError;
use crate::limits::HANDOFF_BATCH_KEYS;
use crate::server::Server;

const PAUSE_FIRST_MS: u64 = 100;
const PAUSE_MAX_MS: u64 = 5_000;

/// Hands off this shard's keys, for as long as the shard runs.
pub(crate) async fn run(server: Rc<Server>) {
    let index = usize::from(server.shard.id().0);
    let mut changes = server.members.subscribe();
    let mut pause_ms = PAUSE_FIRST_MS;
    loop {
        // Changes already queued are covered by the round that starts now.
        while changes.try_recv().is_ok() {}
        let version = server.members.version();
        match round(&server).await {
            Ok(moved) => {
                pause_ms = PAUSE_FIRST_MS;
                if moved > 0 {
                    log::info!(
                        "{}: handed over {moved} key(s) to their owners (placement {version})",
                        server.shard.id()
                    );
                }
                server.members.handed_off(index, version);
                if changes.next().await.is_none() {
                    return;
                }
            }
            Err(e) => {
                log::warn!(
                    "{}: hand-off paused for {pause_ms} ms: {}",
                    server.shard.id(),
                    e.message
                );
                glommio::timer::sleep(Duration::from_millis(pause_ms)).await;
                pause_ms = (pause_ms * 2).min(PAUSE_MAX_MS);
            }
        }
    }
}

/// One pass over the partition; how many keys it moved.
async fn round(server: &Server) -> Result<usize, NodeError> {
    let shard = &server.shard;
    let groups = server.with_placement(|p| {
        shard.entries_elsewhere(|key| p.remote_owner(key).map(|(_, addr)| addr))
    });
    let mut moved = 0;
    for (to, entries) in groups {
        for chunk in entries.chunks(HANDOFF_BATCH_KEYS) {
            let batch = w::MergeBatch {
                entries: chunk.iter().map(|(k, e)| wire_entry(k, e)).collect(),
            };
            match server.links.call(to, &w::Request::Merge(batch)).await {
                w::Response::Stored => {}
                w::Response::Error(e) => {
                    let status = Status::from_code(e.code).unwrap_or(Status::Internal);
                    let why = String::from_utf8_lossy(&e.message);
                    return Err(NodeError::retriable(status, format!("to {to}: {why}")));
                }
                other => {
                    return Err(NodeError::internal(format!(
                        "to {to}: unexpected reply {other:?}"
                    )))
                }
            }
            let mut last = None;
            for (key, entry) in chunk {
                if let Some(lsn) = shard.drop_if_unchanged(key, entry)? {
                    last = Some(lsn);
                    moved += 1;
                }
            }
            if let Some(lsn) = last {
                shard.wait_durable(lsn).await?;
            }
        }
    }
    Ok(moved)
}

fn wire_entry(key: &[u8], entry: &Entry) -> w::MergeEntry {
    let (value, deleted) = match entry {
        Entry::Live(v) => (Some(value_to_wire(v)), None),
        Entry::Tombstone(ts) => (
            None,
            Some(w::DeletedAt {
                clock: ts.clock,
                writer: ts.writer,
            }),
        ),
    };
    w::MergeEntry {
        key: key.to_vec(),
        value,
        deleted,
    }
}
