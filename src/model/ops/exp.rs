//! `e^x` over f32 slices: a range reduction to `x = n·ln2 + r` and a degree-6 polynomial for
//! `e^r` (the Cephes `expf` coefficients). The slice kernels run AVX2 + FMA intrinsics when the
//! CPU has them and portable lane loops otherwise (LLVM vectorises those only in part, which is
//! why the x86 path is written by hand). libm's `expf` is scalar; the softmaxes, the cross
//! entropy and SiLU spent a twentieth of a training step in it.
//!
//! Accuracy: within 2 ulp of `f32::exp` for `x` in [-87.3, 88.7] (checked against it over the
//! whole range in the tests). Below -87.3 the result is 0 (the true value is subnormal), above
//! 88.72 it is +∞, and NaN stays NaN.

// Indexed lane loops are the form the vectoriser turns into one register operation.
#![allow(clippy::needless_range_loop)]

use super::simd::reduce;

/// Lanes per block: one AVX register of f32.
pub const LANES: usize = 8;

/// Below this `e^x` is subnormal and flushed to 0.
const MIN_X: f32 = -87.336_55;
/// Above this `e^x` overflows f32.
const MAX_X: f32 = 88.722_84;
const LOG2_E: f32 = std::f32::consts::LOG2_E;
/// ln 2 split in a part exact in few bits and the rest, so `x − n·ln2` loses nothing.
const LN2_HI: f32 = 0.693_359_4;
const LN2_LO: f32 = -2.121_944_4e-4;
/// Adding then subtracting 1.5·2²³ rounds to the nearest integer without a rounding instruction.
const ROUND: f32 = 12_582_912.0;
const POLY: [f32; 6] = [
    1.987_569_1e-4,
    1.398_199_9e-3,
    8.333_452e-3,
    4.166_579_6e-2,
    1.666_666_5e-1,
    0.5,
];

/// `e^x` of one value: [`exp_lanes`] on a block holding it.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    exp_lanes([x; LANES])[0]
}

/// `e^x` of each lane, the portable kernel. Every step is its own lane loop over plain arrays,
/// and every range test its own select: a chain of tests becomes branches and stays scalar.
#[inline(always)]
pub fn exp_lanes(x: [f32; LANES]) -> [f32; LANES] {
    let mut clamped = [0f32; LANES];
    for l in 0..LANES {
        clamped[l] = x[l].clamp(MIN_X, MAX_X);
    }
    let mut n = [0f32; LANES];
    let mut n_int = [0i32; LANES];
    for l in 0..LANES {
        let shifted = clamped[l] * LOG2_E + ROUND;
        n[l] = shifted - ROUND;
        n_int[l] = (shifted.to_bits() as i32).wrapping_sub(ROUND.to_bits() as i32);
    }
    let mut r = [0f32; LANES];
    for l in 0..LANES {
        r[l] = clamped[l] - n[l] * LN2_HI - n[l] * LN2_LO;
    }
    let mut p = [POLY[0]; LANES];
    for c in &POLY[1..] {
        for l in 0..LANES {
            p[l] = p[l] * r[l] + c;
        }
    }
    let mut out = [0f32; LANES];
    for l in 0..LANES {
        let e_r = p[l] * r[l] * r[l] + r[l] + 1.0;
        // 2^n for n in [-126, 128]: 2^128 is not an f32, so the top case scales by 2 · 2^127.
        let top = (n_int[l] > 0) as i32;
        let k = n_int[l] - top;
        let e_r = e_r * (1 + top) as f32;
        let value = e_r * f32::from_bits((k.wrapping_add(127) as u32) << 23);
        let value = if x[l] < MIN_X { 0.0 } else { value };
        let value = if x[l] > MAX_X { f32::INFINITY } else { value };
        out[l] = if x[l].is_nan() { x[l] } else { value };
    }
    out
}

/// Runs the AVX2 + FMA kernel when the CPU has them, the portable one otherwise.
macro_rules! dispatch {
    ($name:ident($($arg:expr),*), $portable:ident) => {{
        #[cfg(target_arch = "x86_64")]
        {
            if super::simd::has_avx2() {
                // SAFETY: the CPU supports AVX2 and FMA (checked just above).
                return unsafe { avx2::$name($($arg),*) };
            }
        }
        $portable($($arg),*)
    }};
}

/// `xs[i] = e^(xs[i] − shift)`; returns their sum.
pub fn exp_shifted_sum(xs: &mut [f32], shift: f32) -> f32 {
    dispatch!(exp_shifted_sum(xs, shift), exp_shifted_sum_portable)
}

/// `Σ e^(xs[i] − shift)`, leaving `xs` as it is.
pub fn sum_exp_shifted(xs: &[f32], shift: f32) -> f32 {
    dispatch!(sum_exp_shifted(xs, shift), sum_exp_shifted_portable)
}

/// `out[i] = scale · e^(xs[i] − shift)` over the shorter length.
pub fn scaled_exp_shifted(out: &mut [f32], xs: &[f32], shift: f32, scale: f32) {
    dispatch!(
        scaled_exp_shifted(out, xs, shift, scale),
        scaled_exp_shifted_portable
    )
}

/// `out[i] = 1 / (1 + e^−xs[i])` over the shorter length.
pub fn sigmoid(out: &mut [f32], xs: &[f32]) {
    dispatch!(sigmoid(out, xs), sigmoid_portable)
}

#[inline]
fn sigmoid_portable(out: &mut [f32], xs: &[f32]) {
    let n = out.len().min(xs.len());
    let out = &mut out[..n];
    for (o, x) in out.iter_mut().zip(xs) {
        *o = -x;
    }
    exp_shifted_sum_portable(out, 0.0);
    for o in out.iter_mut() {
        *o = 1.0 / (1.0 + *o);
    }
}

/// `xs[i] = e^(xs[i] − shift)`; returns their sum.
#[inline]
fn exp_shifted_sum_portable(xs: &mut [f32], shift: f32) -> f32 {
    let mut acc = [0f32; LANES];
    let mut blocks = xs.chunks_exact_mut(LANES);
    for block in &mut blocks {
        let mut x = [0f32; LANES];
        for l in 0..LANES {
            x[l] = block[l] - shift;
        }
        let e = exp_lanes(x);
        block.copy_from_slice(&e);
        for l in 0..LANES {
            acc[l] += e[l];
        }
    }
    let mut sum = reduce(acc);
    for v in blocks.into_remainder() {
        *v = exp(*v - shift);
        sum += *v;
    }
    sum
}

/// `Σ e^(xs[i] − shift)`, leaving `xs` as it is.
#[inline]
fn sum_exp_shifted_portable(xs: &[f32], shift: f32) -> f32 {
    let mut acc = [0f32; LANES];
    let mut blocks = xs.chunks_exact(LANES);
    for block in &mut blocks {
        let mut x = [0f32; LANES];
        for l in 0..LANES {
            x[l] = block[l] - shift;
        }
        let e = exp_lanes(x);
        for l in 0..LANES {
            acc[l] += e[l];
        }
    }
    let mut sum = reduce(acc);
    for v in blocks.remainder() {
        sum += exp(*v - shift);
    }
    sum
}

/// `out[i] = scale · e^(xs[i] − shift)`.
#[inline]
fn scaled_exp_shifted_portable(out: &mut [f32], xs: &[f32], shift: f32, scale: f32) {
    let n = out.len().min(xs.len());
    let (out, xs) = (&mut out[..n], &xs[..n]);
    let whole = n - n % LANES;
    for (o, x) in out[..whole]
        .chunks_exact_mut(LANES)
        .zip(xs[..whole].chunks_exact(LANES))
    {
        let mut v = [0f32; LANES];
        for l in 0..LANES {
            v[l] = x[l] - shift;
        }
        let e = exp_lanes(v);
        for l in 0..LANES {
            o[l] = scale * e[l];
        }
    }
    for (o, x) in out[whole..].iter_mut().zip(&xs[whole..]) {
        *o = scale * exp(x - shift);
    }
}

/// Largest element (−∞ for an empty slice); NaN elements are skipped, as `f32::max` does.
#[inline(always)]
pub fn max(xs: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; LANES];
    let mut blocks = xs.chunks_exact(LANES);
    for block in &mut blocks {
        for l in 0..LANES {
            acc[l] = acc[l].max(block[l]);
        }
    }
    blocks
        .remainder()
        .iter()
        .chain(&acc)
        .copied()
        .fold(f32::NEG_INFINITY, f32::max)
}

/// The kernels with AVX2 and FMA intrinsics, eight lanes at a time; each tail goes through the
/// portable lane function. Fused multiply-adds make results differ from the portable kernels' in
/// the last bit; both stay within 2 ulp of `f32::exp`.
#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use super::{exp, LN2_HI, LN2_LO, LOG2_E, MAX_X, MIN_X, POLY, ROUND};

    #[inline]
    #[target_feature(enable = "avx2,fma")]
    fn exp8(x: __m256) -> __m256 {
        let clamped = _mm256_min_ps(
            _mm256_max_ps(x, _mm256_set1_ps(MIN_X)),
            _mm256_set1_ps(MAX_X),
        );
        let shifted = _mm256_fmadd_ps(clamped, _mm256_set1_ps(LOG2_E), _mm256_set1_ps(ROUND));
        let n = _mm256_sub_ps(shifted, _mm256_set1_ps(ROUND));
        let n_int = _mm256_sub_epi32(
            _mm256_castps_si256(shifted),
            _mm256_set1_epi32(ROUND.to_bits() as i32),
        );
        let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(LN2_HI), clamped);
        let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(LN2_LO), r);
        let mut p = _mm256_set1_ps(POLY[0]);
        for c in &POLY[1..] {
            p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(*c));
        }
        let e_r = _mm256_add_ps(
            _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), r),
            _mm256_set1_ps(1.0),
        );
        // 2^n for n in [-126, 128]: the top case scales by 2 · 2^127 (`top` is −1 there).
        let top = _mm256_cmpgt_epi32(n_int, _mm256_setzero_si256());
        let k = _mm256_add_epi32(n_int, top);
        let e_r = _mm256_blendv_ps(e_r, _mm256_add_ps(e_r, e_r), _mm256_castsi256_ps(top));
        let two_k = _mm256_castsi256_ps(_mm256_slli_epi32::<23>(_mm256_add_epi32(
            k,
            _mm256_set1_epi32(127),
        )));
        let value = _mm256_mul_ps(e_r, two_k);
        let below = _mm256_cmp_ps::<_CMP_LT_OQ>(x, _mm256_set1_ps(MIN_X));
        let value = _mm256_blendv_ps(value, _mm256_setzero_ps(), below);
        let above = _mm256_cmp_ps::<_CMP_GT_OQ>(x, _mm256_set1_ps(MAX_X));
        let value = _mm256_blendv_ps(value, _mm256_set1_ps(f32::INFINITY), above);
        let nan = _mm256_cmp_ps::<_CMP_UNORD_Q>(x, x);
        _mm256_blendv_ps(value, x, nan)
    }

    #[inline]
    #[target_feature(enable = "avx2,fma")]
    fn sum8(v: __m256) -> f32 {
        let half = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
        let quarter = _mm_add_ps(half, _mm_movehl_ps(half, half));
        _mm_cvtss_f32(_mm_add_ss(quarter, _mm_shuffle_ps::<1>(quarter, quarter)))
    }

    #[target_feature(enable = "avx2,fma")]
    pub fn exp_shifted_sum(xs: &mut [f32], shift: f32) -> f32 {
        let mut acc = _mm256_setzero_ps();
        let mut blocks = xs.chunks_exact_mut(8);
        for block in &mut blocks {
            // SAFETY: the block holds eight f32s.
            unsafe {
                let x = _mm256_loadu_ps(block.as_ptr());
                let e = exp8(_mm256_sub_ps(x, _mm256_set1_ps(shift)));
                _mm256_storeu_ps(block.as_mut_ptr(), e);
                acc = _mm256_add_ps(acc, e);
            }
        }
        let mut sum = sum8(acc);
        for v in blocks.into_remainder() {
            *v = exp(*v - shift);
            sum += *v;
        }
        sum
    }

    #[target_feature(enable = "avx2,fma")]
    pub fn sum_exp_shifted(xs: &[f32], shift: f32) -> f32 {
        let mut acc = _mm256_setzero_ps();
        let mut blocks = xs.chunks_exact(8);
        for block in &mut blocks {
            // SAFETY: the block holds eight f32s.
            let x = unsafe { _mm256_loadu_ps(block.as_ptr()) };
            acc = _mm256_add_ps(acc, exp8(_mm256_sub_ps(x, _mm256_set1_ps(shift))));
        }
        let mut sum = sum8(acc);
        for v in blocks.remainder() {
            sum += exp(*v - shift);
        }
        sum
    }

    #[target_feature(enable = "avx2,fma")]
    pub fn scaled_exp_shifted(out: &mut [f32], xs: &[f32], shift: f32, scale: f32) {
        let n = out.len().min(xs.len());
        let whole = n - n % 8;
        for (o, x) in out[..whole]
            .chunks_exact_mut(8)
            .zip(xs[..whole].chunks_exact(8))
        {
            // SAFETY: both blocks hold eight f32s.
            unsafe {
                let x = _mm256_loadu_ps(x.as_ptr());
                let e = exp8(_mm256_sub_ps(x, _mm256_set1_ps(shift)));
                _mm256_storeu_ps(o.as_mut_ptr(), _mm256_mul_ps(_mm256_set1_ps(scale), e));
            }
        }
        for (o, x) in out[whole..n].iter_mut().zip(&xs[whole..n]) {
            *o = scale * exp(x - shift);
        }
    }

    #[target_feature(enable = "avx2,fma")]
    pub fn sigmoid(out: &mut [f32], xs: &[f32]) {
        let n = out.len().min(xs.len());
        let whole = n - n % 8;
        let one = _mm256_set1_ps(1.0);
        for (o, x) in out[..whole]
            .chunks_exact_mut(8)
            .zip(xs[..whole].chunks_exact(8))
        {
            // SAFETY: both blocks hold eight f32s.
            unsafe {
                let x = _mm256_loadu_ps(x.as_ptr());
                let e = exp8(_mm256_sub_ps(_mm256_setzero_ps(), x));
                _mm256_storeu_ps(o.as_mut_ptr(), _mm256_div_ps(one, _mm256_add_ps(one, e)));
            }
        }
        for (o, x) in out[whole..n].iter_mut().zip(&xs[whole..n]) {
            *o = 1.0 / (1.0 + exp(-x));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ulps(a: f32, b: f32) -> i64 {
        (a.to_bits() as i64 - b.to_bits() as i64).abs()
    }

    #[test]
    fn within_two_ulp_of_libm_over_the_normal_range() {
        let mut worst = (0i64, 0f32);
        let steps = 2_000_000;
        for i in 0..=steps {
            let x = MIN_X + (MAX_X - MIN_X) * i as f32 / steps as f32;
            let (got, want) = (exp(x), x.exp());
            if want.is_normal() {
                let u = ulps(got, want);
                if u > worst.0 {
                    worst = (u, x);
                }
            }
        }
        assert!(worst.0 <= 2, "{} ulp at x = {}", worst.0, worst.1);
    }

    #[test]
    fn edges_and_specials() {
        assert_eq!(exp(0.0), 1.0);
        assert_eq!(exp(f32::NEG_INFINITY), 0.0);
        assert_eq!(exp(-100.0), 0.0);
        assert_eq!(exp(f32::INFINITY), f32::INFINITY);
        assert_eq!(exp(89.0), f32::INFINITY);
        assert!(exp(f32::NAN).is_nan());
        assert!(exp(88.7).is_finite() && ulps(exp(88.7), 88.7f32.exp()) <= 2);
    }

    #[test]
    fn slice_kernels_within_two_ulp_of_libm() {
        // Long enough for the eight-lane blocks, with a tail; NaN and the edges included.
        let mut xs: Vec<f32> = (0..200_003)
            .map(|i| MIN_X + (MAX_X - MIN_X) * i as f32 / 200_002.0)
            .collect();
        xs.extend([f32::NAN, f32::NEG_INFINITY, f32::INFINITY, -100.0, 0.0]);
        let close = |got: f32, want: f32| {
            (want.is_nan() && got.is_nan())
                || got == want
                || (want.is_normal() && ulps(got, want) <= 2)
                || (!want.is_normal() && got == 0.0 && want.abs() < f32::MIN_POSITIVE)
        };
        let mut ys = xs.clone();
        exp_shifted_sum(&mut ys, 0.0);
        let mut scaled = vec![0f32; xs.len()];
        scaled_exp_shifted(&mut scaled, &xs, 0.0, 1.0);
        for ((x, y), z) in xs.iter().zip(&ys).zip(&scaled) {
            assert!(
                close(*y, x.exp()),
                "exp_shifted_sum: e^{x} gave {y}, not {}",
                x.exp()
            );
            assert_eq!(y.to_bits(), z.to_bits(), "the kernels agree at {x}");
        }
        let mut sig = vec![0f32; xs.len()];
        sigmoid(&mut sig, &xs);
        for (x, s) in xs.iter().zip(&sig) {
            let want = 1.0 / (1.0 + (-x).exp());
            assert!(
                (want.is_nan() && s.is_nan()) || (s - want).abs() <= 4e-7 * want.max(1e-30),
                "sigmoid({x}) = {s}, not {want}"
            );
        }
    }

    #[test]
    fn sums_and_max() {
        let xs: Vec<f32> = (0..37).map(|i| (i as f32 * 0.37).sin() * 9.0).collect();
        let shift = max(&xs);
        assert_eq!(shift, xs.iter().copied().fold(f32::NEG_INFINITY, f32::max));
        let plain: f64 = xs.iter().map(|x| ((x - shift) as f64).exp()).sum();
        let mut ys = xs.clone();
        let sum = exp_shifted_sum(&mut ys, shift);
        assert!(
            (sum as f64 - plain).abs() <= 1e-6 * plain,
            "{sum} vs {plain}"
        );
        assert!((sum_exp_shifted(&xs, shift) - sum).abs() <= 1e-6 * sum);
        assert_eq!(max(&[]), f32::NEG_INFINITY);
        assert_eq!(max(&[f32::NAN, 1.0]), 1.0);
    }

    #[test]
    fn portable_kernels_agree_with_the_dispatched_ones() {
        let xs: Vec<f32> = (0..61).map(|i| (i as f32 * 0.77).cos() * 40.0).collect();
        let (mut a, mut b) = (xs.clone(), xs.clone());
        let (sa, sb) = (
            exp_shifted_sum(&mut a, 3.0),
            exp_shifted_sum_portable(&mut b, 3.0),
        );
        for (x, y) in a.iter().zip(&b) {
            assert!(ulps(*x, *y) <= 2 || (*x == 0.0 && *y == 0.0), "{x} vs {y}");
        }
        assert!((sa - sb).abs() <= 1e-6 * sa);
        assert!((sum_exp_shifted_portable(&xs, 3.0) - sa).abs() <= 1e-6 * sa);
        let (mut c, mut d) = (vec![0f32; 61], vec![0f32; 61]);
        sigmoid(&mut c, &xs);
        sigmoid_portable(&mut d, &xs);
        scaled_exp_shifted_portable(&mut a, &xs, 3.0, 1.0);
        assert!(c.iter().zip(&d).all(|(x, y)| (x - y).abs() <= 1e-7));
        assert!(a.iter().zip(&b).all(|(x, y)| ulps(*x, *y) <= 2 || *x == *y));
    }
}
