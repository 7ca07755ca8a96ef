//! Temperature scaling: the single softmax temperature that minimises negative
//! log-likelihood on held-out logits.

/// Mean NLL of `gold` under `softmax(logits / t)`.
pub fn nll(logits: &[Vec<f32>], gold: &[usize], t: f32) -> f64 {
    let mut total = 0f64;
    for (row, &g) in logits.iter().zip(gold) {
        let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let z: f64 = row.iter().map(|&l| (((l - max) / t) as f64).exp()).sum();
        total += z.ln() - ((row[g] - max) / t) as f64;
    }
    total / logits.len().max(1) as f64
}

/// Search a temperature in [0.05, 20] (log grid, then a finer pass around the best).
pub fn fit_temperature(logits: &[Vec<f32>], gold: &[usize]) -> f32 {
    if logits.is_empty() {
        return 1.0;
    }
    let mut best = (1.0f32, nll(logits, gold, 1.0));
    for i in 0..=120 {
        let t = 0.05f32 * (400f32).powf(i as f32 / 120.0);
        let v = nll(logits, gold, t);
        if v < best.1 {
            best = (t, v);
        }
    }
    let center = best.0;
    for i in 0..=100 {
        let t = center * (0.9 + 0.2 * i as f32 / 100.0);
        let v = nll(logits, gold, t);
        if v < best.1 {
            best = (t, v);
        }
    }
    best.0
}

/// Softmax of `row / t`.
pub fn softmax(row: &[f32], t: f32) -> Vec<f32> {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let e: Vec<f32> = row.iter().map(|&l| ((l - max) / t).exp()).collect();
    let s: f32 = e.iter().sum();
    e.into_iter().map(|x| x / s).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overconfident_logits_get_a_temperature_above_one() {
        // Always very confident, right only 60% of the time.
        let logits: Vec<Vec<f32>> = (0..100).map(|_| vec![10.0, 0.0]).collect();
        let gold: Vec<usize> = (0..100).map(|i| usize::from(i % 5 >= 3)).collect();
        let t = fit_temperature(&logits, &gold);
        assert!(t > 5.0, "t = {t}");
        let p = softmax(&logits[0], t)[0];
        assert!((p - 0.6).abs() < 0.05, "p = {p}");
    }
}
