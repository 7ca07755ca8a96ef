//! `triage eval`: accuracy, macro-F1, per-label and per-language figures on labelled JSONL.

use super::{InputError, ModelArgs};
use crate::dataset;
use crate::eval::report::{evaluate_with_policy, render};
use crate::model::Model;
use crate::policy::Policy;
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
    /// Policy whose escalation decisions are compared on predicted vs gold labels.
    #[arg(long, default_value = "models/policy/default.toml")]
    pub policy: PathBuf,
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
    let policy = Policy::load(&a.policy, "en").ok();
    let mut reports = Vec::new();
    for (name, rows) in &sets {
        let r = evaluate_with_policy(&model, policy.as_ref(), name, rows, a.model.batch_size)?;
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
