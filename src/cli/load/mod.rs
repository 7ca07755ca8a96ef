//! `triage load`: a closed-loop load and soak generator for a running server (loopback
//! only). C concurrent clients on keep-alive connections send `/classify`, `/answer` or a
//! mix for a bounded duration and count; every response must answer its own request (its
//! `x-request-id` and, for `/classify`, its text); the server's resident memory and
//! conversation count are sampled from `/metrics`. Prints throughput, latency percentiles
//! and status counts as a table, per interval (`--report-every-s`) and overall.

mod client;

use super::InputError;
use anyhow::Result;
use clap::Args;
use client::{gauge, Conn};
use serde::Serialize;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Args, Debug, Clone)]
pub struct LoadArgs {
    /// Server address (loopback only).
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub addr: SocketAddr,
    /// classify, answer or mixed.
    #[arg(long, default_value = "classify")]
    pub route: String,
    /// Concurrent clients, each with one request in flight.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// Seconds to run (bounded).
    #[arg(long, default_value_t = 20)]
    pub duration_s: u64,
    /// Stop after this many requests in all.
    #[arg(long, default_value_t = 1_000_000_000)]
    pub max_requests: u64,
    /// Seconds of warm-up not counted.
    #[arg(long, default_value_t = 2)]
    pub warmup_s: u64,
    /// Print a row (throughput, latency, errors, server memory) every this many seconds
    /// (0 = only the summary).
    #[arg(long, default_value_t = 0)]
    pub report_every_s: u64,
    /// Distinct conversation ids used by /answer (cycled), to exercise conversation memory.
    #[arg(long, default_value_t = 1000)]
    pub conversations: u64,
    /// Offered load in requests per second over all clients (0 = closed loop: each client
    /// sends again as soon as it has its answer). With a rate, each client keeps its share
    /// of the schedule, sending late only when its previous request is still in flight: use
    /// enough clients (rate x worst latency) for the offered load to hold under overload.
    #[arg(long, default_value_t = 0.0)]
    pub rate: f64,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

pub(crate) const TEXTS: [&str; 12] = [
    "where is my order #A1029? it should have arrived yesterday",
    "我的快递怎么还没到，都一个星期了",
    "我張單幾時到呀？等咗好耐",
    "hola, quiero devolver unas zapatillas que me quedan pequeñas",
    "oi, cadê meu reembolso? já faz 10 dias",
    "bonjour, mon code promo ne marche pas",
    "Hallo, ich wurde zweimal belastet für meine Bestellung",
    "สั่งของไปตั้งแต่อาทิตย์ที่แล้ว ยังไม่ได้เลยค่ะ",
    "shop ơi đơn hàng của mình bị giao sai màu",
    "kak, pesanan saya datang rusak",
    "注文した商品がまだ届きません",
    "환불 언제 되나요? ㅠㅠ",
];

/// Counts over some span of the run.
#[derive(Default, Clone)]
struct Tally {
    latencies_us: Vec<u64>,
    /// Latency of refusals (429/503): how fast load is shed.
    shed_us: Vec<u64>,
    statuses: BTreeMap<u16, u64>,
    mismatched: u64,
    io_errors: u64,
}

impl Tally {
    fn merge(&mut self, o: &Tally) {
        self.latencies_us.extend_from_slice(&o.latencies_us);
        self.shed_us.extend_from_slice(&o.shed_us);
        for (k, v) in &o.statuses {
            *self.statuses.entry(*k).or_default() += v;
        }
        self.mismatched += o.mismatched;
        self.io_errors += o.io_errors;
    }

    fn summary(&mut self, seconds: f64) -> Summary {
        self.latencies_us.sort_unstable();
        self.shed_us.sort_unstable();
        let l = &self.latencies_us;
        let pct = |p: f64| percentile_ms(l, p);
        Summary {
            shed_p50_ms: percentile_ms(&self.shed_us, 0.5),
            shed_p99_ms: percentile_ms(&self.shed_us, 0.99),
            seconds,
            ok: l.len(),
            throughput_per_s: l.len() as f64 / seconds.max(1e-9),
            p50_ms: pct(0.5),
            p95_ms: pct(0.95),
            p99_ms: pct(0.99),
            max_ms: pct(1.0),
            statuses: self.statuses.clone(),
            mismatched: self.mismatched,
            io_errors: self.io_errors,
        }
    }
}

/// The `p` quantile of sorted microseconds, in ms (0 when empty).
fn percentile_ms(sorted_us: &[u64], p: f64) -> f64 {
    sorted_us
        .get(((sorted_us.len().max(1) - 1) as f64 * p).round() as usize)
        .map_or(0.0, |&us| us as f64 / 1000.0)
}

#[derive(Debug, Clone, Serialize)]
struct Summary {
    shed_p50_ms: f64,
    shed_p99_ms: f64,
    seconds: f64,
    ok: usize,
    throughput_per_s: f64,
    p50_ms: f64,
    p95_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    statuses: BTreeMap<u16, u64>,
    mismatched: u64,
    io_errors: u64,
}

/// One interval row.
#[derive(Debug, Clone, Serialize)]
struct Sample {
    at_s: f64,
    #[serde(flatten)]
    summary: Summary,
    server_rss_mb: Option<f64>,
    conversations: Option<f64>,
}

fn check_args(a: &LoadArgs) -> Result<()> {
    if !a.addr.ip().is_loopback() {
        return Err(InputError(format!(
            "{} is not a loopback address: load is only sent to this machine",
            a.addr
        ))
        .into());
    }
    if !["classify", "answer", "mixed"].contains(&a.route.as_str()) {
        return Err(InputError("--route must be classify, answer or mixed".into()).into());
    }
    if a.concurrency == 0 || a.conversations == 0 {
        return Err(InputError("--concurrency and --conversations must be > 0".into()).into());
    }
    if !(a.rate >= 0.0 && a.rate.is_finite()) {
        return Err(InputError("--rate must be a finite number >= 0".into()).into());
    }
    Ok(())
}

/// One client: requests until the end or the request budget, tallying what it sees.
async fn client_loop(
    a: Arc<LoadArgs>,
    w: usize,
    tally: Arc<Mutex<Tally>>,
    sent: Arc<AtomicU64>,
    warm_until: Instant,
    end: Instant,
) {
    let mut conn = Conn::new(a.addr);
    let mut n = 0u64;
    // With --rate: (next send, interval); this client's sends are `interval` apart, the
    // clients evenly staggered.
    let mut schedule = (a.rate > 0.0).then(|| {
        let interval = Duration::from_secs_f64(a.concurrency as f64 / a.rate);
        let first = Instant::now() + interval.mul_f64(w as f64 / a.concurrency as f64);
        (first, interval)
    });
    while Instant::now() < end && sent.fetch_add(1, Ordering::Relaxed) < a.max_requests {
        if let Some((at, interval)) = schedule.as_mut() {
            tokio::time::sleep_until((*at).into()).await;
            *at += *interval;
            if Instant::now() >= end {
                break;
            }
        }
        n += 1;
        // Unique across clients: client w sends w, w + C, w + 2C, ...
        let i = w as u64 + n * a.concurrency as u64;
        let text = format!("{} ({w}-{i})", TEXTS[i as usize % TEXTS.len()]);
        let use_answer = a.route == "answer" || (a.route == "mixed" && n.is_multiple_of(2));
        let (path, body) = if use_answer {
            let conversation = format!("load-{}", i % a.conversations);
            let body = serde_json::json!({"text": text, "conversation_id": conversation});
            ("/answer", body.to_string())
        } else {
            ("/classify", serde_json::json!({"text": text}).to_string())
        };
        let id = format!("load-{w}-{i}");
        let t0 = Instant::now();
        let r = conn.send(path, Some(&body), &id).await;
        let us = t0.elapsed().as_micros() as u64;
        if t0 < warm_until {
            continue;
        }
        let mut t = tally.lock().unwrap_or_else(|e| e.into_inner());
        match r {
            Ok(reply) => {
                *t.statuses.entry(reply.status).or_default() += 1;
                let own = reply.request_id.as_deref() == Some(id.as_str());
                if reply.status == 200 {
                    t.latencies_us.push(us);
                    let v: serde_json::Value =
                        serde_json::from_str(&reply.body).unwrap_or_default();
                    let matches = if use_answer {
                        v["intent"]["label"].is_string()
                    } else {
                        v["results"][0]["text"] == text.as_str()
                    };
                    if !(own && matches) {
                        t.mismatched += 1;
                    }
                } else {
                    if matches!(reply.status, 429 | 503) {
                        t.shed_us.push(us);
                    }
                    if !own {
                        t.mismatched += 1;
                    }
                }
            }
            Err(_) => t.io_errors += 1,
        }
    }
}

/// Every `every`, move the interval's tally into the total and print a row.
async fn reporter(
    a: Arc<LoadArgs>,
    tally: Arc<Mutex<Tally>>,
    total: Arc<Mutex<Tally>>,
    samples: Arc<Mutex<Vec<Sample>>>,
    start: Instant,
    end: Instant,
) {
    // Without rows to print, still sample the server's memory every 5 s.
    let every = Duration::from_secs(if a.report_every_s == 0 {
        5
    } else {
        a.report_every_s
    });
    let mut last = Instant::now();
    let mut first = true;
    while Instant::now() < end {
        tokio::time::sleep(every.min(end.saturating_duration_since(Instant::now()))).await;
        let mut interval = std::mem::take(&mut *tally.lock().unwrap_or_else(|e| e.into_inner()));
        total
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .merge(&interval);
        // A fresh connection per scrape: an idle keep-alive one is closed by the server's
        // header read timeout between scrapes.
        let m = Conn::new(a.addr)
            .send("/metrics", None, "load-metrics")
            .await
            .ok();
        let body = m.map(|r| r.body).unwrap_or_default();
        let sample = Sample {
            at_s: start.elapsed().as_secs_f64(),
            summary: interval.summary(last.elapsed().as_secs_f64()),
            server_rss_mb: gauge(&body, "process_resident_memory_bytes").map(|b| b / 1048576.0),
            conversations: gauge(&body, "triage_conversations"),
        };
        last = Instant::now();
        if a.report_every_s > 0 && !a.json {
            if first {
                println!("| at s | req/s | p50 ms | p99 ms | statuses | mismatched | io errors | server RSS MB | conversations |");
                println!("| --- | --- | --- | --- | --- | --- | --- | --- | --- |");
                first = false;
            }
            let s = &sample.summary;
            println!(
                "| {:.0} | {:.1} | {:.1} | {:.1} | {:?} | {} | {} | {} | {} |",
                sample.at_s,
                s.throughput_per_s,
                s.p50_ms,
                s.p99_ms,
                s.statuses,
                s.mismatched,
                s.io_errors,
                sample
                    .server_rss_mb
                    .map_or("-".into(), |v| format!("{v:.0}")),
                sample
                    .conversations
                    .map_or("-".into(), |v| format!("{v:.0}")),
            );
        }
        samples
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(sample);
    }
}

/// Resident-memory growth from the sample a third into the run to the last one, in percent
/// (after warm-up, a leak shows as steady growth).
fn rss_growth_pct(samples: &[Sample]) -> Option<f64> {
    let rss: Vec<f64> = samples.iter().filter_map(|s| s.server_rss_mb).collect();
    let (from, to) = (rss.get(rss.len() / 3)?, rss.last()?);
    Some(100.0 * (to - from) / from)
}

pub fn run(a: &LoadArgs) -> Result<()> {
    check_args(a)?;
    let a = Arc::new(a.clone());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let tally = Arc::new(Mutex::new(Tally::default()));
    let total = Arc::new(Mutex::new(Tally::default()));
    let samples = Arc::new(Mutex::new(Vec::new()));
    let sent = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let warm_until = start + Duration::from_secs(a.warmup_s);
    let end = warm_until + Duration::from_secs(a.duration_s);
    rt.block_on(async {
        let clients: Vec<_> = (0..a.concurrency)
            .map(|w| {
                tokio::spawn(client_loop(
                    a.clone(),
                    w,
                    tally.clone(),
                    sent.clone(),
                    warm_until,
                    end,
                ))
            })
            .collect();
        let report = tokio::spawn(reporter(
            a.clone(),
            tally.clone(),
            total.clone(),
            samples.clone(),
            warm_until,
            end,
        ));
        for c in clients {
            let _ = c.await;
        }
        let _ = report.await;
    });
    let mut t = total.lock().unwrap_or_else(|e| e.into_inner()).clone();
    t.merge(&tally.lock().unwrap_or_else(|e| e.into_inner()));
    let elapsed = Instant::now()
        .min(end)
        .saturating_duration_since(warm_until)
        .as_secs_f64();
    let s = t.summary(elapsed);
    let samples = samples.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let growth = rss_growth_pct(&samples);
    if a.json {
        let report = serde_json::json!({
            "route": a.route, "concurrency": a.concurrency, "summary": s,
            "rss_growth_pct_after_first_third": growth, "samples": samples,
        });
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!("| route | clients | seconds | ok | req/s | p50 ms | p95 ms | p99 ms | statuses | mismatched | io errors |");
        println!("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |");
        println!(
            "| {} | {} | {:.1} | {} | {:.1} | {:.1} | {:.1} | {:.1} | {:?} | {} | {} |",
            a.route,
            a.concurrency,
            s.seconds,
            s.ok,
            s.throughput_per_s,
            s.p50_ms,
            s.p95_ms,
            s.p99_ms,
            s.statuses,
            s.mismatched,
            s.io_errors
        );
        if s.shed_p99_ms > 0.0 {
            println!(
                "refusals (429/503) answered in p50 {:.2} ms, p99 {:.2} ms",
                s.shed_p50_ms, s.shed_p99_ms
            );
        }
        if let Some(g) = growth {
            println!("server resident memory growth after the first third: {g:+.1}%");
        }
    }
    Ok(())
}
