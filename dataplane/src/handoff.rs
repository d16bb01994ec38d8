//! Hand-off: keys go to the nodes that hold them now. Each shard runs one
//! task that wakes at every placement change (a node joins, fails, comes
//! back, or this node leaves) and runs a round of `cluster::handoff` (what
//! goes where, what may be dropped, and why: that module's doc) over its
//! partition. Batches go as `Merge` requests of at most
//! `HANDOFF_BATCH_KEYS` keys, answered once applied and durable on the
//! receiver; the keys that left are dropped only once every batch is
//! answered, and only those unchanged since they were sent.
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
use std::sync::Arc;
use std::time::{Duration, Instant};

use cluster::handoff::Round;
use futures_lite::StreamExt as _;

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

/// One pass over the partition under placement `now` (the decisions are
/// `cluster::handoff`'s). How many keys it handed over (and dropped).
async fn round(
    server: &Server,
    last: Option<&Placement>,
    now: &Placement,
) -> Result<usize, NodeError> {
    if now.solo() {
        return Ok(0); // no other holder: a scan of every key would find nothing to send
    }
    let shard = &server.shard;
    // Gathered in slices (`Shard::scan`): the shard serves meanwhile. A key
    // written after its slice goes to its holders as any write does, and
    // is dropped here only if unchanged since it was gathered (below).
    let mut round = Round::new(now.my_addr());
    shard
        .scan(
            || Round::new(now.my_addr()),
            |part, key, entry| part.add(key, entry, now, last),
            |part| round.absorb(part),
        )
        .await;
    for (to, batch) in round.batches(HANDOFF_BATCH_KEYS) {
        crash_point!("handoff::before-send");
        let entries = batch
            .into_iter()
            .map(|(key, entry)| crate::convert::entry_to_wire(key, entry))
            .collect();
        server.links.merge(to, entries).await?;
    }
    // Every holder has them now: what left this node goes.
    if round.leaving().next().is_some() {
        crash_point!("handoff::before-drop");
    }
    let mut moved = 0;
    let mut last_lsn = None;
    // In turns: 100k drops (and freeing what the round copied) would
    // otherwise hold the shard for hundreds of ms.
    let mut turn = Instant::now();
    for (key, entry, leaves) in round.into_entries() {
        if leaves {
            if let Some(lsn) = shard.drop_if_unchanged(&key, &entry)? {
                last_lsn = Some(lsn);
                moved += 1;
            }
        }
        crate::shard::turn_over(&mut turn).await;
    }
    if let Some(lsn) = last_lsn {
        crash_point!("handoff::after-drop");
        shard.wait_durable(lsn).await?;
    }
    Ok(moved)
}
