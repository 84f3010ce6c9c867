//! Bicubic resizing with Pillow's exact arithmetic (`Image.resize(..., BICUBIC)`), which
//! transformers' image processors use without torchvision.
//!
//! Written here rather than taken from the `image` crate: its Catmull-Rom filter is a = -0.5
//! bicubic too, but computes in floating point in one pass order while Pillow rounds to 8 bits
//! between a horizontal and a vertical pass with 22-bit fixed-point weights; the two differ by
//! up to several levels on real images, and pixel values are part of what must match.

use image::RgbImage;

/// Fixed-point bits of the weights (Pillow's `PRECISION_BITS`).
const PRECISION_BITS: u32 = 32 - 8 - 2;

/// Pillow's bicubic kernel (a = -0.5), support 2.
fn bicubic(x: f64) -> f64 {
    const A: f64 = -0.5;
    let x = x.abs();
    if x < 1.0 {
        ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        (((x - 5.0) * x + 8.0) * x - 4.0) * A
    } else {
        0.0
    }
}

/// Per output position: the first input index, how many inputs it reads, and their fixed-point
/// weights (Pillow's `precompute_coeffs` and `normalize_coeffs_8bpc`).
struct Coefficients {
    bounds: Vec<(usize, usize)>,
    weights: Vec<Vec<i32>>,
}

fn coefficients(in_size: usize, out_size: usize) -> Coefficients {
    let scale = in_size as f64 / out_size as f64;
    let filter_scale = scale.max(1.0);
    let support = 2.0 * filter_scale;
    let mut bounds = Vec::with_capacity(out_size);
    let mut weights = Vec::with_capacity(out_size);
    for xx in 0..out_size {
        let center = (xx as f64 + 0.5) * scale;
        let inv = 1.0 / filter_scale;
        let xmin = ((center - support + 0.5) as i64).max(0) as usize;
        let xmax = ((center + support + 0.5) as i64).min(in_size as i64) as usize;
        let count = xmax.saturating_sub(xmin);
        let raw: Vec<f64> = (0..count)
            .map(|x| bicubic((x as f64 + xmin as f64 - center + 0.5) * inv))
            .collect();
        let total: f64 = raw.iter().sum();
        let fixed = raw
            .iter()
            .map(|&w| {
                let w = if total != 0.0 { w / total } else { w };
                let scaled = w * (1u32 << PRECISION_BITS) as f64;
                if w < 0.0 {
                    (scaled - 0.5) as i32
                } else {
                    (scaled + 0.5) as i32
                }
            })
            .collect();
        bounds.push((xmin, count));
        weights.push(fixed);
    }
    Coefficients { bounds, weights }
}

/// Rounds a fixed-point sum back to 8 bits, clipped (Pillow's `clip8`).
fn clip8(sum: i64) -> u8 {
    (sum >> PRECISION_BITS).clamp(0, 255) as u8
}

/// Resizes `img` to `width × height` as Pillow's `Image.resize(size, Image.BICUBIC)` does.
pub fn resize_bicubic(img: &RgbImage, width: u32, height: u32) -> RgbImage {
    let (in_w, in_h) = (img.width() as usize, img.height() as usize);
    let (out_w, out_h) = (width as usize, height as usize);
    if (in_w, in_h) == (out_w, out_h) {
        return img.clone();
    }
    let horizontal = coefficients(in_w, out_w);
    let vertical = coefficients(in_h, out_h);
    // The horizontal pass covers only the rows the vertical pass reads.
    let first_row = vertical.bounds.first().map_or(0, |b| b.0);
    let last_row = vertical.bounds.last().map_or(in_h, |b| b.0 + b.1);
    let src = img.as_raw();
    let half = 1i64 << (PRECISION_BITS - 1);
    let (mid, mid_w, mid_rows) = if in_w != out_w {
        let rows = last_row - first_row;
        let mut mid = vec![0u8; rows * out_w * 3];
        for y in 0..rows {
            let row = &src[(y + first_row) * in_w * 3..];
            for (xx, ((xmin, count), k)) in horizontal
                .bounds
                .iter()
                .zip(&horizontal.weights)
                .enumerate()
            {
                let mut ss = [half; 3];
                for (i, w) in k.iter().enumerate().take(*count) {
                    let p = &row[(xmin + i) * 3..(xmin + i) * 3 + 3];
                    for c in 0..3 {
                        ss[c] += p[c] as i64 * *w as i64;
                    }
                }
                let o = (y * out_w + xx) * 3;
                for c in 0..3 {
                    mid[o + c] = clip8(ss[c]);
                }
            }
        }
        (mid, out_w, rows)
    } else {
        (
            src[first_row * in_w * 3..last_row * in_w * 3].to_vec(),
            in_w,
            last_row - first_row,
        )
    };
    if in_h == out_h {
        return RgbImage::from_raw(mid_w as u32, mid_rows as u32, mid)
            .expect("buffer size matches the image");
    }
    let mut out = vec![0u8; out_h * mid_w * 3];
    for (yy, ((ymin, count), k)) in vertical.bounds.iter().zip(&vertical.weights).enumerate() {
        let ymin = ymin - first_row;
        for x in 0..mid_w {
            let mut ss = [half; 3];
            for (i, w) in k.iter().enumerate().take(*count) {
                let o = ((ymin + i) * mid_w + x) * 3;
                for c in 0..3 {
                    ss[c] += mid[o + c] as i64 * *w as i64;
                }
            }
            let o = (yy * mid_w + x) * 3;
            for c in 0..3 {
                out[o + c] = clip8(ss[c]);
            }
        }
    }
    RgbImage::from_raw(mid_w as u32, out_h as u32, out).expect("buffer size matches the image")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_sum_to_one_in_fixed_point() {
        for (a, b) in [(10, 3), (3, 10), (100, 32), (7, 7)] {
            let c = coefficients(a, b);
            for k in &c.weights {
                let sum: i64 = k.iter().map(|&w| w as i64).sum();
                assert!(
                    (sum - (1 << PRECISION_BITS)).abs() <= k.len() as i64,
                    "{a}->{b}: {sum}"
                );
            }
        }
    }

    #[test]
    fn a_flat_image_stays_flat() {
        let img = RgbImage::from_pixel(13, 7, image::Rgb([200, 10, 77]));
        let out = resize_bicubic(&img, 5, 11);
        assert!(out.pixels().all(|p| p.0 == [200, 10, 77]));
    }
}
