//! Prometheus metrics: request counts by route and status, request latency histograms,
//! and the batcher's counters, rendered in the text exposition format.

use crate::batch::BatchStats;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::Ordering;
use std::sync::Mutex;

const BUCKETS_MS: [f64; 12] = [
    1.0, 2.5, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 10000.0,
];

#[derive(Default)]
struct Histogram {
    counts: [u64; BUCKETS_MS.len()],
    sum_ms: f64,
    n: u64,
}

/// Request metrics.
#[derive(Default)]
pub struct Metrics {
    requests: Mutex<BTreeMap<(String, u16), u64>>,
    latency: Mutex<BTreeMap<String, Histogram>>,
}

impl Metrics {
    /// Count one finished request.
    pub fn observe(&self, route: &str, status: u16, ms: f64) {
        if let Ok(mut m) = self.requests.lock() {
            *m.entry((route.to_string(), status)).or_default() += 1;
        }
        if let Ok(mut m) = self.latency.lock() {
            let h = m.entry(route.to_string()).or_default();
            for (i, b) in BUCKETS_MS.iter().enumerate() {
                if ms <= *b {
                    h.counts[i] += 1;
                }
            }
            h.sum_ms += ms;
            h.n += 1;
        }
    }

    /// The exposition text.
    pub fn render(
        &self,
        batch: &BatchStats,
        queued: usize,
        generation: u64,
        conversations: usize,
    ) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "# HELP triage_requests_total HTTP requests by route and status.\n# TYPE triage_requests_total counter");
        if let Ok(m) = self.requests.lock() {
            for ((route, status), n) in m.iter() {
                let _ = writeln!(
                    s,
                    "triage_requests_total{{route=\"{route}\",status=\"{status}\"}} {n}"
                );
            }
        }
        let _ = writeln!(s, "# HELP triage_request_duration_seconds Request latency.\n# TYPE triage_request_duration_seconds histogram");
        if let Ok(m) = self.latency.lock() {
            for (route, h) in m.iter() {
                for (i, b) in BUCKETS_MS.iter().enumerate() {
                    let _ = writeln!(
                        s,
                        "triage_request_duration_seconds_bucket{{route=\"{route}\",le=\"{}\"}} {}",
                        b / 1000.0,
                        h.counts[i]
                    );
                }
                let _ = writeln!(
                    s,
                    "triage_request_duration_seconds_bucket{{route=\"{route}\",le=\"+Inf\"}} {}",
                    h.n
                );
                let _ = writeln!(
                    s,
                    "triage_request_duration_seconds_sum{{route=\"{route}\"}} {}",
                    h.sum_ms / 1000.0
                );
                let _ = writeln!(
                    s,
                    "triage_request_duration_seconds_count{{route=\"{route}\"}} {}",
                    h.n
                );
            }
        }
        let counters = [
            (
                "triage_batches_total",
                "Encoder batches run.",
                &batch.batches,
            ),
            (
                "triage_batch_texts_total",
                "Texts run through the encoder.",
                &batch.texts,
            ),
            (
                "triage_batch_padded_tokens_total",
                "Padded tokens run (rows x longest).",
                &batch.padded_tokens,
            ),
            (
                "triage_batch_real_tokens_total",
                "Real tokens run.",
                &batch.real_tokens,
            ),
            (
                "triage_expired_total",
                "Texts dropped because their deadline passed.",
                &batch.expired,
            ),
            (
                "triage_failed_batches_total",
                "Batches that failed or panicked.",
                &batch.failed_batches,
            ),
        ];
        for (name, help, v) in counters {
            let _ = writeln!(
                s,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
                v.load(Ordering::Relaxed)
            );
        }
        let busy = batch.busy_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(s, "# HELP triage_model_busy_seconds_total Time the model thread spent in forward passes.\n# TYPE triage_model_busy_seconds_total counter\ntriage_model_busy_seconds_total {busy}");
        let _ = writeln!(s, "# HELP triage_queue_depth Texts waiting for the model.\n# TYPE triage_queue_depth gauge\ntriage_queue_depth {queued}");
        let _ = writeln!(s, "# HELP triage_state_generation Generation of the loaded model/FAQ/policy bundle.\n# TYPE triage_state_generation gauge\ntriage_state_generation {generation}");
        let _ = writeln!(s, "# HELP triage_conversations Conversations held in memory.\n# TYPE triage_conversations gauge\ntriage_conversations {conversations}");
        if let Some(rss) = resident_bytes() {
            let _ = writeln!(s, "# HELP process_resident_memory_bytes Resident memory size in bytes.\n# TYPE process_resident_memory_bytes gauge\nprocess_resident_memory_bytes {rss}");
        }
        s
    }
}

/// This process's resident memory (Linux `/proc/self/status`), if known.
pub fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some(kb * 1024)
}
