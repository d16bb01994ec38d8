//! A hybrid logical clock: wall time when it moves forward, a counter when it
//! does not. The caller passes the wall time in, so the core stays
//! deterministic and testable.

/// Issues strictly increasing timestamps in microseconds.
#[derive(Debug, Default, Clone)]
pub struct HybridClock {
    last_us: u64,
}

impl HybridClock {
    /// A timestamp strictly greater than every one issued or observed before,
    /// and at least `wall_us`.
    pub fn tick(&mut self, wall_us: u64) -> u64 {
        let next = wall_us.max(self.last_us.saturating_add(1));
        self.last_us = next;
        next
    }

    /// Records a timestamp seen elsewhere (a replayed record, a client's
    /// timestamp), so that later ticks order after it.
    pub fn observe(&mut self, seen_us: u64) {
        self.last_us = self.last_us.max(seen_us);
    }

    /// The last timestamp issued or observed.
    #[must_use]
    pub fn last_us(&self) -> u64 {
        self.last_us
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_strictly_increase_even_when_wall_time_goes_back() {
        let mut c = HybridClock::default();
        let a = c.tick(100);
        let b = c.tick(50);
        let d = c.tick(100);
        assert_eq!(a, 100);
        assert!(b > a && d > b);
        c.observe(1_000);
        assert_eq!(c.tick(10), 1_001);
    }
}
