//! `triage load`: a closed-loop load generator for a running server (loopback only):
//! C concurrent clients on keep-alive connections send `/classify`, `/answer` or a mix
//! for a bounded duration and count, check that every response answers its own request,
//! and print throughput, latency percentiles and status counts as a table.

use super::InputError;
use anyhow::{bail, Context, Result};
use clap::Args;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

#[derive(Args, Debug)]
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
    #[arg(long, default_value_t = 1_000_000)]
    pub max_requests: u64,
    /// Seconds of warm-up not counted.
    #[arg(long, default_value_t = 2)]
    pub warmup_s: u64,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

const TEXTS: [&str; 12] = [
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

#[derive(Default)]
struct Tally {
    latencies_us: Vec<u64>,
    statuses: BTreeMap<u16, u64>,
    mismatched: u64,
    io_errors: u64,
}

async fn request(
    stream: &mut Option<BufReader<TcpStream>>,
    addr: SocketAddr,
    path: &str,
    body: &str,
) -> Result<(u16, String)> {
    if stream.is_none() {
        *stream = Some(BufReader::new(TcpStream::connect(addr).await?));
    }
    let s = stream.as_mut().context("no stream")?;
    let req = format!("POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}", body.len());
    s.get_mut().write_all(req.as_bytes()).await?;
    let mut line = String::new();
    s.read_line(&mut line).await?;
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .context("bad status line")?;
    let mut len = 0usize;
    let mut close = false;
    loop {
        line.clear();
        if s.read_line(&mut line).await? == 0 {
            bail!("connection closed in headers");
        }
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        let lower = l.to_ascii_lowercase();
        if let Some(v) = lower.strip_prefix("content-length:") {
            len = v.trim().parse().unwrap_or(0);
        }
        if lower.starts_with("connection:") && lower.contains("close") {
            close = true;
        }
    }
    let mut buf = vec![0u8; len];
    s.read_exact(&mut buf).await?;
    if close {
        *stream = None;
    }
    Ok((status, String::from_utf8_lossy(&buf).to_string()))
}

pub fn run(a: &LoadArgs) -> Result<()> {
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
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let tally = Arc::new(Mutex::new(Tally::default()));
    let sent = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let warm_until = start + Duration::from_secs(a.warmup_s);
    let end = warm_until + Duration::from_secs(a.duration_s);
    rt.block_on(async {
        let mut tasks = Vec::new();
        for w in 0..a.concurrency {
            let (tally, sent, route, addr, max) = (tally.clone(), sent.clone(), a.route.clone(), a.addr, a.max_requests);
            tasks.push(tokio::spawn(async move {
                let mut stream = None;
                let mut i = w;
                while Instant::now() < end && sent.fetch_add(1, Ordering::Relaxed) < max {
                    i += 1;
                    let text = format!("{} ({w}-{i})", TEXTS[i % TEXTS.len()]);
                    let use_answer = route == "answer" || (route == "mixed" && i % 2 == 0);
                    let (path, body) = if use_answer {
                        ("/answer", serde_json::json!({"text": text, "conversation_id": format!("load-{w}")}).to_string())
                    } else {
                        ("/classify", serde_json::json!({"text": text}).to_string())
                    };
                    let t0 = Instant::now();
                    let r = request(&mut stream, addr, path, &body).await;
                    let us = t0.elapsed().as_micros() as u64;
                    let counted = t0 >= warm_until;
                    let mut t = tally.lock().unwrap_or_else(|e| e.into_inner());
                    match r {
                        Ok((status, resp)) => {
                            if !counted {
                                continue;
                            }
                            *t.statuses.entry(status).or_default() += 1;
                            if status == 200 {
                                t.latencies_us.push(us);
                                let v: serde_json::Value = serde_json::from_str(&resp).unwrap_or_default();
                                let ok = if use_answer { v["intent"]["label"].is_string() } else { v["results"][0]["text"] == text.as_str() };
                                if !ok {
                                    t.mismatched += 1;
                                }
                            }
                        }
                        Err(_) => {
                            stream = None;
                            if counted {
                                t.io_errors += 1;
                            }
                        }
                    }
                }
            }));
        }
        for t in tasks {
            let _ = t.await;
        }
    });
    let elapsed = Instant::now()
        .min(end)
        .saturating_duration_since(warm_until)
        .as_secs_f64()
        .max(1e-9);
    let mut t = tally.lock().unwrap_or_else(|e| e.into_inner());
    t.latencies_us.sort_unstable();
    let pct = |p: f64| -> f64 {
        if t.latencies_us.is_empty() {
            return 0.0;
        }
        let i = ((t.latencies_us.len() as f64 - 1.0) * p).round() as usize;
        t.latencies_us[i] as f64 / 1000.0
    };
    let ok = t.latencies_us.len();
    let report = serde_json::json!({
        "route": a.route, "concurrency": a.concurrency, "seconds": elapsed,
        "ok": ok, "throughput_per_s": ok as f64 / elapsed,
        "p50_ms": pct(0.50), "p95_ms": pct(0.95), "p99_ms": pct(0.99), "max_ms": pct(1.0),
        "statuses": t.statuses, "mismatched": t.mismatched, "io_errors": t.io_errors,
    });
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!("| route | clients | seconds | ok | req/s | p50 ms | p95 ms | p99 ms | statuses | mismatched | io errors |");
        println!("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |");
        println!(
            "| {} | {} | {:.1} | {} | {:.1} | {:.1} | {:.1} | {:.1} | {:?} | {} | {} |",
            a.route,
            a.concurrency,
            elapsed,
            ok,
            ok as f64 / elapsed,
            pct(0.5),
            pct(0.95),
            pct(0.99),
            t.statuses,
            t.mismatched,
            t.io_errors
        );
    }
    Ok(())
}
