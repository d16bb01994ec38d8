//! Anti-entropy (`--replication` above 1): replicas that diverged without
//! a new write converge anyway. Pushes are acknowledged and re-sent, so
//! this is the net under them: a value merged into one copy only (an
//! operator's `Merge`, a node restored from an old disk), or a push lost
//! to a bug.
//!
//! Every `--anti-entropy-ms` each shard asks each other node of the view,
//! in turn, for the range digest (`kvs_core::digest`) of the keys both
//! nodes hold that live on this shard here (`Digest`; the peer sums its
//! shards'), and compares it with its own. For each range that differs it
//! sends the peer its own copies of those keys (`Merge`, acknowledged
//! batches); the peer's own round sends this node its copies, so both end
//! with the merge of the two. Nodes whose views differ skip each other
//! (their shared keys differ too) until they agree.
//!
//! A round scans the shard's entries once per peer, in slices
//! (`Shard::scan`: the shard serves between slices); ranges that agree cost
//! one request and no keys.

use std::rc::Rc;
use std::time::Duration;

use kvs_core::digest::RangeDigest;
use kvs_core::partition::Entry;
use wire::message as w;
use wire::Status;

use crate::error::NodeError;
use crate::limits::HANDOFF_BATCH_KEYS;
use crate::members::Placement;
use crate::server::Server;

/// Runs anti-entropy rounds every `interval_ms`, for as long as the shard
/// runs.
pub(crate) async fn run(server: Rc<Server>, interval_ms: u64) {
    loop {
        glommio::timer::sleep(Duration::from_millis(interval_ms)).await;
        let placement = server.members.placement();
        if server.members.is_leaving() {
            return;
        }
        for (peer, _) in placement.others() {
            match round(&server, &placement, peer).await {
                Ok(0) => {}
                Ok(sent) => log::info!(
                    "{}: anti-entropy sent {sent} key(s) to {peer} (their copies differed)",
                    server.shard.id()
                ),
                Err(e) if e.status == Status::Unavailable => {
                    log::debug!(
                        "{}: anti-entropy with {peer}: {}",
                        server.shard.id(),
                        e.message
                    );
                }
                Err(e) => log::warn!(
                    "{}: anti-entropy with {peer}: {}",
                    server.shard.id(),
                    e.message
                ),
            }
        }
    }
}

/// Compares this shard's keys shared with `peer` with the peer's copies;
/// sends those in differing ranges. How many it sent.
async fn round(
    server: &Server,
    placement: &Placement,
    peer: kvs_core::NodeId,
) -> Result<usize, NodeError> {
    let Some(addr) = placement.addr_of(peer) else {
        return Ok(0);
    };
    let Some(me) = placement.me() else {
        return Ok(0);
    };
    let shard = &server.shard;
    let mine = shard.digest(|k| placement.shared_with(k, peer)).await;
    let ask = w::Request::Digest(w::DigestRequest {
        node: me.0,
        epoch: placement.epoch(),
        shard: shard.id().0,
    });
    let theirs = match server.links.call(addr, &ask).await {
        w::Response::Digest(sums) => RangeDigest::from_buckets(&sums).ok_or_else(|| {
            NodeError::internal(format!("{addr} sent a digest of {} ranges", sums.len()))
        })?,
        w::Response::Error(e) => {
            let status = Status::from_code(e.code).unwrap_or(Status::Internal);
            let why = String::from_utf8_lossy(&e.message);
            return Err(NodeError::retriable(status, format!("{addr}: {why}")));
        }
        other => {
            return Err(NodeError::internal(format!(
                "{addr}: unexpected reply {other:?}"
            )))
        }
    };
    let differing = mine.differing(&theirs);
    if differing == 0 {
        return Ok(0);
    }
    let mut items: Vec<(Vec<u8>, Entry)> = Vec::new();
    shard
        .scan(
            Vec::new,
            |part: &mut Vec<(Vec<u8>, Entry)>, key, entry| {
                let range = kvs_core::digest::bucket_of(key);
                if differing & (1 << range) != 0 && placement.shared_with(key, peer) {
                    part.push((key.to_vec(), entry.to_entry()));
                }
            },
            |part| items.extend(part),
        )
        .await;
    for chunk in items.chunks(HANDOFF_BATCH_KEYS) {
        let entries = chunk
            .iter()
            .map(|(k, e)| crate::convert::entry_to_wire(k, e))
            .collect();
        server.links.merge(addr, entries).await?;
    }
    Ok(items.len())
}
