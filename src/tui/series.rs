//! Series maths of the charts: finite filtering, extremes, padded bounds and resampling to a
//! width. Pure; tolerates NaN, infinities and empty input.

/// `Some(v)` when `v` is finite.
pub fn finite(v: Option<f64>) -> Option<f64> {
    v.filter(|x| x.is_finite())
}

/// The largest finite value of `values` (0 when there is none).
pub fn finite_max(values: impl IntoIterator<Item = f64>) -> f64 {
    values
        .into_iter()
        .filter(|v| v.is_finite())
        .fold(0.0, f64::max)
}

/// Finite points only.
pub fn finite_points(points: &[(f64, f64)]) -> Vec<(f64, f64)> {
    points
        .iter()
        .copied()
        .filter(|(x, y)| x.is_finite() && y.is_finite())
        .collect()
}

/// Bounds `[lo, hi]` covering `values` with a little padding; never empty, never NaN.
pub fn bounds(values: impl IntoIterator<Item = f64>, pad_fraction: f64) -> [f64; 2] {
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for v in values.into_iter().filter(|v| v.is_finite()) {
        lo = lo.min(v);
        hi = hi.max(v);
    }
    if !(lo.is_finite() && hi.is_finite()) {
        return [0.0, 1.0];
    }
    let span = hi - lo;
    let pad = if span > 0.0 {
        span * pad_fraction
    } else {
        lo.abs().max(1.0) * 0.5
    };
    for out in [[lo - pad, hi + pad], [lo, hi]] {
        if out[0].is_finite() && out[1].is_finite() && out[1] > out[0] {
            return out;
        }
    }
    [0.0, 1.0]
}

/// `values` averaged into `n` buckets (or returned as is when there are at most `n`).
pub fn resample(values: &[f64], n: usize) -> Vec<f64> {
    if n == 0 {
        return Vec::new();
    }
    if values.len() <= n {
        return values.to_vec();
    }
    (0..n)
        .map(|i| {
            let (a, b) = (
                i * values.len() / n,
                ((i + 1) * values.len() / n).max(i * values.len() / n + 1),
            );
            let chunk: Vec<f64> = values[a..b]
                .iter()
                .copied()
                .filter(|v| v.is_finite())
                .collect();
            if chunk.is_empty() {
                f64::NAN
            } else {
                chunk.iter().sum::<f64>() / chunk.len() as f64
            }
        })
        .collect()
}

/// The newest finite y of `series`.
pub fn last_finite(series: &[(f64, f64)]) -> Option<f64> {
    series.iter().rev().map(|(_, y)| *y).find(|y| y.is_finite())
}
