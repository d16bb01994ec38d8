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
    /// Per whole second of the window: requests that succeeded, failed
    /// (runs with a kill only).
    pub timeline: Vec<(u64, u64)>,
    /// When the run killed a process, seconds into the window.
    pub kill_at_s: Option<f64>,
    /// Squall's clients' routing counters, summed (`kv` runs).
    pub routing: Option<client::RoutingStats>,
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
            timeline: Vec::new(),
            kill_at_s: None,
            routing: None,
        }
    }

    /// Mean successful requests per second before the kill, in the 2 s
    /// after it, and after those (whole seconds only).
    pub fn around_kill(&self) -> Option<(f64, f64, f64)> {
        let at = self.kill_at_s?;
        let mean = |from: f64, to: f64| {
            let v: Vec<u64> = self
                .timeline
                .iter()
                .enumerate()
                .filter(|(i, _)| *i as f64 >= from && (*i as f64) + 1.0 <= to)
                .map(|(_, (ok, _))| *ok)
                .collect();
            v.iter().sum::<u64>() as f64 / (v.len().max(1) as f64)
        };
        let end = self.timeline.len() as f64;
        Some((
            mean(0.0, at.floor()),
            mean(at.floor(), at.floor() + 2.0),
            mean(at.floor() + 2.0, end),
        ))
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
            "kill_at_s": self.kill_at_s,
            "timeline": self.timeline.iter().map(|(ok, err)| json!({"ok": ok, "errors": err})).collect::<Vec<_>>(),
            "routing": self.routing.map(|r| json!({"stale_batches": r.stale_batches, "refreshes": r.refreshes, "failovers": r.failovers})),
            "around_kill_ops_per_sec": self.around_kill().map(|(b, d, a)| json!({"before": round(b, 0), "during": round(d, 0), "after": round(a, 0)})),
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

/// Writes an SVG plot of latency CDFs (x: latency in µs, log scale; y:
/// fraction of requests at or below it), one line per series.
pub fn write_cdf_svg(
    path: &std::path::Path,
    title: &str,
    series: &[(&str, &Histogram<u64>)],
) -> std::io::Result<()> {
    const W: f64 = 720.0;
    const H: f64 = 440.0;
    const L: f64 = 70.0;
    const R: f64 = 50.0;
    const T: f64 = 40.0;
    const B: f64 = 50.0;
    const COLORS: [&str; 4] = ["#d62728", "#1f77b4", "#2ca02c", "#9467bd"];
    let quantiles: Vec<f64> = (0..=1000)
        .map(|i| f64::from(i) / 1000.0)
        .chain([0.999, 0.9999])
        .collect();
    let lo = series
        .iter()
        .map(|(_, h)| h.min() as f64 / 1000.0)
        .fold(f64::INFINITY, f64::min)
        .max(0.1);
    let hi = series
        .iter()
        .map(|(_, h)| h.max() as f64 / 1000.0)
        .fold(0.0, f64::max)
        .max(lo * 10.0);
    let (lx0, lx1) = (lo.log10().floor(), hi.log10().ceil());
    let x = |us: f64| L + (us.max(lo).log10() - lx0) / (lx1 - lx0) * (W - L - R);
    let y = |q: f64| T + (1.0 - q) * (H - T - B);
    let mut svg = format!(
        "<svg xmlns='http://www.w3.org/2000/svg' width='{W}' height='{H}' font-family='sans-serif' font-size='12'>\n\
         <rect width='100%' height='100%' fill='white'/>\n<text x='{L}' y='24' font-size='15'>{title}</text>\n"
    );
    let mut decade = lx0;
    while decade <= lx1 {
        let us = 10f64.powf(decade);
        let px = x(us);
        svg += &format!(
            "<line x1='{px:.1}' y1='{T}' x2='{px:.1}' y2='{:.1}' stroke='#ddd'/>\n<text x='{px:.1}' y='{:.1}' text-anchor='middle'>{us} µs</text>\n",
            H - B,
            H - B + 18.0
        );
        decade += 1.0;
    }
    for q in [0.0, 0.25, 0.5, 0.75, 0.9, 1.0] {
        let py = y(q);
        svg += &format!(
            "<line x1='{L}' y1='{py:.1}' x2='{:.1}' y2='{py:.1}' stroke='#eee'/>\n<text x='{:.1}' y='{:.1}' text-anchor='end'>{q}</text>\n",
            W - R,
            L - 6.0,
            py + 4.0
        );
    }
    for (i, (name, h)) in series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let mut qs = quantiles.clone();
        qs.sort_by(f64::total_cmp);
        let points: Vec<String> = qs
            .iter()
            .map(|&q| {
                format!(
                    "{:.1},{:.1}",
                    x(h.value_at_quantile(q) as f64 / 1000.0),
                    y(q)
                )
            })
            .collect();
        svg += &format!(
            "<polyline fill='none' stroke='{color}' stroke-width='2' points='{}'/>\n",
            points.join(" ")
        );
        svg += &format!(
            "<text x='{:.1}' y='{:.1}' fill='{color}'>{name}: p50 {:.1} µs, p99 {:.1} µs</text>\n",
            L + (W - L - R) * 0.45,
            y(0.2) + 16.0 * i as f64,
            h.value_at_quantile(0.5) as f64 / 1000.0,
            h.value_at_quantile(0.99) as f64 / 1000.0
        );
    }
    svg += &format!(
        "<text x='{:.1}' y='{:.1}' text-anchor='middle'>latency (log scale)</text>\n</svg>\n",
        (L + W - R) / 2.0,
        H - 8.0
    );
    std::fs::write(path, svg)
}
