//! Running a model over a labelled data set and printing what came out.

use super::metrics::{evaluate_task, TaskReport};
use crate::dataset::Labeled;
use crate::model::{Model, Prediction, Scored};
use crate::policy::{ActionType, Input, Policy};
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
    /// Share of messages whose predicted escalate / not-escalate decision equals the one the
    /// policy makes on the gold labels (predicted labels stand in where a row has no gold).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub escalation: Option<EscalationAgreement>,
    /// How out-of-scope messages fare (rows labelled `out_of_scope`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub out_of_scope: Option<Abstention>,
}

/// Out-of-scope messages: handled when predicted `out_of_scope` or when the top intent's
/// confidence is under the clarify threshold (the policy then asks instead of answering).
#[derive(Debug, Clone, Serialize)]
pub struct Abstention {
    pub n: usize,
    pub threshold: f32,
    pub predicted_out_of_scope: f64,
    pub below_threshold: f64,
    /// Either of the two: not answered with a confident wrong intent.
    pub handled: f64,
}

/// The clarify threshold of the taxonomy's default policy.
const DEFAULT_CLARIFY_THRESHOLD: f32 = 0.70;

fn abstention(rows: &[Labeled], preds: &[Prediction], threshold: f32) -> Option<Abstention> {
    let (mut n, mut oos, mut low, mut handled) = (0usize, 0usize, 0usize, 0usize);
    for (r, p) in rows.iter().zip(preds) {
        if r.intent.as_deref() != Some("out_of_scope") {
            continue;
        }
        let Some(top) = p.intents.first() else {
            continue;
        };
        n += 1;
        let (is_oos, is_low) = (top.label == "out_of_scope", top.score < threshold);
        oos += usize::from(is_oos);
        low += usize::from(is_low);
        handled += usize::from(is_oos || is_low);
    }
    (n > 0).then(|| Abstention {
        n,
        threshold,
        predicted_out_of_scope: oos as f64 / n as f64,
        below_threshold: low as f64 / n as f64,
        handled: handled as f64 / n as f64,
    })
}

/// Escalation decisions of the policy on predicted vs gold labels.
#[derive(Debug, Clone, Serialize)]
pub struct EscalationAgreement {
    pub n: usize,
    pub agreement: f64,
    pub gold_escalations: usize,
    pub predicted_escalations: usize,
    /// Escalations the gold labels call for that the predictions also made.
    pub recall: f64,
    pub precision: f64,
}

/// Compare the policy's escalation decision on predictions and on gold labels.
pub fn escalation_agreement(
    policy: &Policy,
    rows: &[Labeled],
    preds: &[Prediction],
) -> EscalationAgreement {
    let (mut agree, mut gold_n, mut pred_n, mut both) = (0usize, 0usize, 0usize, 0usize);
    for (r, p) in rows.iter().zip(preds) {
        let pred_emotion = p.emotions.as_ref().and_then(|e| e.first()).cloned();
        let decide = |intents: &[Scored], emotion: Option<&Scored>| {
            policy
                .decide(&Input {
                    text: &r.text,
                    intents,
                    emotion,
                    history: &[],
                })
                .action
                == ActionType::Escalate
        };
        let predicted = decide(&p.intents, pred_emotion.as_ref());
        let gold_intents: Vec<Scored> = match &r.intent {
            Some(i) => vec![Scored {
                label: i.clone(),
                score: 1.0,
            }],
            None => p
                .intents
                .iter()
                .take(1)
                .map(|s| Scored {
                    label: s.label.clone(),
                    score: 1.0,
                })
                .collect(),
        };
        let gold_emotion = match &r.emotion {
            Some(e) => Some(Scored {
                label: e.clone(),
                score: 1.0,
            }),
            None => pred_emotion.clone(),
        };
        let gold = decide(&gold_intents, gold_emotion.as_ref());
        agree += usize::from(gold == predicted);
        gold_n += usize::from(gold);
        pred_n += usize::from(predicted);
        both += usize::from(gold && predicted);
    }
    let r = |a: usize, b: usize| if b == 0 { 0.0 } else { a as f64 / b as f64 };
    EscalationAgreement {
        n: rows.len(),
        agreement: r(agree, rows.len()),
        gold_escalations: gold_n,
        predicted_escalations: pred_n,
        recall: r(both, gold_n),
        precision: r(both, pred_n),
    }
}

/// Predict every row once and score the tasks whose labels the rows carry (rows with a
/// null label are skipped for that task).
pub fn evaluate(
    model: &Model,
    data_name: &str,
    rows: &[Labeled],
    batch_size: usize,
) -> Result<EvalReport> {
    evaluate_with_policy(model, None, data_name, rows, batch_size)
}

/// [`evaluate`], plus the policy's escalation agreement when a policy is given.
pub fn evaluate_with_policy(
    model: &Model,
    policy: Option<&Policy>,
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
    let escalation = policy.map(|p| escalation_agreement(p, rows, &preds));
    let threshold = policy
        .and_then(|p| p.file.clarify_threshold())
        .unwrap_or(DEFAULT_CLARIFY_THRESHOLD);
    Ok(EvalReport {
        data: data_name.to_string(),
        rows: rows.len(),
        intent,
        emotion,
        escalation,
        out_of_scope: abstention(rows, &preds, threshold),
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
    if let Some(a) = &report.out_of_scope {
        let _ = writeln!(
            s,
            "out_of_scope messages: {:.1}% handled (predicted out_of_scope {:.1}%, top confidence under {:.2} {:.1}%; n={})",
            100.0 * a.handled,
            100.0 * a.predicted_out_of_scope,
            a.threshold,
            100.0 * a.below_threshold,
            a.n
        );
    }
    if let Some(e) = &report.escalation {
        let _ = writeln!(
            s,
            "escalation (default policy, predicted vs gold labels): agreement={:.1}% recall={:.1}% precision={:.1}% (gold {} / predicted {} of {})",
            100.0 * e.agreement,
            100.0 * e.recall,
            100.0 * e.precision,
            e.gold_escalations,
            e.predicted_escalations,
            e.n
        );
    }
    s
}
