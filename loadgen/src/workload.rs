//! Key and operation choice: a Zipf (or uniform, theta = 0) key distribution
//! and a read ratio, seeded per client so runs are repeatable.

use std::sync::Arc;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

/// The cumulative Zipf distribution over key ranks, computed once and
/// shared by every client: sampling is a binary search (no `pow` per op,
/// which would cost the load generator more than the request).
#[derive(Debug)]
pub struct ZipfTable {
    cdf: Vec<f64>,
}

impl ZipfTable {
    pub fn new(n: u64, theta: f64) -> ZipfTable {
        let mut cdf = Vec::with_capacity(n as usize);
        let mut sum = 0.0;
        for rank in 1..=n {
            sum += 1.0 / (rank as f64).powf(theta);
            cdf.push(sum);
        }
        for c in &mut cdf {
            *c /= sum;
        }
        ZipfTable { cdf }
    }

    /// A rank in `0..n`, 0 the most popular.
    fn sample(&self, u: f64) -> u64 {
        (self.cdf.partition_point(|&c| c < u) as u64).min(self.cdf.len() as u64 - 1)
    }
}

/// One client's stream of operations.
#[derive(Debug)]
pub struct Workload {
    rng: SmallRng,
    zipf: Option<Arc<ZipfTable>>,
    keys: u64,
    read_ratio: f64,
}

/// What to do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Read(u64),
    Write(u64),
}

impl Workload {
    /// A workload; `zipf` from [`ZipfTable::new`] (None = uniform keys).
    pub fn new(
        seed: u64,
        keys: u64,
        read_ratio: f64,
        zipf: Option<Arc<ZipfTable>>,
    ) -> anyhow::Result<Workload> {
        anyhow::ensure!(keys > 0, "--keys must be at least 1");
        anyhow::ensure!(
            (0.0..=1.0).contains(&read_ratio),
            "--read-ratio must be within 0..=1"
        );
        if let Some(z) = &zipf {
            anyhow::ensure!(
                z.cdf.len() as u64 == keys,
                "the Zipf table must cover every key"
            );
        }
        Ok(Workload {
            rng: SmallRng::seed_from_u64(seed),
            zipf,
            keys,
            read_ratio,
        })
    }

    /// The shared table for `--zipf theta` (None for theta 0 = uniform).
    pub fn zipf_table(keys: u64, theta: f64) -> anyhow::Result<Option<Arc<ZipfTable>>> {
        anyhow::ensure!(
            theta >= 0.0 && theta.is_finite(),
            "--zipf must be >= 0 (0 = uniform)"
        );
        anyhow::ensure!(
            keys > 0 && keys <= 100_000_000,
            "--keys must be within 1..=100000000"
        );
        Ok((theta > 0.0).then(|| Arc::new(ZipfTable::new(keys, theta))))
    }

    pub fn next_action(&mut self) -> Action {
        let key = match &self.zipf {
            // Zipf samples 1..=n, most popular first; scatter ranks over the
            // key space so popular keys do not share a shard by accident.
            Some(z) => {
                let u = self.rng.random::<f64>();
                scatter(z.sample(u), self.keys)
            }
            None => self.rng.random_range(0..self.keys),
        };
        if self.rng.random::<f64>() < self.read_ratio {
            Action::Read(key)
        } else {
            Action::Write(key)
        }
    }
}

/// Spreads ranks over `0..n` (a fixed pseudo-random mapping; collisions
/// only merge a few ranks).
fn scatter(rank: u64, n: u64) -> u64 {
    rank.wrapping_mul(0x9E37_79B9_7F4A_7C15) % n
}

/// The key string for key number `i` (the same for every target).
pub fn key_name(i: u64) -> String {
    format!("key:{i:010}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_ratio_and_key_range_hold() {
        let z = Workload::zipf_table(1000, 0.99).unwrap();
        let mut w = Workload::new(1, 1000, 0.9, z).unwrap();
        let mut hot = 0;
        let mut reads = 0;
        for _ in 0..100_000 {
            match w.next_action() {
                Action::Read(k) => {
                    reads += 1;
                    assert!(k < 1000);
                    hot += usize::from(k == scatter(0, 1000));
                }
                Action::Write(k) => assert!(k < 1000),
            }
        }
        assert!((88_000..92_000).contains(&reads), "{reads}");
        // Rank 0 of Zipf(0.99) over 1000 keys draws about 13% of requests.
        assert!((9_000..14_000).contains(&hot), "{hot}");
        assert!(Workload::new(1, 0, 0.5, None).is_err());
        assert!(Workload::new(1, 10, 1.5, None).is_err());
        assert!(Workload::zipf_table(10, -1.0).is_err());
    }
}
