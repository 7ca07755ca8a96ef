//! `triage compare-engines`: run the same texts through two encoder forwards (by default
//! the int8 engine against the candle reference) and report how closely they agree and how
//! long each took.

use super::{InputError, ModelArgs};
use crate::dataset;
use crate::eval::agreement::compare;
use crate::model::{EngineKind, Model};
use anyhow::Result;
use clap::Args;
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct CompareEnginesArgs {
    /// JSONL files or directories of them with a "text" field (repeatable).
    #[arg(long, default_value = "training-data/dev")]
    pub data: Vec<PathBuf>,
    /// The forward taken as the truth.
    #[arg(long, default_value = "candle")]
    pub reference: EngineKind,
    /// Print one JSON document instead of text.
    #[arg(long)]
    pub json: bool,
    /// The candidate is `--engine` (default here: int8).
    #[command(flatten)]
    pub model: ModelArgs,
}

pub fn run(a: &CompareEnginesArgs) -> Result<()> {
    let mut rows = Vec::new();
    for path in &a.data {
        rows.extend(dataset::read_all(path).map_err(|e| InputError(format!("{e:#}")))?);
    }
    let texts: Vec<&str> = rows.iter().map(|r| r.text.as_str()).collect();
    let mut opts = a.model.options()?;
    let candidate_kind = match opts.engine {
        EngineKind::Auto => EngineKind::Int8,
        k => k,
    };
    opts.engine = a.reference;
    let reference = Model::load(&opts)?;
    opts.engine = candidate_kind;
    let candidate = Model::load(&opts)?;
    let r = compare(&reference, &candidate, &texts, a.model.batch_size)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
    } else {
        println!(
            "{} texts: {} vs reference {}\n  top intent agrees {:.2}%, top emotion agrees {:.2}%\n  embedding cosine min {:.5}, mean {:.6}\n  time {:.2} s vs {:.2} s ({:.2}x)",
            r.texts,
            r.candidate,
            r.reference,
            100.0 * r.intent,
            100.0 * r.emotion,
            r.cosine_min,
            r.cosine_mean,
            r.candidate_s,
            r.reference_s,
            r.reference_s / r.candidate_s.max(1e-9)
        );
    }
    Ok(())
}
