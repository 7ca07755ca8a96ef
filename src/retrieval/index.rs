//! Vector indexes behind one trait, so an approximate index can replace the exact one.
//! [`ExactIndex`] scans every row with a dot product written for the compiler to
//! vectorise (eight independent accumulators); exact search is fast enough at tens of
//! thousands of rows.

/// A searchable set of unit vectors.
pub trait VectorIndex: Send + Sync {
    /// The `k` rows most similar to `query` (cosine = dot product of unit vectors), best first.
    fn search(&self, query: &[f32], k: usize) -> Vec<(usize, f32)>;
    /// Similarity of the query to one row.
    fn similarity(&self, row: usize, query: &[f32]) -> f32;
    /// Number of rows.
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Exact search over a dense row-major matrix.
pub struct ExactIndex {
    dim: usize,
    data: Vec<f32>,
}

impl ExactIndex {
    /// Build from rows of equal length.
    pub fn new(rows: &[Vec<f32>]) -> anyhow::Result<Self> {
        let dim = rows.first().map(Vec::len).unwrap_or(0);
        anyhow::ensure!(
            rows.iter().all(|r| r.len() == dim),
            "index rows have different lengths"
        );
        Ok(Self {
            dim,
            data: rows.concat(),
        })
    }

    /// Similarity of the query to every row.
    pub fn scores(&self, query: &[f32]) -> Vec<f32> {
        if self.dim == 0 || query.len() != self.dim {
            return Vec::new();
        }
        self.data
            .chunks_exact(self.dim)
            .map(|row| dot(row, query))
            .collect()
    }
}

impl VectorIndex for ExactIndex {
    fn search(&self, query: &[f32], k: usize) -> Vec<(usize, f32)> {
        let mut scored: Vec<(usize, f32)> = self.scores(query).into_iter().enumerate().collect();
        let k = k.min(scored.len());
        if k == 0 {
            return Vec::new();
        }
        scored.select_nth_unstable_by(k - 1, |a, b| b.1.total_cmp(&a.1));
        scored.truncate(k);
        scored.sort_by(|a, b| b.1.total_cmp(&a.1));
        scored
    }

    fn similarity(&self, row: usize, query: &[f32]) -> f32 {
        match self.data.get(row * self.dim..(row + 1) * self.dim) {
            Some(r) if query.len() == self.dim => dot(r, query),
            _ => f32::NEG_INFINITY,
        }
    }

    fn len(&self) -> usize {
        self.data.len().checked_div(self.dim).unwrap_or(0)
    }
}

/// Dot product with eight accumulators (vectorises to SIMD).
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    let tail: f32 = ra.iter().zip(rb).map(|(x, y)| x * y).sum();
    acc.iter().sum::<f32>() + tail
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_matches_naive() {
        let a: Vec<f32> = (0..19).map(|i| i as f32 * 0.5).collect();
        let b: Vec<f32> = (0..19).map(|i| 1.0 - i as f32 * 0.1).collect();
        let naive: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
        assert!((dot(&a, &b) - naive).abs() < 1e-4);
    }

    #[test]
    fn search_returns_best_first() {
        let idx = ExactIndex::new(&[vec![1.0, 0.0], vec![0.0, 1.0], vec![0.7, 0.7]]).unwrap();
        let r = idx.search(&[1.0, 0.0], 2);
        assert_eq!(r[0].0, 0);
        assert_eq!(r[1].0, 2);
        assert_eq!(idx.len(), 3);
        assert!(idx.search(&[1.0, 0.0, 0.0], 2).is_empty());
    }
}
