//! `triage train`: fit the heads (and LoRA adapters on the top encoder layers) on
//! training-data/train, select and calibrate on training-data/dev, write a heads directory.

use super::fit_retrieval::FitRetrievalArgs;
use super::{InputError, ModelArgs};
use crate::dataset;
use crate::model::resolve_model_dir;
use crate::train::{train, RetrievalData, TrainOptions};
use anyhow::Result;
use clap::Args;
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct TrainArgs {
    /// Training JSONL (file or directory).
    #[arg(long, default_value = "training-data/train")]
    pub data: PathBuf,
    /// Dev JSONL for model selection and calibration (never trained on).
    #[arg(long, default_value = "training-data/dev")]
    pub dev: PathBuf,
    /// Output heads directory.
    #[arg(long, default_value = "models/default")]
    pub out: PathBuf,
    #[arg(long, default_value_t = TrainOptions::default().epochs)]
    pub epochs: usize,
    /// Learning rate of the heads.
    #[arg(long, default_value_t = TrainOptions::default().lr)]
    pub lr: f64,
    /// Learning rate of the LoRA adapters.
    #[arg(long, default_value_t = TrainOptions::default().lr_adapters)]
    pub lr_adapters: f64,
    /// Top encoder layers that get LoRA adapters (0 = heads on the frozen encoder).
    #[arg(long, default_value_t = TrainOptions::default().top_layers)]
    pub top_layers: usize,
    /// LoRA rank.
    #[arg(long, default_value_t = TrainOptions::default().rank)]
    pub rank: usize,
    #[arg(long, default_value_t = TrainOptions::default().seed)]
    pub seed: u64,
    /// Share of all steps over which the learning rates warm up linearly.
    #[arg(long, default_value_t = TrainOptions::default().warmup_fraction)]
    pub warmup_fraction: f64,
    /// Where the cosine decay ends, as a fraction of the peak rates (1 = constant rate).
    #[arg(long, default_value_t = TrainOptions::default().final_lr_fraction)]
    pub final_lr_fraction: f64,
    /// Batches per length bucket (messages of similar length batched together to cut
    /// padding; 0 = plain random batches).
    #[arg(long, default_value_t = TrainOptions::default().length_buckets)]
    pub length_buckets: usize,
    /// Dropout probability in the adapted layers while training (BERT's sites: attention
    /// probabilities and sub-layer outputs); 0 turns it off.
    #[arg(long, default_value_t = TrainOptions::default().dropout)]
    pub dropout: f32,
    /// Knowledge base whose questions the retrieval objective contrasts against.
    #[arg(long, default_value = "models/faq/default-kb.jsonl")]
    pub kb: PathBuf,
    /// Customer messages paired with the FAQ entry that answers them (JSONL: text, lang,
    /// faq_id), for the retrieval objective.
    #[arg(long, default_value = "training-data/faq/train-pairs.jsonl")]
    pub faq_pairs: PathBuf,
    /// Held-out pairs (same format; null faq_id rows are skipped) for model selection.
    #[arg(long, default_value = "training-data/faq/tuning-queries.jsonl")]
    pub faq_held_out: PathBuf,
    /// Weight of the retrieval loss (0 = classification only).
    #[arg(long, default_value_t = TrainOptions::default().retrieval_weight)]
    pub retrieval_weight: f64,
    #[command(flatten)]
    pub model: ModelArgs,
}

pub fn run(a: &TrainArgs) -> Result<()> {
    let topts = TrainOptions {
        epochs: a.epochs,
        lr: a.lr,
        lr_adapters: a.lr_adapters,
        top_layers: a.top_layers,
        rank: a.rank,
        seed: a.seed,
        embed_batch: a.model.batch_size,
        retrieval_weight: a.retrieval_weight,
        warmup_fraction: a.warmup_fraction,
        final_lr_fraction: a.final_lr_fraction,
        length_buckets: a.length_buckets,
        dropout: a.dropout,
        ..TrainOptions::default()
    };
    topts
        .validate()
        .map_err(|problem| InputError(format!("training options: {problem}")))?;
    let train_rows = dataset::read_all(&a.data).map_err(|e| InputError(format!("{e:#}")))?;
    let dev_rows = dataset::read_all(&a.dev).map_err(|e| InputError(format!("{e:#}")))?;
    let retrieval = if a.retrieval_weight > 0.0 {
        Some(
            RetrievalData::load(&a.kb, &a.faq_pairs, &a.faq_held_out)
                .map_err(|e| InputError(format!("retrieval objective: {e:#}")))?,
        )
    } else {
        None
    };
    let opts = a.model.options()?;
    let (dir, _) = resolve_model_dir(&opts)?;
    let report = train(
        &dir,
        &train_rows,
        &dev_rows,
        retrieval.as_ref(),
        &topts,
        &a.out,
    )?;
    println!("{}", serde_json::to_string_pretty(&report)?);
    eprintln!("heads written to {}", a.out.display());
    // The ranker depends on the adapted vectors and the new intent head: refit it.
    eprintln!("fitting the FAQ ranker on {}", a.faq_held_out.display());
    super::fit_retrieval::run(&FitRetrievalArgs {
        kb: a.kb.clone(),
        queries: a.faq_held_out.clone(),
        kb_variants: FitRetrievalArgs::DEFAULT_VARIANTS
            .iter()
            .map(|v| v.to_string())
            .collect(),
        with_answers: false,
        dry_run: false,
        model: ModelArgs {
            heads: Some(a.out.clone()),
            ..a.model.clone()
        },
    })
}
