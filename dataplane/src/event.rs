//! A shard-local, set-once event: tasks `wait()` until someone calls
//! `set()`, or until a `pulse()` asks every current waiter to look at its
//! state once. Used for shutdown and for reclaiming idle connections.
//! Single-threaded; a waiter that is dropped before the event fires
//! unregisters itself, so short-lived waiters (one per connection read)
//! never accumulate. Also [`acknowledged`]: the first `need` of several
//! one-shot answers, within a time.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use futures_channel::oneshot;

#[derive(Debug, Default)]
pub struct Event {
    set: Cell<bool>,
    pulses: Cell<u64>,
    next_id: Cell<u64>,
    waiters: RefCell<HashMap<u64, Waker>>,
}

impl Event {
    pub fn set(&self) {
        if !self.set.replace(true) {
            for (_, w) in self.waiters.borrow_mut().drain() {
                w.wake();
            }
        }
    }

    /// Wakes every current waiter without setting the event.
    pub fn pulse(&self) {
        self.pulses.set(self.pulses.get() + 1);
        for (_, w) in self.waiters.borrow_mut().drain() {
            w.wake();
        }
    }

    pub fn is_set(&self) -> bool {
        self.set.get()
    }

    /// Completes once the event is set (pulses are ignored).
    pub async fn wait_set(&self) {
        while !self.is_set() {
            self.wait().await;
        }
    }

    /// Completes once the event is set or pulsed.
    pub fn wait(&self) -> Wait<'_> {
        let id = self.next_id.get();
        self.next_id.set(id + 1);
        Wait {
            event: self,
            id,
            pulses: self.pulses.get(),
        }
    }
}

#[derive(Debug)]
pub struct Wait<'a> {
    event: &'a Event,
    id: u64,
    pulses: u64,
}

impl Future for Wait<'_> {
    type Output = ();
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.event.set.get() || self.event.pulses.get() != self.pulses {
            return Poll::Ready(());
        }
        self.event
            .waiters
            .borrow_mut()
            .insert(self.id, cx.waker().clone());
        Poll::Pending
    }
}

impl Drop for Wait<'_> {
    fn drop(&mut self) {
        self.event.waiters.borrow_mut().remove(&self.id);
    }
}

/// Counts acknowledgements (for a write concern): resolves once `need` of
/// `barriers` resolved, or fails after `timeout` with how many did.
pub(crate) async fn acknowledged(
    barriers: Vec<oneshot::Receiver<()>>,
    need: usize,
    timeout: Duration,
) -> Result<(), usize> {
    let got = Rc::new(Cell::new(0usize));
    let done = Rc::new(Event::default());
    for b in barriers {
        let (got, done) = (got.clone(), done.clone());
        glommio::spawn_local(async move {
            if b.await.is_ok() {
                got.set(got.get() + 1);
                done.pulse();
            }
        })
        .detach();
    }
    let deadline = Instant::now() + timeout;
    while got.get() < need {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(got.get());
        }
        let wait = done.wait();
        futures_lite::future::or(wait, glommio::timer::sleep(left)).await;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dropped_waiters_unregister_and_set_wakes_the_rest() {
        let ex = glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
            .io_memory(crate::limits::IO_MEMORY_PER_SHARD_BYTES)
            .make()
            .expect("executor");
        ex.run(async {
            let ev = std::rc::Rc::new(Event::default());
            for _ in 0..100 {
                let w = ev.wait();
                let _ = futures_lite::future::poll_once(w).await;
            }
            assert!(ev.waiters.borrow().is_empty());
            let ev2 = ev.clone();
            let pulsed = glommio::spawn_local(async move { ev2.wait().await });
            glommio::yield_if_needed().await;
            ev.pulse();
            pulsed.await;
            assert!(!ev.is_set());
            let ev2 = ev.clone();
            let t = glommio::spawn_local(async move { ev2.wait().await });
            glommio::yield_if_needed().await;
            ev.set();
            t.await;
            assert!(ev.is_set());
        });
    }
}
