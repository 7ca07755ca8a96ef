//! Embedding quality on sentence pairs with graded similarity (`{"text", "text_pair",
//! "lang", "similarity"}`, e.g. STS benchmark translations): the Spearman rank correlation
//! of the cosine of the two texts' vectors with the gold score, overall and per language.
//! A check that adapting the encoder for our tasks did not damage the general geometry of
//! its vectors.

use crate::model::Encoder;
use anyhow::Result;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

/// One scored pair.
#[derive(Debug, Clone, Deserialize)]
pub struct Pair {
    pub text: String,
    pub text_pair: String,
    #[serde(default)]
    pub lang: Option<String>,
    pub similarity: Option<f64>,
}

/// Spearman correlations.
#[derive(Debug, Clone, Serialize)]
pub struct StsReport {
    pub pairs: usize,
    pub spearman: f64,
    pub per_language: BTreeMap<String, (usize, f64)>,
}

/// Read pairs (JSONL); rows without a score are skipped.
pub fn read_pairs(path: &Path) -> Result<Vec<Pair>> {
    let mut pairs: Vec<Pair> = crate::dataset::read_rows(path)?;
    pairs.retain(|p| p.similarity.is_some());
    Ok(pairs)
}

/// Ranks with ties averaged.
fn ranks(v: &[f64]) -> Vec<f64> {
    let mut idx: Vec<usize> = (0..v.len()).collect();
    idx.sort_by(|&a, &b| v[a].total_cmp(&v[b]));
    let mut r = vec![0.0; v.len()];
    let mut i = 0;
    while i < idx.len() {
        let mut j = i;
        while j + 1 < idx.len() && v[idx[j + 1]] == v[idx[i]] {
            j += 1;
        }
        for &k in &idx[i..=j] {
            r[k] = (i + j) as f64 / 2.0;
        }
        i = j + 1;
    }
    r
}

/// Spearman's rank correlation.
pub fn spearman(a: &[f64], b: &[f64]) -> f64 {
    let (ra, rb) = (ranks(a), ranks(b));
    let n = ra.len() as f64;
    let (ma, mb) = (ra.iter().sum::<f64>() / n, rb.iter().sum::<f64>() / n);
    let cov: f64 = ra.iter().zip(&rb).map(|(x, y)| (x - ma) * (y - mb)).sum();
    let va: f64 = ra.iter().map(|x| (x - ma).powi(2)).sum();
    let vb: f64 = rb.iter().map(|y| (y - mb).powi(2)).sum();
    if va == 0.0 || vb == 0.0 {
        0.0
    } else {
        cov / (va * vb).sqrt()
    }
}

/// Embed both sides of every pair and correlate cosine with the gold score.
pub fn evaluate(encoder: &Encoder, pairs: &[Pair], batch_size: usize) -> Result<StsReport> {
    let left: Vec<&str> = pairs.iter().map(|p| p.text.as_str()).collect();
    let right: Vec<&str> = pairs.iter().map(|p| p.text_pair.as_str()).collect();
    let (l, r) = (
        encoder.embed(&left, batch_size)?,
        encoder.embed(&right, batch_size)?,
    );
    let cos: Vec<f64> = l
        .iter()
        .zip(&r)
        .map(|(a, b)| crate::retrieval::index::dot(a, b) as f64)
        .collect();
    let gold: Vec<f64> = pairs.iter().map(|p| p.similarity.unwrap_or(0.0)).collect();
    let mut by_lang: BTreeMap<String, (Vec<f64>, Vec<f64>)> = BTreeMap::new();
    for ((p, c), g) in pairs.iter().zip(&cos).zip(&gold) {
        let e = by_lang
            .entry(p.lang.clone().unwrap_or_else(|| "?".into()))
            .or_default();
        e.0.push(*c);
        e.1.push(*g);
    }
    Ok(StsReport {
        pairs: pairs.len(),
        spearman: spearman(&cos, &gold),
        per_language: by_lang
            .into_iter()
            .map(|(l, (c, g))| (l, (c.len(), spearman(&c, &g))))
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn spearman_of_monotone_and_reversed_orders() {
        let a = [1.0, 2.0, 3.0, 4.0];
        assert!((super::spearman(&a, &[10.0, 20.0, 30.0, 40.0]) - 1.0).abs() < 1e-12);
        assert!((super::spearman(&a, &[4.0, 3.0, 2.0, 1.0]) + 1.0).abs() < 1e-12);
        // Ties share their average rank.
        assert_eq!(super::ranks(&[5.0, 1.0, 5.0]), vec![1.5, 0.0, 1.5]);
    }
}
