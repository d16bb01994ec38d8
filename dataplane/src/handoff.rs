//! Hand-off: keys go to the nodes that hold them now. Each shard runs one
//! task that wakes at every placement change (a node joins, fails, comes
//! back, or this node leaves) and walks its partition's entries (values
//! and tombstones): one this node no longer holds goes to all its holders;
//! one it still holds goes to the holders that are new since the last
//! round (with replication, a failed node's keys reach a new holder so;
//! at start, to all other holders). They go in acknowledged batches:
//! `Merge` requests of at most `HANDOFF_BATCH_KEYS` keys, answered once
//! applied and durable on the receiver. Only once every holder has answered
//! are the keys that left dropped here, and only those unchanged since
//! they were sent (a key written meanwhile goes in the next round).
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

use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use futures_lite::StreamExt as _;
use kvs_core::partition::Entry;

use crate::error::NodeError;
use crate::limits::HANDOFF_BATCH_KEYS;
use crate::members::Placement;
use crate::server::Server;

const PAUSE_FIRST_MS: u64 = 100;
const PAUSE_MAX_MS: u64 = 5_000;

/// Hands off this shard's keys, for as long as the shard runs.
pub(crate) async fn run(server: Rc<Server>) {
    let index = usize::from(server.shard.id().0);
    let mut changes = server.members.subscribe();
    let mut pause_ms = PAUSE_FIRST_MS;
    // The placement of the last finished round (none at start: every key
    // goes to all its other holders once, which also re-sends what a
    // restart lost from the replication queues).
    let mut last: Option<Arc<Placement>> = None;
    loop {
        // Changes already queued are covered by the round that starts now.
        while changes.try_recv().is_ok() {}
        let now = server.members.placement();
        match round(&server, last.as_deref(), &now).await {
            Ok(moved) => {
                pause_ms = PAUSE_FIRST_MS;
                if moved > 0 {
                    log::info!(
                        "{}: handed over {moved} key(s) to their holders (placement {})",
                        server.shard.id(),
                        now.version
                    );
                }
                server.members.handed_off(index, now.version);
                last = Some(now);
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

/// One pass over the partition under placement `now`: a key this node no
/// longer holds goes to all its holders and is dropped once they all have
/// it; a key it still holds goes to the holders it did not have under
/// `last`. How many keys it handed over (and dropped).
async fn round(
    server: &Server,
    last: Option<&Placement>,
    now: &Placement,
) -> Result<usize, NodeError> {
    let shard = &server.shard;
    let me = now.my_addr();
    // (key, entry, whether it leaves this node), and per target the
    // indexes of what it gets.
    let mut items: Vec<(Vec<u8>, Entry, bool)> = Vec::new();
    let mut targets: Vec<(SocketAddr, Vec<usize>)> = Vec::new();
    shard.for_each_entry(|key, entry| {
        let holders = now.holders(key);
        let leaves = !holders.is_empty() && me.is_none_or(|me| !holders.contains(&me));
        let old = match (leaves, last) {
            (false, Some(last)) => last.holders(key),
            _ => Vec::new(),
        };
        let mut index = None;
        for h in holders {
            if Some(h) == me || old.contains(&h) {
                continue;
            }
            let i = *index.get_or_insert_with(|| {
                items.push((key.to_vec(), entry.clone(), leaves));
                items.len() - 1
            });
            match targets.iter_mut().find(|(a, _)| *a == h) {
                Some((_, v)) => v.push(i),
                None => targets.push((h, vec![i])),
            }
        }
    });
    for (to, idx) in &targets {
        for chunk in idx.chunks(HANDOFF_BATCH_KEYS) {
            let entries = chunk
                .iter()
                .map(|&i| crate::convert::entry_to_wire(&items[i].0, &items[i].1))
                .collect();
            server.links.merge(*to, entries).await?;
        }
    }
    // Every holder has them now: what left this node goes.
    let mut moved = 0;
    let mut last_lsn = None;
    for (key, entry, leaves) in &items {
        if *leaves {
            if let Some(lsn) = shard.drop_if_unchanged(key, entry)? {
                last_lsn = Some(lsn);
                moved += 1;
            }
        }
    }
    if let Some(lsn) = last_lsn {
        shard.wait_durable(lsn).await?;
    }
    Ok(moved)
}
