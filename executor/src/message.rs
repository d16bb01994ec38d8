//! Messages between running functions: `send(dest_id, bytes)` and `recv()`.
//!
//! Every executor has a bounded mailbox (a crossbeam channel) listed in the
//! node's [`Postbox`]. `send` delivers straight into the destination's
//! mailbox. When the destination is unreachable — no such executor here
//! (another node, a stopped executor) or its mailbox is full — the message
//! lands in the KVS instead, in the receiver's *inbox key*
//! (`squall:inbox:<id>`, an ordered-set lattice, so concurrent senders merge
//! and nothing is lost). `recv` returns what the inbox key holds (taken
//! atomically from the store) followed by what the mailbox holds, without
//! blocking.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};

use crossbeam_channel as cb;
use kvs_core::lattice::Value;

use crate::limits::MESSAGE_BYTES_MAX;
use crate::store::{Store, StoreError};

/// Key prefix of executors' inboxes (`squall:inbox:<decimal id>`).
pub const INBOX_KEY_PREFIX: &str = "squall:inbox:";

/// The inbox key of executor `id`.
#[must_use]
pub fn inbox_key(id: u64) -> Vec<u8> {
    format!("{INBOX_KEY_PREFIX}{id}").into_bytes()
}

/// A message and the executor that sent it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    pub from: u64,
    pub bytes: Vec<u8>,
}

/// How a message was delivered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Delivery {
    /// Into the destination's mailbox.
    Direct,
    /// Into the destination's inbox key in the store.
    Inbox,
}

/// The node's mailboxes, by executor id.
#[derive(Debug, Default)]
pub struct Postbox {
    boxes: HashMap<u64, (cb::Sender<Message>, cb::Receiver<Message>)>,
    /// Orders messages in an inbox (`from`, then this); starts at the wall
    /// clock so a restarted node never reuses a number.
    seq: AtomicU64,
}

impl Postbox {
    /// Mailboxes of `depth` messages for executors `ids`.
    pub fn new(ids: impl IntoIterator<Item = u64>, depth: usize, seq_start: u64) -> Postbox {
        Postbox {
            boxes: ids.into_iter().map(|id| (id, cb::bounded(depth))).collect(),
            seq: AtomicU64::new(seq_start),
        }
    }

    /// Sends `bytes` from executor `from` to executor `to`.
    pub fn send(
        &self,
        store: &dyn Store,
        from: u64,
        to: u64,
        bytes: Vec<u8>,
    ) -> Result<Delivery, StoreError> {
        if bytes.len() > MESSAGE_BYTES_MAX {
            return Err(StoreError::Refused(format!(
                "a message is at most {MESSAGE_BYTES_MAX} bytes, not {}",
                bytes.len()
            )));
        }
        let bytes = match self.boxes.get(&to) {
            Some((tx, _)) => match tx.try_send(Message { from, bytes }) {
                Ok(()) => return Ok(Delivery::Direct),
                Err(e) => e.into_inner().bytes,
            },
            None => bytes,
        };
        let seq = self.seq.fetch_add(1, Ordering::Relaxed);
        let mut element = Vec::with_capacity(16 + bytes.len());
        element.extend_from_slice(&from.to_be_bytes());
        element.extend_from_slice(&seq.to_be_bytes());
        element.extend_from_slice(&bytes);
        store.put(&inbox_key(to), Value::OrderedSet(BTreeSet::from([element])))?;
        Ok(Delivery::Inbox)
    }

    /// Everything waiting for executor `me`: its inbox key's messages, then
    /// its mailbox's. Never blocks.
    pub fn recv(&self, store: &dyn Store, me: u64) -> Result<Vec<Message>, StoreError> {
        let mut out = Vec::new();
        match store.take(&inbox_key(me))? {
            None => {}
            Some(Value::OrderedSet(elements)) => {
                for e in elements {
                    if e.len() < 16 {
                        continue; // not written by `send`
                    }
                    let mut from = [0u8; 8];
                    from.copy_from_slice(&e[..8]);
                    out.push(Message {
                        from: u64::from_be_bytes(from),
                        bytes: e[16..].to_vec(),
                    });
                }
            }
            Some(other) => {
                return Err(StoreError::Refused(format!(
                    "inbox key of executor {me} holds a {} value, not an ordered set",
                    other.kind()
                )))
            }
        }
        if let Some((_, rx)) = self.boxes.get(&me) {
            out.extend(rx.try_iter());
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::LocalStore;

    #[test]
    fn direct_delivery_then_inbox_fallback_then_recv_drains_both() {
        let store = LocalStore::default();
        let post = Postbox::new([1, 2], 1, 100);
        assert_eq!(
            post.send(&store, 1, 2, b"a".to_vec()).unwrap(),
            Delivery::Direct
        );
        // Mailbox of depth 1 is full: the next lands in the inbox key.
        assert_eq!(
            post.send(&store, 1, 2, b"b".to_vec()).unwrap(),
            Delivery::Inbox
        );
        // No executor 9 on this node: inbox too.
        assert_eq!(
            post.send(&store, 2, 9, b"c".to_vec()).unwrap(),
            Delivery::Inbox
        );
        let got = post.recv(&store, 2).unwrap();
        let texts: Vec<&[u8]> = got.iter().map(|m| m.bytes.as_slice()).collect();
        assert_eq!(texts, [b"b".as_slice(), b"a"], "inbox first, then mailbox");
        assert!(got.iter().all(|m| m.from == 1));
        assert!(post.recv(&store, 2).unwrap().is_empty(), "drained");
        assert!(store.get(&inbox_key(2)).unwrap().is_none());
        // Executor 9's messages wait in the store for whoever reads them.
        let nine = Postbox::new([9], 4, 0).recv(&store, 9).unwrap();
        assert_eq!(
            nine,
            vec![Message {
                from: 2,
                bytes: b"c".to_vec()
            }]
        );
        // The inbox key works again after being taken.
        post.send(&store, 1, 9, b"d".to_vec()).unwrap();
        assert_eq!(Postbox::default().recv(&store, 9).unwrap().len(), 1);
    }

    #[test]
    fn oversized_messages_are_refused() {
        let store = LocalStore::default();
        let post = Postbox::new([1], 4, 0);
        let err = post
            .send(&store, 1, 1, vec![0; MESSAGE_BYTES_MAX + 1])
            .unwrap_err();
        assert!(err.to_string().contains("at most"), "{err}");
    }
}
