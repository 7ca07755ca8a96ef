//! Dynamic batching: a bounded queue in front of dedicated model threads ("workers", each
//! with its share of the cores). Callers submit texts and await their answers; a free
//! worker takes the first waiting job, adds every job already queued, waits up to the
//! maximum wait for more only while the batch is below its budget, sorts the batch by
//! length, drops jobs whose deadline has passed, runs one encoder pass and answers each
//! caller from its slice. With two workers one batch forms (and tokenizes) while the other
//! runs, and neither waits for the other's threads. A full queue refuses at once (the
//! caller answers 429); a panic in a batch fails only that batch. Knows nothing about what
//! the outputs mean.

use crate::model::{Model, Prediction, Tokenized};
use crossbeam_channel::{bounded, Receiver, RecvTimeoutError, Sender, TrySendError};
use serde::Serialize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// Batching limits.
#[derive(Debug, Clone, Serialize)]
pub struct BatchConfig {
    /// Padded tokens per batch (rows x longest row).
    pub max_batch_tokens: usize,
    /// Texts per batch.
    pub max_batch_size: usize,
    /// How long the first job of a batch waits for company when nothing else is queued.
    pub max_wait: Duration,
    /// Texts waiting in the queue before new ones are refused.
    pub queue_depth: usize,
    /// Model threads (0 = auto: two where there are at least two cores). Each runs its
    /// encoder passes on `cores / workers` threads; one worker uses the global pool.
    pub workers: usize,
}

impl BatchConfig {
    /// The number of model threads `workers` resolves to on this machine.
    pub fn resolved_workers(&self) -> usize {
        match self.workers {
            0 => cores().min(2),
            w => w,
        }
    }
}

/// The cores this process may use.
fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

impl Default for BatchConfig {
    fn default() -> Self {
        Self {
            max_batch_tokens: 8192,
            max_batch_size: 64,
            max_wait: Duration::ZERO,
            queue_depth: 1024,
            workers: 0,
        }
    }
}

/// Why a job got no prediction.
#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum BatchError {
    #[error("the queue is full")]
    Overloaded,
    #[error("the request's deadline passed before the model reached it")]
    DeadlineExceeded,
    #[error("the model failed on this batch: {0}")]
    Model(String),
    #[error("the model thread is gone")]
    Closed,
}

/// What a job gets back: the prediction and the model (state generation) that made it.
pub struct Done<S> {
    pub prediction: Prediction,
    pub state: Arc<S>,
}

/// Provides the current model (and whatever travels with it) to the model thread.
pub trait ModelSource: Send + Sync + 'static {
    type State: Send + Sync + 'static;
    /// The current state; the batch runs on it even if it is swapped meanwhile.
    fn current(&self) -> Arc<Self::State>;
    fn model(state: &Self::State) -> &Model;
}

struct Job<S> {
    text: String,
    deadline: Instant,
    reply: oneshot::Sender<Result<Done<S>, BatchError>>,
}

/// Counters the batcher keeps (for `/metrics`).
#[derive(Default)]
pub struct BatchStats {
    pub batches: AtomicU64,
    pub texts: AtomicU64,
    pub padded_tokens: AtomicU64,
    pub real_tokens: AtomicU64,
    pub expired: AtomicU64,
    pub failed_batches: AtomicU64,
    pub busy_micros: AtomicU64,
}

/// The handle callers use.
pub struct Batcher<S> {
    tx: Sender<Job<S>>,
    pub config: BatchConfig,
    pub stats: Arc<BatchStats>,
}

impl<S: Send + Sync + 'static> Batcher<S> {
    /// Start the model threads.
    pub fn start<M: ModelSource<State = S>>(source: Arc<M>, config: BatchConfig) -> Self {
        let (tx, rx) = bounded::<Job<S>>(config.queue_depth.max(1));
        let stats = Arc::new(BatchStats::default());
        let (cfg, st) = (config.clone(), stats.clone());
        let panic_token = std::env::var("TRIAGE_TEST_PANIC_TOKEN")
            .ok()
            .and_then(|s| s.parse::<u32>().ok());
        let workers = config.resolved_workers();
        let cores = cores();
        for w in 0..workers {
            let (source, rx, cfg, st) = (source.clone(), rx.clone(), cfg.clone(), st.clone());
            // Own pools, so that concurrent passes never wait on each other's threads (a
            // pass's parallel steps each wait for their slowest task).
            let pool = (workers > 1)
                .then(|| {
                    rayon::ThreadPoolBuilder::new()
                        .num_threads((cores / workers).max(1))
                        .thread_name(move |i| format!("triage-model-{w}-{i}"))
                        .build()
                })
                .transpose()
                .expect("building a model thread pool");
            std::thread::Builder::new()
                .name(format!("triage-model-{w}"))
                .spawn(move || match pool {
                    Some(pool) => pool.install(|| model_loop(source, rx, cfg, st, panic_token)),
                    None => model_loop(source, rx, cfg, st, panic_token),
                })
                .expect("spawning the model thread");
        }
        Self { tx, config, stats }
    }

    /// Texts waiting now.
    pub fn queued(&self) -> usize {
        self.tx.len()
    }

    /// Enqueue texts (all or none) and return their receivers.
    #[allow(clippy::type_complexity)]
    pub fn submit(
        &self,
        texts: &[String],
        deadline: Instant,
    ) -> Result<Vec<oneshot::Receiver<Result<Done<S>, BatchError>>>, BatchError> {
        if self.tx.len() + texts.len() > self.config.queue_depth {
            return Err(BatchError::Overloaded);
        }
        let mut out = Vec::with_capacity(texts.len());
        for t in texts {
            let (reply, rx) = oneshot::channel();
            match self.tx.try_send(Job {
                text: t.clone(),
                deadline,
                reply,
            }) {
                Ok(()) => out.push(rx),
                Err(TrySendError::Full(_)) => return Err(BatchError::Overloaded),
                Err(TrySendError::Disconnected(_)) => return Err(BatchError::Closed),
            }
        }
        Ok(out)
    }
}

fn model_loop<M: ModelSource>(
    source: Arc<M>,
    rx: Receiver<Job<M::State>>,
    cfg: BatchConfig,
    stats: Arc<BatchStats>,
    panic_token: Option<u32>,
) {
    while let Ok(first) = rx.recv() {
        let state = source.current();
        let model = M::model(&state);
        let mut jobs = vec![first];
        let mut tokens: Vec<Tokenized> = Vec::new();
        let mut failed: Vec<(Job<M::State>, String)> = Vec::new();
        let mut max_len = 0usize;
        let until = Instant::now() + cfg.max_wait;
        // Tokenize as jobs arrive; close the batch on budget or time.
        let mut i = 0;
        loop {
            while i < jobs.len() {
                match model.encoder.tokenize(&[jobs[i].text.as_str()]) {
                    Ok(mut t) => {
                        let t = t.remove(0);
                        max_len = max_len.max(t.ids.len());
                        tokens.push(t);
                        i += 1;
                    }
                    Err(e) => {
                        let job = jobs.remove(i);
                        failed.push((job, format!("{e:#}")));
                    }
                }
            }
            let full = jobs.len() >= cfg.max_batch_size
                || (jobs.len() + 1) * max_len > cfg.max_batch_tokens;
            if full {
                break;
            }
            // Jobs already waiting join at once; only then does the batch wait (up to
            // `max_wait`) for more.
            if let Ok(j) = rx.try_recv() {
                jobs.push(j);
                continue;
            }
            let now = Instant::now();
            if now >= until {
                break;
            }
            match rx.recv_timeout(until - now) {
                Ok(j) => jobs.push(j),
                Err(RecvTimeoutError::Timeout) | Err(RecvTimeoutError::Disconnected) => break,
            }
        }
        for (job, e) in failed {
            let _ = job.reply.send(Err(BatchError::Model(e)));
        }
        // Drop expired jobs, sort the rest by length.
        let now = Instant::now();
        let mut live: Vec<(Job<M::State>, Tokenized)> = Vec::with_capacity(jobs.len());
        for (job, t) in jobs.into_iter().zip(tokens) {
            if job.deadline <= now || job.reply.is_closed() {
                stats.expired.fetch_add(1, Ordering::Relaxed);
                let _ = job.reply.send(Err(BatchError::DeadlineExceeded));
            } else {
                live.push((job, t));
            }
        }
        if live.is_empty() {
            continue;
        }
        live.sort_by_key(|(_, t)| t.ids.len());
        let refs: Vec<&Tokenized> = live.iter().map(|(_, t)| t).collect();
        let started = Instant::now();
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            fail_point_batch(&refs, panic_token);
            model.predict_tokenized(&refs)
        }));
        let longest = refs.last().map(|t| t.ids.len()).unwrap_or(0);
        stats.batches.fetch_add(1, Ordering::Relaxed);
        stats.texts.fetch_add(refs.len() as u64, Ordering::Relaxed);
        stats
            .padded_tokens
            .fetch_add((longest * refs.len()) as u64, Ordering::Relaxed);
        stats.real_tokens.fetch_add(
            refs.iter().map(|t| t.ids.len() as u64).sum(),
            Ordering::Relaxed,
        );
        stats
            .busy_micros
            .fetch_add(started.elapsed().as_micros() as u64, Ordering::Relaxed);
        match result {
            Ok(Ok(preds)) => {
                for ((job, _), p) in live.into_iter().zip(preds) {
                    let _ = job.reply.send(Ok(Done {
                        prediction: p,
                        state: state.clone(),
                    }));
                }
            }
            Ok(Err(e)) => {
                stats.failed_batches.fetch_add(1, Ordering::Relaxed);
                let msg = format!("{e:#}");
                for (job, _) in live {
                    let _ = job.reply.send(Err(BatchError::Model(msg.clone())));
                }
            }
            Err(panic) => {
                stats.failed_batches.fetch_add(1, Ordering::Relaxed);
                let msg = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_else(|| "panic".to_string());
                for (job, _) in live {
                    let _ = job
                        .reply
                        .send(Err(BatchError::Model(format!("panic in batch: {msg}"))));
                }
            }
        }
    }
}

/// Test hook for fault-injection tests: when `TRIAGE_TEST_PANIC_TOKEN` held a token id at
/// start, a batch containing that token panics (never set in production).
fn fail_point_batch(batch: &[&Tokenized], panic_token: Option<u32>) {
    if let Some(m) = panic_token {
        if batch.iter().any(|t| t.ids.contains(&m)) {
            panic!("injected test panic");
        }
    }
}
