//! Read access to rank-4 f32 tensors by row (any strides, last dimension contiguous).

use candle_core::backend::BackendStorage;
use candle_core::{bail, CpuStorage, Layout, Result, Storage};

/// Rows of a `(A, B, C, D)` f32 tensor: `row(a, b, c)` is `D` contiguous values.
#[derive(Clone, Copy)]
pub struct Rows<'a> {
    data: &'a [f32],
    pub dims: [usize; 4],
    strides: [usize; 3],
}

impl<'a> Rows<'a> {
    /// The rows of an f32 CPU storage seen through `layout`.
    pub fn new(storage: &'a Storage, layout: &Layout) -> Result<Self> {
        let Storage::Cpu(cpu) = storage else {
            bail!("fused attention: tensor is not on the CPU")
        };
        Self::from_cpu(cpu, layout)
    }

    /// [`Rows::new`] for a CPU storage.
    pub fn from_cpu(cpu: &'a CpuStorage, layout: &Layout) -> Result<Self> {
        let CpuStorage::F32(values) = cpu else {
            bail!("fused attention: expected f32, got {:?}", cpu.dtype())
        };
        let dims: [usize; 4] = layout
            .dims()
            .try_into()
            .map_err(|_| candle_core::Error::Msg("fused attention: expected rank 4".into()))?;
        let stride = layout.stride();
        if dims[3] > 1 && stride[3] != 1 {
            bail!("fused attention: the last dimension must be contiguous")
        }
        let start = layout.start_offset();
        // One past the last element any row reaches.
        let end = start
            + (0..3)
                .map(|i| dims[i].saturating_sub(1) * stride[i])
                .sum::<usize>()
            + dims[3];
        if dims.contains(&0) {
            return Ok(Self {
                data: &[],
                dims,
                strides: [0; 3],
            });
        }
        if end > values.len() {
            bail!("fused attention: layout reaches past its storage")
        }
        Ok(Self {
            data: &values[start..end],
            dims,
            strides: [stride[0], stride[1], stride[2]],
        })
    }

    /// Row `(a, b, c)`.
    #[inline(always)]
    pub fn row(&self, a: usize, b: usize, c: usize) -> &'a [f32] {
        let at = a * self.strides[0] + b * self.strides[1] + c * self.strides[2];
        &self.data[at..at + self.dims[3]]
    }
}
