//! Shared plumbing of the CPU kernels: f32 views of storages and tensors, results back in the
//! storage dtype, and row loops spread over candle's thread pool.

use std::borrow::Cow;

use candle_core::backend::BackendStorage;
use candle_core::{
    bail, CpuStorage, DType, Device, Layout, Result, Shape, Storage, Tensor, WithDType,
};

/// Below this many elements a kernel runs on the calling thread only.
const PARALLEL_MIN_ELEMS: usize = 1 << 15;

fn to_f32<T: WithDType>(values: &[T]) -> Vec<f32> {
    values.iter().map(|v| v.to_f64() as f32).collect()
}

fn from_f32<T: WithDType>(values: &[f32]) -> Vec<T> {
    values.iter().map(|&v| T::from_f64(v as f64)).collect()
}

/// The elements of a contiguous CPU storage as f32 (borrowed when already f32).
pub fn storage_f32<'a>(storage: &'a CpuStorage, layout: &Layout) -> Result<Cow<'a, [f32]>> {
    let Some((start, end)) = layout.contiguous_offsets() else {
        bail!("fused op: operand is not contiguous")
    };
    Ok(match storage {
        CpuStorage::F32(v) => Cow::Borrowed(&v[start..end]),
        CpuStorage::F64(v) => Cow::Owned(to_f32(&v[start..end])),
        CpuStorage::BF16(v) => Cow::Owned(to_f32(&v[start..end])),
        CpuStorage::F16(v) => Cow::Owned(to_f32(&v[start..end])),
        other => bail!("fused op: unsupported dtype {:?}", other.dtype()),
    })
}

/// The elements of a contiguous CPU storage of `u32` indices.
pub fn storage_u32<'a>(storage: &'a CpuStorage, layout: &Layout) -> Result<&'a [u32]> {
    let Some((start, end)) = layout.contiguous_offsets() else {
        bail!("fused op: index operand is not contiguous")
    };
    match storage {
        CpuStorage::U32(v) => Ok(&v[start..end]),
        other => bail!("fused op: indices must be u32, got {:?}", other.dtype()),
    }
}

/// f32 results as a storage of `dtype`.
pub fn storage_from_f32(values: Vec<f32>, dtype: DType) -> Result<CpuStorage> {
    Ok(match dtype {
        DType::F32 => CpuStorage::F32(values),
        DType::F64 => CpuStorage::F64(from_f32(&values)),
        DType::BF16 => CpuStorage::BF16(from_f32(&values)),
        DType::F16 => CpuStorage::F16(from_f32(&values)),
        other => bail!("fused op: unsupported dtype {other:?}"),
    })
}

/// Runs `f` on the elements of a CPU tensor as f32 (made contiguous first).
pub fn with_f32<R>(tensor: &Tensor, f: impl FnOnce(&[f32]) -> Result<R>) -> Result<R> {
    let tensor = tensor.contiguous()?;
    let (storage, layout) = tensor.storage_and_layout();
    let Storage::Cpu(cpu) = &*storage else {
        bail!("fused op: tensor is not on the CPU")
    };
    let values = storage_f32(cpu, layout)?;
    f(&values)
}

/// Runs `f` on the elements of a CPU tensor of `u32` indices.
pub fn with_u32<R>(tensor: &Tensor, f: impl FnOnce(&[u32]) -> Result<R>) -> Result<R> {
    let tensor = tensor.contiguous()?;
    let (storage, layout) = tensor.storage_and_layout();
    let Storage::Cpu(cpu) = &*storage else {
        bail!("fused op: tensor is not on the CPU")
    };
    f(storage_u32(cpu, layout)?)
}

/// A tensor of `dtype` with the f32 `values`.
pub fn tensor_from_f32(
    values: Vec<f32>,
    shape: &Shape,
    dtype: DType,
    device: &Device,
) -> Result<Tensor> {
    Tensor::from_vec(values, shape.clone(), device)?.to_dtype(dtype)
}

/// A raw pointer that may cross threads; every user writes a disjoint range.
struct SharedMut(*mut f32);
unsafe impl Sync for SharedMut {}
unsafe impl Send for SharedMut {}

/// Calls `f(row, out_row)` for every row of width `width` in `out`, spread over candle's thread
/// pool when the work is large enough. Rows are disjoint, so each call owns its slice.
pub fn for_each_row(out: &mut [f32], width: usize, f: impl Fn(usize, &mut [f32]) + Sync) {
    let parallel = out.len() >= PARALLEL_MIN_ELEMS;
    for_each_row_with(out, width, parallel, f)
}

/// Whether `work` element operations are worth spreading over the thread pool.
pub fn worth_parallel(work: usize) -> bool {
    work >= PARALLEL_MIN_ELEMS
}

/// [`for_each_row`] with the choice of spreading the rows made by the caller.
pub fn for_each_row_with(
    out: &mut [f32],
    width: usize,
    parallel: bool,
    f: impl Fn(usize, &mut [f32]) + Sync,
) {
    if width == 0 {
        return;
    }
    let rows = out.len() / width;
    if !parallel || rows < 2 || candle_core::utils::get_num_threads() <= 1 {
        for (row, chunk) in out.chunks_mut(width).enumerate() {
            f(row, chunk);
        }
        return;
    }
    let base = SharedMut(out.as_mut_ptr());
    let base = &base;
    candle_core::utils::barrier_pool().execute_chunked(rows, |range| {
        for row in range {
            // SAFETY: `row < rows`, so the range lies inside `out`, and rows never overlap;
            // `out` outlives the call because `execute_chunked` returns after every worker.
            let chunk = unsafe { std::slice::from_raw_parts_mut(base.0.add(row * width), width) };
            f(row, chunk);
        }
    });
}

/// Sums `f(rows)` over blocks of rows, each block producing a vector of length `len`; the
/// blocks run in parallel when the work is large enough.
pub fn sum_over_rows(
    rows: usize,
    work_per_row: usize,
    len: usize,
    f: impl Fn(std::ops::Range<usize>, &mut [f32]) + Sync,
) -> Vec<f32> {
    let mut total = vec![0f32; len];
    if rows * work_per_row < PARALLEL_MIN_ELEMS || candle_core::utils::get_num_threads() <= 1 {
        f(0..rows, &mut total);
        return total;
    }
    let blocks = (candle_core::utils::get_num_threads() * 4).min(rows).max(1);
    let per_block = rows.div_ceil(blocks);
    let mut partials = vec![0f32; blocks * len];
    for_each_row_with(&mut partials, len, true, |block, partial| {
        let start = block * per_block;
        let end = rows.min(start + per_block);
        if start < end {
            f(start..end, partial);
        }
    });
    for partial in partials.chunks(len) {
        for (t, p) in total.iter_mut().zip(partial) {
            *t += p;
        }
    }
    total
}

/// A raw output pointer that may cross threads; every user writes a disjoint range.
#[derive(Clone, Copy)]
pub struct OutPtr(pub *mut f32);
unsafe impl Sync for OutPtr {}
unsafe impl Send for OutPtr {}

impl OutPtr {
    /// The `len` values from `offset`.
    ///
    /// # Safety
    /// The range must lie in the buffer behind the pointer, and no other live slice may
    /// overlap it.
    #[inline(always)]
    #[allow(clippy::mut_from_ref)]
    pub unsafe fn slice(&self, offset: usize, len: usize) -> &mut [f32] {
        std::slice::from_raw_parts_mut(self.0.add(offset), len)
    }
}

/// Calls `f(item)` for every item in `0..items`, spread over candle's thread pool when
/// `parallel`.
pub fn for_each_item(items: usize, parallel: bool, f: impl Fn(usize) + Sync) {
    if !parallel || items < 2 || candle_core::utils::get_num_threads() <= 1 {
        (0..items).for_each(f);
        return;
    }
    candle_core::utils::barrier_pool().execute_chunked(items, |range| range.for_each(&f));
}
