//! `triage eval-faq`: retrieval quality of a knowledge base on a labelled query set.

use super::{InputError, ModelArgs};
use crate::eval::faq::{evaluate, rank_queries, read_queries, render};
use crate::model::Model;
use crate::retrieval::{read_kb, RetrievalConfig, Retriever};
use anyhow::Result;
use clap::Args;
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct EvalFaqArgs {
    /// Knowledge base (JSONL).
    #[arg(long, default_value = "models/faq/default-kb.jsonl")]
    pub kb: PathBuf,
    /// Queries: JSONL with text, lang, faq_id (null = no entry answers it).
    #[arg(long, default_value = "training-data/faq/paraphrase-queries.jsonl")]
    pub queries: PathBuf,
    /// Keep only these languages of the knowledge base's questions (e.g. en,zh,es).
    #[arg(long, value_delimiter = ',')]
    pub kb_languages: Vec<String>,
    /// Similarity floor under which there is no answer [default: the model's
    /// retrieval_floor, else 0.86].
    #[arg(long)]
    pub floor: Option<f32>,
    /// Also print the floor sweep (answered correctly vs no-answer recall).
    #[arg(long)]
    pub sweep: bool,
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub model: ModelArgs,
}

pub fn run(a: &EvalFaqArgs) -> Result<()> {
    let mut entries = read_kb(&a.kb).map_err(|e| InputError(format!("{e:#}")))?;
    if !a.kb_languages.is_empty() {
        for e in &mut entries {
            e.questions.retain(|l, _| a.kb_languages.contains(l));
        }
        entries.retain(|e| !e.questions.is_empty());
    }
    let queries = read_queries(&a.queries).map_err(|e| InputError(format!("{e:#}")))?;
    // The encoder as the server runs it: with the heads' LoRA adapters merged, if any.
    let model = Model::load(&a.model.options()?)?;
    let encoder = &model.encoder;
    let floor = a
        .floor
        .or_else(|| model.heads_meta.as_ref().and_then(|m| m.retrieval_floor))
        .unwrap_or(RetrievalConfig::default().floor);
    let retriever = Retriever::build(
        entries,
        |t| encoder.embed(t, a.model.batch_size),
        RetrievalConfig {
            floor,
            ..Default::default()
        },
    )?;
    let ranked = rank_queries(encoder, &retriever, &queries, a.model.batch_size)?;
    let report = evaluate(&queries, &ranked, floor);
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", render(&report));
    }
    if a.sweep {
        println!("floor  answered-correctly  no-answer-precision  no-answer-recall");
        for i in 0..=34 {
            let f = 0.30 + 0.02 * i as f32;
            let m = evaluate(&queries, &ranked, f).overall;
            println!(
                "{f:.2}   {:>6.1}%             {:>6.1}%              {:>6.1}%",
                100.0 * m.answered_correctly,
                100.0 * m.no_answer_precision,
                100.0 * m.no_answer_recall
            );
        }
    }
    Ok(())
}
