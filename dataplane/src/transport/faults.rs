//! A [`Transport`] wrapper that misbehaves on purpose, reproducibly: from a
//! seed it drops, duplicates, delays and reorders messages, so a test can
//! check what a protocol does when the network is unkind. (Loopback and
//! `tc netem` cannot do this here: the faults come from the code.)
//!
//! - **drop**: the message is never delivered; its reply resolves to
//!   `timeout` after `lost_reply_ms`.
//! - **duplicate**: delivered twice; the first reply is returned, the
//!   second discarded.
//! - **delay**: delivered after 0..=`delay_ms_max` ms. Without `reorder`
//!   `send` waits out the delay (later messages queue behind it, order
//!   kept); with `reorder` it returns at once and later messages may
//!   overtake it.

use std::cell::Cell;
use std::rc::Rc;
use std::time::Duration;

use kvs_core::ShardId;
use wire::Status;

use super::{ReplyFuture, Sending, ShardOp, ShardReply, Transport};
use crate::error::NodeError;

/// Which faults, how often (percentages of messages).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Faults {
    pub seed: u64,
    pub drop_percent: u8,
    pub duplicate_percent: u8,
    pub delay_ms_max: u64,
    pub reorder: bool,
    /// How long a dropped message's reply takes to time out.
    pub lost_reply_ms: u64,
}

impl Faults {
    /// The environment variable a node reads its faults from (tests only;
    /// a node started with it logs a warning).
    pub const ENV: &'static str = "SQUALL_FAULTS";

    /// Parses `seed=7,drop=10,duplicate=5,delay_ms=3,reorder,lost_reply_ms=200`
    /// (every part optional).
    pub fn parse(s: &str) -> Result<Faults, String> {
        let mut f = Faults {
            lost_reply_ms: crate::limits::FORWARD_TIMEOUT_MS,
            ..Faults::default()
        };
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            if part == "reorder" {
                f.reorder = true;
                continue;
            }
            let (k, v) = part
                .split_once('=')
                .ok_or_else(|| format!("{part:?} is not KEY=VALUE"))?;
            let bad = |e: std::num::ParseIntError| format!("{k}={v}: {e}");
            match k {
                "seed" => f.seed = v.parse().map_err(bad)?,
                "drop" => f.drop_percent = v.parse::<u8>().map_err(bad)?.min(100),
                "duplicate" => f.duplicate_percent = v.parse::<u8>().map_err(bad)?.min(100),
                "delay_ms" => f.delay_ms_max = v.parse().map_err(bad)?,
                "lost_reply_ms" => f.lost_reply_ms = v.parse().map_err(bad)?,
                _ => return Err(format!("unknown fault {k:?}")),
            }
        }
        Ok(f)
    }
}

/// `inner`, with `faults`.
pub(crate) struct Faulty {
    inner: Rc<dyn Transport>,
    faults: Faults,
    /// SplitMix64 state: the same seed gives the same faults.
    rng: Cell<u64>,
}

impl Faulty {
    pub fn new(inner: Rc<dyn Transport>, faults: Faults) -> Faulty {
        Faulty {
            inner,
            faults,
            rng: Cell::new(faults.seed),
        }
    }

    fn next(&self) -> u64 {
        splitmix64(&self.rng)
    }

    fn chance(&self, percent: u8) -> bool {
        percent > 0 && self.next() % 100 < u64::from(percent)
    }
}

/// The next number of a SplitMix64 sequence kept in `state`: the same
/// seed, the same faults.
pub(crate) fn splitmix64(state: &Cell<u64>) -> u64 {
    let s = state.get().wrapping_add(0x9e37_79b9_7f4a_7c15);
    state.set(s);
    let mut z = s;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

async fn sleep_ms(ms: u64) {
    if ms > 0 {
        glommio::timer::sleep(Duration::from_millis(ms)).await;
    }
}

/// Queues `op` (twice when `duplicate`); resolves to the first copy's
/// reply (the second's is awaited and discarded by its own task).
async fn queue(inner: Rc<dyn Transport>, to: ShardId, op: ShardOp, duplicate: bool) -> ReplyFuture {
    let copy = duplicate.then(|| op.clone());
    let first = inner.send(to, op).await;
    if let Some(copy) = copy {
        let second = inner.send(to, copy).await;
        glommio::spawn_local(second).detach();
    }
    first
}

/// A dropped message: its reply times out.
async fn lost(f: Faults) -> ReplyFuture {
    Box::pin(async move {
        sleep_ms(f.lost_reply_ms).await;
        ShardReply::Error(NodeError::new(
            Status::Timeout,
            format!("the message was dropped (fault injection, seed {})", f.seed),
        ))
    })
}

/// Queues `op` after `delay_ms`.
async fn delayed(
    inner: Rc<dyn Transport>,
    to: ShardId,
    op: ShardOp,
    duplicate: bool,
    delay_ms: u64,
) -> ReplyFuture {
    sleep_ms(delay_ms).await;
    queue(inner, to, op, duplicate).await
}

impl Transport for Faulty {
    fn send(&self, to: ShardId, op: ShardOp) -> Sending<'_> {
        let f = self.faults;
        if self.chance(f.drop_percent) {
            return Box::pin(lost(f));
        }
        let duplicate = self.chance(f.duplicate_percent);
        let delay_ms = match f.delay_ms_max {
            0 => 0,
            max => self.next() % (max + 1),
        };
        let inner = self.inner.clone();
        if !f.reorder {
            return Box::pin(delayed(inner, to, op, duplicate, delay_ms));
        }
        // Delivered by its own task: `send` returns at once, so later
        // messages may arrive first.
        let task =
            glommio::spawn_local(
                async move { delayed(inner, to, op, duplicate, delay_ms).await.await },
            );
        Box::pin(std::future::ready(Box::pin(task) as ReplyFuture))
    }
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;

    use super::*;

    /// Records what arrives, in order, and answers `Stored`.
    #[derive(Default)]
    struct Recorder {
        arrived: RefCell<Vec<Vec<u8>>>,
    }

    impl Transport for Recorder {
        fn send(&self, _to: ShardId, op: ShardOp) -> Sending<'_> {
            let ShardOp::Delete(key) = op else {
                unreachable!("the tests send deletes")
            };
            self.arrived.borrow_mut().push(key);
            Box::pin(std::future::ready(super::super::ready(ShardReply::Stored)))
        }
    }

    /// Sends keys 0..n through `faults`; returns the arrival order and how
    /// many replies were timeouts.
    fn run(faults: Faults, n: u8) -> (Vec<u8>, usize) {
        let ex = glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
            .io_memory(crate::limits::IO_MEMORY_PER_SHARD_BYTES)
            .make()
            .expect("executor");
        ex.run(async move {
            let recorder = Rc::new(Recorder::default());
            let faulty = Faulty::new(recorder.clone(), faults);
            let mut replies = Vec::new();
            for k in 0..n {
                replies.push(faulty.send(ShardId(1), ShardOp::Delete(vec![k])).await);
            }
            let mut timeouts = 0;
            for r in replies {
                match r.await {
                    ShardReply::Stored => {}
                    ShardReply::Error(e) if e.status == Status::Timeout => timeouts += 1,
                    other => panic!("unexpected reply {other:?}"),
                }
            }
            // Duplicates' second deliveries run in their own tasks.
            sleep_ms(faults.delay_ms_max + 5).await;
            let arrived = recorder.arrived.borrow().iter().map(|k| k[0]).collect();
            (arrived, timeouts)
        })
    }

    #[test]
    fn faults_parse() {
        let f = Faults::parse("seed=7, drop=10,duplicate=5,delay_ms=3,reorder,lost_reply_ms=200")
            .unwrap();
        assert_eq!(
            (f.seed, f.drop_percent, f.duplicate_percent, f.delay_ms_max),
            (7, 10, 5, 3)
        );
        assert!(f.reorder);
        assert_eq!(f.lost_reply_ms, 200);
        assert!(Faults::parse("drop").is_err());
        assert!(Faults::parse("jitter=3").is_err());
        assert!(Faults::parse("drop=x").is_err());
    }

    #[test]
    fn without_faults_every_message_arrives_once_in_order() {
        let (arrived, timeouts) = run(Faults::default(), 50);
        assert_eq!(arrived, (0..50).collect::<Vec<u8>>());
        assert_eq!(timeouts, 0);
    }

    #[test]
    fn dropped_messages_never_arrive_and_their_replies_time_out() {
        let faults = Faults {
            seed: 7,
            drop_percent: 30,
            lost_reply_ms: 1,
            ..Faults::default()
        };
        let (arrived, timeouts) = run(faults, 100);
        assert!(timeouts > 0 && timeouts < 100, "{timeouts} dropped");
        assert_eq!(arrived.len() + timeouts, 100);
        assert!(arrived.windows(2).all(|w| w[0] < w[1]), "order kept");
    }

    #[test]
    fn duplicated_messages_arrive_twice() {
        let faults = Faults {
            seed: 3,
            duplicate_percent: 100,
            ..Faults::default()
        };
        let (arrived, _) = run(faults, 20);
        let twice: Vec<u8> = (0..20).flat_map(|k| [k, k]).collect();
        assert_eq!(arrived, twice);
    }

    #[test]
    fn delays_with_reordering_let_later_messages_overtake() {
        let faults = Faults {
            seed: 42,
            delay_ms_max: 20,
            reorder: true,
            ..Faults::default()
        };
        let (a, _) = run(faults, 30);
        let mut sorted = a.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..30).collect::<Vec<u8>>(), "each arrives once");
        assert_ne!(a, sorted, "some overtook others");
        // Delays without reordering keep the order.
        let (kept, _) = run(
            Faults {
                reorder: false,
                ..faults
            },
            10,
        );
        assert_eq!(kept, (0..10).collect::<Vec<u8>>());
    }
}
