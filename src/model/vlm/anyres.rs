//! "anyres" image handling of LLaVA-NeXT and LLaVA-OneVision: an image is resized into the grid
//! pinpoint that keeps most of it, cut into tiles of the vision tower's size, and encoded beside a
//! downscaled copy of the whole image (the base). The tiles' features are put back on one grid,
//! the padding added around the image is cut away again ("unpadding"), and a learned
//! `image_newline` vector ends every row. OneVision's `anyres_max_N` further shrinks (bilinear) a
//! grid larger than N tiles' worth of features.
//!
//! The sizes here follow `transformers`' `image_processing_utils.select_best_resolution`,
//! `llava_next`'s `get_anyres_image_grid_shape`, `unpad_image` and the processors'
//! `_get_number_of_features`, so that image-token counts are equal to theirs.

use anyhow::{bail, Result};

/// A `(height, width)` size in pixels.
pub type Size = (u32, u32);

/// The pinpoint that keeps the most of an image of `original` size once it is scaled to fit
/// (ties: the one that wastes the fewest pixels), as `select_best_resolution` picks it.
pub fn select_best_resolution(original: Size, pinpoints: &[Size]) -> Size {
    let (oh, ow) = (original.0 as f64, original.1 as f64);
    let mut best = pinpoints[0];
    let mut best_effective = -1i64;
    let mut best_wasted = i64::MAX;
    for &(h, w) in pinpoints {
        let scale = (w as f64 / ow).min(h as f64 / oh);
        let dw = (ow * scale) as i64;
        let dh = (oh * scale) as i64;
        let effective = (dw * dh).min((ow * oh) as i64);
        let wasted = h as i64 * w as i64 - effective;
        if effective > best_effective || (effective == best_effective && wasted < best_wasted) {
            best = (h, w);
            best_effective = effective;
            best_wasted = wasted;
        }
    }
    best
}

/// The size an image of `original` size takes inside `target` when resized with its aspect
/// ratio kept (`get_patch_output_size`): one side fills the target, the other is rounded up.
pub fn fit_inside(original: Size, target: Size) -> Size {
    let (oh, ow) = (original.0 as f64, original.1 as f64);
    let (th, tw) = target;
    let scale_w = tw as f64 / ow;
    let scale_h = th as f64 / oh;
    if scale_w < scale_h {
        (((oh * scale_w).ceil() as u32).min(th), tw)
    } else {
        (th, ((ow * scale_h).ceil() as u32).min(tw))
    }
}

/// Tiles per column and per row (`get_anyres_image_grid_shape`) for an image of `original`
/// size and tiles of `tile` pixels.
pub fn grid_shape(original: Size, pinpoints: &[Size], tile: u32) -> (usize, usize) {
    let (h, w) = select_best_resolution(original, pinpoints);
    ((h / tile) as usize, (w / tile) as usize)
}

/// The rows and columns of a `(height, width)` feature grid that remain after unpadding for an
/// image of `original` size (`unpad_image`): `(row_start, rows, col_start, cols)`.
pub fn unpadded_region(grid: (usize, usize), original: Size) -> (usize, usize, usize, usize) {
    let (gh, gw) = grid;
    let (oh, ow) = (original.0 as f64, original.1 as f64);
    let original_aspect = ow / oh;
    let current_aspect = gw as f64 / gh as f64;
    if original_aspect > current_aspect {
        let scale = gw as f64 / ow;
        let new_h = round7(oh * scale) as usize;
        let pad = (gh - new_h.min(gh)) / 2;
        (pad, gh - 2 * pad, 0, gw)
    } else {
        let scale = gh as f64 / oh;
        let new_w = round7(ow * scale) as usize;
        let pad = (gw - new_w.min(gw)) / 2;
        (0, gh, pad, gw - 2 * pad)
    }
}

/// Python's `int(round(x, 7))`: rounds to 7 decimals (half to even), then truncates.
fn round7(x: f64) -> f64 {
    let scaled = x * 1e7;
    let r = scaled.round();
    let r = if (scaled - scaled.trunc()).abs() == 0.5 && r % 2.0 != 0.0 {
        r - scaled.signum()
    } else {
        r
    };
    (r / 1e7).trunc()
}

/// The size OneVision's `anyres_max_N` shrinks an unpadded `(rows, cols)` grid to, when it holds
/// more than 1.1² × N tiles of `side × side` features; `None` when it is kept.
pub fn anyres_max_size(
    rows: usize,
    cols: usize,
    side: usize,
    max_tiles: usize,
) -> Option<(usize, usize)> {
    let ratio = ((rows * cols) as f64 / (max_tiles * side * side) as f64).sqrt();
    (ratio > 1.1).then(|| {
        (
            (rows as f64 / ratio).floor() as usize,
            (cols as f64 / ratio).floor() as usize,
        )
    })
}

/// How an anyres model turns one image into image tokens.
#[derive(Debug, Clone, PartialEq)]
pub struct AnyRes {
    /// `(height, width)` grid pinpoints in pixels (`image_grid_pinpoints`).
    pub pinpoints: Vec<Size>,
    /// The vision tower's input side (one tile).
    pub tile: u32,
    /// Features per tile side (`tile / patch_size`).
    pub side: usize,
    /// Image tokens of one tile (`side²`, plus one with the `full` strategy).
    pub tokens_per_tile: usize,
    /// OneVision's `anyres_max_N`: the N.
    pub max_tiles: Option<usize>,
}

impl AnyRes {
    /// Parses `image_grid_pinpoints` (a list of `[height, width]` pairs, each a multiple of
    /// `tile`).
    pub fn pinpoints_from_json(value: &serde_json::Value, tile: u32) -> Result<Vec<Size>> {
        let Some(list) = value.as_array() else {
            bail!("key `image_grid_pinpoints` must be a list of [height, width] pairs");
        };
        let mut out = Vec::with_capacity(list.len());
        for pair in list {
            let p: Option<Vec<u64>> = pair
                .as_array()
                .map(|a| a.iter().filter_map(serde_json::Value::as_u64).collect());
            match p.as_deref() {
                Some([h, w]) if *h > 0 && *w > 0 => {
                    let (h, w) = (*h as u32, *w as u32);
                    if h % tile != 0 || w % tile != 0 {
                        bail!("image_grid_pinpoints entry [{h}, {w}] is not a multiple of the vision tower's image size {tile}");
                    }
                    out.push((h, w));
                }
                _ => bail!("image_grid_pinpoints entry {pair} is not a [height, width] pair of positive integers"),
            }
        }
        if out.is_empty() {
            bail!("key `image_grid_pinpoints` is empty");
        }
        Ok(out)
    }

    /// The tiles' `(rows, cols)` of features after unpadding (and OneVision's shrinking) for an
    /// image of `original` size, and the grid before unpadding.
    pub fn feature_grid(&self, original: Size) -> ((usize, usize), (usize, usize)) {
        let (th, tw) = grid_shape(original, &self.pinpoints, self.tile);
        let full = (th * self.side, tw * self.side);
        let (_, rows, _, cols) = unpadded_region(full, original);
        let kept = match self.max_tiles {
            Some(n) => anyres_max_size(rows, cols, self.side, n).unwrap_or((rows, cols)),
            None => (rows, cols),
        };
        (kept, full)
    }

    /// Tiles the processor makes of an image of `original` size: the base plus the grid's.
    pub fn num_tiles(&self, original: Size) -> usize {
        let (th, tw) = grid_shape(original, &self.pinpoints, self.tile);
        1 + th * tw
    }

    /// Image tokens for an image of `original` size: the base tile's, then the unpadded grid
    /// with one newline per row.
    pub fn num_tokens(&self, original: Size) -> usize {
        let ((rows, cols), _) = self.feature_grid(original);
        self.tokens_per_tile + rows * (cols + 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn best_resolution_keeps_most_of_the_image() {
        let pins = [(336, 672), (672, 336), (672, 672), (1008, 336), (336, 1008)];
        // A wide image fits best in the wide pinpoints; the one that wastes less wins the tie.
        assert_eq!(select_best_resolution((300, 900), &pins), (336, 1008));
        assert_eq!(select_best_resolution((500, 500), &pins), (672, 672));
        assert_eq!(select_best_resolution((800, 400), &pins), (672, 336));
    }

    #[test]
    fn fit_inside_fills_one_side() {
        assert_eq!(fit_inside((300, 900), (336, 1008)), (336, 1008));
        // As Python computes it: 100 · (672 / 300) = 224.00000000000003, rounded up to 225.
        assert_eq!(fit_inside((100, 300), (672, 672)), (225, 672));
        assert_eq!(fit_inside((301, 100), (672, 672)), (672, 224));
    }

    #[test]
    fn unpadding_cuts_the_padding_rows() {
        // 48×48 grid for a 2:1 wide image: height becomes 24, 12 rows cut on each side.
        assert_eq!(unpadded_region((48, 48), (100, 200)), (12, 24, 0, 48));
        assert_eq!(unpadded_region((48, 48), (200, 100)), (0, 48, 12, 24));
    }

    #[test]
    fn round7_is_pythons() {
        assert_eq!(round7(23.999_999_99), 24.0);
        assert_eq!(round7(23.5), 23.0);
    }
}
