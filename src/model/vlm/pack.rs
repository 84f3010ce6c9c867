//! Putting an anyres image's tile features back together (LLaVA-NeXT's and OneVision's
//! `pack_image_features`): the tiles on one grid, the padding cut away, OneVision's bilinear
//! shrink, and `image_newline` after every row. Built from differentiable ops only; the bilinear
//! shrink is two fixed interpolation matrices, so its backward is a matmul's.

use anyhow::Result;
use candle_core::{Device, Tensor};

use super::anyres::{anyres_max_size, grid_shape, unpadded_region, AnyRes, Size};

/// `torch.nn.functional.interpolate(mode="bilinear", align_corners=False)` along one axis as an
/// `(out, in)` matrix.
pub fn bilinear_matrix(input: usize, output: usize, device: &Device) -> Result<Tensor> {
    let scale = input as f64 / output as f64;
    let mut m = vec![0f32; output * input];
    for i in 0..output {
        let src = ((i as f64 + 0.5) * scale - 0.5).max(0.0);
        let i0 = (src.floor() as usize).min(input - 1);
        let i1 = (i0 + 1).min(input - 1);
        let lambda = (src - i0 as f64) as f32;
        m[i * input + i0] += 1.0 - lambda;
        m[i * input + i1] += lambda;
    }
    Ok(Tensor::from_vec(m, (output, input), device)?)
}

/// One image's features in the language model's space, `(tokens, H)`, from its tiles'
/// projected features `(tiles, side², H)` (base tile first) and its original size. A single
/// tile (OneVision's images in a multi-image record) is the base plus one newline.
pub fn pack_image(
    tiles: &Tensor,
    original: Size,
    anyres: &AnyRes,
    newline: &Tensor,
) -> Result<Tensor> {
    let (count, _, hidden) = tiles.dims3()?;
    let base = tiles.get(0)?;
    let newline = newline.reshape((1, hidden))?.to_dtype(tiles.dtype())?;
    if count == 1 {
        return Ok(Tensor::cat(&[&base, &newline], 0)?);
    }
    let side = anyres.side;
    let (th, tw) = grid_shape(original, &anyres.pinpoints, anyres.tile);
    anyhow::ensure!(
        th * tw == count - 1,
        "an image of {}×{} takes {} tiles here but {} were given; were its pixels made for this model?",
        original.0,
        original.1,
        th * tw + 1,
        count
    );
    // (th·tw, side², H) → (th, side, tw, side, H) → rows × cols × H.
    let grid = tiles
        .narrow(0, 1, count - 1)?
        .reshape((th, tw, side, side, hidden))?
        .permute((0, 2, 1, 3, 4))?
        .contiguous()?
        .reshape((th * side, tw * side, hidden))?;
    let (row0, rows, col0, cols) = unpadded_region((th * side, tw * side), original);
    let mut grid = grid.narrow(0, row0, rows)?.narrow(1, col0, cols)?;
    let (mut rows, mut cols) = (rows, cols);
    if let Some((r, c)) = anyres
        .max_tiles
        .and_then(|n| anyres_max_size(rows, cols, side, n))
    {
        let device = grid.device().clone();
        let a_rows = bilinear_matrix(rows, r, &device)?.to_dtype(grid.dtype())?;
        let a_cols = bilinear_matrix(cols, c, &device)?.to_dtype(grid.dtype())?;
        // (rows, cols, H) → (H, rows, cols) → A_r · X · A_cᵀ → (r, c, H).
        let x = grid.permute((2, 0, 1))?.contiguous()?;
        let x = a_rows.broadcast_matmul(&x)?;
        let x = x.broadcast_matmul(&a_cols.t()?)?;
        grid = x.permute((1, 2, 0))?.contiguous()?;
        (rows, cols) = (r, c);
    }
    let ends = newline
        .reshape((1, 1, hidden))?
        .broadcast_as((rows, 1, hidden))?;
    let grid =
        Tensor::cat(&[&grid, &ends.contiguous()?], 1)?.reshape((rows * (cols + 1), hidden))?;
    Ok(Tensor::cat(&[&base, &grid], 0)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bilinear_rows_sum_to_one_and_halving_averages_pairs() {
        let m = bilinear_matrix(4, 2, &Device::Cpu).unwrap();
        let v = m.to_vec2::<f32>().unwrap();
        assert_eq!(v, vec![vec![0.5, 0.5, 0.0, 0.0], vec![0.0, 0.0, 0.5, 0.5]]);
        let m = bilinear_matrix(5, 3, &Device::Cpu).unwrap();
        for row in m.to_vec2::<f32>().unwrap() {
            assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        }
    }
}
