//! Replies that complete after their batch.

use std::future::Future;
use std::pin::Pin;
use std::task::Poll;

use wire::frame::{encode_error_epoch, encode_frame_epoch};
use wire::message as w;
use wire::Status;

/// Replies that complete after their batch (calls, forwarded requests).
/// The connection's own task polls them whenever it waits (no task per
/// reply: a completion wakes the connection directly) and encodes each
/// response as it completes.
#[derive(Default)]
pub(super) struct Outbox {
    pending: Vec<(u64, PendingReply)>,
}

/// A reply still running.
pub(super) type PendingReply = Pin<Box<dyn Future<Output = w::Response>>>;

impl Outbox {
    pub(super) fn push(
        &mut self,
        request_id: u64,
        reply: impl Future<Output = w::Response> + 'static,
    ) {
        self.pending.push((request_id, Box::pin(reply)));
    }

    pub(super) fn in_flight(&self) -> usize {
        self.pending.len()
    }

    /// Completes once at least one reply is done; done ones are encoded
    /// into `wbuf`, their headers carrying `epoch` (the node's).
    pub(super) async fn ready(&mut self, wbuf: &mut Vec<u8>, epoch: u64) {
        futures_lite::future::poll_fn(|cx| {
            let mut done = false;
            let mut i = 0;
            while i < self.pending.len() {
                if let Poll::Ready(resp) = self.pending[i].1.as_mut().poll(cx) {
                    let (request_id, _) = self.pending.swap_remove(i);
                    if let Err(e) = encode_frame_epoch(request_id, epoch, &resp, wbuf) {
                        let msg = format!("reply did not encode: {e}");
                        encode_error_epoch(request_id, epoch, Status::Internal, &msg, wbuf);
                    }
                    done = true;
                } else {
                    i += 1;
                }
            }
            if done {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
        .await;
    }
}

impl std::fmt::Debug for Outbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Outbox({} pending)", self.pending.len())
    }
}
