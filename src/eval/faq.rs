//! FAQ retrieval quality on a labelled query set (`{"text", "lang", "faq_id" | null}`):
//! top-1, top-3 and MRR over queries that have an entry, and precision/recall of "no
//! answer" (the ranker chose no entry) over all queries, per language. Also turns a
//! labelled query set into fitting examples for the ranker.

use crate::model::{Model, Prediction};
use crate::retrieval::ranking::{fit, Example};
use crate::retrieval::{Ranker, Retriever};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// One query of the evaluation set.
#[derive(Debug, Clone, Deserialize)]
pub struct FaqQuery {
    pub text: String,
    #[serde(default)]
    pub lang: Option<String>,
    pub faq_id: Option<String>,
}

/// Figures for one language (or all).
#[derive(Debug, Clone, Default, Serialize)]
pub struct FaqMetrics {
    pub queries: usize,
    pub with_entry: usize,
    pub top1: f64,
    pub top3: f64,
    pub mrr: f64,
    /// Queries with an entry that get that entry as the answer.
    pub answered_correctly: f64,
    pub no_answer_precision: f64,
    pub no_answer_recall: f64,
}

#[derive(Default)]
struct Acc {
    n: usize,
    with_entry: usize,
    top1: usize,
    top3: usize,
    rr: f64,
    answered_ok: usize,
    null_pred: usize,
    null_true: usize,
    null_ok: usize,
}

impl Acc {
    fn add(&mut self, gold: Option<&str>, r: &Ranked) {
        self.n += 1;
        let predicted_null = !r.answered;
        if predicted_null {
            self.null_pred += 1;
        }
        match gold {
            Some(g) => {
                self.with_entry += 1;
                if let Some(pos) = r.ids.iter().position(|id| id == g) {
                    if pos == 0 {
                        self.top1 += 1;
                        if !predicted_null {
                            self.answered_ok += 1;
                        }
                    }
                    if pos < 3 {
                        self.top3 += 1;
                    }
                    self.rr += 1.0 / (pos + 1) as f64;
                }
            }
            None => {
                self.null_true += 1;
                if predicted_null {
                    self.null_ok += 1;
                }
            }
        }
    }

    fn metrics(&self) -> FaqMetrics {
        let r = |a: usize, b: usize| if b == 0 { 0.0 } else { a as f64 / b as f64 };
        FaqMetrics {
            queries: self.n,
            with_entry: self.with_entry,
            top1: r(self.top1, self.with_entry),
            top3: r(self.top3, self.with_entry),
            mrr: if self.with_entry == 0 {
                0.0
            } else {
                self.rr / self.with_entry as f64
            },
            answered_correctly: r(self.answered_ok, self.with_entry),
            no_answer_precision: r(self.null_ok, self.null_pred),
            no_answer_recall: r(self.null_ok, self.null_true),
        }
    }
}

/// One query's outcome: entry ids best first, and whether the best was given as the answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Ranked {
    pub ids: Vec<String>,
    pub answered: bool,
}

/// The report: overall and per language, with the ranker that made it.
#[derive(Debug, Clone, Serialize)]
pub struct FaqReport {
    pub ranker: Ranker,
    pub overall: FaqMetrics,
    pub per_language: BTreeMap<String, FaqMetrics>,
}

/// Score the outcomes (`ranked[i]` for `queries[i]`).
pub fn evaluate(queries: &[FaqQuery], ranked: &[Ranked], ranker: &Ranker) -> FaqReport {
    let mut all = Acc::default();
    let mut per: BTreeMap<String, Acc> = BTreeMap::new();
    for (q, r) in queries.iter().zip(ranked) {
        all.add(q.faq_id.as_deref(), r);
        per.entry(q.lang.clone().unwrap_or_else(|| "?".into()))
            .or_default()
            .add(q.faq_id.as_deref(), r);
    }
    FaqReport {
        ranker: ranker.clone(),
        overall: all.metrics(),
        per_language: per.into_iter().map(|(k, v)| (k, v.metrics())).collect(),
    }
}

/// Read a query file (JSONL), naming the line of a bad row.
pub fn read_queries(path: &std::path::Path) -> anyhow::Result<Vec<FaqQuery>> {
    crate::dataset::read_rows(path)
}

/// Run the model on the queries: one encoder pass each gives the vector and the intents.
pub fn predict_queries(
    model: &Model,
    queries: &[FaqQuery],
    batch_size: usize,
) -> anyhow::Result<Vec<Prediction>> {
    let texts: Vec<&str> = queries.iter().map(|q| q.text.as_str()).collect();
    model.predict(&texts, batch_size)
}

/// Rank every query against the retriever with its ranker.
pub fn rank_all(retriever: &Retriever, predictions: &[Prediction]) -> Vec<Ranked> {
    predictions
        .iter()
        .map(|p| {
            let r = retriever.rank(&p.embedding, &p.intents);
            Ranked {
                ids: r
                    .candidates
                    .iter()
                    .take(10)
                    .map(|&(e, _, _)| retriever.entries()[e].id.clone())
                    .collect(),
                answered: r.answered,
            }
        })
        .collect()
}

/// Fit a ranker on labelled queries against one or more knowledge bases (e.g. the full
/// one and one restricted to a few languages, so that the weights hold for both); queries
/// naming an entry a knowledge base lacks are skipped for it. Returns the ranker, the mean
/// negative log-likelihood and the number of examples.
pub fn fit_ranker(
    retrievers: &[&Retriever],
    queries: &[FaqQuery],
    predictions: &[Prediction],
    with_answers: bool,
) -> (Ranker, f64, usize) {
    let examples: Vec<Example> = retrievers
        .iter()
        .flat_map(|r| {
            queries
                .iter()
                .zip(predictions)
                .filter_map(|(q, p)| r.example(&p.embedding, &p.intents, q.faq_id.as_deref()))
        })
        .collect();
    let start = Ranker {
        question: 40.0,
        answer: 0.0,
        intent: 0.5,
        null_bias: 34.0,
        null_unserved: 0.5,
        null_intents: Default::default(),
    };
    let (ranker, nll) = fit(&examples, &start, with_answers, true);
    (ranker, nll, examples.len())
}

/// Text table of a report.
pub fn render(r: &FaqReport) -> String {
    let mut s = format!(
        "{:<8} {:>5} {:>6} {:>6} {:>6} {:>9} {:>9} {:>9}\n",
        "lang", "n", "top1", "top3", "MRR", "answered", "null-P", "null-R"
    );
    let row = |s: &mut String, name: &str, m: &FaqMetrics| {
        s.push_str(&format!(
            "{name:<8} {:>5} {:>5.1}% {:>5.1}% {:>6.3} {:>8.1}% {:>8.1}% {:>8.1}%\n",
            m.queries,
            100.0 * m.top1,
            100.0 * m.top3,
            m.mrr,
            100.0 * m.answered_correctly,
            100.0 * m.no_answer_precision,
            100.0 * m.no_answer_recall
        ));
    };
    for (l, m) in &r.per_language {
        row(&mut s, l, m);
    }
    row(&mut s, "all", &r.overall);
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_count_ranks_and_nulls() {
        let q = |id: Option<&str>| FaqQuery {
            text: String::new(),
            lang: Some("en".into()),
            faq_id: id.map(String::from),
        };
        let queries = vec![q(Some("a")), q(Some("b")), q(None), q(None)];
        let r = |ids: &[&str], answered| Ranked {
            ids: ids.iter().map(|s| s.to_string()).collect(),
            answered,
        };
        let ranked = vec![
            r(&["a", "b"], true),
            r(&["a", "b"], true),
            r(&["a"], false),
            r(&["b"], true),
        ];
        let r = evaluate(&queries, &ranked, &Ranker::cosine_floor(0.85));
        assert_eq!(r.overall.top1, 0.5);
        assert_eq!(r.overall.top3, 1.0);
        assert!((r.overall.mrr - 0.75).abs() < 1e-9);
        assert_eq!(r.overall.answered_correctly, 0.5);
        assert_eq!(r.overall.no_answer_recall, 0.5);
        assert_eq!(r.overall.no_answer_precision, 1.0);
    }
}
