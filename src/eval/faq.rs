//! FAQ retrieval quality on a labelled query set (`{"text", "lang", "faq_id" | null}`):
//! top-1, top-3 and MRR over queries that have an entry, and precision/recall of "no
//! answer" (best score under the floor) over all queries, per language.

use crate::retrieval::Retriever;
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
    /// Queries with an entry whose best candidate is right and above the floor.
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
    fn add(&mut self, gold: Option<&str>, ranked: &[(String, f32)], floor: f32) {
        self.n += 1;
        let predicted_null = ranked.first().is_none_or(|(_, s)| *s < floor);
        if predicted_null {
            self.null_pred += 1;
        }
        match gold {
            Some(g) => {
                self.with_entry += 1;
                if let Some(pos) = ranked.iter().position(|(id, _)| id == g) {
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

/// The report: overall and per language, at one floor.
#[derive(Debug, Clone, Serialize)]
pub struct FaqReport {
    pub floor: f32,
    pub overall: FaqMetrics,
    pub per_language: BTreeMap<String, FaqMetrics>,
}

/// Score ranked candidates (`ranked[i]` for `queries[i]`, best first, up to 10).
pub fn evaluate(queries: &[FaqQuery], ranked: &[Vec<(String, f32)>], floor: f32) -> FaqReport {
    let mut all = Acc::default();
    let mut per: BTreeMap<String, Acc> = BTreeMap::new();
    for (q, r) in queries.iter().zip(ranked) {
        all.add(q.faq_id.as_deref(), r, floor);
        per.entry(q.lang.clone().unwrap_or_else(|| "?".into()))
            .or_default()
            .add(q.faq_id.as_deref(), r, floor);
    }
    FaqReport {
        floor,
        overall: all.metrics(),
        per_language: per.into_iter().map(|(k, v)| (k, v.metrics())).collect(),
    }
}

/// Read a query file (JSONL), naming the line of a bad row.
pub fn read_queries(path: &std::path::Path) -> anyhow::Result<Vec<FaqQuery>> {
    use anyhow::Context;
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut queries = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        queries.push(
            serde_json::from_str(line)
                .with_context(|| format!("{} line {}", path.display(), i + 1))?,
        );
    }
    Ok(queries)
}

/// Embed the queries with `encoder` and rank each against the retriever.
pub fn rank_queries(
    encoder: &crate::model::Encoder,
    retriever: &Retriever,
    queries: &[FaqQuery],
    batch_size: usize,
) -> anyhow::Result<Vec<Vec<(String, f32)>>> {
    let texts: Vec<&str> = queries.iter().map(|q| q.text.as_str()).collect();
    Ok(rank_all(retriever, &encoder.embed(&texts, batch_size)?))
}

/// Rank every query against the retriever.
pub fn rank_all(retriever: &Retriever, vectors: &[Vec<f32>]) -> Vec<Vec<(String, f32)>> {
    vectors
        .iter()
        .map(|v| {
            retriever
                .search(v, 10)
                .into_iter()
                .map(|c| (c.faq_id, c.score))
                .collect()
        })
        .collect()
}

/// Text table of a report.
pub fn render(r: &FaqReport) -> String {
    let mut s = format!(
        "floor {:.3}\n{:<8} {:>5} {:>6} {:>6} {:>6} {:>9} {:>9} {:>9}\n",
        r.floor, "lang", "n", "top1", "top3", "MRR", "answered", "null-P", "null-R"
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
        let ranked = vec![
            vec![("a".to_string(), 0.9), ("b".to_string(), 0.5)],
            vec![("a".to_string(), 0.9), ("b".to_string(), 0.8)],
            vec![("a".to_string(), 0.3)],
            vec![("b".to_string(), 0.95)],
        ];
        let r = evaluate(&queries, &ranked, 0.85);
        assert_eq!(r.overall.top1, 0.5);
        assert_eq!(r.overall.top3, 1.0);
        assert!((r.overall.mrr - 0.75).abs() < 1e-9);
        assert_eq!(r.overall.answered_correctly, 0.5);
        assert_eq!(r.overall.no_answer_recall, 0.5);
        assert_eq!(r.overall.no_answer_precision, 1.0);
    }
}
