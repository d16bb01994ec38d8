//! A virtual clock for the seeded simulations: events due at a time (in
//! µs), taken in time order, ties in the order they were added. The same
//! inputs give the same order.

use std::collections::BTreeMap;

pub(crate) struct Timeline<E> {
    now_us: u64,
    /// By (due time, order added).
    events: BTreeMap<(u64, u64), E>,
    added: u64,
}

impl<E> Timeline<E> {
    pub fn new() -> Timeline<E> {
        Timeline {
            now_us: 0,
            events: BTreeMap::new(),
            added: 0,
        }
    }

    pub fn now_us(&self) -> u64 {
        self.now_us
    }

    /// How many events were ever added.
    pub fn added(&self) -> u64 {
        self.added
    }

    /// Adds `e`, due at `at_us`.
    pub fn at(&mut self, at_us: u64, e: E) {
        self.added += 1;
        self.events.insert((at_us, self.added), e);
    }

    /// Adds `e`, due `delay_us` from now.
    pub fn after(&mut self, delay_us: u64, e: E) {
        self.at(self.now_us + delay_us, e);
    }

    /// The next event due by `end_us`, the clock moved to it; `None` when
    /// there is none, the clock moved to `end_us`.
    pub fn next_until(&mut self, end_us: u64) -> Option<E> {
        if let Some(first) = self.events.first_entry() {
            if first.key().0 <= end_us {
                let ((at_us, _), e) = first.remove_entry();
                self.now_us = self.now_us.max(at_us);
                return Some(e);
            }
        }
        self.now_us = self.now_us.max(end_us);
        None
    }
}
