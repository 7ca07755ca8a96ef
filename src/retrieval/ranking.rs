//! How FAQ candidates are scored and when there is no answer. Each candidate entry gets a
//! linear score from three signals: the best question-variant cosine, the best answer-passage
//! cosine, and the log-probability the intent head gives the entry's intent. A "no answer"
//! candidate competes with them: a bias plus the log-probability of intents no entry serves
//! (greetings, out-of-scope, ...). A softmax over the candidates and "no answer" gives each
//! a probability; the answer is the best candidate when it beats "no answer". The weights are
//! learnt by maximum likelihood on held-out labelled queries ([`fit`]), not hand-tuned; a plain
//! cosine floor is the special case [`Ranker::cosine_floor`].

use serde::{Deserialize, Serialize};

/// Probability floor inside logarithms, so that a zero probability stays finite.
const LOG_EPS: f32 = 1e-3;

/// The learnt combination (stored in `heads.json` as `retrieval`, next to the model whose
/// vectors it was fitted on).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Ranker {
    /// Weight of the best question-variant cosine.
    pub question: f32,
    /// Weight of the best answer-passage cosine (0: answers are not embedded).
    pub answer: f32,
    /// Weight of ln P(entry's intent).
    pub intent: f32,
    /// Score of "no answer": `null_bias + null_unserved * ln P(unserved intents)`.
    pub null_bias: f32,
    pub null_unserved: f32,
}

/// One candidate's signals.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Signals {
    pub question: f32,
    pub answer: f32,
    /// ln P(the entry's intent); ln(uniform) for entries without an intent.
    pub intent_log_p: f32,
}

/// ln(p) with a floor.
pub fn log_p(p: f32) -> f32 {
    (p.max(0.0) + LOG_EPS).ln()
}

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
        }
    }

    pub fn uses_answers(&self) -> bool {
        self.answer != 0.0
    }

    pub fn score(&self, s: &Signals) -> f32 {
        self.question * s.question + self.answer * s.answer + self.intent * s.intent_log_p
    }

    /// The "no answer" score given ln P(unserved intents).
    pub fn null_score(&self, unserved_log_p: f32) -> f32 {
        self.null_bias + self.null_unserved * unserved_log_p
    }

    fn to_vec(self) -> [f32; 5] {
        [
            self.question,
            self.answer,
            self.intent,
            self.null_bias,
            self.null_unserved,
        ]
    }

    fn from_vec(v: [f32; 5]) -> Self {
        Self {
            question: v[0],
            answer: v[1],
            intent: v[2],
            null_bias: v[3],
            null_unserved: v[4],
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

/// One labelled query for fitting: its candidates' signals, ln P(unserved), and which
/// candidate is right (`None`: no entry answers it).
#[derive(Debug, Clone)]
pub struct Example {
    pub candidates: Vec<Signals>,
    pub unserved_log_p: f32,
    pub gold: Option<usize>,
}

/// Fit the weights by maximum likelihood (softmax over candidates and "no answer") with a
/// small L2 penalty, starting from `start`, by full-batch Adam. Returns the fitted ranker
/// and the final mean negative log-likelihood.
pub fn fit(examples: &[Example], start: Ranker, fit_answer: bool) -> (Ranker, f64) {
    const STEPS: usize = 3000;
    const LR: f64 = 0.05;
    const L2: f64 = 1e-5;
    let mut w = start.to_vec().map(f64::from);
    if !fit_answer {
        w[1] = 0.0;
    }
    let (mut m, mut v) = ([0f64; 5], [0f64; 5]);
    let mut nll = f64::NAN;
    for step in 1..=STEPS {
        let (loss, mut grad) = nll_and_grad(examples, &w);
        for (g, wi) in grad.iter_mut().zip(&w) {
            *g += 2.0 * L2 * wi;
        }
        if !fit_answer {
            grad[1] = 0.0;
        }
        nll = loss;
        for i in 0..5 {
            m[i] = 0.9 * m[i] + 0.1 * grad[i];
            v[i] = 0.999 * v[i] + 0.001 * grad[i] * grad[i];
            let mh = m[i] / (1.0 - 0.9f64.powi(step as i32));
            let vh = v[i] / (1.0 - 0.999f64.powi(step as i32));
            w[i] -= LR * mh / (vh.sqrt() + 1e-8);
        }
    }
    (Ranker::from_vec(w.map(|x| x as f32)), nll)
}

/// Mean negative log-likelihood and its gradient with respect to the five weights.
fn nll_and_grad(examples: &[Example], w: &[f64; 5]) -> (f64, [f64; 5]) {
    let (mut loss, mut grad) = (0f64, [0f64; 5]);
    let feats = |s: &Signals| [s.question as f64, s.answer as f64, s.intent_log_p as f64];
    for ex in examples {
        let scores: Vec<f64> = ex
            .candidates
            .iter()
            .map(|s| {
                let f = feats(s);
                w[0] * f[0] + w[1] * f[1] + w[2] * f[2]
            })
            .collect();
        let u = ex.unserved_log_p as f64;
        let null = w[3] + w[4] * u;
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
        grad[3] += p_null;
        grad[4] += p_null * u;
        match ex.gold {
            Some(g) => {
                let f = feats(&ex.candidates[g]);
                for k in 0..3 {
                    grad[k] -= f[k];
                }
            }
            None => {
                grad[3] -= 1.0;
                grad[4] -= u;
            }
        }
    }
    let n = examples.len().max(1) as f64;
    (loss / n, grad.map(|g| g / n))
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

    #[test]
    fn cosine_floor_answers_only_above_the_floor() {
        let r = Ranker::cosine_floor(0.8);
        assert!(r.score(&sig(0.81, 0.0)) > r.null_score(0.0));
        assert!(r.score(&sig(0.79, 0.0)) < r.null_score(0.0));
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
                unserved_log_p: -4.0,
                gold: Some(0),
            },
            Example {
                candidates: vec![sig(0.7, -2.0), sig(0.75, -2.5)],
                unserved_log_p: -0.2,
                gold: None,
            },
        ];
        let w = [20.0, 0.0, 0.5, 15.0, 1.0];
        let (_, g) = nll_and_grad(&ex, &w);
        for k in [0, 2, 3, 4] {
            let (mut a, mut b) = (w, w);
            a[k] += 1e-5;
            b[k] -= 1e-5;
            let num = (nll_and_grad(&ex, &a).0 - nll_and_grad(&ex, &b).0) / 2e-5;
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
                unserved_log_p: -5.0,
                gold: Some(if good { 0 } else { 1 }),
            });
            ex.push(Example {
                candidates: vec![sig(0.85, -5.0), sig(0.84, -5.0)],
                unserved_log_p: -0.01,
                gold: None,
            });
        }
        let (r, nll) = fit(&ex, Ranker::cosine_floor(0.8), false);
        assert!(nll < 0.2, "nll {nll}");
        assert!(r.intent > 0.0 && r.null_unserved > 0.0, "{r:?}");
        let right = ex
            .iter()
            .filter(|e| {
                let scores: Vec<f32> = e.candidates.iter().map(|s| r.score(s)).collect();
                let null = r.null_score(e.unserved_log_p);
                let best = (0..scores.len())
                    .max_by(|&a, &b| scores[a].total_cmp(&scores[b]))
                    .filter(|&b| scores[b] > null);
                best == e.gold
            })
            .count();
        assert_eq!(right, ex.len());
    }
}
