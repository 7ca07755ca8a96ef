//! Classification metrics over parallel slices of gold labels, predictions, confidences
//! and languages.

use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// Precision, recall and F1 of one label.
#[derive(Debug, Clone, Serialize)]
pub struct LabelMetrics {
    pub label: String,
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
    pub support: usize,
}

/// Accuracy and macro-F1 of a subset (one language).
#[derive(Debug, Clone, Serialize)]
pub struct SubsetMetrics {
    pub n: usize,
    pub accuracy: f64,
    pub macro_f1: f64,
}

/// A (gold, predicted) pair and how often it happened.
#[derive(Debug, Clone, Serialize)]
pub struct Confusion {
    pub gold: String,
    pub predicted: String,
    pub count: usize,
}

/// Everything measured for one task (intent or emotion) on one data set.
#[derive(Debug, Clone, Serialize)]
pub struct TaskReport {
    pub task: String,
    pub n: usize,
    pub accuracy: f64,
    pub macro_f1: f64,
    pub ece: f64,
    pub per_language: BTreeMap<String, SubsetMetrics>,
    pub per_label: Vec<LabelMetrics>,
    pub top_confusions: Vec<Confusion>,
}

fn f1(p: f64, r: f64) -> f64 {
    if p + r == 0.0 {
        0.0
    } else {
        2.0 * p * r / (p + r)
    }
}

/// Per-label metrics and macro-F1 (over the labels seen in gold or predictions).
pub fn label_metrics(gold: &[&str], pred: &[&str]) -> (Vec<LabelMetrics>, f64) {
    let labels: BTreeSet<&str> = gold.iter().chain(pred.iter()).copied().collect();
    let mut tp: HashMap<&str, usize> = HashMap::new();
    let mut gold_n: HashMap<&str, usize> = HashMap::new();
    let mut pred_n: HashMap<&str, usize> = HashMap::new();
    for (g, p) in gold.iter().zip(pred) {
        *gold_n.entry(g).or_default() += 1;
        *pred_n.entry(p).or_default() += 1;
        if g == p {
            *tp.entry(g).or_default() += 1;
        }
    }
    let per: Vec<LabelMetrics> = labels
        .iter()
        .map(|l| {
            let t = *tp.get(l).unwrap_or(&0) as f64;
            let pn = *pred_n.get(l).unwrap_or(&0) as f64;
            let gn = *gold_n.get(l).unwrap_or(&0);
            let precision = if pn > 0.0 { t / pn } else { 0.0 };
            let recall = if gn > 0 { t / gn as f64 } else { 0.0 };
            LabelMetrics {
                label: l.to_string(),
                precision,
                recall,
                f1: f1(precision, recall),
                support: gn,
            }
        })
        .collect();
    let macro_f1 = if per.is_empty() {
        0.0
    } else {
        per.iter().map(|m| m.f1).sum::<f64>() / per.len() as f64
    };
    (per, macro_f1)
}

/// Expected calibration error with equal-width confidence bins.
pub fn expected_calibration_error(confidence: &[f32], correct: &[bool], bins: usize) -> f64 {
    let n = confidence.len();
    if n == 0 {
        return 0.0;
    }
    let mut sum_conf = vec![0f64; bins];
    let mut sum_acc = vec![0f64; bins];
    let mut count = vec![0usize; bins];
    for (&c, &ok) in confidence.iter().zip(correct) {
        let b = ((c.clamp(0.0, 1.0) as f64 * bins as f64) as usize).min(bins - 1);
        sum_conf[b] += c as f64;
        sum_acc[b] += f64::from(u8::from(ok));
        count[b] += 1;
    }
    (0..bins)
        .filter(|&b| count[b] > 0)
        .map(|b| (sum_acc[b] - sum_conf[b]).abs() / n as f64)
        .sum()
}

/// Evaluate one task. All slices are parallel.
pub fn evaluate_task(
    task: &str,
    gold: &[&str],
    pred: &[&str],
    confidence: &[f32],
    langs: &[&str],
) -> TaskReport {
    let n = gold.len();
    let correct: Vec<bool> = gold.iter().zip(pred).map(|(g, p)| g == p).collect();
    let accuracy = if n == 0 {
        0.0
    } else {
        correct.iter().filter(|&&c| c).count() as f64 / n as f64
    };
    let (per_label, macro_f1) = label_metrics(gold, pred);
    let mut per_language = BTreeMap::new();
    let lang_set: BTreeSet<&str> = langs.iter().copied().collect();
    for lang in lang_set {
        let idx: Vec<usize> = (0..n).filter(|&i| langs[i] == lang).collect();
        let g: Vec<&str> = idx.iter().map(|&i| gold[i]).collect();
        let p: Vec<&str> = idx.iter().map(|&i| pred[i]).collect();
        let acc = idx.iter().filter(|&&i| correct[i]).count() as f64 / idx.len() as f64;
        let (_, mf1) = label_metrics(&g, &p);
        per_language.insert(
            lang.to_string(),
            SubsetMetrics {
                n: idx.len(),
                accuracy: acc,
                macro_f1: mf1,
            },
        );
    }
    let mut pairs: HashMap<(&str, &str), usize> = HashMap::new();
    for (g, p) in gold.iter().zip(pred) {
        if g != p {
            *pairs.entry((g, p)).or_default() += 1;
        }
    }
    let mut top: Vec<Confusion> = pairs
        .into_iter()
        .map(|((g, p), count)| Confusion {
            gold: g.to_string(),
            predicted: p.to_string(),
            count,
        })
        .collect();
    top.sort_by(|a, b| b.count.cmp(&a.count).then(a.gold.cmp(&b.gold)));
    top.truncate(10);
    TaskReport {
        task: task.to_string(),
        n,
        accuracy,
        macro_f1,
        ece: expected_calibration_error(confidence, &correct, 15),
        per_language,
        per_label,
        top_confusions: top,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn perfect_and_imperfect_predictions() {
        let g = ["a", "a", "b", "b"];
        let r = evaluate_task("t", &g, &g, &[1.0; 4], &["en"; 4]);
        assert_eq!(r.accuracy, 1.0);
        assert_eq!(r.macro_f1, 1.0);
        assert!(r.ece < 1e-9);
        let p = ["a", "b", "b", "b"];
        let r = evaluate_task("t", &g, &p, &[0.5; 4], &["en", "en", "de", "de"]);
        assert_eq!(r.accuracy, 0.75);
        // a: p=1 r=.5 f1=.667; b: p=.667 r=1 f1=.8
        assert!((r.macro_f1 - (2.0 / 3.0 + 0.8) / 2.0).abs() < 1e-9);
        assert_eq!(r.per_language["de"].accuracy, 1.0);
        assert_eq!(r.per_language["en"].accuracy, 0.5);
        assert_eq!(r.top_confusions[0].gold, "a");
        assert!((r.ece - 0.25).abs() < 1e-9);
    }
}
