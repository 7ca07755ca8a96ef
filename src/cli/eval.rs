//! `triage eval`: accuracy, macro-F1, per-label and per-language figures on labelled JSONL.

use super::{InputError, ModelArgs};
use crate::dataset;
use crate::eval::report::{evaluate, render};
use crate::model::Model;
use anyhow::Result;
use clap::Args;
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct EvalArgs {
    /// JSONL files or directories of them (repeatable).
    #[arg(long, required = true)]
    pub data: Vec<PathBuf>,
    /// Print one JSON document instead of text.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub model: ModelArgs,
}

pub fn run(a: &EvalArgs) -> Result<()> {
    // Read everything first so a bad file fails before the model loads.
    let mut sets = Vec::new();
    for path in &a.data {
        let rows = dataset::read_all(path).map_err(|e| InputError(format!("{e:#}")))?;
        sets.push((path.display().to_string(), rows));
    }
    let model = Model::load(&a.model.options()?)?;
    let mut reports = Vec::new();
    for (name, rows) in &sets {
        let r = evaluate(&model, name, rows, a.model.batch_size)?;
        if !a.json {
            print!("{}", render(&r));
        }
        reports.push(r);
    }
    if a.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "model": model.model_id(),
                "reports": reports,
            }))?
        );
    }
    Ok(())
}
