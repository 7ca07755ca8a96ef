//! Running a model over a labelled data set and printing what came out.

use super::metrics::{evaluate_task, TaskReport};
use crate::dataset::Labeled;
use crate::model::Model;
use anyhow::Result;
use serde::Serialize;
use std::fmt::Write as _;

/// The evaluation of one data file.
#[derive(Debug, Clone, Serialize)]
pub struct EvalReport {
    pub data: String,
    pub rows: usize,
    pub intent: Option<TaskReport>,
    pub emotion: Option<TaskReport>,
}

/// Predict every row once and score the tasks whose labels the rows carry (rows with a
/// null label are skipped for that task).
pub fn evaluate(
    model: &Model,
    data_name: &str,
    rows: &[Labeled],
    batch_size: usize,
) -> Result<EvalReport> {
    let texts: Vec<&str> = rows.iter().map(|r| r.text.as_str()).collect();
    let preds = model.predict(&texts, batch_size)?;
    let task = |name: &str,
                gold_of: &dyn Fn(&Labeled) -> Option<&str>,
                pick: &dyn Fn(usize) -> Option<(String, f32)>| {
        let mut gold = Vec::new();
        let mut pred = Vec::new();
        let mut conf = Vec::new();
        let mut langs = Vec::new();
        for (i, r) in rows.iter().enumerate() {
            if let (Some(g), Some((p, c))) = (gold_of(r), pick(i)) {
                gold.push(g);
                pred.push(p);
                conf.push(c);
                langs.push(r.lang());
            }
        }
        if gold.is_empty() {
            return None;
        }
        let pred_refs: Vec<&str> = pred.iter().map(String::as_str).collect();
        Some(evaluate_task(name, &gold, &pred_refs, &conf, &langs))
    };
    let intent = task("intent", &|r| r.intent.as_deref(), &|i| {
        preds[i].intents.first().map(|s| (s.label.clone(), s.score))
    });
    let emotion = task("emotion", &|r| r.emotion.as_deref(), &|i| {
        preds[i]
            .emotions
            .as_ref()
            .and_then(|e| e.first())
            .map(|s| (s.label.clone(), s.score))
    });
    Ok(EvalReport {
        data: data_name.to_string(),
        rows: rows.len(),
        intent,
        emotion,
    })
}

/// A human-readable report.
pub fn render(report: &EvalReport) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "== {} ({} rows)", report.data, report.rows);
    for t in [&report.intent, &report.emotion].into_iter().flatten() {
        let _ = writeln!(
            s,
            "{}: n={} accuracy={:.1}% macro-F1={:.3} ECE={:.3}",
            t.task,
            t.n,
            100.0 * t.accuracy,
            t.macro_f1,
            t.ece
        );
        let _ = writeln!(s, "  per language:");
        for (lang, m) in &t.per_language {
            let _ = writeln!(
                s,
                "    {lang:<8} n={:<5} accuracy={:>5.1}%  macro-F1={:.3}",
                m.n,
                100.0 * m.accuracy,
                m.macro_f1
            );
        }
        let _ = writeln!(s, "  per label (precision / recall / F1 / support):");
        for m in &t.per_label {
            let _ = writeln!(
                s,
                "    {:<22} {:.3} / {:.3} / {:.3} / {}",
                m.label, m.precision, m.recall, m.f1, m.support
            );
        }
        if !t.top_confusions.is_empty() {
            let _ = writeln!(s, "  costliest confusions (gold -> predicted):");
            for c in &t.top_confusions {
                let _ = writeln!(s, "    {:>4}  {} -> {}", c.count, c.gold, c.predicted);
            }
        }
    }
    s
}
