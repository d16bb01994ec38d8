//! Latency recording and the common report format.

use std::time::Duration;

use hdrhistogram::Histogram;
use serde_json::{json, Value};

/// A latency histogram in nanoseconds, 1 ns to 60 s, 3 significant digits.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("valid histogram bounds")
}

/// Throughput and percentiles of one run.
#[derive(Debug, Clone)]
pub struct Summary {
    pub ops: u64,
    pub errors: u64,
    pub elapsed: Duration,
    pub p50_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub max_us: f64,
    /// CPU the load generator itself used, in % of one core.
    pub loadgen_cpu_pct: f64,
    /// CPU the server used over the same window, if its PID was given.
    pub server_cpu_pct: Option<f64>,
}

impl Summary {
    pub fn new(
        h: &Histogram<u64>,
        ops: u64,
        errors: u64,
        elapsed: Duration,
        cpu: Duration,
    ) -> Summary {
        let us = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
        Summary {
            ops,
            errors,
            elapsed,
            p50_us: us(0.50),
            p99_us: us(0.99),
            p999_us: us(0.999),
            max_us: h.max() as f64 / 1000.0,
            loadgen_cpu_pct: 100.0 * cpu.as_secs_f64() / elapsed.as_secs_f64().max(1e-9),
            server_cpu_pct: None,
        }
    }

    pub fn ops_per_sec(&self) -> f64 {
        self.ops as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// The common fields; modes add their own.
    pub fn json(&self) -> Value {
        json!({
            "ops": self.ops,
            "errors": self.errors,
            "elapsed_s": round(self.elapsed.as_secs_f64(), 3),
            "ops_per_sec": round(self.ops_per_sec(), 1),
            "p50_us": round(self.p50_us, 1),
            "p99_us": round(self.p99_us, 1),
            "p999_us": round(self.p999_us, 1),
            "max_us": round(self.max_us, 1),
            "loadgen_cpu_pct": round(self.loadgen_cpu_pct, 1),
            "server_cpu_pct": self.server_cpu_pct.map(|c| round(c, 1)),
        })
    }

    pub fn line(&self) -> String {
        let server = self
            .server_cpu_pct
            .map_or(String::new(), |c| format!(", server cpu {c:.0}%"));
        format!(
            "{:.0} ops/s, p50 {:.1} us, p99 {:.1} us, p99.9 {:.1} us, max {:.1} us, {} errors (loadgen cpu {:.0}%{server})",
            self.ops_per_sec(),
            self.p50_us,
            self.p99_us,
            self.p999_us,
            self.max_us,
            self.errors,
            self.loadgen_cpu_pct
        )
    }
}

fn round(x: f64, places: i32) -> f64 {
    let f = 10f64.powi(places);
    (x * f).round() / f
}

/// CPU time (user + system) this process has used so far.
pub fn process_cpu() -> Duration {
    stat_cpu("/proc/self/stat")
}

/// CPU time another process has used so far (0 if it cannot be read).
pub fn pid_cpu(pid: u32) -> Duration {
    stat_cpu(&format!("/proc/{pid}/stat"))
}

fn stat_cpu(path: &str) -> Duration {
    // Fields 14 and 15 (utime, stime) in clock ticks (100/s on Linux); the
    // command name (field 2) may contain spaces, so split after its closing
    // parenthesis.
    let stat = std::fs::read_to_string(path).unwrap_or_default();
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    Duration::from_millis((ticks(11) + ticks(12)) * 10)
}
