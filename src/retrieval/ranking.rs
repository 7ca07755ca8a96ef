//! How FAQ candidates are scored and when there is no answer. Each candidate entry gets a
//! linear score from three signals: the best question-variant cosine, the best answer-passage
//! cosine, and the log-probability the intent head gives the entry's intent. A "no answer"
//! candidate competes with them: a bias, plus the log-probability of intents no entry serves
//! (greetings, out-of-scope, ...), plus a per-intent offset weighted by the intent head's
//! distribution (so "no answer" can be likelier for product questions, which a knowledge base
//! covers only in part, than for refund questions). A softmax over the candidates and "no
//! answer" gives each a probability; the answer is the best candidate when it beats "no
//! answer". The weights are learnt by maximum likelihood on held-out labelled queries
//! ([`fit`]), not hand-tuned; a plain cosine floor is the special case [`Ranker::cosine_floor`].

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// Probability floor inside logarithms, so that a zero probability stays finite.
const LOG_EPS: f32 = 1e-3;

/// The learnt combination (stored in `heads.json` as `retrieval`, next to the model whose
/// vectors it was fitted on).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Ranker {
    /// Weight of the best question-variant cosine.
    pub question: f32,
    /// Weight of the best answer-passage cosine (0: answers are not embedded).
    pub answer: f32,
    /// Weight of ln P(entry's intent).
    pub intent: f32,
    /// Score of "no answer": `null_bias + null_unserved * ln P(unserved intents)
    /// + sum over intents k of P(k) * null_intents[k]`.
    pub null_bias: f32,
    pub null_unserved: f32,
    /// Per-intent offsets of the "no answer" score (intents not listed: 0).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub null_intents: BTreeMap<String, f32>,
}

/// One candidate's signals.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Signals {
    pub question: f32,
    pub answer: f32,
    /// ln P(the entry's intent); ln(uniform) for entries without an intent.
    pub intent_log_p: f32,
}

/// What "no answer" is scored on: ln P(intents no entry serves) and the intent
/// distribution `(label, probability)`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NullSignals {
    pub unserved_log_p: f32,
    pub intents: Vec<(String, f32)>,
}

/// ln(p) with a floor.
pub fn log_p(p: f32) -> f32 {
    (p.max(0.0) + LOG_EPS).ln()
}

/// The fixed weights before the per-intent offsets in [`fit`]'s parameter vector.
const FIXED: usize = 5;

impl Ranker {
    /// Answer when the best question cosine reaches `floor`; nothing else counts.
    pub fn cosine_floor(floor: f32) -> Self {
        const SHARPNESS: f32 = 50.0;
        Self {
            question: SHARPNESS,
            answer: 0.0,
            intent: 0.0,
            null_bias: SHARPNESS * floor,
            null_unserved: 0.0,
            null_intents: BTreeMap::new(),
        }
    }

    pub fn uses_answers(&self) -> bool {
        self.answer != 0.0
    }

    pub fn score(&self, s: &Signals) -> f32 {
        self.question * s.question + self.answer * s.answer + self.intent * s.intent_log_p
    }

    /// The "no answer" score.
    pub fn null_score(&self, n: &NullSignals) -> f32 {
        self.null_score_of(
            n.unserved_log_p,
            n.intents.iter().map(|(l, p)| (l.as_str(), *p)),
        )
    }

    /// The "no answer" score from ln P(unserved intents) and the intent distribution
    /// `(label, probability)`, without owning either (the ranking's hot path).
    pub fn null_score_of<'a>(
        &self,
        unserved_log_p: f32,
        intents: impl IntoIterator<Item = (&'a str, f32)>,
    ) -> f32 {
        let offset: f32 = intents
            .into_iter()
            .filter_map(|(label, p)| self.null_intents.get(label).map(|b| p * b))
            .sum();
        self.null_bias + self.null_unserved * unserved_log_p + offset
    }

    fn to_vec(&self, labels: &[String]) -> Vec<f64> {
        let fixed = [
            self.question,
            self.answer,
            self.intent,
            self.null_bias,
            self.null_unserved,
        ];
        fixed
            .into_iter()
            .chain(
                labels
                    .iter()
                    .map(|l| self.null_intents.get(l).copied().unwrap_or(0.0)),
            )
            .map(f64::from)
            .collect()
    }

    fn from_vec(v: &[f64], labels: &[String]) -> Self {
        Self {
            question: v[0] as f32,
            answer: v[1] as f32,
            intent: v[2] as f32,
            null_bias: v[3] as f32,
            null_unserved: v[4] as f32,
            null_intents: labels
                .iter()
                .zip(&v[FIXED..])
                .map(|(l, &b)| (l.clone(), b as f32))
                .collect(),
        }
    }
}

/// Softmax over candidate scores plus the "no answer" score; returns the candidates'
/// probabilities and the probability of "no answer".
pub fn probabilities(scores: &[f32], null: f32) -> (Vec<f32>, f32) {
    let max = scores.iter().copied().fold(null, f32::max);
    let exp: Vec<f32> = scores.iter().map(|s| (s - max).exp()).collect();
    let e_null = (null - max).exp();
    let z = exp.iter().sum::<f32>() + e_null;
    (exp.iter().map(|e| e / z).collect(), e_null / z)
}

/// One labelled query for fitting: its candidates' signals, what "no answer" is scored on,
/// and which candidate is right (`None`: no entry answers it).
#[derive(Debug, Clone)]
pub struct Example {
    pub candidates: Vec<Signals>,
    pub null: NullSignals,
    pub gold: Option<usize>,
}

/// An example with its "no answer" features as a dense row: `[1, ln P(unserved), P(k)...]`
/// over the fit's intent labels.
struct DenseExample<'a> {
    ex: &'a Example,
    null_features: Vec<f64>,
}

/// Fit the weights by maximum likelihood (softmax over candidates and "no answer") by
/// full-batch Adam, starting from `start`, with a small L2 penalty on the signal weights and
/// a stronger one on the per-intent offsets (few examples per intent; they should move
/// only where the data insists). With `per_intent`, an offset is learnt for every intent
/// the examples' distributions name. Returns the fitted ranker and the final mean negative
/// log-likelihood.
pub fn fit(
    examples: &[Example],
    start: &Ranker,
    fit_answer: bool,
    per_intent: bool,
) -> (Ranker, f64) {
    const STEPS: usize = 3000;
    const LR: f64 = 0.05;
    const L2: f64 = 1e-5;
    const L2_PER_INTENT: f64 = 1e-3;
    let labels: Vec<String> = if per_intent {
        let set: BTreeSet<&String> = examples
            .iter()
            .flat_map(|e| e.null.intents.iter().map(|(l, _)| l))
            .collect();
        set.into_iter().cloned().collect()
    } else {
        Vec::new()
    };
    let dense: Vec<DenseExample> = examples
        .iter()
        .map(|ex| {
            let mut null_features = vec![0.0; 2 + labels.len()];
            null_features[0] = 1.0;
            null_features[1] = f64::from(ex.null.unserved_log_p);
            for (l, p) in &ex.null.intents {
                if let Ok(k) = labels.binary_search(l) {
                    null_features[2 + k] += f64::from(*p);
                }
            }
            DenseExample { ex, null_features }
        })
        .collect();
    let mut w = start.to_vec(&labels);
    if !fit_answer {
        w[1] = 0.0;
    }
    let (mut m, mut v) = (vec![0f64; w.len()], vec![0f64; w.len()]);
    let mut nll = f64::NAN;
    for step in 1..=STEPS {
        let (loss, mut grad) = nll_and_grad(&dense, &w);
        for (i, (g, wi)) in grad.iter_mut().zip(&w).enumerate() {
            let l2 = if i < FIXED { L2 } else { L2_PER_INTENT };
            *g += 2.0 * l2 * wi;
        }
        if !fit_answer {
            grad[1] = 0.0;
        }
        nll = loss;
        for i in 0..w.len() {
            m[i] = 0.9 * m[i] + 0.1 * grad[i];
            v[i] = 0.999 * v[i] + 0.001 * grad[i] * grad[i];
            let mh = m[i] / (1.0 - 0.9f64.powi(step as i32));
            let vh = v[i] / (1.0 - 0.999f64.powi(step as i32));
            w[i] -= LR * mh / (vh.sqrt() + 1e-8);
        }
    }
    (Ranker::from_vec(&w, &labels), nll)
}

/// Mean negative log-likelihood and its gradient with respect to the weights
/// (`[question, answer, intent, null_bias, null_unserved, per-intent offsets...]`).
fn nll_and_grad(examples: &[DenseExample], w: &[f64]) -> (f64, Vec<f64>) {
    let (mut loss, mut grad) = (0f64, vec![0f64; w.len()]);
    let feats = |s: &Signals| [s.question as f64, s.answer as f64, s.intent_log_p as f64];
    // The "no answer" weights: null_bias, null_unserved, then the offsets.
    let null_w = &w[3..];
    for d in examples {
        let ex = d.ex;
        let scores: Vec<f64> = ex
            .candidates
            .iter()
            .map(|s| {
                let f = feats(s);
                w[0] * f[0] + w[1] * f[1] + w[2] * f[2]
            })
            .collect();
        let null: f64 = null_w
            .iter()
            .zip(&d.null_features)
            .map(|(a, b)| a * b)
            .sum();
        let max = scores.iter().copied().fold(null, f64::max);
        let z: f64 = scores.iter().map(|s| (s - max).exp()).sum::<f64>() + (null - max).exp();
        let log_z = max + z.ln();
        loss += log_z - ex.gold.map_or(null, |g| scores[g]);
        // d log Z = sum p_c d s_c; minus the gold's features.
        for (c, s) in ex.candidates.iter().zip(&scores) {
            let p = (s - log_z).exp();
            let f = feats(c);
            for k in 0..3 {
                grad[k] += p * f[k];
            }
        }
        let p_null = (null - log_z).exp();
        let null_gold = if ex.gold.is_none() { 1.0 } else { 0.0 };
        for (g, f) in grad[3..].iter_mut().zip(&d.null_features) {
            *g += (p_null - null_gold) * f;
        }
        if let Some(g) = ex.gold {
            let f = feats(&ex.candidates[g]);
            for k in 0..3 {
                grad[k] -= f[k];
            }
        }
    }
    let n = examples.len().max(1) as f64;
    (loss / n, grad.into_iter().map(|g| g / n).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sig(q: f32, ip: f32) -> Signals {
        Signals {
            question: q,
            answer: 0.0,
            intent_log_p: ip,
        }
    }

    fn null(unserved_log_p: f32, intents: &[(&str, f32)]) -> NullSignals {
        NullSignals {
            unserved_log_p,
            intents: intents.iter().map(|(l, p)| (l.to_string(), *p)).collect(),
        }
    }

    fn dense<'a>(ex: &'a [Example], labels: &[&str]) -> Vec<DenseExample<'a>> {
        ex.iter()
            .map(|ex| {
                let mut null_features = vec![1.0, f64::from(ex.null.unserved_log_p)];
                null_features.extend(labels.iter().map(|l| {
                    ex.null
                        .intents
                        .iter()
                        .find(|(x, _)| x == l)
                        .map_or(0.0, |(_, p)| f64::from(*p))
                }));
                DenseExample { ex, null_features }
            })
            .collect()
    }

    #[test]
    fn cosine_floor_answers_only_above_the_floor() {
        let r = Ranker::cosine_floor(0.8);
        let n = null(0.0, &[("greeting", 0.9)]);
        assert!(r.score(&sig(0.81, 0.0)) > r.null_score(&n));
        assert!(r.score(&sig(0.79, 0.0)) < r.null_score(&n));
    }

    #[test]
    fn probabilities_sum_to_one() {
        let (p, n) = probabilities(&[1.0, 2.0, 0.5], 1.5);
        assert!((p.iter().sum::<f32>() + n - 1.0).abs() < 1e-6);
        assert!(p[1] > n && n > p[0]);
    }

    #[test]
    fn gradient_matches_finite_differences() {
        let ex = vec![
            Example {
                candidates: vec![sig(0.9, -0.1), sig(0.8, -3.0)],
                null: null(-4.0, &[("a", 0.7), ("b", 0.3)]),
                gold: Some(0),
            },
            Example {
                candidates: vec![sig(0.7, -2.0), sig(0.75, -2.5)],
                null: null(-0.2, &[("b", 0.6), ("c", 0.4)]),
                gold: None,
            },
        ];
        let d = dense(&ex, &["a", "b", "c"]);
        let w = [20.0, 0.0, 0.5, 15.0, 1.0, 0.3, -0.7, 1.1];
        let (_, g) = nll_and_grad(&d, &w);
        for k in [0, 2, 3, 4, 5, 6, 7] {
            let (mut a, mut b) = (w, w);
            a[k] += 1e-5;
            b[k] -= 1e-5;
            let num = (nll_and_grad(&d, &a).0 - nll_and_grad(&d, &b).0) / 2e-5;
            assert!((num - g[k]).abs() < 1e-4, "weight {k}: {num} vs {}", g[k]);
        }
    }

    #[test]
    fn fitting_learns_to_use_the_intent_signal_and_the_null() {
        // The question cosine alone cannot separate these; the intent signal can, and a
        // query whose intent no entry serves has no answer.
        let mut ex = Vec::new();
        for i in 0..40 {
            let good = i % 2 == 0;
            ex.push(Example {
                candidates: vec![
                    sig(0.85, if good { -0.05 } else { -4.0 }),
                    sig(0.86, if good { -4.0 } else { -0.05 }),
                ],
                null: null(-5.0, &[]),
                gold: Some(if good { 0 } else { 1 }),
            });
            ex.push(Example {
                candidates: vec![sig(0.85, -5.0), sig(0.84, -5.0)],
                null: null(-0.01, &[]),
                gold: None,
            });
        }
        let (r, nll) = fit(&ex, &Ranker::cosine_floor(0.8), false, false);
        assert!(nll < 0.2, "nll {nll}");
        assert!(r.intent > 0.0 && r.null_unserved > 0.0, "{r:?}");
        let right = ex
            .iter()
            .filter(|e| {
                let scores: Vec<f32> = e.candidates.iter().map(|s| r.score(s)).collect();
                let null = r.null_score(&e.null);
                let best = (0..scores.len())
                    .max_by(|&a, &b| scores[a].total_cmp(&scores[b]))
                    .filter(|&b| scores[b] > null);
                best == e.gold
            })
            .count();
        assert_eq!(right, ex.len());
    }

    #[test]
    fn per_intent_offsets_learn_where_no_answer_is_likelier() {
        // Same cosines and unserved mass everywhere; only the intent the head names tells
        // the null queries ("product") from the answerable ones ("refund").
        let mut ex = Vec::new();
        for _ in 0..30 {
            ex.push(Example {
                candidates: vec![sig(0.8, -0.2)],
                null: null(-5.0, &[("refund", 0.9), ("product", 0.1)]),
                gold: Some(0),
            });
            ex.push(Example {
                candidates: vec![sig(0.8, -0.2)],
                null: null(-5.0, &[("product", 0.9), ("refund", 0.1)]),
                gold: None,
            });
        }
        let (plain, plain_nll) = fit(&ex, &Ranker::cosine_floor(0.8), false, false);
        assert!(plain.null_intents.is_empty());
        let (r, nll) = fit(&ex, &Ranker::cosine_floor(0.8), false, true);
        assert!(nll < plain_nll - 0.2, "{nll} vs {plain_nll}");
        assert!(
            r.null_intents["product"] > r.null_intents["refund"],
            "{r:?}"
        );
        for e in &ex {
            let answered = r.score(&e.candidates[0]) > r.null_score(&e.null);
            assert_eq!(answered, e.gold.is_some());
        }
        // Stored and read back.
        let json = serde_json::to_string(&r).unwrap();
        assert_eq!(serde_json::from_str::<Ranker>(&json).unwrap(), r);
        // A ranker stored without offsets still reads.
        let old =
            r#"{"question":15.7,"answer":0.0,"intent":0.56,"null_bias":10.9,"null_unserved":0.53}"#;
        assert!(serde_json::from_str::<Ranker>(old)
            .unwrap()
            .null_intents
            .is_empty());
    }
}
