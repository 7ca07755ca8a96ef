//! `triage eval-faq`: retrieval quality of a knowledge base on a labelled query set.

use super::{InputError, ModelArgs};
use crate::eval::faq::{evaluate, predict_queries, rank_all, read_queries, render};
use crate::model::Model;
use crate::retrieval::{embedder, read_kb, restrict_languages, FaqEntry};
use crate::retrieval::{RetrievalConfig, Retriever};
use anyhow::Result;
use clap::Args;
use std::path::{Path, PathBuf};

#[derive(Args, Debug)]
pub struct EvalFaqArgs {
    /// Knowledge base (JSONL).
    #[arg(long, default_value = "models/faq/default-kb.jsonl")]
    pub kb: PathBuf,
    /// Queries: JSONL with text, lang, faq_id (null = no entry answers it).
    #[arg(long, default_value = "training-data/faq/paraphrase-queries.jsonl")]
    pub queries: PathBuf,
    /// Keep only these languages of the knowledge base (questions and answers), e.g.
    /// en,zh,es: a shop whose FAQ exists in those languages only.
    #[arg(long, value_delimiter = ',')]
    pub kb_languages: Vec<String>,
    /// A plain cosine floor instead of the model's fitted ranker.
    #[arg(long)]
    pub floor: Option<f32>,
    /// Also print the trade-off of answering vs "no answer" as the no-answer bias moves.
    #[arg(long)]
    pub sweep: bool,
    #[arg(long)]
    pub json: bool,
    /// Also list every query answered wrongly (wrong entry, an answer where none exists, or
    /// none where one does).
    #[arg(long)]
    pub errors: bool,
    #[command(flatten)]
    pub model: ModelArgs,
}

/// Read a knowledge base, keeping only `languages` (all when empty).
pub fn load_kb(path: &Path, languages: &[String]) -> Result<Vec<FaqEntry>> {
    let mut entries = read_kb(path).map_err(|e| InputError(format!("{e:#}")))?;
    restrict_languages(&mut entries, languages);
    if entries.is_empty() {
        return Err(InputError(format!(
            "{}: no entry has questions and answers in {}",
            path.display(),
            languages.join(",")
        ))
        .into());
    }
    Ok(entries)
}

pub fn run(a: &EvalFaqArgs) -> Result<()> {
    let entries = load_kb(&a.kb, &a.kb_languages)?;
    let queries = read_queries(&a.queries).map_err(|e| InputError(format!("{e:#}")))?;
    // The model as the server runs it: adapters merged, its fitted ranker.
    let model = Model::load(&a.model.options()?)?;
    let config = RetrievalConfig {
        floor: a.floor,
        ..Default::default()
    };
    let ranker = config.ranker(model.heads_meta.as_ref().and_then(|m| m.retrieval.clone()));
    let mut retriever = Retriever::build(
        entries,
        embedder(&model.encoder, a.model.batch_size),
        config,
        ranker.clone(),
    )?;
    let predictions = predict_queries(&model, &queries, a.model.batch_size)?;
    let ranked = rank_all(&retriever, &predictions);
    let report = evaluate(&queries, &ranked, &ranker);
    if a.errors {
        for (q, r) in queries.iter().zip(&ranked) {
            let got = r.answered.then(|| r.ids.first()).flatten();
            if got != q.faq_id.as_ref() {
                println!(
                    "{:<8} gold {:<26} got {:<26} {}",
                    q.lang.as_deref().unwrap_or("?"),
                    q.faq_id.as_deref().unwrap_or("(none)"),
                    got.map_or("(none)", String::as_str),
                    q.text
                );
            }
        }
    }
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!("ranker {}", serde_json::to_string(&ranker)?);
        print!("{}", render(&report));
    }
    if a.sweep {
        println!("no-answer bias  answered-correctly  no-answer-precision  no-answer-recall");
        for i in -10..=10 {
            let shift = i as f32 * ranker.question.abs().max(1.0) * 0.01;
            let r = crate::retrieval::Ranker {
                null_bias: ranker.null_bias + shift,
                ..ranker.clone()
            };
            retriever.set_ranker(r.clone())?;
            let m = evaluate(&queries, &rank_all(&retriever, &predictions), &r).overall;
            println!(
                "{:>+8.2}        {:>6.1}%             {:>6.1}%              {:>6.1}%",
                shift,
                100.0 * m.answered_correctly,
                100.0 * m.no_answer_precision,
                100.0 * m.no_answer_recall
            );
        }
    }
    Ok(())
}
