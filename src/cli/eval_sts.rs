//! `triage eval-sts`: Spearman correlation of vector cosine with graded sentence-pair
//! similarity, per language (is the encoder's geometry intact after adaptation?).

use super::{InputError, ModelArgs};
use crate::eval::sts::{evaluate, read_pairs};
use crate::model::Model;
use anyhow::Result;
use clap::Args;
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct EvalStsArgs {
    /// JSONL with text, text_pair, lang, similarity.
    #[arg(long)]
    pub data: PathBuf,
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub model: ModelArgs,
}

pub fn run(a: &EvalStsArgs) -> Result<()> {
    let pairs = read_pairs(&a.data).map_err(|e| InputError(format!("{e:#}")))?;
    if pairs.is_empty() {
        return Err(InputError(format!("{}: no scored pairs", a.data.display())).into());
    }
    // The encoder as the server runs it (adapters merged).
    let model = Model::load(&a.model.options()?)?;
    let r = evaluate(&model.encoder, &pairs, a.model.batch_size)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
    } else {
        println!("pairs {}  Spearman {:.4}", r.pairs, r.spearman);
        for (lang, (n, rho)) in &r.per_language {
            println!("  {lang:<8} n={n:<5} Spearman {rho:.4}");
        }
    }
    Ok(())
}
