//! Agreement of two encoder forwards on the same texts (an optimised engine against the
//! candle reference): top intent and emotion agreement, embedding cosine, and each side's
//! time.

use crate::model::Model;
use anyhow::Result;
use serde::Serialize;
use std::time::Instant;

/// How closely a candidate model follows a reference on a set of texts.
#[derive(Debug, Clone, Serialize)]
pub struct Agreement {
    pub reference: String,
    pub candidate: String,
    pub texts: usize,
    /// Share of texts with the same top intent.
    pub intent: f64,
    /// Share of texts with the same top emotion (1.0 when the model has no emotion head).
    pub emotion: f64,
    /// Lowest and mean cosine between the two embeddings of a text.
    pub cosine_min: f32,
    pub cosine_mean: f32,
    /// Wall time of each side's predictions, seconds.
    pub reference_s: f64,
    pub candidate_s: f64,
}

/// Predict `texts` with both models (same batch size) and compare.
pub fn compare(
    reference: &Model,
    candidate: &Model,
    texts: &[&str],
    batch_size: usize,
) -> Result<Agreement> {
    let t = Instant::now();
    let want = reference.predict(texts, batch_size)?;
    let reference_s = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let got = candidate.predict(texts, batch_size)?;
    let candidate_s = t.elapsed().as_secs_f64();
    let n = texts.len().max(1) as f64;
    let top = |v: &Option<Vec<crate::model::Scored>>| {
        v.as_ref().and_then(|s| s.first()).map(|s| s.label.clone())
    };
    let mut intent = 0usize;
    let mut emotion = 0usize;
    let mut cos_min = f32::INFINITY;
    let mut cos_sum = 0f64;
    for (w, g) in want.iter().zip(&got) {
        intent +=
            usize::from(w.intents.first().map(|s| &s.label) == g.intents.first().map(|s| &s.label));
        emotion += usize::from(top(&w.emotions) == top(&g.emotions));
        let c: f32 = w
            .embedding
            .iter()
            .zip(&g.embedding)
            .map(|(a, b)| a * b)
            .sum();
        cos_min = cos_min.min(c);
        cos_sum += c as f64;
    }
    Ok(Agreement {
        reference: reference.encoder.engine(),
        candidate: candidate.encoder.engine(),
        texts: texts.len(),
        intent: intent as f64 / n,
        emotion: emotion as f64 / n,
        cosine_min: if texts.is_empty() { 1.0 } else { cos_min },
        cosine_mean: (cos_sum / n) as f32,
        reference_s,
        candidate_s,
    })
}
