//! Short f32 vector kernels (dot products and scaled row sums) written as fixed-width lane
//! loops the compiler vectorises, and [`multiversion!`] to compile a kernel a second time for
//! AVX2 and pick it at run time (the crate is built for the baseline x86-64 target).

// Indexed lane loops are the form the vectoriser turns into one register operation.
#![allow(clippy::needless_range_loop)]

/// Lanes per accumulator: one AVX register of f32.
const LANES: usize = 8;

/// Whether the running CPU has AVX2 and FMA.
#[inline]
pub fn has_avx2() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Defines `fn NAME(args) -> R` that runs `BODY(args)` compiled for AVX2 + FMA when the CPU has
/// them and for the baseline target otherwise. `BODY` and what it calls should be
/// `#[inline(always)]` so that their code is generated inside the AVX2 copy.
macro_rules! multiversion {
    ($(#[$meta:meta])* $vis:vis fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $(-> $ret:ty)? => $body:path) => {
        $(#[$meta])*
        $vis fn $name($($arg: $ty),*) $(-> $ret)? {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx2,fma")]
                unsafe fn wide($($arg: $ty),*) $(-> $ret)? {
                    $body($($arg),*)
                }
                if $crate::model::ops::simd::has_avx2() {
                    // SAFETY: the CPU supports AVX2 and FMA (checked just above).
                    return unsafe { wide($($arg),*) };
                }
            }
            $body($($arg),*)
        }
    };
}
pub(crate) use multiversion;

#[inline(always)]
fn lanes(x: &[f32]) -> &[f32; LANES] {
    x.try_into().expect("chunk of LANES")
}

/// The sum of the lanes of one accumulator.
#[inline(always)]
pub fn reduce(acc: [f32; LANES]) -> f32 {
    let a = [
        acc[0] + acc[4],
        acc[1] + acc[5],
        acc[2] + acc[6],
        acc[3] + acc[7],
    ];
    (a[0] + a[2]) + (a[1] + a[3])
}

/// `a · b` over the shorter length.
#[inline(always)]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [0f32; LANES];
    let whole = n - n % LANES;
    for (x, y) in a[..whole]
        .chunks_exact(LANES)
        .zip(b[..whole].chunks_exact(LANES))
    {
        let (x, y) = (lanes(x), lanes(y));
        for l in 0..LANES {
            acc[l] += x[l] * y[l];
        }
    }
    let mut sum = reduce(acc);
    for (x, y) in a[whole..].iter().zip(&b[whole..]) {
        sum += x * y;
    }
    sum
}

/// `[a · b0, a · b1, a · b2, a · b3]`: `a` is read once for four rows. Every `b` is at least
/// as long as `a`.
#[inline(always)]
pub fn dot4(a: &[f32], b: [&[f32]; 4]) -> [f32; 4] {
    let n = a.len();
    let b = [&b[0][..n], &b[1][..n], &b[2][..n], &b[3][..n]];
    let mut acc = [[0f32; LANES]; 4];
    let whole = n - n % LANES;
    let mut i = 0;
    while i < whole {
        let x = lanes(&a[i..i + LANES]);
        for (acc, row) in acc.iter_mut().zip(&b) {
            let y = lanes(&row[i..i + LANES]);
            for l in 0..LANES {
                acc[l] += x[l] * y[l];
            }
        }
        i += LANES;
    }
    let mut out = acc.map(reduce);
    for (o, row) in out.iter_mut().zip(&b) {
        for (x, y) in a[whole..].iter().zip(&row[whole..]) {
            *o += x * y;
        }
    }
    out
}

/// [`dot4`] for two vectors `a0` and `a1` of the same length at once: each row of `b` is read
/// once for both (six loads per eight multiply-adds instead of five per four). Each result is
/// bit-identical to [`dot4`]'s.
#[inline(always)]
pub fn dot4x2(a0: &[f32], a1: &[f32], b: [&[f32]; 4]) -> [[f32; 4]; 2] {
    let n = a0.len().min(a1.len());
    let (a0, a1) = (&a0[..n], &a1[..n]);
    let b = [&b[0][..n], &b[1][..n], &b[2][..n], &b[3][..n]];
    let mut acc0 = [[0f32; LANES]; 4];
    let mut acc1 = [[0f32; LANES]; 4];
    let whole = n - n % LANES;
    let mut i = 0;
    while i < whole {
        let x0 = lanes(&a0[i..i + LANES]);
        let x1 = lanes(&a1[i..i + LANES]);
        for r in 0..4 {
            let y = lanes(&b[r][i..i + LANES]);
            for l in 0..LANES {
                acc0[r][l] += x0[l] * y[l];
                acc1[r][l] += x1[l] * y[l];
            }
        }
        i += LANES;
    }
    let mut out = [acc0.map(reduce), acc1.map(reduce)];
    for (a, out) in [a0, a1].iter().zip(out.iter_mut()) {
        for (o, row) in out.iter_mut().zip(&b) {
            for (x, y) in a[whole..].iter().zip(&row[whole..]) {
                *o += x * y;
            }
        }
    }
    out
}

/// `y += alpha · x`.
#[inline(always)]
pub fn axpy(y: &mut [f32], alpha: f32, x: &[f32]) {
    for (y, x) in y.iter_mut().zip(x) {
        *y += alpha * x;
    }
}

/// `y *= alpha`.
#[inline(always)]
pub fn scale(y: &mut [f32], alpha: f32) {
    for v in y {
        *v *= alpha;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernels_match_plain_loops() {
        let a: Vec<f32> = (0..19).map(|i| i as f32 * 0.5 - 3.0).collect();
        let rows: Vec<Vec<f32>> = (0..4)
            .map(|r| (0..19).map(|i| (i * (r + 2)) as f32 * 0.1).collect())
            .collect();
        let plain = |b: &[f32]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f32>();
        let four = dot4(&a, [&rows[0], &rows[1], &rows[2], &rows[3]]);
        let b: Vec<f32> = a.iter().map(|v| v * 0.7 + 1.0).collect();
        let pair = dot4x2(&a, &b, [&rows[0], &rows[1], &rows[2], &rows[3]]);
        assert_eq!(pair[0], four, "bit-identical to dot4");
        assert_eq!(pair[1], dot4(&b, [&rows[0], &rows[1], &rows[2], &rows[3]]));
        for (r, row) in rows.iter().enumerate() {
            assert!((dot(&a, row) - plain(row)).abs() < 1e-4);
            assert!((four[r] - plain(row)).abs() < 1e-4);
        }
        let mut z = vec![1f32; 19];
        axpy(&mut z, 2.0, &a);
        scale(&mut z, 0.5);
        for (z, x) in z.iter().zip(&a) {
            assert!((z - (0.5 + x)).abs() < 1e-6);
        }
    }
}
