//! `triage fit-retrieval`: learn the FAQ ranker's weights (question, answer and intent
//! signals, and "no answer") on held-out labelled queries, and store them in the heads'
//! `heads.json` so the server and `eval-faq` use them. `triage train` runs it at the end.

use super::eval_faq::load_kb;
use super::{InputError, ModelArgs};
use crate::eval::faq::{evaluate, fit_ranker, predict_queries, rank_all, read_queries, render};
use crate::model::heads::{read_meta, HEADS_META};
use crate::model::Model;
use crate::retrieval::{embedder, RetrievalConfig, Retriever};
use anyhow::{Context, Result};
use clap::Args;
use std::path::PathBuf;

#[derive(Args, Debug, Clone)]
pub struct FitRetrievalArgs {
    /// Knowledge base (JSONL) the queries are labelled against.
    #[arg(long, default_value = "models/faq/default-kb.jsonl")]
    pub kb: PathBuf,
    /// Held-out queries (JSONL: text, lang, faq_id or null); never the evaluation set.
    #[arg(long, default_value = "training-data/faq/tuning-queries.jsonl")]
    pub queries: PathBuf,
    /// Knowledge-base language sets to fit on together: `all`, or languages joined by `+`
    /// (e.g. `all,en+zh+es`: the full KB and a KB in three languages).
    #[arg(long, value_delimiter = ',', default_value = "all,en+zh+es")]
    pub kb_variants: Vec<String>,
    /// Also use the answers' similarity (embedded as passages) as a signal. Off by default:
    /// for the shipped adapted model it changed nothing (held-out NLL 0.4855 with, 0.4851
    /// without) and embedding every answer costs time at each start and reload.
    #[arg(long)]
    pub with_answers: bool,
    /// Print the fit without writing it into heads.json.
    #[arg(long)]
    pub dry_run: bool,
    #[command(flatten)]
    pub model: ModelArgs,
}

impl FitRetrievalArgs {
    /// `--kb-variants`' default.
    pub const DEFAULT_VARIANTS: [&'static str; 2] = ["all", "en+zh+es"];
}

pub fn run(a: &FitRetrievalArgs) -> Result<()> {
    let queries = read_queries(&a.queries).map_err(|e| InputError(format!("{e:#}")))?;
    let model = Model::load(&a.model.options()?)?;
    let heads_dir = model
        .heads_dir
        .clone()
        .context("the model has no heads directory to store the ranker in (--heads DIR)")?;
    let start = RetrievalConfig::default().ranker(None);
    let mut retrievers = Vec::new();
    for variant in &a.kb_variants {
        let languages: Vec<String> = match variant.as_str() {
            "all" => Vec::new(),
            v => v.split('+').map(String::from).collect(),
        };
        let entries = load_kb(&a.kb, &languages)?;
        retrievers.push((
            variant.clone(),
            Retriever::build_with(
                entries,
                embedder(&model.encoder, a.model.batch_size),
                RetrievalConfig::default(),
                start.clone(),
                a.with_answers,
            )?,
        ));
    }
    let predictions = predict_queries(&model, &queries, a.model.batch_size)?;
    let refs: Vec<&Retriever> = retrievers.iter().map(|(_, r)| r).collect();
    let (ranker, nll, n) = fit_ranker(&refs, &queries, &predictions, a.with_answers);
    eprintln!("fitted on {n} examples: mean NLL {nll:.4}");
    println!("{}", serde_json::to_string(&ranker)?);
    for (variant, r) in &mut retrievers {
        r.set_ranker(ranker.clone())?;
        println!("held-out queries, KB {variant} (fitted on these: optimistic)");
        print!(
            "{}",
            render(&evaluate(&queries, &rank_all(r, &predictions), &ranker))
        );
    }
    if !a.dry_run {
        let mut meta = read_meta(&heads_dir)?;
        meta.retrieval = Some(ranker);
        let path = heads_dir.join(HEADS_META);
        std::fs::write(&path, serde_json::to_string_pretty(&meta)? + "\n")
            .with_context(|| format!("writing {}", path.display()))?;
        eprintln!("ranker written to {}", path.display());
    }
    Ok(())
}
