//! `triage train`: fit the heads on training-data/train, select and calibrate on
//! training-data/dev, write a heads directory.

use super::{InputError, ModelArgs};
use crate::dataset;
use crate::model::{resolve_model_dir, Encoder};
use crate::train::{train_heads, TrainOptions};
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
    #[arg(long, default_value_t = 60)]
    pub epochs: usize,
    #[arg(long, default_value_t = 3e-3)]
    pub lr: f64,
    /// Hidden layer width of the heads (0 = linear).
    #[arg(long, default_value_t = 0)]
    pub hidden: usize,
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    #[command(flatten)]
    pub model: ModelArgs,
}

pub fn run(a: &TrainArgs) -> Result<()> {
    let train = dataset::read_all(&a.data).map_err(|e| InputError(format!("{e:#}")))?;
    let dev = dataset::read_all(&a.dev).map_err(|e| InputError(format!("{e:#}")))?;
    let opts = a.model.options()?;
    let (dir, _) = resolve_model_dir(&opts)?;
    let encoder = Encoder::load(&dir, &opts.device)?;
    let topts = TrainOptions {
        epochs: a.epochs,
        lr: a.lr,
        hidden: a.hidden,
        seed: a.seed,
        embed_batch: a.model.batch_size,
        ..TrainOptions::default()
    };
    let report = train_heads(&encoder, &train, &dev, &topts, &a.out)?;
    println!("{}", serde_json::to_string_pretty(&report)?);
    eprintln!("heads written to {}", a.out.display());
    Ok(())
}
