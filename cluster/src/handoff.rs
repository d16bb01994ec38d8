//! Hand-off decisions: after a placement change, which keys go where and
//! which may be dropped here. A node runs one [`Round`] per shard at every
//! change (a node joins, fails, comes back, or this node leaves): it walks
//! the partition's entries (values and tombstones) and
//!
//! * an entry this node no longer holds goes to all its holders, and is
//!   dropped here once every one of them has acknowledged it, and only if
//!   it is unchanged since it was sent (a key written meanwhile goes in
//!   the next round);
//! * an entry it still holds goes to the holders that are new since the
//!   placement of the last finished round (with replication, a failed
//!   node's keys reach a new holder so); in the first round (no last
//!   placement: at start) to all its other holders, which also re-sends
//!   what a restart lost from the replication queues;
//! * a key with no holders (a lone node; keys that are not spread) stays.
//!
//! The caller sends [`Round::batches`] in acknowledged batches; when one
//! fails it abandons the round and plans a new one later. Only when all
//! were acknowledged does it drop [`Round::leaving`], each entry only if
//! the key still holds exactly that state. Lattices merge, so a batch
//! that arrives twice or late changes nothing.

use kvs_core::partition::{Entry, EntryRef};

/// Where keys live under one placement: the holders of a key, primary
/// first (empty for a key that is not spread).
pub trait Holders<H> {
    fn holders(&self, key: &[u8]) -> Vec<H>;
}

/// One hand-off round: what to send to whom, and what may go afterwards.
#[derive(Debug)]
pub struct Round<H> {
    /// This node in the placement (`None` while it leaves: it holds nothing).
    me: Option<H>,
    /// (key, entry, whether it leaves this node).
    items: Vec<(Vec<u8>, Entry, bool)>,
    /// Per receiver, the indexes of the items it gets.
    targets: Vec<(H, Vec<usize>)>,
}

impl<H: Copy + Eq> Round<H> {
    #[must_use]
    pub fn new(me: Option<H>) -> Round<H> {
        Round {
            me,
            items: Vec::new(),
            targets: Vec::new(),
        }
    }

    /// Considers one entry under placement `now`, given `last`, the
    /// placement of the last finished round (`None` in the first round).
    pub fn add<P: Holders<H>>(
        &mut self,
        key: &[u8],
        entry: EntryRef<'_>,
        now: &P,
        last: Option<&P>,
    ) {
        let holders = now.holders(key);
        let leaves = !holders.is_empty() && self.me.is_none_or(|me| !holders.contains(&me));
        let old = match (leaves, last) {
            (false, Some(last)) => last.holders(key),
            _ => Vec::new(),
        };
        let mut index = None;
        for h in holders {
            if Some(h) == self.me || old.contains(&h) {
                continue;
            }
            let i = *index.get_or_insert_with(|| {
                self.items.push((key.to_vec(), entry.to_entry(), leaves));
                self.items.len() - 1
            });
            match self.targets.iter_mut().find(|(t, _)| *t == h) {
                Some((_, v)) => v.push(i),
                None => self.targets.push((h, vec![i])),
            }
        }
    }

    /// What to send: per receiver, batches of at most `max_keys` entries.
    pub fn batches(&self, max_keys: usize) -> impl Iterator<Item = (H, Vec<(&[u8], &Entry)>)> {
        self.targets.iter().flat_map(move |(to, idx)| {
            idx.chunks(max_keys.max(1)).map(move |chunk| {
                let entries = chunk
                    .iter()
                    .map(|&i| (self.items[i].0.as_slice(), &self.items[i].1))
                    .collect();
                (*to, entries)
            })
        })
    }

    /// Takes in what `part` gathered (a round gathered a part of the
    /// partition at a time): its entries, and its receivers' shares.
    pub fn absorb(&mut self, part: Round<H>) {
        let base = self.items.len();
        self.items.extend(part.items);
        for (to, idx) in part.targets {
            let idx = idx.into_iter().map(|i| i + base);
            match self.targets.iter_mut().find(|(t, _)| *t == to) {
                Some((_, v)) => v.extend(idx),
                None => self.targets.push((to, idx.collect())),
            }
        }
    }

    /// The entries that left this node: to drop once every batch is
    /// acknowledged, each only if unchanged since.
    pub fn leaving(&self) -> impl Iterator<Item = (&[u8], &Entry)> {
        self.items
            .iter()
            .filter(|(_, _, leaves)| *leaves)
            .map(|(k, e, _)| (k.as_slice(), e))
    }

    /// Every entry, and whether it left this node (then to drop as
    /// [`Self::leaving`] says), taking the round apart: a caller that
    /// yields between items also frees a large round a little at a time.
    pub fn into_entries(self) -> impl Iterator<Item = (Vec<u8>, Entry, bool)> {
        self.items.into_iter()
    }

    /// Whether there is nothing to send.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.targets.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use kvs_core::lattice::Timestamp;
    use kvs_core::Value;

    use super::*;

    struct Table(HashMap<&'static [u8], Vec<u8>>);

    impl Holders<u8> for Table {
        fn holders(&self, key: &[u8]) -> Vec<u8> {
            self.0.get(key).cloned().unwrap_or_default()
        }
    }

    fn live(n: u64) -> Entry {
        Entry::Live(Value::Max(n))
    }

    #[test]
    fn leaving_keys_go_to_all_holders_kept_keys_only_to_new_ones() {
        let last = Table(HashMap::from([
            (&b"kept"[..], vec![1, 2]),
            (&b"moves"[..], vec![1, 3]),
            (&b"solo"[..], vec![]),
        ]));
        let now = Table(HashMap::from([
            (&b"kept"[..], vec![1, 4]),
            (&b"moves"[..], vec![3, 5]),
            (&b"solo"[..], vec![]),
        ]));
        let mut round = Round::new(Some(1u8));
        for k in [&b"kept"[..], b"moves", b"solo"] {
            round.add(k, live(7).view(), &now, Some(&last));
        }
        round.add(
            b"gone",
            EntryRef::Tombstone(Timestamp::default()),
            &now,
            Some(&last),
        );
        let mut sent: Vec<(u8, Vec<&[u8]>)> = round
            .batches(10)
            .map(|(to, es)| (to, es.into_iter().map(|(k, _)| k).collect()))
            .collect();
        sent.sort();
        // "kept": only to 4, new since last; "moves": to both its holders
        // (3 had it, but it leaves here, so 3 gets this node's state too).
        assert_eq!(
            sent,
            vec![
                (3, vec![&b"moves"[..]]),
                (4, vec![&b"kept"[..]]),
                (5, vec![&b"moves"[..]])
            ]
        );
        let leaving: Vec<&[u8]> = round.leaving().map(|(k, _)| k).collect();
        assert_eq!(leaving, vec![&b"moves"[..]]);
    }

    #[test]
    fn the_first_round_sends_to_every_other_holder_and_a_leaving_node_keeps_nothing() {
        let now = Table(HashMap::from([(&b"k"[..], vec![1, 2, 3])]));
        let mut first = Round::new(Some(1u8));
        first.add(b"k", live(1).view(), &now, None);
        let to: Vec<u8> = first.batches(10).map(|(t, _)| t).collect();
        assert_eq!(to, vec![2, 3]);
        assert_eq!(first.leaving().count(), 0);

        let mut leaving = Round::new(None);
        leaving.add(b"k", live(1).view(), &now, Some(&now));
        let to: Vec<u8> = leaving.batches(10).map(|(t, _)| t).collect();
        assert_eq!(to, vec![1, 2, 3]);
        assert_eq!(leaving.leaving().count(), 1);
    }

    #[test]
    fn a_round_gathered_in_parts_sends_and_drops_what_one_round_would() {
        let last = Table(HashMap::from([
            (&b"a"[..], vec![1, 2]),
            (&b"b"[..], vec![1, 3]),
            (&b"c"[..], vec![1]),
            (&b"d"[..], vec![2, 3]),
        ]));
        let now = Table(HashMap::from([
            (&b"a"[..], vec![1, 4]),
            (&b"b"[..], vec![3, 4]),
            (&b"c"[..], vec![2]),
            (&b"d"[..], vec![1, 3]),
        ]));
        let keys = [&b"a"[..], b"b", b"c", b"d"];
        let mut whole = Round::new(Some(1u8));
        for k in keys {
            whole.add(k, live(3).view(), &now, Some(&last));
        }
        let mut parts = Round::new(Some(1u8));
        for half in keys.chunks(2) {
            let mut part = Round::new(Some(1u8));
            for k in half {
                part.add(k, live(3).view(), &now, Some(&last));
            }
            parts.absorb(part);
        }
        let sent = |r: &Round<u8>| {
            let mut v: Vec<(u8, Vec<Vec<u8>>)> = r
                .batches(10)
                .map(|(to, es)| (to, es.into_iter().map(|(k, _)| k.to_vec()).collect()))
                .collect();
            v.sort();
            v
        };
        assert_eq!(sent(&parts), sent(&whole));
        assert_eq!(sent(&whole).len(), 3, "{:?}", sent(&whole));
        let left = |r: &Round<u8>| r.leaving().map(|(k, _)| k.to_vec()).collect::<Vec<_>>();
        assert_eq!(left(&parts), left(&whole));
        assert_eq!(left(&whole), vec![b"b".to_vec(), b"c".to_vec()]);
    }

    #[test]
    fn batches_hold_at_most_max_keys() {
        let now = Table(HashMap::from([
            (&b"a"[..], vec![2]),
            (&b"b"[..], vec![2]),
            (&b"c"[..], vec![2]),
        ]));
        let mut round = Round::new(Some(1u8));
        for k in [&b"a"[..], b"b", b"c"] {
            round.add(k, live(1).view(), &now, None);
        }
        let sizes: Vec<usize> = round.batches(2).map(|(_, es)| es.len()).collect();
        assert_eq!(sizes, vec![2, 1]);
        assert!(Round::<u8>::new(Some(1)).is_empty());
    }
}
